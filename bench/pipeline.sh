#!/usr/bin/env bash
# Pipeline stages over ranks on this host (issue 16's table): decode ms/token (batch 1) and
# aggregate tokens/s with --batch concurrent sequences, for each rank count, every rank with a CPU
# budget of --share of the model (the rest of its stage streams from disk) and, as root, each rank
# inside its own memory cgroup of budget + 512 MiB with the page cache dropped first, so what does
# not fit really comes from disk. Ratios are against 1 rank in the same run. The communication
# share is a step's time minus every stage's compute time (one micro-batch: stages take turns).
#
#   bash bench/pipeline.sh MODEL_DIR [--ranks "1 2"] [--share 40] [--tokens 16] [--batch 8]
#                                    [--threads N] [--build DIR] [--rows "N:SHARE ..."]
#                                    [-- EXTRA RUN FLAGS]
#
# --rows lists the runs as RANKS:SHARE pairs instead (each rank's budget SHARE % of the model),
# e.g. --rows "1:40 2:40 2:60": one rank streaming 60 % from disk, two ranks at the same budget,
# and two ranks that hold the model in RAM between them. Ratios are against the first row.
#
# The reference workload (../shared/BENCHMARKING.md) is the 6 GB model:
#   ferry make-model --hidden 2048 --layers 31 --heads 32 --kv-heads 4 --intermediate 5632 \
#     --max-shard-size 1GB --out DIR
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
model=${1:?usage: bench/pipeline.sh MODEL_DIR [options]}
shift
build=$HERE/../build
ranks_list="1 2"
share=40
tokens=16
batch=8
rows=
threads=
extra=()
while (($#)); do
  case $1 in
    --ranks) ranks_list=$2; shift 2 ;;
    --share) share=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    --tokens) tokens=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
ferry=$build/ferry
[[ -x $ferry ]] || { echo "build $ferry first" >&2; exit 1; }
cgroups=/sys/fs/cgroup/memory
use_cgroups=0
[[ $(id -u) == 0 && -d $cgroups ]] && use_cgroups=1

model_bytes=$(du -cb "$model"/*.safetensors | tail -1 | cut -f1)
budget=  # each row's, set before its runs
if [[ -z $rows ]]; then
  for n in $ranks_list; do rows+="$n:$share "; done
fi
tmp=$(mktemp -d)
cleanup() {
  pkill -P $$ 2>/dev/null || true
  for d in "$cgroups"/ferry_bench_rank*; do [[ -d $d ]] && rmdir "$d" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

prompt_ids() {  # n prompts of 8 tokens
  local args=()
  for ((i = 0; i < $1; ++i)); do args+=(--prompt-ids "$((i + 3)),17,40,9,5,300,2,11"); done
  echo "${args[@]}"
}

# run RANKS BATCH: prints rank 0's JSON. Each rank in its own cgroup when possible.
run() {
  local n=$1 b=$2 port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  sync
  ((use_cgroups)) && echo 3 > /proc/sys/vm/drop_caches
  local pids=()
  for ((r = 0; r < n; ++r)); do
    local cmd=("$ferry" run "$model" $(prompt_ids "$b") --max-new-tokens "$tokens" --ignore-eos
               --max-memory "cpu=$budget" --offload-folder "$tmp/offload$r" --json --no-progress)
    [[ -n $threads ]] && cmd+=(--threads "$threads")
    cmd+=("${extra[@]}")
    local env=()
    ((n > 1)) && env=(MASTER_ADDR=127.0.0.1 MASTER_PORT=$port WORLD_SIZE=$n RANK=$r LOCAL_RANK=$r
                      FERRY_DIST_TIMEOUT=600)
    if ((use_cgroups)); then
      local cg=$cgroups/ferry_bench_rank$r
      mkdir -p "$cg"
      echo $((budget + 512 * 1024 * 1024)) > "$cg/memory.limit_in_bytes"
      bash -c 'echo $$ > "$1/cgroup.procs"; shift; exec env "$@"' _ "$cg" "${env[@]}" "${cmd[@]}" \
        > "$tmp/rank$r.json" 2> "$tmp/rank$r.err" &
    else
      env "${env[@]}" "${cmd[@]}" > "$tmp/rank$r.json" 2> "$tmp/rank$r.err" &
    fi
    pids+=($!)
  done
  local failed=0
  for p in "${pids[@]}"; do wait "$p" || failed=1; done
  if ((failed)); then
    echo "a rank failed; its errors:" >&2
    cat "$tmp"/rank*.err >&2
    return 1
  fi
  cat "$tmp/rank0.json"
}

field() { python3 -c "import json,sys; j=json.load(open('$1')); print(eval(sys.argv[1]))" "$2"; }

echo "model $(numfmt --to=iec "$model_bytes"), flags: ${extra[*]:-none}," \
     "cgroups $( ((use_cgroups)) && echo "on (budget + 512 MiB, page cache dropped)" || echo off)"
echo
echo "| ranks | budget per rank | stages | decode ms/token (batch 1) | × first row | tokens/s (batch $batch) | × first row | communication share |"
echo "|---|---|---|---|---|---|---|---|"
base_ms=
base_tps=
for row in $rows; do
  n=${row%%:*}
  row_share=${row#*:}
  budget=$((model_bytes * row_share / 100))
  run "$n" 1 > "$tmp/one.json"
  run "$n" "$batch" > "$tmp/many.json"
  ms=$(field "$tmp/one.json" '"%.1f" % (1000.0 / j["tokens_per_second"])')
  tps=$(field "$tmp/many.json" '"%.2f" % (j["tokens_per_second"] * len(j["outputs"]))')
  stages=$(field "$tmp/one.json" '" ".join("%d-%d" % (s[0], s[1] - 1) for s in j["pipeline"]["stages"]) if "pipeline" in j else "all"')
  comm=$(field "$tmp/one.json" '"%.1f %%" % (100.0 * j["pipeline"]["communication_seconds"] / j["pipeline"]["step_seconds"]) if "pipeline" in j else "-"')
  [[ -z $base_ms ]] && base_ms=$ms && base_tps=$tps
  echo "| $n | ${row_share} % ($(numfmt --to=iec "$budget")) | $stages | $ms | $(python3 -c "print('%.2f' % ($base_ms / $ms))") | $tps | $(python3 -c "print('%.2f' % ($tps / $base_tps))") | $comm |"
done
