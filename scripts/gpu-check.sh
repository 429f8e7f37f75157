#!/usr/bin/env bash
# Everything a GPU must show, in one command, on the GPU machine (no Rust toolchain, no network:
# it takes gpu-bundle/ from scripts/pack-gpu.sh and the machine's PyTorch + transformers):
#   1. our CUDA kernels against their CPU twins: the gpu_kernels test binary when the bundle has
#      it, and in every case the kernels' first-use self-check in the runs below (a fallback is a
#      failure);
#   2. a short fine-tune (MiniLM, the 3,000-row bundled sample, 3 epochs) on the GPU and the same
#      on the CPU: hold-out metrics within noise;
#   3. inference parity with the CPU build on the 4,688 queries: fp32 on the GPU top-1 identical
#      to the CPU, probabilities within 1e-3; bf16 within 0.05, its top-1 agreement reported;
#   4. a deliberate out-of-memory (BERT-base shape, long texts, one huge batch): the one-line
#      advice naming the batch size;
#   5. scripts/bench-gpu.sh (catbert vs PyTorch eager bf16, MiniLM and BERT-base shape).
# Writes one report (Markdown) to $OUT/gpu-check.md when OUT is set, else gpu-check.md, and exits
# non-zero when a check failed. GPU_CHECK_DEVICE=cpu rehearses the script on a machine without a
# GPU with target/release/catbert (checks 4 and 5 and the kernel binary are skipped).
# Usage (repository root): bash scripts/gpu-check.sh
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
dev=${GPU_CHECK_DEVICE:-cuda}
report=${OUT:-.}/gpu-check.md
sample=datasets/products-sample/train.csv
queries=datasets/products/Query_and_Validation_Data.csv
for f in "$sample" "$queries"; do
  [ -f "$f" ] || { echo "error: $f missing: it ships with the repository" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
started=$(date +%s)
say() { echo "$*" | tee -a "$report"; }
pass() { say "- PASS $*"; }
fail() { say "- FAIL $*"; failed=1; }

if [ "$dev" = cuda ]; then
  [ -f gpu-bundle/catbert-cuda.xz ] || { echo "error: gpu-bundle/ missing: run scripts/pack-gpu.sh (after scripts/build-cuda.sh) and carry gpu-bundle" >&2; exit 1; }
  xz -dc gpu-bundle/catbert-cuda.xz >"$work/catbert" && chmod +x "$work/catbert"
  bin=$work/catbert
  model=gpu-bundle/minilm-fp16
  nvlib=$("$py" -c 'import nvidia, os; print(os.path.join(os.path.dirname(nvidia.__file__), "cu13", "lib"))')
  export LD_LIBRARY_PATH="$nvlib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)
else
  bin=target/release/catbert
  model=models/all-MiniLM-L6-v2
  gpu="none (rehearsal on the CPU)"
fi
: >"$report"
say "# catbert GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
say ""
say "device: $dev; GPU: $gpu; $($bin --version 2>/dev/null)"
say ""

# 1. Kernel tests against their CPU twins.
if [ "$dev" = cuda ] && [ -f gpu-bundle/gpu_kernels.xz ]; then
  xz -dc gpu-bundle/gpu_kernels.xz >"$work/gpu_kernels" && chmod +x "$work/gpu_kernels"
  if "$work/gpu_kernels" --test-threads 1 >"$work/kernels.log" 2>&1 && ! grep -q skipped "$work/kernels.log"; then
    pass "kernel tests: $(grep -o '[0-9]* passed' "$work/kernels.log" | head -1)"
  else
    fail "kernel tests: $(tail -3 "$work/kernels.log" | tr '\n' ' ')"
  fi
else
  say "- SKIP kernel test binary (not in the bundle, or no GPU); the self-check below still runs"
fi

# 2. A short fine-tune on the device and on the CPU.
tune() { # $1 = device, $2 = out
  "$bin" finetune --train "$sample" --text-col product_description --label-col Category \
    --model "$model" --epochs 3 --batch-size 32 --seed 7 --out "$2" --device "$1" \
    --no-tracking --quiet 2>"$2.log"
}
metric() { "$py" -c 'import json,sys; m=json.load(open(sys.argv[1])); e=m["epochs"][-1]; h=e.get("holdout") or e.get("eval") or {}; print(h.get(sys.argv[2], "nan"))' "$1/catbert.json" "$2"; }
t0=$(date +%s)
tune "$dev" "$work/tuned-dev"; dev_rc=$?
t1=$(date +%s)
tune cpu "$work/tuned-cpu"; cpu_rc=$?
t2=$(date +%s)
[ $dev_rc = 0 ] || fail "fine-tune on $dev: $(tail -1 "$work/tuned-dev.log")"
[ $cpu_rc = 0 ] || fail "fine-tune on the CPU: $(tail -1 "$work/tuned-cpu.log")"
if [ $dev_rc = 0 ]; then
  fb=$("$py" -c 'import json,sys; print(len(json.load(open(sys.argv[1])).get("kernel_fallbacks", [])))' "$work/tuned-dev/catbert.json")
  [ "$fb" = 0 ] && pass "kernel self-check in the fine-tune: no fallback" \
    || fail "kernel self-check: $("$py" -c 'import json,sys; print("; ".join(json.load(open(sys.argv[1]))["kernel_fallbacks"]))' "$work/tuned-dev/catbert.json")"
fi
if [ $dev_rc = 0 ] && [ $cpu_rc = 0 ]; then
  for key in f1_weighted f1_min accuracy; do
    a=$(metric "$work/tuned-dev" $key) b=$(metric "$work/tuned-cpu" $key)
    if "$py" -c 'import sys; a,b=map(float,sys.argv[1:]); sys.exit(0 if abs(a-b)<=0.03 else 1)' "$a" "$b"; then
      pass "fine-tune $key: $dev $a, cpu $b (within 0.03)"
    else
      fail "fine-tune $key: $dev $a, cpu $b (more than 0.03 apart)"
    fi
  done
  say "  fine-tune seconds: $dev $((t1 - t0)), cpu $((t2 - t1))"
fi

# 3. Inference parity with the CPU build, on the GPU checkpoint when there is one.
ck=$work/tuned-dev
[ -f "$ck/catbert.json" ] || ck=$work/tuned-cpu
if [ ! -f "$ck/catbert.json" ]; then
  fail "inference parity: no fine-tuned checkpoint to run (both fine-tunes failed)"
else
predict() { # $1 = device, $2 = precision, $3 = out
  "$bin" infer --model "$ck" --file "$queries" --text-col product_description --out "$3" \
    --device "$1" --precision "$2" --batch-size 64 2>"$3.log"
}
compare() { "$py" - "$1" "$2" "$3" <<'PY'
import csv, sys
a = list(csv.DictReader(open(sys.argv[1]))); b = list(csv.DictReader(open(sys.argv[2])))
tol = float(sys.argv[3])
same = sum(x["category_1"] == y["category_1"] for x, y in zip(a, b))
dp = max(abs(float(x[f"probability_{i}"]) - float(y[f"probability_{i}"])) for x, y in zip(a, b) for i in range(1, 6) if f"probability_{i}" in x)
print(f"{same} {len(a)} {dp:.5f} {int(dp <= tol)}")
PY
}
if predict cpu fp32 "$work/cpu.csv"; then
  for prec in fp32 bf16; do
    [ "$dev" = cpu ] && [ $prec = bf16 ] && { say "- SKIP bf16 inference (no GPU)"; continue; }
    tol=$([ $prec = fp32 ] && echo 0.001 || echo 0.05)
    if predict "$dev" $prec "$work/$prec.csv"; then
      read -r same n dp ok <<<"$(compare "$work/$prec.csv" "$work/cpu.csv" $tol)"
      rate=$(grep -o '([0-9.]* rows/s)' "$work/$prec.csv.log" | tr -d '()')
      line="inference $prec on $dev vs fp32 on the CPU: top-1 $same/$n, max |Δp| $dp (tolerance $tol); $rate"
      if [ "$ok" = 1 ] && { [ $prec = bf16 ] || [ "$same" = "$n" ]; }; then pass "$line"; else fail "$line"; fi
    else
      fail "inference $prec on $dev: $(tail -1 "$work/$prec.csv.log")"
    fi
  done
  grep -h "kernel is off by\|failed its self-check" "$work"/*.log >/dev/null 2>&1 \
    && fail "kernel self-check in inference: $(grep -h 'kernel' "$work"/*.log | head -3 | tr '\n' ' ')" \
    || pass "kernel self-check in inference: no fallback"
else
  fail "inference on the CPU: $(tail -1 "$work/cpu.csv.log")"
fi
fi

# 4. A deliberate out-of-memory: BERT-base shape, texts of ~500 tokens, 4,096 per batch.
if [ "$dev" = cuda ]; then
  "$py" scripts/bench_gpu_torch.py make-bert-base --tokenizer "$model" --out "$work/bert-base" >/dev/null
  "$py" -c 'import csv,sys; w=csv.writer(open(sys.argv[1],"w")); w.writerow(["text","label"]); [w.writerow([" ".join(["organic whole grain pasta sauce"]*100), f"c{i%3}"]) for i in range(8192)]' "$work/long.csv"
  "$bin" finetune --train "$work/long.csv" --model "$work/bert-base" --epochs 1 --batch-size 4096 \
    --max-len 512 --out "$work/oom" --device cuda --no-tracking --quiet 2>"$work/oom.log"
  rc=$?
  line=$(tail -1 "$work/oom.log")
  if [ $rc -ne 0 ] && [ "$(wc -l <"$work/oom.log")" -le 2 ] && [[ $line == "error: out of GPU memory with --batch-size 4096; try --batch-size 2048"* ]]; then
    pass "out of memory: '$line' (exit $rc)"
  else
    fail "out of memory: exit $rc, stderr: $(tail -3 "$work/oom.log" | tr '\n' ' ')"
  fi
else
  say "- SKIP out-of-memory (no GPU)"
fi

# 5. Speed against PyTorch.
if [ "$dev" = cuda ]; then
  say ""
  say '```'
  if bash scripts/bench-gpu.sh >"$work/bench.log" 2>&1; then
    tail -4 "$work/bench.log" | tee -a "$report"
  else
    tail -5 "$work/bench.log" | tee -a "$report"; failed=1
  fi
  say '```'
fi

say ""
say "$([ $failed = 0 ] && echo 'all checks passed' || echo 'SOME CHECKS FAILED') in $(( $(date +%s) - started )) s; report: $report"
exit $failed
