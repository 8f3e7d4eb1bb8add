"""Overhead: no-op tasks/s through a pool-managed worker vs a plain Celery worker, same settings.

Both sides run the same Celery settings (``durable_settings``, the same pool choice, concurrency,
log level and worker flags); the managed side is a node of the local site (user-data, agent,
heartbeats, busy reporting) under a live manager. Rounds come in pairs, the order rotating
(plain first, then managed first, ...), and each pair gives one ratio: on a shared machine the
load moves between pairs far more than within one, so the median of paired ratios is the
number, not a ratio of medians. The window opens after a warm-up and closes when the queue is
empty. CPU seconds per task of each side's process tree are recorded too (the managed tree counts
the agent as well as the worker), and, where valgrind is installed, the instructions per task of
each side's worker process: a count the machine's load cannot move. Each pair also runs a plain
worker on kombu's own Redis transport ("stock"): plain against stock is what the atomic pop of
``pool.workloads.reliable_redis`` costs.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

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

PAIRS = int(os.environ.get("OVERHEAD_PAIRS", "10"))
TASKS = int(os.environ.get("OVERHEAD_TASKS", "10000"))
WARMUP = 500  # tasks consumed before the window opens: boot transients, first-task imports
TICK = os.sysconf("SC_CLK_TCK")
#: Instructions per task are counted (callgrind) from two runs of this many tasks: the difference over
#: the difference in tasks leaves boot and shutdown out. Set OVERHEAD_CALLGRIND=0 to skip.
CALLGRIND_TASKS = (100, 1100)
#: What ``plain_workers`` runs with (bench/plain_worker.py reads the same variables as pool/workloads/celery_worker.py);
#: the managed domain must say the same, or the comparison is not fair.
PLAIN_SETTINGS: dict[str, Any] = {"concurrency": 1, "pool": "auto", "loglevel": "WARNING", "visibility_timeout": 60.0}


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def group_pids(pgid: int) -> list[int]:
    """Every process of a process group."""
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[2]) == pgid:
                out.append(int(entry.name))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (all their threads)."""
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total / TICK


def context_switches(pids: list[int]) -> tuple[int, int]:
    """Voluntary and involuntary context switches so far, summed over every thread."""
    vol = invol = 0
    for pid in pids:
        try:
            threads = [t.name for t in os.scandir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in threads:
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as fh:
                    for line in fh:
                        if line.startswith("voluntary_ctxt_switches"):
                            vol += int(line.split()[1])
                        elif line.startswith("nonvoluntary_ctxt_switches"):
                            invol += int(line.split()[1])
            except OSError:
                continue
    return vol, invol


@dataclass
class Round:
    kind: str
    tasks: int
    seconds: float
    cpu_ms_per_task: float  # the whole process tree of the worker (managed: agent too)
    worker_cpu_ms_per_task: float  # the Celery worker process alone
    redis_cpu_ms_per_task: float
    harness_cpu_ms_per_task: float  # this process: the manager thread and the queue polling
    voluntary_switches_per_task: float
    involuntary_switches_per_task: float

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds


def measure(kind: str, sensor: CeleryQueueSensor, pgid: Callable[[], int], redis_pid: int) -> Round:
    """Wait until WARMUP tasks are done, then measure until the queue is empty."""
    wait_until(lambda: (sensor.read(0).value or TASKS) <= TASKS - WARMUP, 180, "the worker to start consuming",
               poll=0.01)
    group = pgid()
    pids = group_pids(group)
    worker = [p for p in pids if p != group] or [group]  # managed: the agent leads, the worker is its child
    t0, left = time.monotonic(), int(sensor.read(0).value or 0)
    if left == 0:
        raise RuntimeError("the queue drained during the warm-up: raise OVERHEAD_TASKS")
    cpu0, wcpu0, rcpu0, hcpu0 = cpu_seconds(pids), cpu_seconds(worker), cpu_seconds([redis_pid]), time.process_time()
    sw0 = context_switches(worker)
    wait_until(lambda: sensor.read(0).value == 0, 600, "the queue to drain", poll=0.05)
    seconds = time.monotonic() - t0
    cpu, wcpu, rcpu = cpu_seconds(pids) - cpu0, cpu_seconds(worker) - wcpu0, cpu_seconds([redis_pid]) - rcpu0
    hcpu = time.process_time() - hcpu0
    sw1 = context_switches(worker)
    per = 1000 / left
    return Round(kind=kind, tasks=left, seconds=seconds, cpu_ms_per_task=cpu * per, worker_cpu_ms_per_task=wcpu * per,
                 redis_cpu_ms_per_task=rcpu * per, harness_cpu_ms_per_task=hcpu * per,
                 voluntary_switches_per_task=(sw1[0] - sw0[0]) / left,
                 involuntary_switches_per_task=(sw1[1] - sw0[1]) / left)


def managed_pgid(bench: Bench, domain: str) -> int:
    node_id = next(n.node_id for n in bench.live(domain))
    return int(next(n for n in bench.driver.list_nodes() if n.id == node_id).extra["pid"])


def run_plain(bench: Bench, broker: str, queue: str, sensor: CeleryQueueSensor, *, stock: bool = False) -> Round:
    # plain_workers passes the environment on: pin what bench/plain_worker.py reads, whatever the shell says
    os.environ.update(POOL_LOGLEVEL=PLAIN_SETTINGS["loglevel"], POOL_CELERY_POOL=PLAIN_SETTINGS["pool"])
    procs = plain_workers(1, broker=broker, queue=queue, logdir=bench.tmp, concurrency=PLAIN_SETTINGS["concurrency"],
                          stock_transport=stock)
    try:
        return measure("stock" if stock else "plain", sensor, lambda: procs[0].pid, bench.server.pid)
    finally:
        stop_procs(procs)


def managed_spec(name: str, queue: str) -> Any:
    """A domain of exactly one worker whose Celery settings are the plain worker's."""
    spec = domain_spec(name, queue=queue, max_size=1, policy={"name": "fixed", "size": 1})
    settings = {k: getattr(spec.block, k) for k in PLAIN_SETTINGS}
    if settings != PLAIN_SETTINGS:
        raise RuntimeError(f"managed worker settings {settings} differ from the plain worker's {PLAIN_SETTINGS}")
    return spec


def run_managed(bench: Bench, name: str, queue: str, sensor: CeleryQueueSensor) -> Round:
    bench.store.put_domain(managed_spec(name, queue))
    groups: list[int] = []

    def pgid() -> int:
        groups.append(managed_pgid(bench, name))
        return groups[-1]

    try:
        return measure("managed", sensor, pgid, bench.server.pid)
    finally:
        bench.store.set_override(name, 0)
        wait_until(lambda: not bench.live(name), 60, "the managed worker to stop")
        # and its processes gone: a warm shutdown still running would slow the next round down
        wait_until(lambda: not any(group_pids(g) for g in groups), 60, "the managed worker's processes to exit")


def callgrind_worker_instructions(bench: Bench, broker: str, tasks: Any, kind: str, n: int) -> int:
    """Instructions the Celery worker process executes (callgrind) to boot, run ``n`` no-op tasks, stop.

    Both sides run under the same wrapper; the managed worker through the local site like any node
    (user-data, agent, worker), the agent traced as well but not counted here.
    """
    out = bench.tmp / f"callgrind-{kind}-{n}"
    out.mkdir()
    wrapper = out / "python"
    wrapper.write_text(f"#!/bin/sh\nexec valgrind --tool=callgrind --trace-children=yes "
                       f"--callgrind-out-file={out}/%p.out {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    queue = f"cg-{kind}-{n}"
    enqueue(tasks, broker, queue, [(i, 0) for i in range(n)], name="demo.noop")
    sensor = CeleryQueueSensor(broker=broker, queue=queue)
    try:
        if kind == "plain":
            procs = plain_workers(1, broker=broker, queue=queue, logdir=out, python=str(wrapper),
                                  concurrency=PLAIN_SETTINGS["concurrency"])
            try:
                wait_until(lambda: sensor.read(0).value == 0, 900, "the queue to drain under callgrind", poll=0.5)
                os.killpg(procs[0].pid, signal.SIGTERM)  # a warm shutdown: callgrind writes its counts on exit
                procs[0].wait(300)
            finally:
                stop_procs(procs)
        else:
            assert bench.manager is not None
            name = f"cg{n}"
            spec = managed_spec(name, queue)
            bench.store.put_domain(spec.model_copy(update={"timeouts": spec.timeouts.model_copy(
                update={"boot": 600, "terminate_grace": 300})}))
            python, bench.manager.python = bench.manager.python, str(wrapper)
            try:
                wait_until(lambda: sensor.read(0).value == 0, 900, "the queue to drain under callgrind", poll=0.5)
                group = managed_pgid(bench, name)
            finally:
                bench.manager.python = python
                bench.store.set_override(name, 0)
            wait_until(lambda: not group_pids(group), 300, "the managed worker to exit under callgrind", poll=0.5)
    finally:
        sensor.close()
    needle = "bench/plain_worker.py" if kind == "plain" else "-m pool.workloads.celery_worker"
    for path in out.glob("*.out"):
        lines = path.read_text().splitlines()
        if any(line.startswith("cmd:") and needle in line for line in lines[:30]):
            return next(int(line.split()[1]) for line in lines if line.startswith(("totals:", "summary:")))
    raise RuntimeError(f"no callgrind output for the {kind} worker in {out}")


def instructions_per_task(bench: Bench, broker: str, tasks: Any) -> dict[str, float] | None:
    """Callgrind instructions per no-op task of the worker process, plain and managed."""
    if os.environ.get("OVERHEAD_CALLGRIND", "1") == "0" or shutil.which("valgrind") is None:
        return None
    small, large = CALLGRIND_TASKS
    out = {}
    for kind in ("plain", "managed"):
        counts = [callgrind_worker_instructions(bench, broker, tasks, kind, n) for n in (small, large)]
        out[kind] = (counts[1] - counts[0]) / (large - small)
        print(f"callgrind {kind}: {out[kind] / 1e6:.3f} M instructions per task", flush=True)
    return out


def main() -> None:
    pairs: list[dict[str, Round]] = []
    load_before = os.getloadavg()
    with Bench(interval=1.0) as bench:
        broker = bench.broker()
        tasks = demo_tasks(broker)
        for n in range(PAIRS):
            pair: dict[str, Round] = {}
            # the stock-transport worker measures what the atomic pop costs (plain against stock)
            kinds = ("plain", "managed", "stock")
            for kind in kinds[n % 3:] + kinds[:n % 3]:
                queue = f"ovh-{kind}-{n}"
                enqueue(tasks, broker, queue, [(i, 0) for i in range(TASKS)], name="demo.noop")
                sensor = CeleryQueueSensor(broker=broker, queue=queue)
                try:
                    if kind in ("plain", "stock"):
                        pair[kind] = run_plain(bench, broker, queue, sensor, stock=kind == "stock")
                    else:
                        pair[kind] = run_managed(bench, f"m{n}", queue, sensor)
                finally:
                    sensor.close()
                r = pair[kind]
                print(f"pair {n + 1} {kind:7s}: {r.rate:5.0f} tasks/s, CPU ms/task {r.cpu_ms_per_task:.3f} "
                      f"(worker {r.worker_cpu_ms_per_task:.3f}, redis {r.redis_cpu_ms_per_task:.3f}, "
                      f"harness {r.harness_cpu_ms_per_task:.3f}), switches/task "
                      f"{r.voluntary_switches_per_task:.2f}+{r.involuntary_switches_per_task:.2f}", flush=True)
            pairs.append(pair)
        load = [load_before[0], os.getloadavg()[0]]
        instructions = instructions_per_task(bench, broker, tasks)
    report(pairs, load=load, instructions=instructions)


def report(pairs: list[dict[str, Round]], *, load: list[float], instructions: dict[str, float] | None) -> None:
    def paired(f: Callable[[Round], float]) -> list[float]:
        return [f(p["managed"]) / f(p["plain"]) for p in pairs]

    def med(kind: str, f: Callable[[Round], float]) -> float:
        return median([f(p[kind]) for p in pairs])

    rate_ratios = paired(lambda r: r.rate)
    cpu_ratios = paired(lambda r: r.cpu_ms_per_task)
    worker_cpu_ratios = paired(lambda r: r.worker_cpu_ms_per_task)
    ratio, cpu_ratio, worker_cpu_ratio = median(rate_ratios), median(cpu_ratios), median(worker_cpu_ratios)
    result: dict[str, Any] = {
        "throughput_ratio": ratio,
        "cpu_ms_per_task_ratio": cpu_ratio,
        "worker_cpu_ms_per_task_ratio": worker_cpu_ratio,
        "paired_throughput_ratios": rate_ratios,
        "paired_cpu_ratios": cpu_ratios,
        "managed_tasks_per_s": [p["managed"].rate for p in pairs],
        "plain_tasks_per_s": [p["plain"].rate for p in pairs],
        "managed_cpu_ms_per_task": [p["managed"].cpu_ms_per_task for p in pairs],
        "plain_cpu_ms_per_task": [p["plain"].cpu_ms_per_task for p in pairs],
        "rounds": [{**asdict(p[k]), "pair": i + 1} for i, p in enumerate(pairs) for k in ("plain", "managed", "stock")],
        "celery_settings": {**PLAIN_SETTINGS, "durable": "pool.workloads.celery_worker.durable_settings on both sides"},
        "load_average_1min_before_after": load,
        "tasks_per_round": TASKS,
        "warmup_tasks": WARMUP,
        "pairs": len(pairs),
    }
    stock_ratios = [p["plain"].rate / p["stock"].rate for p in pairs]
    stock_cpu = [p["plain"].cpu_ms_per_task / p["stock"].cpu_ms_per_task for p in pairs]
    stock_redis = [p["plain"].redis_cpu_ms_per_task / p["stock"].redis_cpu_ms_per_task for p in pairs]
    result.update(reliable_vs_stock_throughput_ratio=median(stock_ratios), reliable_vs_stock_cpu_ratio=median(stock_cpu),
                  reliable_vs_stock_redis_cpu_ratio=median(stock_redis), paired_reliable_vs_stock_ratios=stock_ratios,
                  stock_tasks_per_s=[p["stock"].rate for p in pairs])
    spread = ", ".join(f"{x:.2f}" for x in sorted(rate_ratios))
    table = [
        row("no-op tasks/s, pool-managed / plain worker (median of paired rounds)", round(ratio, 3), ">= 0.95",
            ratio >= 0.95, f"{med('managed', lambda r: r.rate):.0f} vs {med('plain', lambda r: r.rate):.0f} "
            f"tasks/s (medians); {len(pairs)} pairs of {TASKS} tasks, paired ratios {spread}"),
        row("CPU ms per task, managed tree (worker + agent) / plain worker (median of pairs)", round(cpu_ratio, 3),
            "-", None, f"{med('managed', lambda r: r.cpu_ms_per_task):.3f} vs "
            f"{med('plain', lambda r: r.cpu_ms_per_task):.3f} ms; worker process alone "
            f"{worker_cpu_ratio:.3f}; steadier than wall throughput on a shared machine"),
    ]
    table.append(row("no-op tasks/s, atomic pop (pool.workloads.reliable_redis) / kombu's Redis transport, plain workers",
                     round(median(stock_ratios), 3), "-", None,
                     f"{med('plain', lambda r: r.rate):.0f} vs {med('stock', lambda r: r.rate):.0f} tasks/s (medians); "
                     f"CPU per task {median(stock_cpu):.3f}x, redis-server CPU per task {median(stock_redis):.3f}x; "
                     f"one round trip per message (the pop script) where kombu's transport makes two (BRPOP, then "
                     f"its unacked write)"))
    if instructions is not None:
        ins_ratio = instructions["managed"] / instructions["plain"]
        result.update(instructions_per_task=instructions, instructions_per_task_ratio=ins_ratio)
        table.append(row("instructions per task, managed worker / plain worker (callgrind)", round(ins_ratio, 4), "-",
                         None, f"{instructions['managed'] / 1e6:.3f} M vs {instructions['plain'] / 1e6:.3f} M per "
                         "no-op task: counted, not timed, so the machine's load does not enter; what runs per "
                         "second (busy sampling every 0.2 s) runs per task ~50x more often under callgrind's "
                         "slowdown, so this ratio is an upper bound"))
    print(write_result("overhead", result, table))


if __name__ == "__main__":
    main()
