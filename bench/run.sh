#!/usr/bin/env sh
# Run the side-by-side benchmark from anywhere: bench/run.sh [--quick|--smoke] [options]
set -eu
cd "$(dirname "$0")/.."
exec uv run python -m bench "$@"
