#!/usr/bin/env bash
# The options beyond the reference recipe, measured: catbert finetune with each of
#   reference         the reference's recipe (balanced class weights, random batches)
#   balanced-sampler  --sampler balanced (class weights none)
#   smoothing-0.1     --label-smoothing 0.1
#   llrd-0.8          --layer-lr-decay 0.8
# (others by --variants: smoothing-X, llrd-X, lr-X, lr-auto (the lr-find suggestion), parts
# joined by + as in llrd-0.8+lr-1e-4)
# over seeds, on a data set, scored on its evaluation rows at the kept epoch (chosen by the
# hold-out f1_min); prints per-run rows and mean ± std per variant, and beside them the epoch
# the same run keeps with --near-tie Z (default 1), re-derived by scripts/near_tie.py (the
# rule only picks among epochs, so the runs need not be repeated).
#
# Data sets (never used to tune an option's default value; both are public):
#   products  N rows drawn (seeded) from datasets/products/Training_Data.csv, scored on the 938
#             human-verified queries (default N 10000: about 3 min per run on 2 cores)
#   spam      the SpamAssassin subjects of scripts/fetch-spam.sh (ham / hard_ham / spam),
#             trained on train.csv, scored on test.csv (about 1.5 min per run)
#
# Usage: scripts/quality-options.sh products|spam [--rows N] [--threads N] [--variants "a b"]
#        [--near-tie Z] SEED...
# Runs already finished under target/quality-options/ are reused.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
set_name=${1:?usage: scripts/quality-options.sh products|spam [--rows N] [--threads N] SEED...}
shift
rows=10000 threads=2 seeds=() variants="reference balanced-sampler smoothing-0.1 llrd-0.8" near_tie=1
while [ $# -gt 0 ]; do
  case $1 in
    --rows) rows=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --variants) variants=$2; shift 2 ;;
    --near-tie) near_tie=$2; shift 2 ;;
    *) seeds+=("$1"); shift ;;
  esac
done
[ ${#seeds[@]} -gt 0 ] || seeds=(42 43 44)
out=target/quality-options
mkdir -p "$out"
bash scripts/fetch-model.sh >/dev/null
cargo build --release --quiet
case $set_name in
  products)
    train=$out/products-$rows.csv
    if [ ! -f "$train" ]; then
      python3 - datasets/products/Training_Data.csv "$train" "$rows" <<'PY'
import csv, random, sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(src, newline="", encoding="utf-8") as f:
    r = csv.reader(f)
    head, rows = next(r), list(r)
random.Random(7).shuffle(rows)
with open(dst + ".tmp", "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(head)
    w.writerows(rows[:n])
import os; os.replace(dst + ".tmp", dst)
PY
    fi
    data=(--train "$train" --text-col product_description --label-col Category
          --eval datasets/products/Query_and_Validation_Data.csv --eval-label-col HUMAN_VERIFIED_Category)
    tag=products-$rows ;;
  spam)
    scripts/fetch-spam.sh >/dev/null
    d=$HOME/.cache/catbert/datasets/spam-subjects
    data=(--train "$d/train.csv" --eval "$d/test.csv")
    tag=spam ;;
  *) echo "error: data set must be products or spam, not $set_name" >&2; exit 2 ;;
esac

# A variant's flags; parts joined by "+" combine (llrd-0.8+lr-1e-4).
flags_of() {
  local part
  for part in ${1//+/ }; do
    case $part in
      reference) ;;
      balanced-sampler) echo --sampler balanced ;;
      smoothing-*) echo --label-smoothing "${part#smoothing-}" ;;
      llrd-*) echo --layer-lr-decay "${part#llrd-}" ;;
      lr-auto) echo --lr auto ;;
      lr-*) echo --lr "${part#lr-}" ;;
      *) echo "error: unknown variant $part" >&2; exit 2 ;;
    esac
  done
}

for s in "${seeds[@]}"; do
  for v in $variants; do
    ck=$out/$tag-$v-$s
    [ -f "$ck/catbert.json" ] && [ ! -d "$ck/run" ] && continue
    echo "== $tag $v seed $s" >&2
    # shellcheck disable=SC2046
    target/release/catbert finetune "${data[@]}" --model models/all-MiniLM-L6-v2 --epochs 2 \
      --metric f1_min --seed "$s" --threads "$threads" --out "$ck" --overwrite --quiet \
      $(flags_of "$v") >"$ck.log" 2>&1 ||
      { echo "error: $ck failed: $(tail -1 "$ck.log")" >&2; exit 1; }
  done
done

python3 - "$out" "$tag" "$variants" "$near_tie" "${seeds[@]}" <<'PY'
import json, statistics as st, sys
sys.path.insert(0, "scripts")
from near_tie import kept
out, tag, variants, z, seeds = sys.argv[1], sys.argv[2], sys.argv[3].split(), float(sys.argv[4]), sys.argv[5:]
keys = ("accuracy", "f1_weighted", "f1_macro", "f1_min")
print(f"{tag}: evaluation rows at the kept epoch (hold-out f1_min), all-MiniLM-L6-v2, 2 epochs;")
print(f"the last three columns: the same runs re-picked with --near-tie {z:g} (scripts/near_tie.py)")
print(f"| variant | seed | kept | accuracy | weighted F1 | macro F1 | f1_min | kept (near tie) | weighted F1 | f1_min |")
print("|---|---|---|---|---|---|---|---|---|---|")
summary = []
sd = lambda c: st.stdev(c) if len(c) > 1 else 0.0
for v in variants:
    vals = []
    for s in seeds:
        d = f"{out}/{tag}-{v}-{s}"
        best = json.load(open(f"{d}/catbert.json"))["best_epoch"]
        epochs = json.load(open(f"{d}/metrics.json"))
        at = lambda k: next(e for e in epochs if e["epoch"] == k)["eval"]
        near = kept(epochs, "f1_min", z) if all("selection_se" in e for e in epochs[1:]) else best
        row = [at(best)[k] for k in keys] + [at(near)[k] for k in ("f1_weighted", "f1_min")]
        vals.append(row)
        print(f"| {v} | {s} | {best} | " + " | ".join(f"{x:.4f}" for x in row[:4])
              + f" | {near} | " + " | ".join(f"{x:.4f}" for x in row[4:]) + " |")
    cols = list(zip(*vals))
    cells = [f"{st.mean(c):.4f} ± {sd(c):.4f}" for c in cols]
    summary.append(f"| **{v}** | mean ± std of {len(vals)} | | " + " | ".join(cells[:4])
                   + " | | " + " | ".join(cells[4:]) + " |")
print("\n".join(summary))
PY
