#!/usr/bin/env bash
# Decode per stored format (issue 14), formats alternated run by run: fp32, bf16, f16 and int8
# (fp32 weights with --quantize int8), 2 threads, batch 1, greedy, EOS ignored. Medians (min–max)
# of ms per decoded token, and each format's time and stored bytes as a share of fp32's.
#
#   bash bench/formats.sh DIR [--regime ram|disk] [--tokens N] [--runs N] [--cpu BYTES]
#                             [--threads N] [--build DIR]
#
# DIR holds ref-f32/, ref-bf16/, ref-f16/ (ferry make-model --hidden 1024 --layers 24 --heads 16
# --kv-heads 16 --intermediate 2816 --seed 1 [--dtype ...]).
#   ram   everything in RAM; --tokens 400 shows what long generations cost (KV cache growth).
#   disk  --max-memory cpu=BYTES (default 150 MiB) --io direct: every streamed byte is read from
#         the disk with O_DIRECT, whatever the page cache holds. The bound: the shards read with
#         `dd iflag=direct` in the same run; the row gives streamed bytes ÷ time against it.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${1:?usage: bench/formats.sh DIR [--regime ram|disk] [--tokens N] [--runs N] [--cpu BYTES]}
shift
regime=ram
tokens=33
runs=3
cpu=$((150 << 20))
threads=2
build=$HERE/../build
while (($#)); do
  case $1 in
    --regime) regime=$2; shift 2 ;;
    --tokens) tokens=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --cpu) cpu=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[[ $regime == ram || $regime == disk ]] || { echo "--regime ram or disk" >&2; exit 2; }
[[ -x $build/ferry ]] || { echo "build $build/ferry first" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

names=(fp32 bf16 f16 int8)
declare -A model=([fp32]=ref-f32 [bf16]=ref-bf16 [f16]=ref-f16 [int8]=ref-f32)
declare -A extra=([fp32]="" [bf16]="" [f16]="" [int8]="--quantize int8")
declare -A ms streamed products rate rest

one() {  # format: prints "ms_per_token streamed_bytes_per_forward products_ms_per_token products_GB/s rest_ms_per_token"
  local f=$1 flags=()
  [[ $regime == disk ]] && flags=(--max-memory "cpu=$cpu" --offload-folder "$tmp/offload-$f" --io direct)
  # shellcheck disable=SC2086
  "$build/ferry" run "$dir/${model[$f]}" --prompt-ids 1,2,3,4,5,6,7,8 --max-new-tokens "$tokens" \
    --ignore-eos --threads "$threads" --json --no-progress "${flags[@]}" ${extra[$f]} 2>/dev/null |
    python3 -c '
import json, sys
j = json.load(sys.stdin)
p = j.get("prefetch", {})
d = j["decode_products"]
steps = max(j["decode_steps"], 1)
print("%.2f %d %.3f %.3f %.3f" % (1000 / j["tokens_per_second"],
      p.get("bytes_read", 0) // max(p.get("forwards", 1), 1), 1000 * d["seconds"] / steps,
      d["weight_bytes"] / 1e9 / d["seconds"] if d["seconds"] > 0 else 0,
      1000 * (j["decode_seconds"] - d["seconds"]) / steps))'
}

for ((r = 1; r <= runs; ++r)); do
  for f in "${names[@]}"; do
    read -r t s p g o < <(one "$f" || echo "nan 0 nan nan nan")
    ms[$f]+="$t "
    streamed[$f]=$s
    products[$f]+="$p "
    rate[$f]+="$g "
    rest[$f]+="$o "
  done
done

bound="-"
if [[ $regime == disk ]]; then
  bytes=0 secs=0
  for s in "$dir"/ref-f32/*.safetensors; do
    line=$(dd if="$s" of=/dev/null bs=16M iflag=direct 2>&1 | tail -1)
    bytes=$((bytes + $(echo "$line" | awk '{print $1}')))
    secs=$(python3 -c "print($secs + $(echo "$line" | sed 's/.*copied, \([0-9.e-]*\) s.*/\1/'))")
  done
  bound=$(python3 -c "print('%.2f' % ($bytes / $secs / 1e9))")
fi

median() { python3 -c 'import sys,statistics as s; v=[float(x) for x in sys.argv[1:] if x!="nan"]; print("%.2f" % s.median(v) if v else "nan")' $1; }
spread() { python3 -c 'import sys; v=[float(x) for x in sys.argv[1:] if x!="nan"]; print("%.1f–%.1f" % (min(v), max(v)) if v else "-")' $1; }
stored() {  # format: bytes of weights as stored (int8: the fp32 bytes × 1.0625 ÷ 4)
  case $1 in
    int8) echo $(( $(du -cb "$dir"/ref-f32/*.safetensors | tail -1 | cut -f1) * 17 / 64 )) ;;
    *) du -cb "$dir/${model[$1]}"/*.safetensors | tail -1 | cut -f1 ;;
  esac
}
base=$(median "${ms[fp32]}")
echo "regime $regime, $tokens new tokens, $threads threads, $runs runs$([[ $regime == disk ]] && echo ", cpu=$cpu bytes, --io direct; dd iflag=direct of the shards: $bound GB/s")"
# The products' and the rest's shares of a step (Note [Where a step's time goes] in
# src/kernels/gemv.cpp): ms/token in the weight products, the GB/s they read at, and the rest of
# each run's step, medians.
base_rate=$(median "${rate[fp32]}")
echo "| format | ms/token, median (min–max) | × fp32 time | stored ≈ × fp32 bytes | streamed per forward | streamed ÷ time | products ms/token (GB/s, × fp32's) | the rest, ms/token |"
echo "|---|---|---|---|---|---|---|---|"
for f in "${names[@]}"; do
  m=$(median "${ms[$f]}")
  python3 - "$f" "$m" "$(spread "${ms[$f]}")" "$base" "$(stored "$f")" "$(stored fp32)" "${streamed[$f]}" \
    "$(median "${products[$f]}")" "$(median "${rate[$f]}")" "$base_rate" "$(median "${rest[$f]}")" <<'PY'
import sys
f, m, spread, base, stored, stored32, streamed, p, g, g32, o = sys.argv[1:]
m, base, stored, stored32, streamed = float(m), float(base), int(stored), int(stored32), int(streamed)
p, g, g32, o = float(p), float(g), float(g32), float(o)
rate = "%.2f GB/s" % (streamed / (m / 1e3) / 1e9) if streamed and m == m else "-"
print("| %s | %.1f (%s) | %.2f | %.2f | %s | %s | %.1f (%.1f, %.2f) | %.1f |" % (
      f, m, spread, m / base, stored / stored32, "%d MB" % (streamed / 1e6) if streamed else "-",
      rate, p, g, g / g32 if g32 > 0 else float("nan"), o))
PY
done
