#!/usr/bin/env bash
# Set up (scripts/setup.sh), lint, and run the test suite (slow, GPU and real-weights tests excluded).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/setup.sh

# --- Browser test support -------------------------------------------------------------------------
# tests/test_demo.py drives the web demo in Debian's headless Chromium (chromium + chromium-driver).
# Install them when missing and possible (root and apt-get); never fail the run if that is impossible:
# the test then skips and says why.
if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq || true; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
      >.venv/chromium-install.log 2>&1 \
      || echo "note: could not install chromium (log: .venv/chromium-install.log); the browser test will skip" >&2
  else
    echo "note: chromium/chromedriver missing and no root apt-get to install them; the browser test will skip" >&2
  fi
fi
# ---------------------------------------------------------------------------------------------------

ruff check apdepth tests
python -m pytest -m "not slow" -q "$@"

# --- Install check: sdist + wheel, the wheel in a fresh venv on the dependency floors ----------------
# (scripts/test_install.sh: the installed CLI outside the checkout and a fast test subset; 3.8 CPU-min).
# Skipped when pytest was given arguments (a partial run) or with APDEPTH_SKIP_INSTALL_TEST=1.
if [ $# -eq 0 ] && [ "${APDEPTH_SKIP_INSTALL_TEST:-0}" != 1 ]; then
  bash scripts/test_install.sh
fi
# ---------------------------------------------------------------------------------------------------
