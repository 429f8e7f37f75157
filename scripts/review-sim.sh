#!/usr/bin/env bash
# Does the review queue choose better rows to verify than chance? A simulation on the product
# data:
#   - the test set is the 938 human-verified queries (HUMAN_VERIFIED_Category);
#   - the pool is POOL rows (seeded) of Training_Data.csv that are neither in the bundled
#     3,000-row sample nor among the test texts, their labels hidden until "verified";
#   - a base model is fine-tuned on the bundled sample (MiniLM, 2 epochs, f1_min, --eval = the
#     test set, which picks nothing: the hold-out picks the epoch);
#   - N pool rows are verified (their labels looked up): the N the base model's review queue
#     lists (`infer --review-out --review-budget N`), and N at random (DRAWS draws); each set
#     goes into a feedback store and a fresh fine-tune on sample + feedback (same seed);
#   - every model is scored on the test set: f1_min, weighted F1, accuracy.
# Every arm is repeated for TRAIN_SEEDS fine-tune seeds (the base model, and so its review
# queue, changes with the seed). Prints one row per run, then mean ± standard deviation per arm.
# Usage: scripts/review-sim.sh [N=200] [DRAWS=2] [TRAIN_SEEDS=3] [POOL=10000]
# About 80 s per fine-tune and 45 s per pool of 10,000 on 2 cores: TRAIN_SEEDS × (2 + DRAWS)
# fine-tunes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
n=${1:-200}
draws=${2:-2}
train_seeds=${3:-3}
pool_n=${4:-10000}
py=$("$root/scripts/py-oracle.sh")
scripts/fetch-model.sh >/dev/null
cargo build --release --locked --quiet
bin=$root/target/release/catbert
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CATBERT_HOME=$work/home

"$py" - "$work" "$pool_n" <<'EOF'
import csv, random, sys
out, pool_n = sys.argv[1], int(sys.argv[2])
read = lambda p: list(csv.DictReader(open(p, newline="")))
sample = {r["product_description"] for r in read("datasets/products-sample/train.csv")}
test = [r for r in read("datasets/products/Query_and_Validation_Data.csv")
        if r["HUMAN_VERIFIED_Category"].strip()]
seen = sample | {r["product_description"] for r in test}
pool = [r for r in read("datasets/products/Training_Data.csv") if r["product_description"] not in seen]
random.Random(7).shuffle(pool)
pool = pool[:pool_n]
for name, rows, label in (("pool", pool, "Category"), ("test", test, "HUMAN_VERIFIED_Category")):
    with open(f"{out}/{name}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["product_description", "label"])
        w.writerows((r["product_description"], r[label]) for r in rows)
print(f"{len(pool)} pool rows, {len(test)} test rows", file=sys.stderr)
EOF

train() { # $1 = out folder, rest = extra flags
  local out=$1
  shift
  "$bin" finetune --train datasets/products-sample/train.csv --text-col product_description \
    --label-col Category --model models/all-MiniLM-L6-v2 --epochs 2 --metric f1_min \
    --eval "$work/test.csv" --eval-label-col label --out "$work/$out" --no-tracking -q \
    --seed "$seed" "$@" \
    >/dev/null 2>"$work/$out.log" || { cat "$work/$out.log"; exit 1; }
}
score() { # the kept epoch's scores on the test set
  "$py" -c '
import json, sys
m = json.load(open(sys.argv[1] + "/catbert.json"))
e = next(r for r in m["epochs"] if r["epoch"] == m["best_epoch"])["eval"]
print("%.4f %.4f %.4f" % (e["f1_min"], e["f1_weighted"], e["accuracy"]))' "$work/$1"
}

verify() { # $1 = name, $2 = file of chosen row ids (one per line): feedback store from pool labels
  "$py" - "$work/pool.csv" "$2" "$work/$1.csv" <<'EOF'
import csv, sys
pool = list(csv.DictReader(open(sys.argv[1])))
ids = [int(l) for l in open(sys.argv[2]) if l.strip()]
w = csv.writer(open(sys.argv[3], "w", newline=""))
w.writerow(["text", "label"])
w.writerows((pool[i]["product_description"], pool[i]["label"]) for i in ids)
EOF
  "$bin" feedback add "$work/$1.csv" --label-col label --feedback "$work/fb-$1" -q 2>/dev/null
  train "$1" --feedback "$work/fb-$1" --feedback-eval 0
}

# The pool as a base model sees it: labels hidden (text column only).
"$py" -c '
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
w = csv.writer(open(sys.argv[2], "w", newline=""))
w.writerow(["text"]); w.writerows([r["product_description"]] for r in rows)' "$work/pool.csv" "$work/pool-unlabelled.csv"

results=$work/results.txt
: >"$results"
for seed in $(seq "$train_seeds"); do
  train "base$seed"
  "$bin" infer --model "$work/base$seed" --file "$work/pool-unlabelled.csv" --text-col text \
    --out "$work/pool$seed.pred.csv" --review-out "$work/review$seed.csv" --review-budget "$n" -q 2>/dev/null
  "$py" -c '
import csv, sys
print("\n".join(r["row_id"] for r in csv.DictReader(open(sys.argv[1]))))' "$work/review$seed.csv" >"$work/review$seed.ids"
  verify "reviewed$seed" "$work/review$seed.ids"
  echo "none $seed - $(score "base$seed")" >>"$results"
  echo "queue $seed - $(score "reviewed$seed")" >>"$results"
  for draw in $(seq "$draws"); do
    "$py" -c '
import random, sys
n_pool = sum(1 for _ in open(sys.argv[1])) - 1
print("\n".join(map(str, random.Random(int(sys.argv[3])).sample(range(n_pool), int(sys.argv[2])))))' \
      "$work/pool.csv" "$n" "$((seed * 100 + draw))" >"$work/random$seed-$draw.ids"
    verify "random$seed-$draw" "$work/random$seed-$draw.ids"
    echo "random $seed $draw $(score "random$seed-$draw")" >>"$results"
  done
  echo "fine-tune seed $seed done" >&2
done

"$py" - "$results" "$n" <<'EOF'
import statistics as st, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
names = {"none": "none (base model)", "queue": "the review queue", "random": "random rows"}
print(f"| rows verified ({sys.argv[2]} of the pool) | fine-tune seed | draw | f1_min | weighted F1 | accuracy |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for r in rows:
    print(f"| {names[r[0]]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} |")
print()
print("| arm | runs | f1_min mean ± sd | weighted F1 mean ± sd | accuracy mean ± sd |")
print("| --- | ---: | ---: | ---: | ---: |")
sd = lambda v: st.stdev(v) if len(v) > 1 else 0.0
for arm in ("none", "queue", "random"):
    got = [r for r in rows if r[0] == arm]
    cols = [[float(r[k]) for r in got] for k in (3, 4, 5)]
    print(f"| {names[arm]} | {len(got)} | " + " | ".join(f"{st.mean(v):.4f} ± {sd(v):.4f}" for v in cols) + " |")
EOF
