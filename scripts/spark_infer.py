"""Batch scoring on Apache Spark with catbert on every executor.

Each partition's Arrow record batches stream through one long-lived catbert worker process
(`catbert infer --file - --format arrow --out -`) by `DataFrame.mapInArrow`: a writer thread
feeds the worker's stdin while the task reads its stdout, so neither pipe fills up. The
binary and the model folder go to the executors with Spark's file distribution (`addFile`),
or are used in place with --shared-path. Output: Parquet partitioned by date (and client),
long (key columns, row_id, rank, category, probability) or wide (--wide: every input column,
category_i, probability_i), the layout of `catbert pipeline`. A failing worker fails its task
with catbert's error line (Spark retries it); Spark's output commit keeps only one attempt of
each task, so a retried task never duplicates rows.

Run through scripts/spark-infer.sh (which sets up the environment); as a module:
    spark-submit --master local[2] scripts/spark_infer.py INPUT OUTPUT --model M --catbert BIN
"""

import argparse
import datetime
import os
import re
import subprocess
import sys
import threading

import pyarrow as pa
from pyspark import SparkFiles, TaskContext
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T


def parse_args(argv):
    p = argparse.ArgumentParser(prog="spark-infer", description=__doc__.split("\n")[0])
    p.add_argument("input", help="Parquet file or folder")
    p.add_argument("output", help="Parquet folder (partitions by date, and client when present)")
    p.add_argument("--model", required=True, help="catbert checkpoint folder")
    p.add_argument("--catbert", required=True, help="the catbert binary")
    p.add_argument("--text-col", default="text")
    p.add_argument("--key-cols", default=None,
                   help="columns carried into the long layout (default: every column but the text)")
    p.add_argument("--wide", action="store_true", help="one row per input row")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64, help="rows per catbert forward pass")
    p.add_argument("--threads-per-task", type=int, default=1,
                   help="math threads of each worker (one worker per running task)")
    p.add_argument("--date", default=None,
                   help="date partition when the input has no `date` column (default: today, UTC)")
    p.add_argument("--partitions", type=int, default=0,
                   help="repartition the input into N partitions first (0: as read)")
    p.add_argument("--shared-path", action="store_true",
                   help="the binary and model are at the same path on every executor: do not ship them")
    p.add_argument("--fail-once", default=None, help=argparse.SUPPRESS)  # test hook: marker file
    return p.parse_args(argv)


def output_schema(schema, args, keys):
    """The Spark schema of the worker's output for an input schema."""
    if args.wide:
        fields = list(schema.fields)
        fields += [T.StructField(f"category_{i}", T.StringType(), False) for i in range(1, args.top_k + 1)]
        fields += [T.StructField(f"probability_{i}", T.FloatType(), False) for i in range(1, args.top_k + 1)]
    else:
        fields = [schema[k] for k in keys] + [
            T.StructField("row_id", T.LongType(), False),
            T.StructField("rank", T.IntegerType(), False),
            T.StructField("category", T.StringType(), False),
            T.StructField("probability", T.FloatType(), False),
        ]
    return T.StructType(fields)


def worker_command(binary, model, args, keys):
    cmd = [binary, "infer", "--model", model, "--file", "-", "--format", "arrow", "--out", "-",
           "--text-col", args.text_col, "--top-k", str(args.top_k), "--batch-size", str(args.batch_size),
           "--threads", str(args.threads_per_task), "-q"]
    if not args.wide:
        cmd += ["--long"]
        if keys:
            cmd += ["--key-cols", ",".join(keys)]
    return cmd


def error_line(stderr_text):
    """catbert's one error line, else the end of what it printed."""
    lines = [l for l in stderr_text.splitlines() if l.strip()]
    for l in reversed(lines):
        if l.startswith("error: "):
            return l
    return " / ".join(lines[-3:]) or "no output"


def make_scorer(args, keys, binary_name, model_name):
    fail_once = args.fail_once

    def score(batches):
        batches = iter(batches)
        first = next(batches, None)
        if first is None:
            return
        if args.shared_path:
            binary, model = binary_name, model_name
        else:
            binary, model = SparkFiles.get(binary_name), SparkFiles.get(model_name)
            if not os.access(binary, os.X_OK):
                os.chmod(binary, 0o755)
        proc = subprocess.Popen(worker_command(binary, model, args, keys), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stderr = []
        drain = threading.Thread(target=lambda: stderr.append(proc.stderr.read().decode("utf-8", "replace")))
        drain.start()

        def feed():
            try:
                with pa.ipc.new_stream(proc.stdin, first.schema) as w:
                    w.write_batch(first)
                    for b in batches:
                        w.write_batch(b)
            except (BrokenPipeError, OSError, pa.ArrowInvalid):
                pass  # the worker stopped reading: its stderr says why
            finally:
                try:
                    proc.stdin.close()
                except OSError:
                    pass

        writer = threading.Thread(target=feed)
        writer.start()
        inject = fail_once is not None and TaskContext.get().partitionId() == 0 and not os.path.exists(fail_once)
        try:
            try:
                reader = pa.ipc.open_stream(proc.stdout)
            except pa.ArrowInvalid:
                reader = None
            if reader is not None:
                for out in reader:
                    yield out
                    if inject:
                        open(fail_once, "w").close()
                        raise RuntimeError("injected failure (--fail-once): this task fails once")
        finally:
            if inject:
                proc.kill()
            proc.wait()
            writer.join()
            drain.join()
        if proc.returncode != 0:
            raise RuntimeError(f"catbert worker failed (exit {proc.returncode}): {error_line(''.join(stderr))}")

    return score


def main(argv):
    args = parse_args(argv)
    spark = SparkSession.builder.appName("catbert-infer").getOrCreate()
    spark.conf.set("spark.sql.sources.partitionOverwriteMode", "dynamic")
    df = spark.read.parquet(args.input)
    if args.text_col not in df.columns:
        raise SystemExit(f"error: {args.input}: no column {args.text_col!r} (columns: {', '.join(df.columns)})")
    if "date" not in df.columns:
        day = args.date or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
        df = df.withColumn("date", F.lit(day))
    if args.partitions > 0:
        df = df.repartition(args.partitions)
    keys = args.key_cols.split(",") if args.key_cols else [c for c in df.columns if c != args.text_col]
    for k in keys:
        if k not in df.columns:
            raise SystemExit(f"error: --key-cols: no column {k!r} in {args.input} (columns: {', '.join(df.columns)})")
    partition_by = [c for c in ("client", "date") if c in df.columns and (args.wide or c in keys)]
    if args.shared_path:
        binary_name, model_name = os.path.abspath(args.catbert), os.path.abspath(args.model)
    else:
        spark.sparkContext.addFile(os.path.abspath(args.catbert))
        spark.sparkContext.addFile(os.path.abspath(args.model), recursive=True)
        binary_name = os.path.basename(os.path.abspath(args.catbert))
        model_name = os.path.basename(os.path.abspath(args.model))
    scored = df.mapInArrow(make_scorer(args, keys, binary_name, model_name), output_schema(df.schema, args, keys))
    scored.write.mode("overwrite").partitionBy(*partition_by).parquet(args.output)
    spark.stop()


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except SystemExit as e:
        if isinstance(e.code, str) and os.environ.get("CATBERT_SPARK_ERROR_FILE"):
            with open(os.environ["CATBERT_SPARK_ERROR_FILE"], "w") as f:
                f.write(e.code + "\n")
        raise
    except Exception as e:  # one line for the user, last; Spark has logged the rest
        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()
        text = str(e)
        found = re.search(r"catbert worker failed \(exit \d+\): [^\n]*", text) or re.search(
            r"(?<=SparkException: )\[[A-Z_.]+\] [^\n]*", text)
        first = text.splitlines()[0] if text else type(e).__name__
        line = f"error: {found.group(0) if found else first}"
        print(line, file=sys.stderr)
        if os.environ.get("CATBERT_SPARK_ERROR_FILE"):
            with open(os.environ["CATBERT_SPARK_ERROR_FILE"], "w") as f:
                f.write(line + "\n")
        sys.exit(1)
