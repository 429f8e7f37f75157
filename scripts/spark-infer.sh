#!/usr/bin/env bash
# Score a Parquet dataset with catbert on Apache Spark (scripts/spark_infer.py through
# spark-submit): every partition streams through a catbert worker on its executor.
#   scripts/spark-infer.sh INPUT OUTPUT --model M [--text-col C] [--wide] [--top-k K]
#       [--key-cols A,B] [--partitions N] [--date YYYY-MM-DD] [--master URL] [--shared-path]
# INPUT: Parquet file or folder; OUTPUT: Parquet folder, partitioned by date (and client).
# Master: local[2] unless SPARK_MASTER or --master says otherwise (local[N,F] lets a failed
# task be retried F-1 times in local mode). The binary: CATBERT_BIN, else
# target/release/catbert, else `catbert` on PATH. First use sets up the Spark venv
# (scripts/spark-env.sh: pyspark 4.3.0, outside the repository).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=$("$root/scripts/spark-env.sh")
master=${SPARK_MASTER:-local[2]}
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --master) master=$2; shift 2 ;;
    --master=*) master=${1#--master=}; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
bin=${CATBERT_BIN:-}
if [ -z "$bin" ]; then
  if [ -x "$root/target/release/catbert" ]; then
    bin=$root/target/release/catbert
  else
    bin=$(command -v catbert || true)
  fi
fi
if [ -z "$bin" ]; then
  echo "error: no catbert binary: build it (cargo build --release) or set CATBERT_BIN" >&2
  exit 1
fi
venv_bin=$(dirname "$py")
export PYSPARK_PYTHON=$py PYSPARK_DRIVER_PYTHON=$py
# The job's one-line error, repeated after Spark's own shutdown output so it is the last line.
error_file=$(mktemp)
trap 'rm -f "$error_file"' EXIT
export CATBERT_SPARK_ERROR_FILE=$error_file
status=0
"$venv_bin/spark-submit" --master "$master" \
  --conf spark.ui.enabled=false \
  --conf spark.sql.execution.arrow.maxRecordsPerBatch=2048 \
  --driver-java-options "-Dlog4j2.configurationFile=file:$root/scripts/spark-log4j2.properties" \
  "$root/scripts/spark_infer.py" "${args[@]}" --catbert "$bin" || status=$?
if [ -s "$error_file" ]; then
  cat "$error_file" >&2
fi
exit "$status"
