#!/usr/bin/env bash
# usage: bench/run.sh [BUILD_DIR] [compare.py options]
set -euo pipefail
build=${1:-build}
shift || true
/usr/bin/python3 "$(dirname "$0")/compare.py" "$build" "$@"
