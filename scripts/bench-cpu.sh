#!/usr/bin/env bash
# CPU speed, catbert vs PyTorch + transformers (scripts/torch_*.py), one run, same machine,
# same threads, same data, for 1 and 2 threads:
#   training  — 1 epoch on the same seeded 4,000-row subset of Training_Data.csv (batch 32,
#               10% hold-out; samples/s exclude evaluation) and the per-step phase split
#               (forward / backward / optimizer incl. clipping; PyTorch's from torch_train_step.py);
#   inference — the 4,688 rows of Query_and_Validation_Data.csv on the same fine-tuned checkpoint.
# Peak RSS of every process. Then scripts/bench-ort.sh for the same threads (ONNX Runtime fp32
# and int8, PyTorch on sorted batches, MiniLM and the BERT-base shape). Usage: scripts/bench-cpu.sh [THREADS...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
threads=("${@:-1 2}")
threads=(${threads[*]})
data=datasets/products
for f in "$data/Training_Data.csv" "$data/Query_and_Validation_Data.csv"; do
  [ -f "$f" ] || { echo "error: $f missing: it ships with the repository, restore datasets/products/ from git" >&2; exit 1; }
done
bash scripts/make-oracle.sh >/dev/null
py=$(scripts/py-oracle.sh)
cargo build --release --quiet
model=models/all-MiniLM-L6-v2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$py" - "$data/Training_Data.csv" "$tmp/subset.csv" <<'PY'
import sys, numpy as np, pandas as pd
df = pd.read_csv(sys.argv[1], keep_default_na=False)
df.iloc[np.random.RandomState(42).permutation(len(df))[:4000]].to_csv(sys.argv[2], index=False)
PY

# Peak RSS (MiB) of a command, printed on the last line; the command's stdout before it.
peak() { "$py" -c 'import resource,subprocess,sys; subprocess.run(sys.argv[1:],check=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024)' "$@"; }
field() { "$py" -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }

table=()
for t in "${threads[@]}"; do
  echo "== $t thread(s)" >&2
  rss_ct=$(peak target/release/catbert finetune --train "$tmp/subset.csv" --text-col product_description \
    --label-col Category --model "$model" --epochs 1 --out "$tmp/cb-$t" --threads "$t" --quiet | tail -1)
  sps_c=$(field "$tmp/cb-$t/metrics.json" 'd[0]["train_samples_per_s"]')
  ph_c=$(field "$tmp/cb-$t/metrics.json" "' / '.join(f'{d[0][\"phase_seconds\"][k]/d[0][\"steps\"]:.3f}' for k in ('forward','backward','optimizer'))")

  peak "$py" scripts/torch_finetune.py --train "$tmp/subset.csv" --text-col product_description \
    --label-col Category --model-dir "$model" --epochs 1 --threads "$t" --out "$tmp/torch-$t.json" >"$tmp/torch-$t.log" 2>&1
  rss_tt=$(tail -1 "$tmp/torch-$t.log")
  sps_t=$(field "$tmp/torch-$t.json" 'd["epochs"][0]["train_samples_per_s"]')
  "$py" scripts/torch_train_step.py --arch minilm --model-dir "$model" --data "$tmp/subset.csv" \
    --steps 10 --warmup 2 --threads "$t" --json "$tmp/step-$t.json" >/dev/null 2>&1
  ph_t=$(field "$tmp/step-$t.json" "' / '.join(f'{v/d[\"timed_steps\"]:.3f}' for v in (d['seconds']['fwd'], d['seconds']['bwd'], d['seconds']['clip'] + d['seconds']['opt']))")

  ck="$tmp/cb-$t"
  rss_ci=$(peak target/release/catbert infer --model "$ck" --file "$data/Query_and_Validation_Data.csv" \
    --text-col product_description --out "$tmp/pred-c.csv" --threads "$t" 2>"$tmp/infer-$t.log" | tail -1)
  rps_c=$(grep -o '([0-9.]* rows/s)' "$tmp/infer-$t.log" | tr -d '(' | cut -d' ' -f1)
  rss_ti=$(peak "$py" scripts/torch_infer.py --model-dir "$ck" --input "$data/Query_and_Validation_Data.csv" \
    --out "$tmp/pred-t.csv" --threads "$t" --json "$tmp/infer-torch-$t.json" 2>/dev/null | tail -1)
  rps_t=$(field "$tmp/infer-torch-$t.json" 'round(d["rows_per_s"], 1)')
  table+=("$t|$sps_c|$sps_t|$ph_c|$ph_t|$rss_ct|$rss_tt|$rps_c|$rps_t|$rss_ci|$rss_ti")
done

echo
echo "CPU benchmark, all-MiniLM-L6-v2, $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(date -u +%F)"
printf '%-7s | %-26s | %-43s | %-13s | %-24s | %-13s\n' threads 'train samples/s cat/torch' 'per step fwd / bwd / opt s: catbert | torch' 'train RSS MiB' 'infer rows/s cat/torch' 'infer RSS MiB'
for row in "${table[@]}"; do
  IFS='|' read -r t sc st pc pt rc rt ic it ric rit <<<"$row"
  "$py" - "$t" "$sc" "$st" "$pc" "$pt" "$rc" "$rt" "$ic" "$it" "$ric" "$rit" <<'PY'
import sys
t, sc, st, pc, pt, rc, rt, ic, it, ric, rit = sys.argv[1:]
f = float
print(f"{t:<7} | {f(sc):6.1f} / {f(st):6.1f} = {f(sc)/f(st):4.2f}x | {pc} | {pt} | {f(rc):5.0f} / {f(rt):5.0f} | "
      f"{f(ic):6.1f} / {f(it):6.1f} = {f(ic)/f(it):4.2f}x | {f(ric):5.0f} / {f(rit):5.0f}")
PY
done

# Inference against ONNX Runtime (fp32 and int8) and PyTorch on sorted batches, MiniLM and the
# BERT-base shape, with the accuracy cost of int8 and the machine's fp32 ceiling.
scripts/bench-ort.sh "${threads[@]}"
