#!/usr/bin/env bash
# Set up (scripts/setup.sh: the package alone, no extras; nothing is installed once set-up is complete) and
# predict depth for the bundled sample photos into outputs/demo.
# Extra arguments go to `apdepth predict`, e.g. --model /path/to/checkpoint --device cuda.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/setup.sh ""  # no extras
apdepth predict examples/images -o outputs/demo "$@"
