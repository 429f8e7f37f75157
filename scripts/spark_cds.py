"""A small Spark job that loads the classes the catbert scoring job loads (Parquet read, a
round-robin repartition, mapInArrow through a Python worker, a date-partitioned Parquet write
with dynamic overwrite), run once by scripts/spark-env.sh under -XX:ArchiveClassesAtExit so the
JVM's class-data archive (AppCDS) of those classes is written; scripts/spark-infer.sh then
starts Spark with -XX:SharedArchiveFile, which halves the job's fixed start-up cost.

    spark-submit --master local[2] scripts/spark_cds.py WORK_DIR
"""

import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T


def main(work):
    src = os.path.join(work, "in.parquet")
    pq.write_table(pa.table({"id": pa.array(range(64), pa.int64()),
                             "text": pa.array([f"product {i}" for i in range(64)])}), src)
    spark = SparkSession.builder.appName("catbert-cds").getOrCreate()
    spark.conf.set("spark.sql.sources.partitionOverwriteMode", "dynamic")
    df = spark.read.parquet(src).withColumn("date", F.lit("2026-01-01")).repartition(2)
    schema = T.StructType([T.StructField("id", T.LongType()), T.StructField("date", T.StringType()),
                           T.StructField("row_id", T.LongType(), False),
                           T.StructField("rank", T.IntegerType(), False),
                           T.StructField("category", T.StringType(), False),
                           T.StructField("probability", T.FloatType(), False)])

    def ranks(batches):
        for b in batches:
            n = b.num_rows
            yield pa.record_batch([b.column("id"), b.column("date"), pa.array(range(n), pa.int64()),
                                   pa.array([0] * n, pa.int32()), pa.array(["a"] * n),
                                   pa.array([1.0] * n, pa.float32())], schema=pa.schema([
                                       ("id", pa.int64()), ("date", pa.string()), ("row_id", pa.int64()),
                                       ("rank", pa.int32()), ("category", pa.string()),
                                       ("probability", pa.float32())]))

    out = df.mapInArrow(ranks, schema)
    out.write.mode("overwrite").partitionBy("date").parquet(os.path.join(work, "out"))
    spark.stop()


if __name__ == "__main__":
    main(sys.argv[1])
