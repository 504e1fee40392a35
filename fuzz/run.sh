#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) in build-fuzz/ and runs each for
# FERRY_FUZZ_SECONDS (default 60) on its seed corpus. Any crash, hang or sanitizer report fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build-fuzz}
CXX=${CXX:-clang++} cmake -S "$root" -B "$build" -G Ninja -DFERRY_BUILD_FUZZ=ON \
  -DFERRY_BUILD_TESTS=OFF -DFERRY_BUILD_BENCH=OFF -DFERRY_WERROR=OFF \
  -DFERRY_FUZZ_SECONDS="${FERRY_FUZZ_SECONDS:-60}"
ninja -C "$build" fuzz_safetensors_header fuzz_offload_index fuzz_sharded_index fuzz_chat_template
ninja -C "$build" fuzz_tokenizer_json fuzz_generation_config
ninja -C "$build" fuzz_run
