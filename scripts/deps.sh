#!/usr/bin/env bash
# Installs the Debian 12 packages ferry needs to build, test and run. Idempotent: packages that are
# already installed are skipped, and apt is not touched at all when nothing is missing.
# Usage: scripts/deps.sh        (as root, or with sudo available)
set -euo pipefail

packages=(
  g++ cmake ninja-build pkg-config
  libtorch-dev libopenblas0-openmp   # tensor engine; OpenBLAS, or LibTorch falls back to reference BLAS (~30x slower)
  nlohmann-json3-dev libcli11-dev libfmt-dev libspdlog-dev
  libpcre2-dev                       # tokenizer pre-tokenizer regexes (\p{L} classes)
  libsentencepiece-dev               # tokenizer.model files (optional at build time)
  libcpp-httplib-dev                 # `ferry serve` (HTTP)
  libgloo-dev                        # Gloo's headers, which LibTorch's c10d includes (ranks)
  libgtest-dev libgmock-dev
  clang libclang-rt-14-dev           # libFuzzer targets of the parsers, run by scripts/test.sh
)

missing=()
for p in "${packages[@]}"; do
  if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]]; then
    missing+=("$p")
  fi
done
# The serve test drives `ferry serve` with the openai Node package: node and npm from any source
# (Debian's nodejs and npm, or NodeSource's nodejs, which bundles npm and conflicts with Debian's).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
fi
if ((${#missing[@]} == 0)); then
  echo "deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
