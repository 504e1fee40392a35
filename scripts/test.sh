#!/usr/bin/env bash
# The whole test suite: installs what is needed, builds ferry with its tests, runs them with CTest.
# Extra arguments go to cmake's configure step (scripts/test-sanitize.sh passes -DFERRY_SANITIZE=ON).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
BUILD_DIR=$build bash "$root/scripts/build.sh" -DFERRY_BUILD_TESTS=ON -DFERRY_BUILD_BENCH=OFF "$@"
ctest --test-dir "$build" --output-on-failure -j "${JOBS:-$(nproc)}"
