#!/usr/bin/env bash
# Configures and builds ferry into BUILD_DIR (default: build) with Ninja, after installing the
# packages it needs. Extra arguments go to cmake's configure step (e.g. -DCMAKE_PREFIX_PATH=...).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/deps.sh"
build=${BUILD_DIR:-$root/build}
cmake -S "$root" -B "$build" -G Ninja "$@"
cmake --build "$build" -j "${JOBS:-$(nproc)}"
