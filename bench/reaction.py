"""Reaction: burst enqueued -> first launch request, and -> first task starting (median of runs)."""

from __future__ import annotations

import time

from bench.common import Bench, demo_tasks, domain_spec, enqueue, median, row, wait_until, write_result

RUNS = 7


def one_run(bench: Bench, run: int, label: str) -> tuple[float, float]:
    name, queue = f"{label}{run}", f"q-{label}{run}"
    bench.store.put_domain(domain_spec(name, queue=queue, max_size=2, scaling={"stabilization": 0},
                                       policy={"name": "queue_depth", "tasks_per_worker": 10}))
    time.sleep(1.3)  # the domain sits at 0 and the manager has ticked on it
    tasks = demo_tasks(bench.broker())
    results = bench.redis()
    base = run * 1000 + (0 if label == "wake" else 500)
    t0 = time.time()
    enqueue(tasks, bench.broker(), queue, [(base + i, 0.05) for i in range(20)])
    wait_until(lambda: bool(bench.store.nodes(name)), 30, "a launch request", poll=0.005)
    launch = min(n.created for n in bench.store.nodes(name)) - t0
    wait_until(lambda: any(results.hexists("demo:started", base + i) for i in range(20)), 60, "a task to start",
               poll=0.01)
    first = min(float(v) for k, v in results.hgetall("demo:started").items() if base <= int(k) < base + 20) - t0
    wait_until(lambda: all(results.hexists("demo:done", base + i) for i in range(20)), 60, "the burst to finish")
    bench.store.set_override(name, 0)
    wait_until(lambda: not bench.live(name), 60, "the domain to return to 0")
    return launch, first


def main() -> None:
    data: dict[str, dict[str, float | list[float]]] = {}
    with Bench(interval=1.0) as bench:
        for label, wakeups in (("wake", True), ("poll", False)):
            bench.start_manager(wakeups=wakeups)
            launches, firsts = [], []
            for run in range(RUNS):
                launch, first = one_run(bench, run, label)
                launches.append(launch)
                firsts.append(first)
                print(f"{label} run {run}: launch request {launch:.3f}s, first task {first:.2f}s", flush=True)
            data[label] = {"launch_request_s": launches, "first_task_s": firsts,
                           "launch_request_s_median": median(launches), "first_task_s_median": median(firsts)}
    wake, poll = data["wake"], data["poll"]
    result = {
        "launch_request_s_median": wake["launch_request_s_median"],
        "first_task_s_median": wake["first_task_s_median"],
        "tick_interval_s": 1.0,
        "runs": RUNS,
        "with_wakeups": wake,
        "poll_only": poll,
    }
    table = [
        row("burst -> first launch request (median, default: wake on push, 1 s tick)",
            round(float(wake["launch_request_s_median"]), 3), "<= 0.5 s",
            float(wake["launch_request_s_median"]) <= 0.5),
        row("burst -> first task starts (median)", round(float(wake["first_task_s_median"]), 2), "-", None,
            "includes a worker process booting"),
        row("burst -> first launch request (median, polling only)", round(float(poll["launch_request_s_median"]), 3),
            "-", None, "for comparison: queue watch off"),
    ]
    print(write_result("reaction", result, table))


if __name__ == "__main__":
    main()
