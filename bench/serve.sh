#!/usr/bin/env bash
# Throughput of `ferry serve` under concurrent clients (issue 15's table): aggregate generated
# tokens/s at 1, 4, 16 and 32 clients, p50/p99 time to first token, the server's peak RSS against
# its CPU budget, with everything in RAM and with 40 % of the model in RAM (the rest on disk).
#
#   bash bench/serve.sh MODEL_DIR [--build DIR] [--clients "1 4 16 32"] [--max-tokens N]
#                                 [--threads N] [--regimes "ram disk cold"] [--max-batch N]
#                                 [--serve-flags "FLAGS"]
#
# Regimes: ram (everything in RAM); disk (--max-memory cpu=40 % of the model, the rest on disk,
# page cache warm: what streams is mostly copied from the page cache); cold (the map of disk, the
# server inside a memory cgroup of budget + 512 MiB with the page cache dropped before each
# client count, so what streams really comes from the disk: ../shared/BENCHMARKING.md's
# RAM-limited regime; needs root and cgroup v1, else the row says why).
# --max-batch: the sequences the server decodes together (default: the largest client count); with
# more clients than that, the rest wait in the server's queue (--max-queue 256) and join as
# sequences finish. With 40 % of the model as the budget, the KV cache of 32 sequences does not fit
# beside the streaming, so the offloaded regimes' 32-client rows need --max-batch 16.
# Ratios are against 1 client in the same run and regime. The load generator
# (bench_serve_load) talks to 127.0.0.1 only and is bounded in requests (2 per client) and time.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
model=${1:?usage: bench/serve.sh MODEL_DIR [options]}
shift
build=$HERE/../build
clients="1 4 16 32"
max_tokens=32
threads=2
regimes="ram disk cold"
serve_flags=()  # --serve-flags: appended to every `ferry serve` (e.g. "--io inplace")
max_batch=
while (($#)); do
  case $1 in
    --build) build=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --max-tokens) max_tokens=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --regimes) regimes=$2; shift 2 ;;
    --max-batch) max_batch=$2; shift 2 ;;
    --serve-flags) read -r -a serve_flags <<< "$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
ferry=$build/ferry
load=$build/bench/bench_serve_load
[[ -x $ferry && -x $load ]] || { echo "build $ferry and $load first" >&2; exit 1; }

model_bytes=$(du -cb "$model"/*.safetensors | tail -1 | cut -f1)
if [[ -z $max_batch ]]; then
  max_batch=1
  for c in $clients; do ((c > max_batch)) && max_batch=$c; done
fi
prompt_words=8  # about 25 tokens with make-model's tokenizer
context=$((48 + max_tokens))
tmp=$(mktemp -d)
server=
cgroups=/sys/fs/cgroup/memory
cgroup=$cgroups/ferry_bench_serve
cleanup() {
  [[ -n $server ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  [[ -d $cgroup ]] && rmdir "$cgroup" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

echo "max batch $max_batch; more clients wait in the server's queue${serve_flags[*]:+; serve flags: ${serve_flags[*]}}"
echo "| regime | clients | tokens/s | × 1 client | TTFT p50 | TTFT p99 | requests ok | peak RSS | CPU budget |"
echo "|---|---|---|---|---|---|---|---|---|"
for regime in $regimes; do
  flags=(--threads "$threads" --max-batch "$max_batch" --max-queue 256 --context "$context" --port 0
         "${serve_flags[@]}")
  budget="-"
  launch=()
  if [[ $regime == disk || $regime == cold ]]; then
    budget_bytes=$((model_bytes * 40 / 100))
    flags+=(--max-memory "cpu=${budget_bytes}" --offload-folder "$tmp/offload")
    budget=$(numfmt --to=iec "$budget_bytes")
  fi
  if [[ $regime == cold ]]; then
    if [[ $(id -u) != 0 || ! -d $cgroups ]]; then
      echo "| cold | - | needs root and cgroup v1 memory ($cgroups) |||||||"
      continue
    fi
    mkdir -p "$cgroup"
    echo $((budget_bytes + 512 * 1024 * 1024)) > "$cgroup/memory.limit_in_bytes"
    launch=(bash -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' _ "$cgroup")
    budget="$budget (cgroup + 512 MiB)"
    sync
    echo 3 > /proc/sys/vm/drop_caches
  fi
  "${launch[@]}" "$ferry" serve "$model" "${flags[@]}" > "$tmp/serve.out" 2> "$tmp/serve.err" &
  server=$!
  port=
  for _ in $(seq 1 600); do
    port=$(sed -n 's#.*listening on http://127.0.0.1:\([0-9]*\).*#\1#p' "$tmp/serve.out" | head -1)
    [[ -n $port ]] && break
    kill -0 "$server" 2>/dev/null || break
    sleep 0.5
  done
  if [[ -z $port ]]; then
    echo "| $regime | - | server did not start: $(tail -1 "$tmp/serve.err") |||||||"
    server=
    continue
  fi
  # One warm-up request (first forward, page cache, prefetcher's order).
  "$load" --port "$port" --clients 1 --requests 1 --max-tokens 4 --prompt-words "$prompt_words" > /dev/null || true
  base=
  for c in $clients; do
    [[ $regime == cold ]] && sync && echo 3 > /proc/sys/vm/drop_caches
    out=$("$load" --port "$port" --clients "$c" --requests $((2 * c)) --max-tokens "$max_tokens" --prompt-words "$prompt_words" \
      --time-limit 900 || true)
    tps=$(python3 -c 'import json,sys; print("%.2f" % json.loads(sys.argv[1])["tokens_per_second"])' "$out")
    p50=$(python3 -c 'import json,sys; print("%.2f s" % json.loads(sys.argv[1])["ttft_p50_s"])' "$out")
    p99=$(python3 -c 'import json,sys; print("%.2f s" % json.loads(sys.argv[1])["ttft_p99_s"])' "$out")
    okr=$(python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print("%d/%d" % (j["ok"], j["requests"]))' "$out")
    [[ -z $base ]] && base=$tps
    ratio=$(python3 -c "print('%.1f×' % ($tps / $base if $base > 0 else 0))")
    # The server's own peak (VmHWM less the page cache used in place, which it resets the kernel's
    # peak around: Note [Page cache used in place]), from /metrics.
    rss=$(python3 -c '
import re, sys, urllib.request
m = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1]).read().decode()
peak = int(re.search(r"\nferry_peak_rss_bytes ([0-9]+)", m).group(1))
borrowed = int(re.search(r"\nferry_page_cache_in_place_bytes ([0-9]+)", m).group(1))
mib = lambda b: "%.0fMi" % (b / 2**20)
print(mib(peak) + (" + %s in place" % mib(borrowed) if borrowed else ""))' "$port")
    echo "| $regime | $c | $tps | $ratio | $p50 | $p99 | $okr | $rss | $budget |"
  done
  kill -TERM "$server"
  wait "$server" || echo "(server exit status $?)" >&2
  server=
done
