#!/usr/bin/env bash
# The main job: installs what is needed, builds ferry, and runs `ferry demo`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
BUILD_DIR=$build bash "$root/scripts/build.sh" -DFERRY_BUILD_TESTS=OFF -DFERRY_BUILD_BENCH=OFF
"$build/ferry" demo "$@"
