#!/usr/bin/env bash
# Scale-out sizing: rows/s of MiniLM on the CPU through each way catbert scores a batch, on the
# same 45,000 product descriptions (Training_Data.csv), one run each, whole processes:
#   infer     — `catbert infer` on a Parquet file, one process, 2 threads;
#   stream    — the streaming worker, an Arrow IPC stream piped through `--file - --out -`;
#   pipeline  — `catbert pipeline`, one client scoring the file with its champion (the champion
#               made by a first run: 1 epoch on the bundled sample; only the second run, which
#               scores, is timed);
#   spark     — scripts/spark-infer.sh in local[2]: 2 partitions, 2 tasks at once, a 1-thread
#               worker each (JVM start-up included).
# Each way runs REPEATS times, the four ways interleaved (so a drift of the machine's speed hits
# all four alike); the table gives the median: seconds, rows/s, rows/s per core, and each
# against `infer`, with every run's seconds.
# Usage: scripts/bench-scale.sh [ROWS, default all 45,000] [REPEATS, default 3]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
rows=${1:-45000}
repeats=${2:-3}
spy=$(scripts/spark-env.sh)
scripts/fetch-model.sh >/dev/null
bash scripts/make-oracle.sh >/dev/null
cargo build --release --locked --quiet
bin=$root/target/release/catbert
model=target/oracle/minilm-cls   # MiniLM with a 5-class head: the cost of a fine-tuned one
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CATBERT_HOME=$work/home

"$spy" - "$work" "$rows" <<'EOF2'
import sys, pyarrow as pa, pyarrow.csv as pc, pyarrow.parquet as pq, pyarrow.ipc as ipc
out, n = sys.argv[1], int(sys.argv[2])
t = pc.read_csv("datasets/products/Training_Data.csv").slice(0, n)
t = pa.table({"id": pa.array(range(t.num_rows), pa.int64()),
              "product_description": t.column("product_description")})
pq.write_table(t, f"{out}/products.parquet")
with ipc.new_stream(f"{out}/products.arrows", t.schema) as w:
    for b in t.to_batches(max_chunksize=2048):
        w.write_batch(b)
print(f"{t.num_rows} rows", file=sys.stderr)
EOF2
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }

mkdir -p "$work/new/2026-01-02"
cp "$work/products.parquet" "$work/new/2026-01-02/"
cat >"$work/clients.toml" <<EOF2
output = "$work/predictions"
[defaults]
model = "models/all-MiniLM-L6-v2"
epochs = 1
[clients.bench]
train = "datasets/products-sample/train.csv"
text_col = "product_description"
label_col = "Category"
score = "$work/new/{date}"
key_cols = ["id"]
EOF2
mkdir -p "$work/new/2026-01-01"   # day 1 trains the champion and has nothing to score
"$bin" pipeline --config "$work/clients.toml" --date 2026-01-01 -q >/dev/null

s_infer=() s_stream=() s_pipeline=() s_spark=()
for r in $(seq "$repeats"); do
  echo "== run $r of $repeats: infer" >&2
  rm -f "$work/infer.parquet"
  t0=$(now)
  "$bin" infer --model "$model" --file "$work/products.parquet" --out "$work/infer.parquet" --long \
    --key-cols id --text-col product_description --threads 2 -q 2>/dev/null
  s_infer+=("$(since "$t0")")

  echo "== run $r of $repeats: stream" >&2
  t0=$(now)
  "$bin" infer --model "$model" --file - --format arrow --long --key-cols id \
    --text-col product_description --threads 2 -q \
    <"$work/products.arrows" >"$work/stream.arrows"
  s_stream+=("$(since "$t0")")

  echo "== run $r of $repeats: pipeline" >&2
  rm -rf "$work/predictions/client=bench/date=2026-01-02"
  t0=$(now)
  "$bin" pipeline --config "$work/clients.toml" --date 2026-01-02 -q >/dev/null
  s_pipeline+=("$(since "$t0")")

  echo "== run $r of $repeats: spark local[2]" >&2
  t0=$(now)
  CATBERT_BIN=$bin scripts/spark-infer.sh "$work/products.parquet" "$work/spark" --model "$model" \
    --text-col product_description --key-cols id --partitions 2 --threads-per-task 1 \
    --master 'local[2]' 2>"$work/spark.log" || { tail -5 "$work/spark.log"; exit 1; }
  s_spark+=("$(since "$t0")")
done

join() { local IFS=,; echo "$*"; }
"$spy" - "$rows" "$(join "${s_infer[@]}")" "$(join "${s_stream[@]}")" "$(join "${s_pipeline[@]}")" \
  "$(join "${s_spark[@]}")" <<'EOF2'
import os, statistics, sys
n = int(sys.argv[1])
names = ["infer (1 process, 2 threads)", "stream (Arrow IPC through stdin/stdout)",
         "pipeline (one client, scoring run)", "spark local[2] (2 tasks × 1 thread)"]
runs = [[float(x) for x in a.split(",")] for a in sys.argv[2:]]
secs = [statistics.median(r) for r in runs]
cpu = os.popen("grep -m1 'model name' /proc/cpuinfo").read().split(":")[-1].strip()
print(f"{n} product descriptions, MiniLM-L6 (5 classes), 2 cores ({cpu}), "
      f"median of {len(runs[0])} interleaved runs")
print("| way | seconds | rows/s | rows/s per core | vs infer | every run (s) |")
print("| --- | ---: | ---: | ---: | ---: | --- |")
for name, s, r in zip(names, secs, runs):
    print(f"| {name} | {s:.1f} | {n / s:.0f} | {n / s / 2:.0f} | {secs[0] / s:.2f}× | "
          f"{', '.join(f'{x:.1f}' for x in r)} |")
EOF2
