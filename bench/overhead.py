"""Overhead: no-op tasks/s through a pool-managed worker vs a plain Celery worker, same settings."""

from __future__ import annotations

import time

from bench.common import (
    Bench,
    demo_tasks,
    domain_spec,
    enqueue,
    median,
    plain_workers,
    row,
    stop_procs,
    wait_until,
    write_result,
)
from sensors.celery import CeleryQueueSensor

TASKS = 3000
ROUNDS = 3


def drain_rate(sensor: CeleryQueueSensor, total: int) -> float:
    """Tasks/s between the first task taken and the queue (ready + in flight) reaching 0."""
    wait_until(lambda: (sensor.read(0).value or total) < total, 120, "the worker to start consuming", poll=0.01)
    t_start, left = time.monotonic(), sensor.read(0).value or 0
    wait_until(lambda: sensor.read(0).value == 0, 600, "the queue to drain", poll=0.02)
    return (left) / (time.monotonic() - t_start)


def main() -> None:
    rates: dict[str, list[float]] = {"plain": [], "managed": []}
    with Bench(interval=1.0) as bench:
        broker = bench.broker()
        tasks = demo_tasks(broker)
        for rnd in range(ROUNDS):
            for kind in ("plain", "managed"):
                queue = f"ovh-{kind}-{rnd}"
                enqueue(tasks, broker, queue, [(i, 0) for i in range(TASKS)], name="demo.noop")
                sensor = CeleryQueueSensor(broker=broker, queue=queue)
                if kind == "plain":
                    procs = plain_workers(1, broker=broker, queue=queue, logdir=bench.tmp)
                    try:
                        rates[kind].append(drain_rate(sensor, TASKS))
                    finally:
                        stop_procs(procs)
                else:
                    name = f"m{rnd}"
                    bench.store.put_domain(domain_spec(name, queue=queue, max_size=1,
                                                       policy={"name": "fixed", "size": 1}))
                    try:
                        rates[kind].append(drain_rate(sensor, TASKS))
                    finally:
                        bench.store.set_override(name, 0)
                        wait_until(lambda name=name: not bench.live(name), 60, "the managed worker to stop")
                sensor.close()
                print(f"round {rnd + 1} {kind}: {rates[kind][-1]:.0f} tasks/s", flush=True)
    ratio = median(rates["managed"]) / median(rates["plain"])
    result = {"throughput_ratio": ratio, "managed_tasks_per_s": rates["managed"], "plain_tasks_per_s": rates["plain"],
              "tasks_per_round": TASKS, "rounds": ROUNDS}
    table = [row("no-op tasks/s, pool-managed / plain worker (median of rounds)", round(ratio, 3), ">= 0.95",
                 ratio >= 0.95, f"{median(rates['managed']):.0f} vs {median(rates['plain']):.0f} tasks/s")]
    print(write_result("overhead", result, table))


if __name__ == "__main__":
    main()
