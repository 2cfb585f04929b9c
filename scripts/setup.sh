#!/usr/bin/env bash
# Create ./.venv once and install apdepth into it; sourced by demo.sh (no extras) and test.sh (dev extras):
#   . scripts/setup.sh [EXTRA,...]
# Idempotent and offline-safe: a stamp (.venv/apdepth-setup.stamp) records the hash of pyproject.toml, the
# Python version and the extras installed; when it matches, nothing is installed and pip (hence the network)
# is never called. Editing pyproject.toml or asking for a new extra installs again (that needs the index).
# An existing torch in the venv is kept (e.g. your CUDA build); a fresh venv gets torch 2.13.0, from
# $TORCH_INDEX_URL when set (e.g. https://download.pytorch.org/whl/cpu for the CPU-only build on Linux).
# APDEPTH_VENV=DIR puts the venv elsewhere (default ./.venv).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
VENV="${APDEPTH_VENV:-.venv}"
WANT="${1:-}"  # comma-separated extras, e.g. dev (callers that source this pass it explicitly, "" for none:
               # a bare `. setup.sh` would see the caller's own arguments)
[[ "$WANT" =~ ^[A-Za-z0-9_,]*$ ]] || { echo "scripts/setup.sh: extras must be names such as dev, got '$WANT'" >&2; exit 2; }
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "apdepth needs Python >= 3.10")'
fresh=
[ -x "$VENV/bin/python" ] || { "$PY" -m venv "$VENV"; fresh=1; }
# shellcheck disable=SC1091
. "$VENV/bin/activate"

stamp="$VENV/apdepth-setup.stamp"
# "<sha256 of pyproject.toml> <python X.Y> <extras, sorted, comma-separated>" of the last complete install
_apdepth_stamp() {
  python - "$1" <<'EOF'
import hashlib, sys
extras = sorted({e.strip() for e in sys.argv[1].split(",") if e.strip()})
digest = hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest()
print(digest, "%d.%d" % sys.version_info[:2], ",".join(extras) or "-")
EOF
}
_apdepth_up_to_date() {  # the stamp matches pyproject.toml and covers the wanted extras, and apdepth imports
  [ -f "$stamp" ] || return 1
  read -r have_hash have_py have_extras <"$stamp" || return 1
  read -r want_hash want_py want_extras <<<"$(_apdepth_stamp "$WANT")"
  [ "$have_hash" = "$want_hash" ] && [ "$have_py" = "$want_py" ] || return 1
  for e in ${want_extras//,/ }; do
    [ "$e" = - ] || [[ ",$have_extras," == *",$e,"* ]] || return 1
  done
  python -c 'import apdepth' 2>/dev/null
}

if ! _apdepth_up_to_date; then
  # install the union of what was installed and what is wanted, so a demo run never drops the test tools
  extras="$WANT"
  if [ -f "$stamp" ]; then
    read -r _ _ old <"$stamp" || true
    [ "${old:--}" = - ] || extras="${extras:+$extras,}$old"
  fi
  extras="$(_apdepth_stamp "$extras" | cut -d' ' -f3)"
  spec="."
  [ "$extras" = - ] || spec=".[$extras]"
  log="$VENV/setup.log"
  echo "apdepth set-up: installing $spec into $VENV (log: $log)" >&2
  {
    [ -z "$fresh" ] || python -m pip install -q --upgrade pip || true
    python -c 'import torch' 2>/dev/null \
      || python -m pip install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==2.13.0"
    python -m pip install -q -e "$spec"
  } >"$log" 2>&1 || {
    tail -n 30 "$log"
    echo "apdepth set-up failed (log: $log). The first set-up needs the package index; later runs do not." >&2
    exit 1
  }
  _apdepth_stamp "$extras" >"$stamp"
fi
unset -f _apdepth_stamp _apdepth_up_to_date
