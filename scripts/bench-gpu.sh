#!/usr/bin/env bash
# GPU benchmark, catbert vs PyTorch + transformers (eager, bf16 autocast), side by side on one
# machine: training samples/s (batch 32, 1 epoch of the product training file), inference rows/s
# (batch 64, the 4,688 query rows) and peak GPU memory, for all-MiniLM-L6-v2 and a
# BERT-base-shaped model with random weights. Builds nothing: it takes gpu-bundle/ made by
# scripts/pack-gpu.sh (carried to the GPU machine), and the machine's PyTorch + transformers.
# Peak memory: nvidia-smi's used memory sampled every 50 ms (context included), for both.
# Usage (on the GPU machine, repository root): bash scripts/bench-gpu.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
train=datasets/products/Training_Data.csv
queries=datasets/products/Query_and_Validation_Data.csv
for f in "$train" "$queries"; do
  [ -f "$f" ] || { echo "error: $f missing: it ships with the repository, restore datasets/products/ from git" >&2; exit 1; }
done
[ -f gpu-bundle/catbert-cuda.xz ] || { echo "error: gpu-bundle/ missing: run scripts/pack-gpu.sh (after scripts/build-cuda.sh) and carry gpu-bundle" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"; kill $(jobs -p) 2>/dev/null || true' EXIT

xz -dc gpu-bundle/catbert-cuda.xz >"$work/catbert-cuda" && chmod +x "$work/catbert-cuda"
# CUDA's libraries come with PyTorch's wheels.
nvlib=$("$py" -c 'import nvidia, os; print(os.path.join(os.path.dirname(nvidia.__file__), "cu13", "lib"))')
export LD_LIBRARY_PATH="$nvlib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

"$py" scripts/bench_gpu_torch.py make-bert-base --tokenizer gpu-bundle/minilm-fp16 --out "$work/bert-base"

# Run a command while sampling GPU memory; prints the peak MiB on the last line.
peak() {
  local log=$work/smi.$RANDOM
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 >"$log" &
  local smi=$!
  "$@"
  kill $smi; wait $smi 2>/dev/null || true
  sort -n "$log" | tail -1
}

rows=()
for name in minilm bert-base; do
  model=$([ $name = minilm ] && echo gpu-bundle/minilm-fp16 || echo "$work/bert-base")
  ck=$work/ck-$name
  mem_ct=$(peak "$work/catbert-cuda" finetune --train "$train" --text-col product_description --label-col Category \
    --model "$model" --epochs 1 --batch-size 32 --val-split 0.1 --out "$ck" --device cuda --quiet | tail -1)
  sps_c=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["train_samples_per_s"])' "$ck/metrics.json")
  mem_ci=$(peak "$work/catbert-cuda" infer --model "$ck" --file "$queries" --text-col product_description \
    --out "$work/pred-$name.csv" --batch-size 64 --device cuda 2>"$work/infer-$name.log" | tail -1)
  rps_c=$(grep -o '([0-9.]* rows/s)' "$work/infer-$name.log" | tr -d '(' | cut -d' ' -f1)
  out_t=$(peak "$py" scripts/bench_gpu_torch.py train --model "$model" --data "$train" --batch-size 32)
  sps_t=$(echo "$out_t" | head -1 | "$py" -c 'import json,sys; print(json.load(sys.stdin)["samples_per_s"])')
  mem_tt=$(echo "$out_t" | tail -1)
  out_i=$(peak "$py" scripts/bench_gpu_torch.py infer --model "$ck" --data "$queries" --batch-size 64)
  rps_t=$(echo "$out_i" | head -1 | "$py" -c 'import json,sys; print(json.load(sys.stdin)["rows_per_s"])')
  mem_ti=$(echo "$out_i" | tail -1)
  rows+=("$name $sps_c $sps_t $rps_c $rps_t $mem_ct $mem_tt $mem_ci $mem_ti")
done

printf '\n%-9s | %22s | %22s | %16s | %16s\n' model 'train samples/s c/t' 'infer rows/s c/t' 'train MiB c/t' 'infer MiB c/t'
for r in "${rows[@]}"; do
  set -- $r
  "$py" - "$@" <<'PY'
import sys
n, sc, st, rc, rt, mct, mtt, mci, mti = sys.argv[1:]
f = float
print(f"{n:<9} | {f(sc):7.0f} /{f(st):6.0f} {f(sc)/f(st):5.2f}x | {f(rc):7.0f} /{f(rt):6.0f} {f(rc)/f(rt):5.2f}x"
      f" | {f(mct):6.0f} /{f(mtt):6.0f} | {f(mci):6.0f} /{f(mti):6.0f}")
PY
done
