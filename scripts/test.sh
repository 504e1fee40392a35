#!/usr/bin/env bash
# The whole test suite: installs what is needed, builds ferry with its tests, runs them with CTest,
# then runs the parsers' fuzz targets for a bounded time. Extra arguments go to cmake's configure
# step (scripts/test-sanitize.sh passes -DFERRY_SANITIZE=ON).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
BUILD_DIR=$build bash "$root/scripts/build.sh" -DFERRY_BUILD_TESTS=ON -DFERRY_BUILD_BENCH=OFF "$@"
ctest --test-dir "$build" --output-on-failure -j "${JOBS:-$(nproc)}"
# The parsers' libFuzzer targets (clang, ASan + UBSan), each for FERRY_FUZZ_SECONDS (default 60;
# 0 skips) on its seed corpus: any crash, hang or sanitizer report fails the run.
if [[ ${FERRY_FUZZ_SECONDS:-60} != 0 ]]; then
  BUILD_DIR=$build-fuzz FERRY_FUZZ_SECONDS=${FERRY_FUZZ_SECONDS:-60} bash "$root/fuzz/run.sh"
fi
