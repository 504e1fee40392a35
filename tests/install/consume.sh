#!/usr/bin/env bash
# Installs ferry from BUILD_DIR into a temporary prefix, then builds and runs one example out of
# tree against it with find_package(ferry), as a user would.
set -euo pipefail
build_dir=$1
source_dir=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
test -f "$work/prefix/lib/cmake/ferry/ferryConfig.cmake"
test -f "$work/prefix/include/ferry/big_modeling.h"
# The installed command: the front end answers alone, and finds its engine in libexec/ferry.
"$work/prefix/bin/ferry" --version | grep -q "ferry 0.1.0"
"$work/prefix/bin/ferry" demo --layers 2 --width 8 | grep -q "parameters"
cmake -S "$source_dir/examples" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/build" --target example_cpu_offload >/dev/null
"$work/build/example_cpu_offload"
echo "install: out-of-tree example built against $work/prefix and ran"
