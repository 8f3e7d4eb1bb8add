"""Overhead: no-op tasks/s through a pool-managed worker vs a plain Celery worker, same settings."""

from __future__ import annotations

import os
import time
from typing import Callable

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

TASKS = 8000
ROUNDS = 5


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) used so far by every process in a process group."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def drain_rate(sensor: CeleryQueueSensor, total: int, pgid: Callable[[], int]) -> tuple[float, float]:
    """Tasks/s and CPU ms per task between the first task taken and the queue reaching 0."""
    wait_until(lambda: (sensor.read(0).value or total) < total, 120, "the worker to start consuming", poll=0.01)
    group = pgid()
    t_start, cpu_start, left = time.monotonic(), group_cpu(group), sensor.read(0).value or 0
    wait_until(lambda: sensor.read(0).value == 0, 600, "the queue to drain", poll=0.05)
    elapsed, cpu = time.monotonic() - t_start, group_cpu(group) - cpu_start
    return left / elapsed, 1000 * cpu / left


def managed_pgid(bench: Bench, domain: str) -> int:
    node_id = next(n.node_id for n in bench.live(domain))
    return int(next(n for n in bench.driver.list_nodes() if n.id == node_id).extra["pid"])


def main() -> None:
    rates: dict[str, list[float]] = {"plain": [], "managed": []}
    cpu_ms: dict[str, list[float]] = {"plain": [], "managed": []}
    with Bench(interval=1.0) as bench:
        broker = bench.broker()
        tasks = demo_tasks(broker)
        for rnd in range(ROUNDS):
            for kind in (("plain", "managed") if rnd % 2 == 0 else ("managed", "plain")):
                queue = f"ovh-{kind}-{rnd}"
                enqueue(tasks, broker, queue, [(i, 0) for i in range(TASKS)], name="demo.noop")
                sensor = CeleryQueueSensor(broker=broker, queue=queue)
                if kind == "plain":
                    procs = plain_workers(1, broker=broker, queue=queue, logdir=bench.tmp)
                    try:
                        rate, cpu = drain_rate(sensor, TASKS, lambda procs=procs: procs[0].pid)
                    finally:
                        stop_procs(procs)
                else:
                    name = f"m{rnd}"
                    bench.store.put_domain(domain_spec(name, queue=queue, max_size=1,
                                                       policy={"name": "fixed", "size": 1}))
                    try:
                        rate, cpu = drain_rate(sensor, TASKS, lambda name=name: managed_pgid(bench, name))
                    finally:
                        bench.store.set_override(name, 0)
                        wait_until(lambda name=name: not bench.live(name), 60, "the managed worker to stop")
                sensor.close()
                rates[kind].append(rate)
                cpu_ms[kind].append(cpu)
                print(f"round {rnd + 1} {kind}: {rate:.0f} tasks/s, {cpu:.2f} CPU ms/task", flush=True)
    ratio = median(rates["managed"]) / median(rates["plain"])
    cpu_ratio = median(cpu_ms["managed"]) / median(cpu_ms["plain"])
    result = {"throughput_ratio": ratio, "managed_tasks_per_s": rates["managed"], "plain_tasks_per_s": rates["plain"],
              "cpu_ms_per_task_ratio": cpu_ratio, "managed_cpu_ms_per_task": cpu_ms["managed"],
              "plain_cpu_ms_per_task": cpu_ms["plain"], "tasks_per_round": TASKS, "rounds": ROUNDS}
    spread = (f"rounds: managed {', '.join(f'{r:.0f}' for r in rates['managed'])}; "
              f"plain {', '.join(f'{r:.0f}' for r in rates['plain'])}")
    table = [
        row("no-op tasks/s, pool-managed / plain worker (median of rounds)", round(ratio, 3), ">= 0.95",
            ratio >= 0.95, f"{median(rates['managed']):.0f} vs {median(rates['plain']):.0f} tasks/s; {spread}"),
        row("CPU ms per task (worker + agent) / plain worker (median)", round(cpu_ratio, 3), "-", None,
            f"{median(cpu_ms['managed']):.2f} vs {median(cpu_ms['plain']):.2f} ms: steadier than wall throughput "
            "on a shared 2-core VM"),
    ]
    print(write_result("overhead", result, table))


if __name__ == "__main__":
    main()
