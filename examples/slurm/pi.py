"""A small PySpark job: estimates pi with 200,000 random points (the Spark tutorial's first job)."""

import random

from pyspark.sql import SparkSession

spark = SparkSession.builder.appName("pi").getOrCreate()
n = 200_000


def inside(_: int) -> int:
    x, y = random.random(), random.random()
    return 1 if x * x + y * y < 1 else 0


count = spark.sparkContext.parallelize(range(n), 4).map(inside).sum()
print(f"pi is roughly {4.0 * count / n:.3f}")
spark.stop()
