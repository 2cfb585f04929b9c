#!/usr/bin/env bash
# Set up (scripts/setup.sh), lint, and run the test suite (slow, GPU and real-weights tests excluded).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/setup.sh
ruff check apdepth tests
python -m pytest -m "not slow" -q "$@"
