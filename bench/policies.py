"""Policies: every policy and baseline on synthetic traces in the simulator, against the oracle bound."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from bench.common import RESULTS, row, write_result
from pool.drivers.sim import parse_profile
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
#: The recommended policy: the same parameters and shaping on every trace (docs/policies.md, "Recommended").
RECOMMENDED = "recommended"
RECOMMENDED_POLICY: dict[str, Any] = {
    "name": "queue_depth",
    "params": {"tasks_per_worker": 1.0},
    "scaling": {"stabilization": 30.0, "idle_timeout": 30.0},
}
BASELINES = ["keda_hpa", "ray", "spark_da", "aws_target_tracking"]
#: (label, policy, params, scaling overrides); baselines run with their own ``scaling_defaults``.
CHOICES: list[tuple[str, str, dict[str, Any], dict[str, Any] | None]] = [
    (RECOMMENDED, RECOMMENDED_POLICY["name"], RECOMMENDED_POLICY["params"], RECOMMENDED_POLICY["scaling"]),
    ("queue_depth", "queue_depth", {}, None),
    ("drain_time", "drain_time", {}, None),
    ("threshold", "threshold", {}, None),
    *[(name, name, {}, None) for name in BASELINES],
]
ORACLE_FACTOR = 1.2
WHY = ("Where a baseline is not dominated: `keda_hpa` (target 5 tasks per worker, 30 s polling) and "
       "`aws_target_tracking` (target 10, 3-minute alarms) run fewer workers than there are tasks, so they are "
       "cheaper at the price of minutes of wait; a one-task-per-worker policy cannot match their worker-hours. "
       "`spark_da` (60 s idle timeout) and `ray` (300 s) keep idle workers longer, so on steady or spiky "
       "arrivals they start some tasks a few seconds sooner for more worker-hours. Against the oracle, each "
       "launch pays a ~40 s boot and the ec2 API limits (2 launches/s) throttle bursts; see docs/policies.md, "
       "\"Recommended\".")


def trace(name: str) -> list[Task]:
    family, params = TRACES[name]
    return FAMILIES[family](**params)


def run_trace(name: str) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Every choice on one trace: per-policy metrics and a report :func:`pool.simulate.plot` can draw."""
    tasks = trace(name)
    profile = parse_profile(PROFILE)
    metrics: dict[str, dict[str, Any]] = {}
    timelines: dict[str, dict[str, list[float]]] = {}
    for label, policy, params, scaling in CHOICES:
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
        print(f"  {name:9s} {label:20s} {r['worker_hours']:8.2f} wh  mean {r['mean_wait']:7.1f} s  "
              f"p95 {r['p95_wait']:7.1f} s  ({metrics[label]['wall_s']:.1f} s)", flush=True)
    best, best_timeline = oracle(tasks)
    metrics["oracle"] = {"worker_hours": best["worker_hours"], "mean_wait_s": 0.0, "p95_wait_s": 0.0,
                         "makespan_s": best["makespan"], "peak_workers": best["peak_workers"]}
    timelines["oracle"] = best_timeline
    family, params = TRACES[name]
    source = f"{family}:" + ",".join(f"{k}={v:g}" for k, v in params.items())
    report = {"trace": trace_summary(tasks, source), "site_profile": asdict(profile), "seed": SEED,
              "timelines": timelines}
    return metrics, report


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


def markdown(results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    rp = RECOMMENDED_POLICY
    lines = [f"Recommended: `{rp['name']}` {rp['params']} with `scaling:` {rp['scaling']} (the same on every "
             f"trace); baselines run with their anchors' defaults and `scaling_defaults`. Site profile "
             f"`{PROFILE}` (40 s median boot, EC2 API limits), sim seed {SEED}. Traces: "
             + "; ".join(f"`{n}` = {f}({', '.join(f'{k}={v:g}' for k, v in p.items())})"
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
    lines.append(WHY)
    return "\n".join(lines)


def main() -> None:
    started = time.perf_counter()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for name in TRACES:
        metrics, report = run_trace(name)
        results[name] = metrics
        plot(report, RESULTS / f"policies-{name}.png")
    table = []
    for name, per in results.items():
        rec, orc = per[RECOMMENDED], per["oracle"]
        beaten = [b for b in BASELINES if pareto(rec, per[b]) in ("equal", "dominated by recommended")]
        lost = [f"{b} ({pareto(rec, per[b]).strip('*')})" for b in BASELINES if b not in beaten]
        table.append(row(f"{name}: baselines Pareto-dominated by recommended (worker-hours, mean wait)",
                         len(beaten), f"{len(BASELINES)} of {len(BASELINES)}", len(beaten) == len(BASELINES),
                         "not: " + ", ".join(lost) if lost else ""))
        ratio = rec["worker_hours"] / orc["worker_hours"]
        table.append(row(f"{name}: recommended worker-hours / oracle", ratio, f"<= {ORACLE_FACTOR}",
                         ratio <= ORACLE_FACTOR,
                         f"{rec['worker_hours']:.2f} vs {orc['worker_hours']:.2f} wh; "
                         f"mean wait {rec['mean_wait_s']:.1f} s (oracle 0)"))
    elapsed = time.perf_counter() - started
    table.append(row("benchmark wall time (s)", elapsed, "", None, f"{len(TRACES)} traces x {len(CHOICES)} policies"))
    path = write_result("policies", {
        "recommended": RECOMMENDED,
        "recommended_policy": RECOMMENDED_POLICY,
        "site_profile": PROFILE,
        "seed": SEED,
        "trace_specs": {n: {"family": f, **p} for n, (f, p) in TRACES.items()},
        "traces": results,
        "wall_seconds": elapsed,
        "markdown": markdown(results),
    }, table)
    print(f"wrote {path} in {elapsed:.0f} s")


if __name__ == "__main__":
    main()
