#!/usr/bin/env bash
# Set up (scripts/setup.sh with the dev extras), check that a set-up checkout runs offline, lint, and run the
# test suite (slow, GPU and real-weights tests excluded). Extra arguments go to pytest.
#   APDEPTH_NO_SYSTEM_PACKAGES=1   never install system packages (the browser test then skips)
#   APDEPTH_SKIP_OFFLINE_CHECK=1   skip the offline re-run of the demo
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/setup.sh dev

# --- Browser test support -------------------------------------------------------------------------
# tests/test_demo.py drives the web demo in Debian's headless Chromium (chromium + chromium-driver, from
# /usr/bin, or wherever APDEPTH_CHROMIUM / APDEPTH_CHROMEDRIVER point). When missing, they are installed
# system-wide with apt-get if this runs as root (about 130 Debian packages), unless
# APDEPTH_NO_SYSTEM_PACKAGES=1; never fail the run if that is impossible: the test then skips and says why.
if ! { command -v "${APDEPTH_CHROMIUM:-chromium}" && command -v "${APDEPTH_CHROMEDRIVER:-chromedriver}"; } \
    >/dev/null 2>&1; then
  if [ -z "${APDEPTH_NO_SYSTEM_PACKAGES:-}" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "apdepth tests: installing Debian's chromium and chromium-driver for the browser test" >&2
    { apt-get update -qq || true; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
      >"$VENV/chromium-install.log" 2>&1 \
      || echo "note: could not install chromium (log: $VENV/chromium-install.log); the browser test will skip" >&2
  else
    echo "note: chromium/chromedriver missing and not installed here; the browser test will skip" >&2
  fi
fi
# ---------------------------------------------------------------------------------------------------

# --- Offline re-run ---------------------------------------------------------------------------------
# The set-up above is complete, so the demo must run with the package index unreachable (a closed local
# port, no index at all) and no hub access: the README's "no network needed" claim, checked.
if [ -z "${APDEPTH_SKIP_OFFLINE_CHECK:-}" ]; then
  offline_out="$(mktemp -d)"
  PIP_INDEX_URL=http://127.0.0.1:9/simple PIP_EXTRA_INDEX_URL= PIP_NO_INDEX=1 HF_HUB_OFFLINE=1 \
    bash scripts/demo.sh -o "$offline_out" --formats npy \
    || { echo "apdepth tests: the demo failed offline on a set-up checkout" >&2; exit 1; }
  rm -rf "$offline_out"
fi
# ---------------------------------------------------------------------------------------------------

ruff check apdepth tests
python -m pytest -m "not slow" -q "$@"

# --- Install check: sdist + wheel, the wheel in a fresh venv on the dependency floors ----------------
# (scripts/test_install.sh: the installed CLI outside the checkout and the fast suite on the floors; ~7 min).
# Skipped when pytest was given arguments (a partial run) or with APDEPTH_SKIP_INSTALL_TEST=1.
if [ $# -eq 0 ] && [ "${APDEPTH_SKIP_INSTALL_TEST:-0}" != 1 ]; then
  bash scripts/test_install.sh
fi
# ---------------------------------------------------------------------------------------------------
