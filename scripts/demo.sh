#!/usr/bin/env bash
# The main job: installs what is needed, builds ferry, makes a ~1 GB Llama-style checkpoint once
# (cached under the build folder), and runs it with a CPU budget too small for all of it, so
# part of the model is offloaded to disk. Extra arguments go to `ferry run`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
BUILD_DIR=$build bash "$root/scripts/build.sh" -DFERRY_BUILD_TESTS=OFF -DFERRY_BUILD_BENCH=OFF
model=$build/demo-llama-1GB
if [[ ! -f $model/config.json ]]; then
  "$build/ferry" make-model --arch llama --size 1GB --seed 0 --out "$model"
fi
"$build/ferry" run "$model" --prompt "Once upon a time" --max-new-tokens 24 \
  --device-map auto --max-memory cpu=600MB --offload-folder "$build/demo-offload" "$@"
