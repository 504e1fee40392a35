#!/usr/bin/env bash
# Installs the pinned `openai` package (package-lock.json) into DIR with `npm ci`, once: a later
# run with the same lockfile finds it there and needs no network. Node.js and npm are required:
# without them this fails (the test it sets up must not pass silently).
# Usage: install.sh SOURCE_DIR DIR
set -euo pipefail
src=$1
dir=$2
fail() {
  echo "openai client install: FAILED: $*" >&2
  exit 1
}
command -v node >/dev/null || fail "node is not installed (Node.js 18+ and npm are needed to test ferry serve with the openai package)"
if [[ -f $dir/node_modules/openai/package.json ]] && cmp -s "$src/package-lock.json" "$dir/installed.lock"; then
  echo "openai client: installed in $dir"
  exit 0
fi
command -v npm >/dev/null || fail "npm is not installed (needed once to install the openai package)"
mkdir -p "$dir"
rm -rf "$dir/node_modules" "$dir/installed.lock"
cp "$src/package.json" "$src/package-lock.json" "$dir/"
npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error --cache "$dir/.npm-cache" \
  --ignore-scripts || fail "npm ci in $dir"
# Written last: it says which lockfile a complete install holds.
cp "$src/package-lock.json" "$dir/installed.lock"
echo "openai client: installed $(node -p "require('$dir/node_modules/openai/package.json').version") in $dir"
