"""A small Spark application to check Spark on Kubernetes end to end: the driver spreads a sum
over ``argv[1]`` partitions (default 4) and prints ``RESULT <sum> <executor host names>``, so the
caller sees that executor pods did the work. In the Spark image as
``local:///opt/clover/stack/images/sparkcheck.py``."""

from __future__ import annotations

import socket
import sys


def main() -> None:
    from pyspark.sql import SparkSession

    partitions = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    spark = SparkSession.builder.appName("clover-spark-check").getOrCreate()
    rdd = spark.sparkContext.parallelize(range(100_000), partitions)
    total = rdd.sum()
    hosts = sorted(set(rdd.map(lambda _: socket.gethostname()).collect()))
    print("RESULT", total, ",".join(hosts), flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
