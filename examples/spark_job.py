"""A small Spark job with several stages and a result it checks itself.

    pool spark submit examples/spark_job.py --partitions 200 --task-ms 100

Job 1: stage 1 maps ``items`` numbers over ``partitions`` tasks (each task also sleeps ``task-ms``,
a stand-in for real work) and sums them by key through a shuffle into ``partitions / 25`` tasks
(stage 2), which regroup the sums into 10 buckets over 2 tasks (stage 3, another shuffle); the driver adds the
buckets up. Job 2 recomputes the same total without a shuffle, over ``partitions`` tasks again
(stage 4). The expected answer is also computed on the driver without Spark; the job prints all
three and exits 1 unless they agree. 410 tasks for the default 200 partitions. It runs unchanged
against any master: ``--master`` comes from spark-submit or the session.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Iterator

MODULUS = 1_000_003


def value(x: int) -> int:
    """What stage 1 computes for one number."""
    return (x * x) % MODULUS


def expected(items: int) -> int:
    return sum(value(x) for x in range(items))


def stage_tasks(partitions: int) -> tuple[int, int, int, int]:
    """Tasks of the four stages (few reduce tasks: shuffle blocks grow as map x reduce tasks)."""
    return partitions, max(2, partitions // 25), 2, partitions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=200, help="tasks of the map stages")
    parser.add_argument("--items", type=int, default=100_000, help="numbers to process")
    parser.add_argument("--task-ms", type=float, default=100.0, help="extra work per task (sleep)")
    parser.add_argument("--keys", type=int, default=97, help="distinct keys of the shuffle")
    parser.add_argument("--master", default=None, help="master URL when run without spark-submit")
    args = parser.parse_args(argv)

    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("elastic-pool example job")
    if args.master:
        builder = builder.master(args.master)
    session = builder.getOrCreate()
    sc = session.sparkContext
    pause = args.task_ms / 1000.0
    keys = args.keys
    first, second, third, fourth = stage_tasks(args.partitions)

    def work(part: Iterable[int]) -> Iterator[tuple[int, int]]:
        time.sleep(pause)
        for x in part:
            yield (x % keys, value(x))

    started = time.time()
    by_key = (
        sc.parallelize(range(args.items), first)
        .mapPartitions(work)
        .reduceByKey(lambda a, b: a + b, second)
    )
    buckets = by_key.map(lambda kv: (kv[0] % 10, kv[1])).reduceByKey(lambda a, b: a + b, third)
    result = sum(v for _, v in buckets.collect())

    def work_values(part: Iterable[int]) -> Iterator[int]:
        time.sleep(pause)
        for x in part:
            yield value(x)

    direct = sc.parallelize(range(args.items), fourth).mapPartitions(work_values).sum()
    elapsed = time.time() - started
    session.stop()
    want = expected(args.items)
    ok = result == want == direct
    print(f"RESULT {'ok' if ok else 'WRONG'} result={result} direct={direct} expected={want} "
          f"tasks={first + second + third + fourth} seconds={elapsed:.1f}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
