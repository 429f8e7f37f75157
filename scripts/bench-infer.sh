#!/usr/bin/env bash
# Inference speed, catbert vs PyTorch + transformers (scripts/torch_infer.py), on the
# same checkpoint (all-MiniLM-L6-v2 with a 5-class head, from the oracle) and the 4,688 rows of
# Query_and_Validation_Data.csv, same thread count, one run each, printed as a ratio.
# Usage: scripts/bench-infer.sh [THREADS] [BATCH]     (default 2 threads, batch 64)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
threads=${1:-2}
batch=${2:-64}
data=datasets/products/Query_and_Validation_Data.csv
[ -f "$data" ] || { echo "error: $data missing: it ships with the repository, restore datasets/products/ from git" >&2; exit 1; }
bash scripts/make-oracle.sh >/dev/null
py=$(scripts/py-oracle.sh)
cargo build --release --quiet
model=target/oracle/minilm-cls
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Peak RSS of a command, in MiB, via getrusage of the child.
peak() { "$py" -c 'import resource,subprocess,sys; subprocess.run(sys.argv[1:],check=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024)' "$@"; }

ours_rss=$(peak target/release/catbert infer --model "$model" --file "$data" --text-col product_description \
  --out "$tmp/ours.csv" --threads "$threads" --batch-size "$batch" --device cpu 2>"$tmp/ours.log" | tail -1)
ours=$(grep -o '([0-9.]* rows/s)' "$tmp/ours.log" | tr -d '(' | cut -d' ' -f1)
torch_rss=$(peak "$py" scripts/torch_infer.py --model-dir "$model" --input "$data" \
  --out "$tmp/torch.csv" --threads "$threads" --batch-size "$batch" --json "$tmp/torch.json" 2>"$tmp/torch.log" | tail -1)
torch=$("$py" -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["rows_per_s"],1))' "$tmp/torch.json")
printf '\ninference, all-MiniLM-L6-v2, 4688 rows, %s threads, batch %s (%s)\n' "$threads" "$batch" "$(date -u +%F)"
printf '%-10s %10s %14s\n' tool 'rows/s' 'peak RSS MiB'
printf '%-10s %10s %14.0f\n' catbert "$ours" "$ours_rss"
printf '%-10s %10s %14.0f\n' pytorch "$torch" "$torch_rss"
"$py" -c 'import sys; print(f"ratio catbert/pytorch: {float(sys.argv[1])/float(sys.argv[2]):.2f}x")' "$ours" "$torch"
