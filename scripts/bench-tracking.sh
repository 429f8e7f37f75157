#!/usr/bin/env bash
# What run tracking and the registry cost, measured on one machine in one go:
#   1. the bundled sample job (configs/products-sample.toml: all-MiniLM-L6-v2, 3,000 rows,
#      2 epochs, the 600 queries as --eval) with --no-tracking, with the local registry, and
#      with a real MLflow server (3.17.2 from the oracle venv on 127.0.0.1, SQLite store,
#      artifact proxy), the last two registering and gating the result;
#   2. `catbert infer` on the bundled queries from the checkpoint folder, from
#      models:/NAME@champion in the local registry, and from MLflow (first call downloads the
#      version into the cache, the second reuses it).
# Usage: scripts/bench-tracking.sh [ROWS]   (ROWS: train on the first ROWS rows only, for a
# quick look; prints a table of wall seconds)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
rows=${1:-}
py=$("$root/scripts/py-oracle.sh")
scripts/fetch-model.sh >/dev/null
cargo build --release --locked --quiet
bin=$root/target/release/catbert
work=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill -- "-$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
subset=()
if [ -n "$rows" ]; then
  head -n $((rows + 1)) datasets/products-sample/train.csv >"$work/train.csv"
  subset=(--train "$work/train.csv")
fi
queries=datasets/products-sample/queries.csv
export CATBERT_HOME=$work/home
unset MLFLOW_TRACKING_URI

port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# No GenAI job runner (its workers would take CPU from the runs measured).
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid "$py" -m mlflow server --host 127.0.0.1 --port "$port" --workers 1 \
  --backend-store-uri "sqlite:///$work/mlflow.db" --artifacts-destination "$work/artifacts" \
  >"$work/mlflow.log" 2>&1 &
server_pid=$!
uri=http://127.0.0.1:$port
for _ in $(seq 600); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.2
done

seconds() { # wall seconds of a command, its output kept in $work/last.log
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >"$work/last.log" 2>&1 || { cat "$work/last.log"; exit 1; }
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
}
train() { # $1 = output name, rest = extra flags
  local out=$1
  shift
  "$bin" finetune --config configs/products-sample.toml "${subset[@]}" --out "$work/$out" -q "$@"
}
infer() {
  "$bin" infer --model "$1" --file "$queries" --text-col product_description \
    --out "$work/pred.csv" --overwrite -q "${@:2}"
}

# Warm-up (not measured): the model and the binary into the page cache.
head -n 201 datasets/products-sample/train.csv >"$work/warm.csv"
"$bin" finetune --train "$work/warm.csv" --model models/all-MiniLM-L6-v2 --epochs 1 \
  --text-col product_description --label-col Category --out "$work/warm" --no-tracking -q

printf '%-52s %8s\n' "what (${rows:-3000} rows, 2 epochs; $(nproc) cores)" seconds
printf '%-52s %8.2f\n' "finetune --no-tracking" "$(seconds train plain --no-tracking)"
printf '%-52s %8.2f\n' "finetune, local registry, --register shop" \
  "$(seconds train local --register shop --promote-if 'accuracy>=0')"
printf '%-52s %8.2f\n' "finetune, MLflow, --register shop" \
  "$(seconds train mlflow --register shop --promote-if 'accuracy>=0' --tracking-uri "$uri")"
printf '%-52s %8.2f\n' "infer, checkpoint folder" "$(seconds infer "$work/plain")"
printf '%-52s %8.2f\n' "infer, models:/shop@champion (local)" \
  "$(seconds infer models:/shop@champion)"
rm -rf "$CATBERT_HOME/cache" # the promotion check cached it: download it again
printf '%-52s %8.2f\n' "infer, models:/shop@champion (MLflow, download)" \
  "$(seconds infer models:/shop@champion --tracking-uri "$uri")"
printf '%-52s %8.2f\n' "infer, models:/shop@champion (MLflow, cached)" \
  "$(seconds infer models:/shop@champion --tracking-uri "$uri")"

# What resolving a reference adds: a 3-row input, best of 5, folder vs models:/ (cached).
head -n 4 "$queries" >"$work/three.csv"
best() { # best of 5 wall seconds
  local b=999 t
  for _ in 1 2 3 4 5; do
    t=$(seconds "$@")
    b=$(awk -v a="$b" -v t="$t" 'BEGIN { print (t < a ? t : a) }')
  done
  echo "$b"
}
small() {
  "$bin" infer --model "$1" --file "$work/three.csv" --text-col product_description \
    --out "$work/three.pred.csv" --overwrite -q "${@:2}"
}
printf '%-52s %8.3f\n' "infer 3 rows, checkpoint folder (best of 5)" "$(best small "$work/plain")"
printf '%-52s %8.3f\n' "infer 3 rows, models:/shop@champion local (best of 5)" \
  "$(best small models:/shop@champion)"
printf '%-52s %8.3f\n' "infer 3 rows, models:/shop@champion MLflow, cached" \
  "$(best small models:/shop@champion --tracking-uri "$uri")"
