#!/usr/bin/env bash
# Disk-offloaded decode when the page cache already holds the checkpoint (issue 14's target:
# page-cache-warm disk-offload decode <= 1.2 x the all-in-RAM decode). Alternates, run by run,
# `ferry run` with everything in RAM and with --max-memory cpu=SHARE % of the model (the rest
# offloaded to disk), the latter with each --io mode given; every file is read once first, so
# the page cache holds the checkpoint and the offload folder. Prints medians (min-max) of decode
# ms/token, the ratio to all-in-RAM, where the streamed bytes came from, and the CPU's peak
# against its limit with the page cache used in place beside it (the last run's).
#
#   bash bench/warm_offload.sh MODEL_DIR [--build DIR] [--runs N] [--tokens N] [--share PCT]
#                                        [--threads N] [--io "auto direct"]
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
model=${1:?usage: bench/warm_offload.sh MODEL_DIR [options]}
shift
build=$HERE/../build
runs=3
tokens=16
share=40
threads=2
ios="auto direct"
while (($#)); do
  case $1 in
    --build) build=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --tokens) tokens=$2; shift 2 ;;
    --share) share=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --io) ios=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
ferry=$build/ferry
[[ -x $ferry ]] || { echo "build $ferry first" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

model_bytes=$(du -cb "$model"/*.safetensors | tail -1 | cut -f1)
budget=$((model_bytes * share / 100))
common=(run "$model" --prompt "Hello" --max-new-tokens "$tokens" --ignore-eos --json --no-progress
        --threads "$threads")
declare -A flags=([ram]="")
rows=(ram)
for io in $ios; do
  flags[$io]="--max-memory cpu=$budget --offload-folder $tmp/offload --io $io"
  rows+=("$io")
done

one() {  # one run of row $1: "ms_per_token page_cache_bytes direct_bytes in_place_bytes memory"
  # shellcheck disable=SC2086
  "$ferry" "${common[@]}" ${flags[$1]} 2>/dev/null | python3 -c '
import json, sys
j = json.load(sys.stdin)
p = j.get("prefetch", {})
tps = j["tokens_per_second"]
c = j["devices"]["cpu"]
mib = lambda b: "%.0f MiB" % (b / 2**20)
mem = mib(c["peak_bytes"]) + (" of " + mib(c["limit_bytes"]) if c["limit_bytes"] else "")
if c.get("page_cache_in_place_bytes"):
    mem += " + " + mib(c["page_cache_in_place_bytes"]) + " in place"
if j["over_budget"]:
    mem += " OVER"
print("%.1f %d %d %d %s" % (1000 / tps if tps > 0 else 0, p.get("page_cache_bytes", 0), p.get("direct_bytes", 0), p.get("in_place_bytes", 0), mem.replace(" ", "_")))'
}

# Warm-up: every row once (writes the offload folder, fills the page cache).
cat "$model"/*.safetensors > /dev/null
for row in "${rows[@]}"; do one "$row" > /dev/null; done
declare -A times=() cached=() direct=() inplace=() memory=()
for ((i = 0; i < runs; i++)); do
  for row in "${rows[@]}"; do
    read -r ms pc dio ip mem < <(one "$row")
    times[$row]+="$ms "
    cached[$row]=$pc
    direct[$row]=$dio
    inplace[$row]=$ip
    memory[$row]=${mem//_/ }
  done
done

median() { python3 -c 'import statistics, sys; v = [float(x) for x in sys.argv[1:]]; print("%.1f (%.1f-%.1f)" % (statistics.median(v), min(v), max(v)))' "$@"; }
base=$(python3 -c 'import statistics, sys; print(statistics.median([float(x) for x in sys.argv[1:]]))' ${times[ram]})
echo "model $(numfmt --to=iec "$model_bytes"), CPU budget $share % ($(numfmt --to=iec "$budget")) for the offloaded rows, $threads threads, $tokens tokens, $runs runs"
echo "| weights | decode ms/token, median (min-max) | × all in RAM | used in place | copied from the page cache | read with O_DIRECT | CPU peak (of its limit) |"
echo "|---|---|---|---|---|---|---|"
for row in "${rows[@]}"; do
  # shellcheck disable=SC2086
  med=$(median ${times[$row]})
  ratio=$(python3 -c "import statistics; print('%.2f' % (statistics.median([float(x) for x in '${times[$row]}'.split()]) / $base))")
  if [[ $row == ram ]]; then
    echo "| all in RAM | $med | 1.00 | - | - | - | ${memory[$row]} |"
  else
    echo "| cpu=$share %, rest on disk, --io $row | $med | $ratio | $(numfmt --to=iec "${inplace[$row]}") | $(numfmt --to=iec "${cached[$row]}") | $(numfmt --to=iec "${direct[$row]}") | ${memory[$row]} |"
  fi
done
