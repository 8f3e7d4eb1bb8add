"""Drain: two bursts 60 s apart on an elastic domain (0..6) vs a fixed pool of 6, side by side."""

from __future__ import annotations

import threading
import time

from bench.common import (
    Bench,
    demo_tasks,
    domain_spec,
    enqueue,
    node_seconds,
    plain_workers,
    row,
    stop_procs,
    wait_until,
    write_result,
)

BURST = 180  # tasks per burst
SECONDS = 1.0  # each task sleeps this long
GAP = 60.0  # quiet between the end of burst 1 and the start of burst 2
TAIL = 30.0  # the window ends this long after the last task
WORKERS = 6


def main() -> None:
    with Bench(interval=1.0) as bench:
        elastic_broker, fixed_broker = bench.broker(1), bench.broker(2)
        tasks = demo_tasks(elastic_broker)
        fixed = plain_workers(WORKERS, broker=fixed_broker, queue="fixed", logdir=bench.tmp)
        try:
            wait_until(lambda: all((bench.tmp / f"plain{i}.ready").exists() for i in range(WORKERS)),
                       120, "the fixed pool to be ready", poll=0.2)
            fixed_started = time.time()
            bench.store.put_domain(domain_spec("elastic", queue="elastic", max_size=WORKERS,
                                               scaling={"stabilization": 5}))
            time.sleep(2)
            results = {"elastic": bench.redis(1), "fixed": bench.redis(2)}
            bursts: list[dict[str, float]] = []
            t0 = time.time()
            for b in range(2):
                ids = list(range(b * BURST, (b + 1) * BURST))
                start = time.time()
                threads = [threading.Thread(target=enqueue, args=(tasks, broker, queue, [(i, SECONDS) for i in ids]))
                           for broker, queue in ((elastic_broker, "elastic"), (fixed_broker, "fixed"))]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                for pool in ("elastic", "fixed"):
                    wait_until(lambda pool=pool, b=b: results[pool].hlen("demo:done") >= (b + 1) * BURST, 600,
                               f"{pool} burst {b + 1}", poll=0.2)
                ends = {pool: max(float(results[pool].hget("demo:finished", i) or 0) for i in ids)
                        for pool in ("elastic", "fixed")}
                bursts.append({"start": start, **{f"{p}_drain_s": ends[p] - start for p in ends},
                               **{f"{p}_end": ends[p] for p in ends}})
                print(f"burst {b + 1}: elastic {ends['elastic'] - start:.1f}s, fixed {ends['fixed'] - start:.1f}s",
                      flush=True)
                if b == 0:
                    quiet_until = max(ends.values()) + GAP
                    time.sleep(max(0.0, quiet_until - time.time()))
            window_end = {p: bursts[-1][f"{p}_end"] + TAIL for p in ("elastic", "fixed")}
            time.sleep(max(0.0, max(window_end.values()) - time.time()))
            elastic_ws = node_seconds(bench.store.nodes("elastic"), t0, window_end["elastic"])
            fixed_ws = WORKERS * (window_end["fixed"] - max(t0, fixed_started))
            counts = {p: results[p].hgetall("demo:done") for p in results}
            lost = {p: 2 * BURST - len(c) for p, c in counts.items()}
            peak = max((e["target"] for e in bench.store.events("elastic", 2000, kind="decision")), default=0)
        finally:
            stop_procs(fixed)
    ratios = [b["elastic_drain_s"] / b["fixed_drain_s"] for b in bursts]
    result = {
        "drain_ratio_max": max(ratios),
        "worker_seconds_ratio": elastic_ws / fixed_ws,
        "bursts": bursts,
        "drain_ratios": ratios,
        "elastic_worker_seconds": elastic_ws,
        "fixed_worker_seconds": fixed_ws,
        "elastic_peak_workers": peak,
        "lost": lost,
        "workload": {"burst_tasks": BURST, "task_seconds": SECONDS, "gap_s": GAP, "tail_s": TAIL, "workers": WORKERS},
    }
    table = [
        row("drain time, worst burst, elastic / fixed", round(max(ratios), 3), "<= 1.2", max(ratios) <= 1.2,
            ", ".join(f"burst {i + 1}: {b['elastic_drain_s']:.1f}s vs {b['fixed_drain_s']:.1f}s"
                      for i, b in enumerate(bursts))),
        row("worker-seconds over the window, elastic / fixed", round(elastic_ws / fixed_ws, 3), "<= 0.6",
            elastic_ws / fixed_ws <= 0.6, f"{elastic_ws:.0f} vs {fixed_ws:.0f} worker-s"),
        row("tasks lost (elastic, fixed)", lost["elastic"] + lost["fixed"], "0",
            lost["elastic"] + lost["fixed"] == 0),
    ]
    print(write_result("drain", result, table))


if __name__ == "__main__":
    main()
