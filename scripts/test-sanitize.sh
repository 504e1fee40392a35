#!/usr/bin/env bash
# The test suite under AddressSanitizer + UndefinedBehaviorSanitizer, in build-asan/.
# LibTorch itself is not instrumented; its one-time global allocations are reported as leaks at
# exit, so leak detection is off; every other ASan/UBSan finding fails the run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:handle_sigbus=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
FERRY_FUZZ_SECONDS=0 BUILD_DIR=${BUILD_DIR:-$root/build-asan} bash "$root/scripts/test.sh" -DFERRY_SANITIZE=ON \
  -DCMAKE_BUILD_TYPE=Debug
