#!/usr/bin/env bash
# Quality over seeds, catbert vs PyTorch + transformers (scripts/torch_finetune.py):
# the product job (configs/products.toml: all-MiniLM-L6-v2, 2 epochs, --metric f1_min, the
# reference's hyperparameters) once per seed with each tool, then one table of the kept epoch's
# scores on the human-verified rows of the --eval file, per seed and as mean ± sample std.
# One run cannot decide a 0.01 bar: the seed moves the split, the head's init, dropout and the
# batch order, and the rarest class (45 rows) moves f1_min by 0.01–0.02 per row.
#
# Usage: scripts/quality-seeds.sh [--only catbert|torch|none] [--threads N] [--published]
#        [--near-tie Z] SEED...
# Runs already finished under target/quality/ are not run again, an interrupted catbert run goes
# on with --resume, two instances with --only can share the machine, and --only none just prints
# the table. --published takes PyTorch's seed 42 from scripts/results/products-minilm-2ep-cpu.json
# (the reference's published run of this same job, 2 threads, 2026-11-23) instead of running it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
only=both threads=2 published=0 near_tie=1 seeds=()
while [ $# -gt 0 ]; do
  case $1 in
    --only)
      case $2 in both|catbert|torch|none) only=$2 ;; *) echo "error: --only catbert|torch|none" >&2; exit 2 ;; esac
      shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --published) published=1; shift ;;
    --near-tie) near_tie=$2; shift 2 ;;
    *) seeds+=("$1"); shift ;;
  esac
done
[ ${#seeds[@]} -gt 0 ] || seeds=(42 43 44)
data=datasets/products
for f in "$data/Training_Data.csv" "$data/Query_and_Validation_Data.csv"; do
  [ -f "$f" ] || { echo "error: $f missing: it ships with the repository, restore datasets/products/ from git" >&2; exit 1; }
done
model=models/all-MiniLM-L6-v2
epochs=2
out=target/quality
mkdir -p "$out"
bash scripts/fetch-model.sh >/dev/null
py=$(scripts/py-oracle.sh)
case $only in both|catbert) cargo build --release --quiet ;; esac

# Epochs a catbert run has finished (catbert.json is rewritten after every epoch, so its
# presence alone does not mean the run is complete).
finished() { "$py" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$1/metrics.json" 2>/dev/null || echo 0; }

for s in "${seeds[@]}"; do
  ck=$out/catbert-$s
  if { [ "$only" = both ] || [ "$only" = catbert ]; } && [ "$(finished "$ck")" -lt "$epochs" ]; then
    echo "== catbert seed $s ($threads threads)" >&2
    resume=(); [ -d "$ck/run" ] && resume=(--resume)
    target/release/catbert finetune --config configs/products.toml --epochs "$epochs" --seed "$s" \
      --threads "$threads" --out "$ck" "${resume[@]}" --quiet >>"$ck.log" 2>&1
  fi
  if [ "$published" = 1 ] && [ "$s" = 42 ] && [ ! -f "$out/torch-$s.json" ]; then
    echo "== torch seed 42: the published run, scripts/results/products-minilm-2ep-cpu.json" >&2
    cp scripts/results/products-minilm-2ep-cpu.json "$out/torch-42.json"
  fi
  if { [ "$only" = both ] || [ "$only" = torch ]; } && [ ! -f "$out/torch-$s.json" ]; then
    echo "== torch seed $s ($threads threads)" >&2
    "$py" scripts/torch_finetune.py --train "$data/Training_Data.csv" \
      --text-col product_description --label-col Category --eval "$data/Query_and_Validation_Data.csv" \
      --eval-label-col HUMAN_VERIFIED_Category --model-dir "$model" --epochs "$epochs" --metric f1_min \
      --seed "$s" --threads "$threads" --out "$out/torch-$s.json.tmp" >"$out/torch-$s.log" 2>&1 ||
      { echo "error: PyTorch seed $s failed ($out/torch-$s.log): $(tail -1 "$out/torch-$s.log")" >&2; exit 1; }
    mv "$out/torch-$s.json.tmp" "$out/torch-$s.json"
  fi
done

"$py" - "$out" "$near_tie" "${seeds[@]}" <<'PY'
import json, os, statistics as st, sys
sys.path.insert(0, "scripts")
from near_tie import kept
out, z, seeds = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
keys = ("accuracy", "f1_weighted", "f1_macro", "f1_min")

def catbert(s, near=False):
    d = f"{out}/catbert-{s}"
    if not os.path.exists(f"{d}/catbert.json"):
        return None
    best = json.load(open(f"{d}/catbert.json"))["best_epoch"]
    epochs = json.load(open(f"{d}/metrics.json"))
    if near:
        if not all("selection_se" in e for e in epochs[1:]):
            return None
        best = kept(epochs, "f1_min", z)
    ep = next(e for e in epochs if e["epoch"] == best)
    return best, [ep["eval"][k] for k in keys]

def torch(s):
    f = f"{out}/torch-{s}.json"
    if not os.path.exists(f):
        return None
    d = json.load(open(f))
    best = d["best"]["epoch"]
    ep = next(e for e in d["epochs"] if e["epoch"] == best)
    return best, [ep["eval"][k] for k in keys]

print("human-verified rows, kept epoch (chosen by hold-out f1_min)")
print("| tool | seed | kept epoch | accuracy | weighted F1 | macro F1 | f1_min |")
print("|---|---|---|---|---|---|---|")
means = {}
near_name = f"catbert --near-tie {z:g}"
for name, get in (("catbert", catbert), (near_name, lambda s: catbert(s, True)), ("PyTorch", torch)):
    rows = [(s, r) for s in seeds if (r := get(s))]
    for s, (best, v) in rows:
        print(f"| {name} | {s} | {best} | " + " | ".join(f"{x:.4f}" for x in v) + " |")
    if len(rows) > 1:
        cols = list(zip(*(v for _, (_, v) in rows)))
        means[name] = [st.mean(c) for c in cols]
        print(f"| {name} | mean ± std of {len(rows)} | | "
              + " | ".join(f"{st.mean(c):.4f} ± {st.stdev(c):.4f}" for c in cols) + " |")
for name in ("catbert", near_name):
    if name in means and "PyTorch" in means:
        d = [a - b for a, b in zip(means[name], means["PyTorch"])]
        print(f"| {name} − PyTorch (means) | | | " + " | ".join(f"{x:+.4f}" for x in d) + " |")
PY
