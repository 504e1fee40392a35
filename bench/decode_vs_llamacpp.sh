#!/usr/bin/env bash
# All-in-RAM decode, ferry next to llama.cpp on the same weights, per stored format (issue 14):
# ferry fp32 / bf16 / f16 / int8 (--quantize int8) against llama.cpp F32 / F16 / F16 / Q8_0, in
# one run, alternating the engines run by run, 2 threads, batch 1, greedy. Each figure is the
# median of --runs runs (min–max), ms per decoded token after the first.
#
#   bash bench/decode_vs_llamacpp.sh DIR [--runs N] [--threads N] [--build DIR]
#
# DIR holds ref-f32/, ref-bf16/, ref-f16/ (ferry make-model --hidden 1024 --layers 24 --heads 16
# --kv-heads 16 --intermediate 2816 --seed 1 [--dtype ...]) and ref-f32.gguf, ref-f16.gguf,
# ref-q8_0.gguf (../shared/tools/llamacpp: hf_to_gguf.py + quantize.py); NODE_LLAMA_CPP_DIR
# names the llama.cpp set-up (setup.sh). The bound: weight bytes ÷ read-only DRAM bandwidth with
# the same threads, from bench_kernels in the same run.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${1:?usage: bench/decode_vs_llamacpp.sh DIR [--runs N] [--threads N] [--build DIR]}
shift
runs=3
threads=2
build=$HERE/../build
while (($#)); do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
llamacpp=${LLAMACPP_TOOLS:-$HERE/../../shared/tools/llamacpp}
: "${NODE_LLAMA_CPP_DIR:?set NODE_LLAMA_CPP_DIR to the llama.cpp set-up (setup.sh DIR)}"
ids=1,2,3,4,5,6,7,8
new=17

# ferry's placed bytes per run configuration (int8's bound: ferry stores 1.0625 bytes a weight
# as Q8_0 does, but not its embeddings and lm_head, so the gguf's size is not ferry's).
placed_dir=$(mktemp -d)
trap 'rm -rf "$placed_dir"' EXIT
ferry_ms() {  # model folder, extra flags...
  local model=$1
  shift
  "$build/ferry" run "$dir/$model" --prompt-ids $ids --max-new-tokens $new --ignore-eos \
    --threads "$threads" --json --no-progress "$@" 2>/dev/null |
    PLACED="$placed_dir/$model$*" python3 -c 'import json,os,sys; j=json.load(sys.stdin); open(os.environ["PLACED"], "w").write(str(sum(j["placed_bytes"].values()))); print("%.2f %s" % (1000.0 / j["tokens_per_second"], ",".join(map(str, j["token_ids"]))))'
}
llama_ms() {  # gguf file
  node "$llamacpp/llamacpp_run.mjs" --model "$dir/$1" --prompt-ids $ids --new-tokens $new \
    --threads "$threads" --flash-attention off --kv f32 2>/dev/null |
    python3 -c 'import json,sys; j=json.loads(sys.stdin.read().strip().splitlines()[-1]); print("%.2f %s" % (j["decode_ms_per_token"], ",".join(map(str, j["token_ids"]))))'
}

declare -A all
configs=("ferry fp32|ferry_ms ref-f32" "llama.cpp F32|llama_ms ref-f32.gguf"
         "ferry bf16|ferry_ms ref-bf16" "ferry f16|ferry_ms ref-f16" "llama.cpp F16|llama_ms ref-f16.gguf"
         "ferry int8|ferry_ms ref-f32 --quantize int8" "llama.cpp Q8_0|llama_ms ref-q8_0.gguf")
# Warm the page cache for every file once.
cat "$dir"/ref-*/*.safetensors "$dir"/*.gguf > /dev/null
for ((r = 1; r <= runs; ++r)); do
  for c in "${configs[@]}"; do
    name=${c%%|*}
    out=$(eval "${c#*|}" || echo "nan -")
    all[$name]+="${out%% *} "
    [[ $r == 1 ]] && all["$name tokens"]=${out#* }
  done
done

bw=$("$build/bench/bench_kernels" --threads "$threads" --reps 5 --sizes 4096 2>/dev/null |
  sed -n 's/.*read-only[^0-9]*\([0-9.]*\) GB\/s.*/\1/p' | head -1)
echo "| format | ferry ms/token (min–max) | llama.cpp ms/token (min–max) | ferry ÷ llama.cpp | ferry's stored bytes | bound at ${bw:-?} GB/s read-only |"
echo "|---|---|---|---|---|---|"
stat_of() { python3 -c 'import sys,statistics as s; v=[float(x) for x in sys.argv[1:] if x!="nan"]; print("%.1f (%.1f–%.1f)" % (s.median(v), min(v), max(v)) if v else "failed")' $1; }
median_of() { python3 -c 'import sys,statistics as s; v=[float(x) for x in sys.argv[1:] if x!="nan"]; print("%.3f" % s.median(v) if v else "nan")' $1; }
row() {  # label, ferry name, llama name, weight bytes
  local f l
  f=$(median_of "${all[$2]}")
  l=$(median_of "${all[$3]}")
  local bound="-"
  [[ -n $bw ]] && bound=$(python3 -c "print('%.1f ms' % ($4 / ($bw * 1e9) * 1e3))")
  echo "| $1 | $(stat_of "${all[$2]}") | $(stat_of "${all[$3]}") | $(python3 -c "print('%.2f' % ($f / $l) if $l == $l and $l > 0 else 'nan')") | $(numfmt --to=iec "$4") | $bound |"
}
f32_bytes=$(du -cb "$dir"/ref-f32/*.safetensors | tail -1 | cut -f1)
bf16_bytes=$(du -cb "$dir"/ref-bf16/*.safetensors | tail -1 | cut -f1)
int8_bytes=$(cat "$placed_dir/ref-f32--quantize int8" 2>/dev/null || echo 0)
row "fp32" "ferry fp32" "llama.cpp F32" "$f32_bytes"
row "bf16 (llama.cpp F16)" "ferry bf16" "llama.cpp F16" "$bf16_bytes"
row "f16" "ferry f16" "llama.cpp F16" "$bf16_bytes"
row "int8 (llama.cpp Q8_0)" "ferry int8" "llama.cpp Q8_0" "$int8_bytes"
echo
for k in "ferry fp32" "llama.cpp F32"; do echo "greedy tokens, $k: ${all[$k tokens]}"; done
