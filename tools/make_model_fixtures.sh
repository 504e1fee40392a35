#!/usr/bin/env bash
# Regenerates tests/models/fixtures: tiny checkpoints made by `ferry make-model` (bfloat16, to
# stay small) and the logits of tools/reference_logits.py (plain PyTorch) for each.
# Usage: tools/make_model_fixtures.sh BUILD_DIR   (needs python3-torch)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
ferry=${1:-$root/build}/ferry
out=$root/tests/models/fixtures
prompt=3,77,140,9,250,31,5,200
common=(--hidden 32 --layers 2 --merges 40 --dtype bfloat16 --max-positions 64)
rm -rf "$out" && mkdir -p "$out"
"$ferry" make-model --arch llama "${common[@]}" --heads 4 --kv-heads 2 --rope-scaling llama3 --seed 1 --out "$out/llama_gqa"
"$ferry" make-model --arch llama "${common[@]}" --heads 2 --kv-heads 2 --tie --rope-scaling linear --attention-bias --mlp-bias --seed 2 --out "$out/llama_tied"
"$ferry" make-model --arch qwen2 "${common[@]}" --heads 4 --kv-heads 1 --tie --seed 3 --out "$out/qwen2"
"$ferry" make-model --arch gpt2 "${common[@]}" --heads 2 --seed 4 --out "$out/gpt2"
for m in llama_gqa llama_tied qwen2 gpt2; do
  rm -f "$out/$m/tokenizer.json" "$out/$m/tokenizer_config.json"  # covered by the tokenizer tests
  ${PYTHON:-/usr/bin/python3} "$root/tools/reference_logits.py" "$out/$m" "$out/$m/reference.safetensors" --prompt-ids $prompt --greedy 8
done
du -sh "$out"
