#!/usr/bin/env bash
# Score a Parquet dataset with catbert on Apache Spark (scripts/spark_infer.py through
# spark-submit): every partition streams through a catbert worker on its executor.
#   scripts/spark-infer.sh INPUT OUTPUT --model M [--text-col C] [--wide] [--top-k K]
#       [--key-cols A,B] [--partitions N] [--date YYYY-MM-DD] [--master URL] [--shared-path]
# INPUT: Parquet file or folder; OUTPUT: Parquet folder, partitioned by date (and client).
# Master: local[2] unless SPARK_MASTER or --master says otherwise (local[N,F] lets a failed
# task be retried F-1 times in local mode). The binary: CATBERT_BIN, else
# target/release/catbert, else `catbert` on PATH. First use sets up the Spark venv
# (scripts/spark-env.sh: pyspark 4.3.0, outside the repository) and its class-data archive.
# The driver JVM starts from that archive (-XX:SharedArchiveFile) and, in local mode, with the
# quick JIT only (-XX:TieredStopAtLevel=1): both cut the job's fixed start-up, not the rows'
# cost, which is catbert's. CATBERT_SPARK_JAVA_OPTS replaces those two options.
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
java_opts=${CATBERT_SPARK_JAVA_OPTS-}
if [ -z "${CATBERT_SPARK_JAVA_OPTS+set}" ]; then
  cds=$(cat "$venv_bin/../.catbert-spark-cds" 2>/dev/null || true)
  if [ -n "$cds" ] && [ -s "$cds" ]; then
    java_opts="-XX:SharedArchiveFile=$cds -Xlog:cds=off -Xlog:cds+dynamic=off"
  fi
  case $master in local*) java_opts="$java_opts -XX:TieredStopAtLevel=1" ;; esac
fi
export PYSPARK_PYTHON=$py PYSPARK_DRIVER_PYTHON=$py
# The job's one-line error, repeated after Spark's own shutdown output so it is the last line.
error_file=$(mktemp)
trap 'rm -f "$error_file"' EXIT
export CATBERT_SPARK_ERROR_FILE=$error_file
status=0
"$venv_bin/spark-submit" --master "$master" \
  --conf spark.ui.enabled=false \
  --conf spark.sql.execution.arrow.maxRecordsPerBatch=2048 \
  --driver-java-options "-Dlog4j2.configurationFile=file:$root/scripts/spark-log4j2.properties $java_opts" \
  "$root/scripts/spark_infer.py" "${args[@]}" --catbert "$bin" || status=$?
if [ -s "$error_file" ]; then
  cat "$error_file" >&2
fi
exit "$status"
