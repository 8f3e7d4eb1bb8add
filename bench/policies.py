"""Policies: every policy and baseline on synthetic traces in the simulator, against the oracle bound."""

from __future__ import annotations

import heapq
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from bench.common import RESULTS, row, write_result
from pool.drivers.sim import SimCloudProfile, parse_profile
from pool.simulate import PolicyChoice, Simulation, downsample, oracle, plot, trace_summary
from pool.traces import FAMILIES, Task

SEED = 1  # the sim site's seed (boot times, jitter); each trace has its own fixed seed below
PROFILE = "ec2"
#: Trace families, sized so the whole benchmark runs in a few minutes on 2 cores.
TRACES: dict[str, tuple[str, dict[str, Any]]] = {
    "burst": ("burst", {"n": 1000, "seed": 1}),
    "periodic": ("periodic", {"n": 1500, "bursts": 5, "period": 900.0, "seed": 2}),
    "diurnal": ("diurnal", {"n": 2000, "period": 1800.0, "cycles": 2.0, "seed": 3}),
    "poisson": ("poisson", {"n": 1500, "rate": 1.0, "seed": 4}),
    "heavy": ("heavy", {"n": 1000, "rate": 0.5, "seed": 5}),
    "spiky": ("spiky", {"n": 1500, "duration": 1800.0, "seed": 6}),
}
#: The robustness check re-runs the recommended policy and the baselines on every family with
#: its seed plus this (other arrival times and service times, same shape).
SECOND_SEED = 10
#: The recommended policy: the same parameters and shaping on every trace (docs/policies.md, "Recommended").
RECOMMENDED = "recommended"
RECOMMENDED_POLICY: dict[str, Any] = {
    "name": "lookahead",
    "params": {},
    "scaling": {"stabilization": 0.0, "idle_timeout": 0.0},
}
#: The recommendation before ``lookahead``, kept for comparison.
PREVIOUS = "queue_depth_idle30"
PREVIOUS_POLICY: dict[str, Any] = {
    "name": "queue_depth",
    "params": {"tasks_per_worker": 1.0},
    "scaling": {"stabilization": 30.0, "idle_timeout": 30.0},
}
BASELINES = ["keda_hpa", "ray", "spark_da", "aws_target_tracking"]
Choice = tuple[str, str, dict[str, Any], "dict[str, Any] | None"]
#: (label, policy, params, scaling overrides); baselines run with their own ``scaling_defaults``.
CHOICES: list[Choice] = [
    (RECOMMENDED, RECOMMENDED_POLICY["name"], RECOMMENDED_POLICY["params"], RECOMMENDED_POLICY["scaling"]),
    (PREVIOUS, PREVIOUS_POLICY["name"], PREVIOUS_POLICY["params"], PREVIOUS_POLICY["scaling"]),
    ("lookahead_patience_0.5", "lookahead", {"patience": 0.5}, None),
    ("queue_depth", "queue_depth", {}, None),
    ("drain_time", "drain_time", {}, None),
    ("threshold", "threshold", {}, None),
    *[(name, name, {}, None) for name in BASELINES],
]
SECOND_CHOICES: list[Choice] = [CHOICES[0], *[c for c in CHOICES if c[0] in BASELINES]]
#: Traces with stationary arrivals, where a pool of fixed size is the natural reference.
STATIONARY = ("poisson", "heavy")
ORACLE_FACTOR = 1.2


def trace(name: str, shift: int = 0) -> list[Task]:
    family, params = TRACES[name]
    return FAMILIES[family](**{**params, "seed": params["seed"] + shift})


def run_trace(name: str, *, shift: int = 0, choices: Sequence[Choice] = CHOICES,
              ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Every choice on one trace: per-policy metrics and a report :func:`pool.simulate.plot` can draw."""
    tasks = trace(name, shift)
    profile = parse_profile(PROFILE)
    metrics: dict[str, dict[str, Any]] = {}
    timelines: dict[str, dict[str, list[float]]] = {}
    for label, policy, params, scaling in choices:
        started = time.perf_counter()
        sim = Simulation(tasks, PolicyChoice(label, policy, params), profile=profile, seed=SEED, scaling=scaling)
        r = sim.run()
        metrics[label] = {
            "policy": policy, "params": params, "scaling": r["scaling"],
            "worker_hours": r["worker_hours"], "mean_wait_s": r["mean_wait"], "p95_wait_s": r["p95_wait"],
            "max_wait_s": r["max_wait"], "makespan_s": r["makespan"], "peak_workers": r["peak_workers"],
            "launches": r["launches"], "unfinished": r["unfinished"], "wall_s": time.perf_counter() - started,
        }
        timelines[label] = downsample(sim.timeline)
        print(f"  {name:9s} +{shift:<3d}{label:20s} {r['worker_hours']:8.2f} wh  mean {r['mean_wait']:7.1f} s  "
              f"p95 {r['p95_wait']:7.1f} s  ({metrics[label]['wall_s']:.1f} s)", flush=True)
    best, best_timeline = oracle(tasks)
    metrics["oracle"] = {"worker_hours": best["worker_hours"], "mean_wait_s": 0.0, "p95_wait_s": 0.0,
                         "makespan_s": best["makespan"], "peak_workers": best["peak_workers"]}
    timelines["oracle"] = best_timeline
    family, params = TRACES[name]
    source = f"{family}:" + ",".join(f"{k}={v:g}" for k, v in {**params, "seed": params["seed"] + shift}.items())
    report = {"trace": trace_summary(tasks, source), "site_profile": asdict(profile), "seed": SEED,
              "timelines": timelines}
    return metrics, report


def fixed_pool(tasks: Sequence[Task], size: int, profile: SimCloudProfile, *, seed: int = SEED) -> tuple[float, float]:
    """``(worker-hours, mean wait)`` of ``size`` workers launched from the first arrival on, one per
    RunInstances call as fast as the site's buckets allow, booting like the site's machines, serving
    the tasks FIFO, each billed from its launch until the last arrival or its last task, whichever
    is later. It knows the right size in advance: a reference for stationary arrivals, not a policy."""
    rng = random.Random(seed)
    buckets = [profile.bucket("run_requests"), profile.bucket("run_instances")]
    tokens = [size_ for size_, _ in buckets]
    t = tasks[0].arrival
    launches: list[float] = []
    while len(launches) < size:
        while min(tokens) >= 1 and len(launches) < size:
            tokens = [x - 1 for x in tokens]
            launches.append(t)
        t += 1.0
        tokens = [min(size_, x + refill) for x, (size_, refill) in zip(tokens, buckets)]
    free = [(at + profile.boot_median * math.exp(rng.gauss(0.0, profile.boot_sigma)), i)
            for i, at in enumerate(launches)]
    last = [ready for ready, _ in free]
    heapq.heapify(free)
    wait = 0.0
    for task in tasks:
        ready, i = heapq.heappop(free)
        begin = max(ready, task.arrival)
        wait += begin - task.arrival
        last[i] = begin + task.service
        heapq.heappush(free, (last[i], i))
    end = tasks[-1].arrival
    return sum(max(end, e) - at for e, at in zip(last, launches)) / 3600.0, wait / len(tasks)


def fixed_pool_reference(name: str, per: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The smallest fixed pool as fast as the fastest baseline, against the cheapest baseline's cost."""
    tasks, profile = sorted(trace(name), key=lambda t: t.arrival), parse_profile(PROFILE)
    fastest = min(BASELINES, key=lambda b: per[b]["mean_wait_s"])
    cheapest = min(BASELINES, key=lambda b: per[b]["worker_hours"])
    size = max(1, math.floor(sum(t.service for t in tasks) / (tasks[-1].arrival - tasks[0].arrival)))
    while True:
        wh, wait = fixed_pool(tasks, size, profile)
        if wait <= per[fastest]["mean_wait_s"] or size > 100_000:
            break
        size += 1
    return {"workers": size, "worker_hours": wh, "mean_wait_s": wait, "fastest": fastest,
            "fastest_wait_s": per[fastest]["mean_wait_s"], "cheapest": cheapest,
            "cheapest_worker_hours": per[cheapest]["worker_hours"]}


def pareto(rec: Mapping[str, Any], other: Mapping[str, Any]) -> str:
    """How the recommended policy stands against ``other`` on (worker-hours, mean wait)."""
    rw, rt = rec["worker_hours"], rec["mean_wait_s"]
    ow, ot = other["worker_hours"], other["mean_wait_s"]
    if math.isclose(rw, ow, rel_tol=1e-9) and math.isclose(rt, ot, rel_tol=1e-9, abs_tol=1e-9):
        return "equal"
    if rw <= ow and rt <= ot:
        return "dominated by recommended"
    if ow <= rw and ot <= rt:
        return "**dominates recommended**"
    return "trade-off: cheaper, slower" if ow < rw else "**trade-off: faster, costlier**"


def beaten(per: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return [b for b in BASELINES if pareto(per[RECOMMENDED], per[b]) in ("equal", "dominated by recommended")]


def why(results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """Where a baseline is not dominated, and why; the numbers come from ``results``."""
    def ratio(per: Mapping[str, Mapping[str, Any]], label: str) -> float:
        return float(per[label]["worker_hours"] / per["oracle"]["worker_hours"])

    faster = [ratio(per, b) for per in results.values() for b in BASELINES
              if pareto(per[RECOMMENDED], per[b]) == "**trade-off: faster, costlier**"]
    steady = [ratio(results[n], RECOMMENDED) for n in ("diurnal", "poisson", "heavy") if n in results]
    waits = [results[n][RECOMMENDED]["mean_wait_s"] for n in ("diurnal", "poisson", "heavy") if n in results]
    text = []
    if faster and steady:
        text.append(
            f"Where a baseline is not dominated it is faster at a higher cost ({min(faster):.2f}-{max(faster):.2f}x "
            f"the oracle's worker-hours): `spark_da` (60 s idle timeout) and `ray` (300 s, and one launch per "
            f"waiting task) keep idle workers around, so on steady, heavy-tailed, diurnal and spiky arrivals a new "
            f"task usually finds one. The recommended `lookahead` keeps every worker it pays for busy: under "
            f"arrivals that never stop it settles with a standing queue ({min(waits):.0f}-{max(waits):.0f} s mean "
            f"wait here) at {min(steady):.2f}-{max(steady):.2f}x "
            f"the oracle.")
    if "periodic" in results:
        per, bursts = results["periodic"], TRACES["periodic"][1]["bursts"]
        rec, spark = per[RECOMMENDED], per["spark_da"]
        text.append(
            f"On `periodic`, `spark_da` launches about {spark['launches'] / bursts:.0f} executors per burst and "
            f"starts tasks {rec['mean_wait_s'] - spark['mean_wait_s']:.1f} s sooner on average for "
            f"{spark['worker_hours'] / rec['worker_hours']:.2f}x the worker-hours; `lookahead` launches about "
            f"{rec['launches'] / bursts:.0f} per burst, the ones whose boot pays for itself at the default "
            f"`patience`.")
    text.append("`keda_hpa` and `aws_target_tracking` queue minutes of work per worker and still boot for it: "
                "slower, and not cheaper. See docs/policies.md, \"Recommended\", for why no setting can "
                "dominate `keda_hpa` and `spark_da` (or `ray`) at once on the steady and spiky traces.")
    return " ".join(text)


def markdown(results: Mapping[str, Mapping[str, Mapping[str, Any]]],
             second: Mapping[str, Mapping[str, Mapping[str, Any]]],
             references: Mapping[str, Mapping[str, Any]]) -> str:
    rp = RECOMMENDED_POLICY
    lines = [f"Recommended: `{rp['name']}` {rp['params'] or '(its defaults)'} with `scaling:` {rp['scaling']} "
             f"(the same on every trace); `{PREVIOUS}` is the earlier recommendation (`queue_depth`, one worker "
             f"per task, 30 s stabilization and idle timeout). Baselines run with their anchors' defaults and "
             f"`scaling_defaults`. Site profile `{PROFILE}` (40 s median boot, EC2 API limits), sim seed {SEED}. "
             f"Traces: " + "; ".join(f"`{n}` = {f}({', '.join(f'{k}={v:g}' for k, v in p.items())})"
                                    for n, (f, p) in TRACES.items()) + ".", ""]
    for name, per in results.items():
        rec, orc = per[RECOMMENDED], per["oracle"]
        lines += [f"**{name}** (oracle {orc['worker_hours']:.2f} worker-hours)", "",
                  "| policy | worker-hours | × oracle | mean wait (s) | p95 wait (s) | vs recommended |",
                  "|---|---|---|---|---|---|"]
        for label, m in per.items():
            status = "—" if label in (RECOMMENDED, "oracle") else pareto(rec, m)
            if label == "oracle":
                status = "lower bound"
            lines.append(f"| {label} | {m['worker_hours']:.2f} | {m['worker_hours'] / orc['worker_hours']:.2f} | "
                         f"{m['mean_wait_s']:.1f} | {m['p95_wait_s']:.1f} | {status} |")
        lines += ["", f"![{name}](bench/results/policies-{name}.png)", ""]
    lines += [f"**Second seed** (each family's seed + {SECOND_SEED}; recommended and baselines only):", "",
              "| trace | recommended wh (× oracle) | mean wait (s) | " + " | ".join(BASELINES) + " |",
              "|---|---|---|" + "---|" * len(BASELINES)]
    for name, per in second.items():
        rec, orc = per[RECOMMENDED], per["oracle"]
        cells = [f"{per[b]['worker_hours']:.2f} wh, {per[b]['mean_wait_s']:.1f} s: {pareto(rec, per[b])}"
                 for b in BASELINES]
        lines.append(f"| {name} | {rec['worker_hours']:.2f} ({rec['worker_hours'] / orc['worker_hours']:.2f}) | "
                     f"{rec['mean_wait_s']:.1f} | " + " | ".join(cells) + " |")
    lines += ["", "**A pool sized in advance** (stationary traces): the smallest fixed pool, launched at the "
              "first arrival within the site's API limits and booting like the site's machines, that waits "
              "no longer than the fastest baseline; it knows the load in advance, which no policy does.", "",
              "| trace | fixed workers | worker-hours | mean wait (s) | fastest baseline (wait) | "
              "cheapest baseline (worker-hours) |", "|---|---|---|---|---|---|"]
    for name, ref in references.items():
        lines.append(f"| {name} | {ref['workers']} | {ref['worker_hours']:.2f} | {ref['mean_wait_s']:.1f} | "
                     f"{ref['fastest']} ({ref['fastest_wait_s']:.1f} s) | {ref['cheapest']} "
                     f"({ref['cheapest_worker_hours']:.2f}) |")
    lines.append("")
    for name, ref in references.items():
        dearer = ref["worker_hours"] > ref["cheapest_worker_hours"]
        lines.append(f"On `{name}` that pool costs {ref['worker_hours']:.2f} worker-hours, "
                     + ("more than" if dearer else "no more than") + f" `{ref['cheapest']}`'s "
                     f"{ref['cheapest_worker_hours']:.2f}: " + (f"even a fixed pool sized with the load known cannot be both as fast "
                     f"as `{ref['fastest']}` and as cheap as `{ref['cheapest']}` there, and a policy has to learn it "
                     f"as it goes." if dearer else
                     "being both is not ruled out by this reference."))
    lines += ["", why(results)]
    return "\n".join(lines)


def main() -> None:
    started = time.perf_counter()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    second: dict[str, dict[str, dict[str, Any]]] = {}
    references: dict[str, dict[str, Any]] = {}
    for name in TRACES:
        metrics, report = run_trace(name)
        results[name] = metrics
        plot(report, RESULTS / f"policies-{name}.png")
        second[name] = run_trace(name, shift=SECOND_SEED, choices=SECOND_CHOICES)[0]
        if name in STATIONARY:
            references[name] = fixed_pool_reference(name, metrics)
    table = []
    for name, per in results.items():
        for seed_label, data in (("", per), (f" (seed +{SECOND_SEED})", second[name])):
            won = beaten(data)
            lost = [f"{b} ({pareto(data[RECOMMENDED], data[b]).strip('*')})" for b in BASELINES if b not in won]
            table.append(row(f"{name}{seed_label}: baselines Pareto-dominated by recommended (worker-hours, mean wait)",
                             len(won), f"{len(BASELINES)} of {len(BASELINES)}", len(won) == len(BASELINES),
                             "not: " + ", ".join(lost) if lost else ""))
        rec, orc = per[RECOMMENDED], per["oracle"]
        ratio = rec["worker_hours"] / orc["worker_hours"]
        table.append(row(f"{name}: recommended worker-hours / oracle", ratio, f"<= {ORACLE_FACTOR}",
                         ratio <= ORACLE_FACTOR,
                         f"{rec['worker_hours']:.2f} vs {orc['worker_hours']:.2f} wh; "
                         f"mean wait {rec['mean_wait_s']:.1f} s (oracle 0)"))
    for name, ref in references.items():
        table.append(row(f"{name}: worker-hours of a fixed pool sized in advance to wait as little as {ref['fastest']}",
                         ref["worker_hours"], "", None,
                         f"{ref['workers']} workers, mean wait {ref['mean_wait_s']:.1f} s; cheapest baseline "
                         f"{ref['cheapest']} {ref['cheapest_worker_hours']:.2f} wh"))
    elapsed = time.perf_counter() - started
    table.append(row("benchmark wall time (s)", elapsed, "", None,
                     f"{len(TRACES)} traces x {len(CHOICES)} policies + {len(SECOND_CHOICES)} on a second seed"))
    path = write_result("policies", {
        "recommended": RECOMMENDED,
        "recommended_policy": RECOMMENDED_POLICY,
        "previous_policy": {"label": PREVIOUS, **PREVIOUS_POLICY},
        "site_profile": PROFILE,
        "seed": SEED,
        "trace_specs": {n: {"family": f, **p} for n, (f, p) in TRACES.items()},
        "traces": results,
        "second_seed": {
            "shift": SECOND_SEED,
            "trace_specs": {n: {"family": f, **p, "seed": p["seed"] + SECOND_SEED} for n, (f, p) in TRACES.items()},
            "traces": second,
        },
        "fixed_pool_reference": references,
        "wall_seconds": elapsed,
        "markdown": markdown(results, second, references),
    }, table)
    print(f"wrote {path} in {elapsed:.0f} s")


if __name__ == "__main__":
    main()
