#!/usr/bin/env bash
# Set everything up (idempotent), then run the demo: generate a 1M-row prediction log with injected
# incidents, monitor all its windows, print the summary. Extra arguments go to `lakemon demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/lakemon demo "$@"
