#!/usr/bin/env bash
# Create ./.venv once and install apdepth into it (idempotent; sourced by demo.sh and test.sh).
# An existing torch in the venv is kept (e.g. your CUDA build); a fresh venv gets torch 2.13.0.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "apdepth needs Python >= 3.10")'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
log=.venv/setup.log
{
  python -m pip install -q --upgrade pip
  python -c 'import torch' 2>/dev/null || python -m pip install -q "torch==2.13.0"
  python -m pip install -q -e ".[dev]"
} >"$log" 2>&1 || { cat "$log"; echo "set-up failed (log: $log)" >&2; exit 1; }
