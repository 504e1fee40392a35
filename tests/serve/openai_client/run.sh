#!/usr/bin/env bash
# The real-client test of `ferry serve`: makes a tiny model folder with a chat template, starts
# `ferry serve` on a free port, runs client.mjs (the official openai package, installed in
# CLIENT_DIR by install.sh) against it, then sends SIGTERM and expects exit status 0.
# Usage: run.sh FERRY SOURCE_DIR CLIENT_DIR
set -euo pipefail
ferry=$1
src=$2
client_dir=$3
work=$(mktemp -d)
pid=
cleanup() {
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "openai client test: FAILED: $*" >&2
  if [[ -f $work/serve.log ]]; then
    echo "--- ferry serve's output:" >&2
    cat "$work/serve.log" >&2
  fi
  exit 1
}
command -v node >/dev/null || fail "node is not installed (Node.js 18+ is needed for this test)"
[[ -f $client_dir/node_modules/openai/package.json ]] ||
  fail "the openai package is not installed in $client_dir (tests/serve/openai_client/install.sh)"
# The script resolves 'openai' from the folder it is in.
cp "$src/client.mjs" "$client_dir/client.mjs"

"$ferry" make-model --arch llama --seed 1 --out "$work/tiny" >/dev/null
node -e '
  const fs = require("fs");
  const file = process.argv[1];
  const config = JSON.parse(fs.readFileSync(file, "utf8"));
  config.chat_template =
    "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>\n{{ m.content | trim }}{{ eos_token }}\n" +
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}";
  fs.writeFileSync(file, JSON.stringify(config, null, 2));
' "$work/tiny/tokenizer_config.json"

"$ferry" serve "$work/tiny" --port 0 --max-batch 4 --context 512 --no-progress \
  >"$work/serve.log" 2>&1 &
pid=$!
url=
for _ in $(seq 1200); do
  url=$(sed -n 's/^ferry serve: listening on \(http:[^ ]*\)$/\1/p' "$work/serve.log")
  [[ -n $url ]] && break
  kill -0 "$pid" 2>/dev/null || fail "ferry serve exited before listening"
  sleep 0.1
done
[[ -n $url ]] || fail "ferry serve did not print its listening line within 120 s"
echo "ferry serve: $url"

node "$client_dir/client.mjs" "$url" || fail "client.mjs"

kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
[[ $status == 0 ]] || fail "ferry serve exited with status $status after SIGTERM (expected 0)"
grep -q "ferry serve: stopped" "$work/serve.log" || fail "no 'stopped' line after SIGTERM"
echo "openai client test: passed"
