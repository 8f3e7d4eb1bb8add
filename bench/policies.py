"""Policies: every policy and baseline on synthetic traces in the simulator, against the oracle bound.

``python -m bench.policies`` writes ``bench/results/policies.json`` (its table and markdown go to
BENCHMARKS.md); ``python -m bench.policies --sweep [--jobs N]`` maps what our policy families can
reach on the same traces and writes ``bench/results/policies-sweep.json``, which the table's
explanations quote.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from typing import Any

from bench.common import RESULTS, row, write_result
from policies import registry as policy_registry
from pool.sim.simulate import PolicyChoice, Simulation, domain_spec, downsample, oracle, plot, trace_summary
from pool.sim.traces import FAMILIES, Task
from pool.sites.sim import SimCloudProfile, parse_profile

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
    "params": {"patience": 3.0},
    "scaling": {"stabilization": 0.0, "idle_timeout": 0.0},
}
#: The previous recommendation: ``lookahead`` with its class defaults (``patience`` 2).
LOOKAHEAD_DEFAULTS = "lookahead_patience_2"
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
    (LOOKAHEAD_DEFAULTS, "lookahead", {}, None),
    (PREVIOUS, PREVIOUS_POLICY["name"], PREVIOUS_POLICY["params"], PREVIOUS_POLICY["scaling"]),
    ("lookahead_patience_0.5", "lookahead", {"patience": 0.5}, None),
    ("queue_depth", "queue_depth", {}, None),
    ("drain_time", "drain_time", {}, None),
    ("threshold", "threshold", {}, None),
    *[(f"wait_target_p95_{t:g}", "wait_target", {"p95_wait": t}, None) for t in (30.0, 120.0)],
    *[(name, name, {}, None) for name in BASELINES],
]
SECOND_CHOICES: list[Choice] = [CHOICES[0], *[c for c in CHOICES if c[0] in BASELINES]]
#: Traces with stationary arrivals, where a pool of fixed size is the natural reference.
STATIONARY = ("poisson", "heavy")
ORACLE_FACTOR = 1.2
#: Arrivals more than this many seconds apart start a new episode (a burst of ``periodic``): a
#: machine kept idle that long costs more than booting a new one, so each episode pays its boots.
EPISODE_GAP = 600.0
#: Boot-time draws the boot-adjusted oracle averages its reference pool's waits over.
REFERENCE_SEEDS = tuple(range(1, 9))
SWEEP = "policies-sweep"
#: Configurations of the sweep re-run on the second seed (the best of its ranking).
SWEEP_SECOND = 6
#: What each baseline does that explains where it lands (policies/baselines.py has the sources).
WHY: dict[str, str] = {
    "keda_hpa": "polls every 30 s for one worker per 5 queued or running tasks, grows at most 4 workers "
                "or 100% per poll and holds its size 300 s after the queue shrinks",
    "ray": "asks for one node per queued or running task (at most max(5, joined) pending at once) and keeps "
           "idle nodes 5 minutes",
    "spark_da": "adds executors 1, 2, 4, 8 ... per second while tasks wait, up to one per queued or running "
                "task, and keeps idle executors 60 s",
    "aws_target_tracking": "scales out only after 3 one-minute datapoints above 10 queued tasks per instance "
                           "(and in after 15 below 9)",
}


def trace(name: str, shift: int = 0) -> list[Task]:
    family, params = TRACES[name]
    return FAMILIES[family](**{**params, "seed": params["seed"] + shift})


def label_of(policy: str, params: Mapping[str, Any], scaling: Mapping[str, Any] | None = None) -> str:
    """``policy(k=v,...)`` with ``[k=v,...]`` for scaling overrides: a configuration's name in the sweep."""
    def fmt(v: Any) -> str:
        return f"{v:g}" if isinstance(v, float) else str(v).lower() if isinstance(v, bool) else str(v)

    text = f"{policy}({','.join(f'{k}={fmt(v)}' for k, v in params.items())})"
    return text + (f"[{','.join(f'{k}={fmt(v)}' for k, v in scaling.items())}]" if scaling else "")


def same_config(a: Choice, b: Choice) -> bool:
    """Whether two choices build the same policy and run with the same shaping."""
    if a[1] != b[1]:
        return False
    built = [policy_registry.build(c[1], dict(c[2])) for c in (a, b)]
    scaling = [domain_spec(PolicyChoice(c[0], c[1], c[2]), queue="q", scaling=c[3]).scaling for c in (a, b)]
    return bool(built[0] == built[1] and scaling[0] == scaling[1])


def simulate(tasks: Sequence[Task], choice: Choice) -> tuple[dict[str, Any], Simulation]:
    """One choice on one trace: its metrics and the finished simulation."""
    label, policy, params, scaling = choice
    started = time.perf_counter()
    sim = Simulation(tasks, PolicyChoice(label, policy, params), profile=parse_profile(PROFILE), seed=SEED,
                     scaling=scaling)
    r = sim.run()
    metrics = {
        "policy": policy, "params": params, "scaling": r["scaling"],
        "worker_hours": r["worker_hours"], "mean_wait_s": r["mean_wait"], "p95_wait_s": r["p95_wait"],
        "max_wait_s": r["max_wait"], "makespan_s": r["makespan"], "peak_workers": r["peak_workers"],
        "launches": r["launches"], "unfinished": r["unfinished"], "wall_s": time.perf_counter() - started,
    }
    return metrics, sim


# ---------------------------------------------------------------------------
# References: a pool sized in advance, and the oracle plus the boots a real pool pays
# ---------------------------------------------------------------------------


def fixed_pool(tasks: Sequence[Task], size: int, profile: SimCloudProfile, *, seed: int = SEED) -> tuple[float, float]:
    """``(worker-hours, mean wait)`` of ``size`` workers launched from the first arrival on, one per
    RunInstances call as fast as the site's buckets allow, booting like the site's machines, serving
    the tasks FIFO, each billed from its launch until the last arrival or its last task, whichever
    is later. It knows the right size in advance: a reference for stationary arrivals, not a policy.

    ``tasks`` must be sorted by arrival. The first ``k`` machines (launch times and boot draws) are
    the same for every ``size >= k``, so the wait never grows with the size."""
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


def fewest_machines(tasks: Sequence[Task], wait: float, profile: SimCloudProfile,
                    seeds: Sequence[int] = (SEED,)) -> int | None:
    """The smallest :func:`fixed_pool` whose mean wait (averaged over boot-time draws ``seeds``) is at
    most ``wait``; None when not even one machine per task waits that little.

    Such a pool has every machine it will ever have up as early as the site allows, so no pool
    that starts launching at the first arrival reaches that wait with fewer machines at once, hence
    with fewer launches (up to the luck of the boot-time draws)."""
    def waits(size: int) -> float:
        return sum(fixed_pool(tasks, size, profile, seed=s)[1] for s in seeds) / len(seeds)

    lo, hi = 1, len(tasks)
    if waits(hi) > wait + 1e-9:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if waits(mid) <= wait + 1e-9 else (mid + 1, hi)
    return lo


def episodes(arrivals: Sequence[float], gap: float = EPISODE_GAP) -> list[range]:
    """Index ranges of sorted ``arrivals`` split wherever none arrives for more than ``gap`` seconds."""
    cuts = [i for i in range(1, len(arrivals)) if arrivals[i] - arrivals[i - 1] > gap]
    bounds = [0, *cuts, len(arrivals)]
    return [range(a, b) for a, b in zip(bounds, bounds[1:])]


def episode_waits(sim: Simulation) -> list[float]:
    """Mean wait of the tasks of each episode of a finished simulation (unfinished tasks left out)."""
    out = []
    for ep in episodes(sim.arrival):
        waits = [sim.start[k] - sim.arrival[k] for k in ep if not math.isnan(sim.start[k])]
        out.append(sum(waits) / len(waits) if waits else math.inf)
    return out


def mean_boot(profile: SimCloudProfile) -> float:
    """Expected seconds from launch to joined on the site (log-normal boot times)."""
    return profile.boot_median * math.exp(profile.boot_sigma ** 2 / 2)


def boot_adjusted(tasks: Sequence[Task], waits: Sequence[float], oracle_hours: float,
                  profile: SimCloudProfile) -> dict[str, Any]:
    """The oracle plus the boots a real pool pays to wait no longer than ``waits`` (one per episode).

    The site bills from the launch request, so every machine costs a boot before it works; per
    episode at least :func:`fewest_machines` machines are needed for that episode's wait (a machine
    kept from an earlier episode instead idles longer than a boot), the pool's waits averaged over
    :data:`REFERENCE_SEEDS` draws of boot times. A lower bound up to the luck of the draws: where more
    machines barely shorten the wait (the end of a burst), a policy whose machines booted a little
    faster reaches its wait with fewer. An episode waited less than any such pool can (a policy's
    lucky draws) counts the machines such a pool puts to use at all (``unreached_episodes``)."""
    ordered = sorted(tasks, key=lambda t: t.arrival)
    machines, unreached = 0, 0
    for ep, wait in zip(episodes([t.arrival for t in ordered]), waits):
        part = [ordered[i] for i in ep]
        k = fewest_machines(part, wait, profile, REFERENCE_SEEDS)
        if k is None:  # faster than any such pool: count the machines that pool can put to use at all
            best = sum(fixed_pool(part, len(part), profile, seed=s)[1] for s in REFERENCE_SEEDS) / len(REFERENCE_SEEDS)
            k, unreached = fewest_machines(part, best, profile, REFERENCE_SEEDS) or len(part), unreached + 1
        machines += k
    return {"worker_hours": oracle_hours + machines * mean_boot(profile) / 3600.0, "machines": machines,
            "boot_s": mean_boot(profile), "episodes": len(waits), "unreached_episodes": unreached}


def fixed_pool_reference(name: str, per: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The smallest fixed pool as fast as the fastest baseline, against the cheapest baseline's cost."""
    tasks, profile = sorted(trace(name), key=lambda t: t.arrival), parse_profile(PROFILE)
    fastest = min(BASELINES, key=lambda b: per[b]["mean_wait_s"])
    cheapest = min(BASELINES, key=lambda b: per[b]["worker_hours"])
    size = fewest_machines(tasks, per[fastest]["mean_wait_s"], profile) or len(tasks)
    wh, wait = fixed_pool(tasks, size, profile)
    return {"workers": size, "worker_hours": wh, "mean_wait_s": wait, "fastest": fastest,
            "fastest_wait_s": per[fastest]["mean_wait_s"], "cheapest": cheapest,
            "cheapest_worker_hours": per[cheapest]["worker_hours"]}


# ---------------------------------------------------------------------------
# Dominance
# ---------------------------------------------------------------------------


def dominates(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """``a`` is no costlier and no slower than ``b`` on (worker-hours, mean wait)."""
    return bool(a["worker_hours"] <= b["worker_hours"] and a["mean_wait_s"] <= b["mean_wait_s"])


def strictly_dominates(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return dominates(a, b) and (a["worker_hours"] < b["worker_hours"] or a["mean_wait_s"] < b["mean_wait_s"])


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


# ---------------------------------------------------------------------------
# The benchmark: every choice on every trace
# ---------------------------------------------------------------------------


def run_trace(name: str, *, shift: int = 0, choices: Sequence[Choice] = CHOICES,
              ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Every choice on one trace: per-policy metrics and a report :func:`pool.sim.simulate.plot` can draw.

    Each policy's metrics include ``boot_adjusted``: the oracle plus the boots of the fewest machines
    a pool needs to wait as little as that policy did (see :func:`boot_adjusted`)."""
    tasks = trace(name, shift)
    profile = parse_profile(PROFILE)
    best, best_timeline = oracle(tasks)
    metrics: dict[str, dict[str, Any]] = {}
    timelines: dict[str, dict[str, list[float]]] = {}
    for choice in choices:
        label = choice[0]
        m, sim = simulate(tasks, choice)
        m["boot_adjusted"] = boot_adjusted(tasks, episode_waits(sim), best["worker_hours"], profile)
        metrics[label] = m
        timelines[label] = downsample(sim.timeline)
        print(f"  {name:9s} +{shift:<3d}{label:24s} {m['worker_hours']:8.2f} wh  mean {m['mean_wait_s']:7.1f} s  "
              f"p95 {m['p95_wait_s']:7.1f} s  ({m['wall_s']:.1f} s)", flush=True)
    metrics["oracle"] = {"worker_hours": best["worker_hours"], "mean_wait_s": 0.0, "p95_wait_s": 0.0,
                         "makespan_s": best["makespan"], "peak_workers": best["peak_workers"]}
    timelines["oracle"] = best_timeline
    family, params = TRACES[name]
    source = f"{family}:" + ",".join(f"{k}={v:g}" for k, v in {**params, "seed": params["seed"] + shift}.items())
    report = {"trace": trace_summary(tasks, source), "site_profile": asdict(profile), "seed": SEED,
              "timelines": timelines}
    return metrics, report


# ---------------------------------------------------------------------------
# The sweep: what our policy families reach, trace by trace
# ---------------------------------------------------------------------------

SWEEP_PATIENCE = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0)


def sweep_choices() -> list[Choice]:
    """Our policy families over their main parameters (the recommended configuration among them)."""
    out: list[Choice] = []

    def add(policy: str, params: dict[str, Any], scaling: dict[str, Any] | None = None) -> None:
        out.append((label_of(policy, params, scaling), policy, params, scaling))

    for p in SWEEP_PATIENCE:
        add("lookahead", {"patience": p})
    for p in (0.5, 1.0, 2.0, 3.0):
        for key, values in (("boot_time", (20.0, 60.0)), ("service_time", (30.0, 120.0)), ("learn", (False,))):
            for v in values:
                add("lookahead", {"patience": p, key: v})
    for p in (0.5, 1.0, 2.0):
        for key in ("idle_timeout", "stabilization"):
            for s in (30.0, 60.0, 120.0):
                add("lookahead", {"patience": p}, {key: s})
    for tpw in (1.0, 2.0, 4.0):
        for idle in (0.0, 30.0, 60.0, 120.0):
            for stab in (0.0, 30.0, 60.0, 120.0):
                add("queue_depth", {"tasks_per_worker": tpw}, {"idle_timeout": idle, "stabilization": stab})
    for duration in (30.0, 60.0, 120.0, 300.0, 600.0):
        for prior in (0.5, 60.0):
            add("drain_time", {"target_duration": duration, "initial_service_time": prior})
    recommended: Choice = ("recommended", RECOMMENDED_POLICY["name"], RECOMMENDED_POLICY["params"],
                           RECOMMENDED_POLICY["scaling"])
    if not any(same_config(c, recommended) for c in out):
        add(RECOMMENDED_POLICY["name"], dict(RECOMMENDED_POLICY["params"]), dict(RECOMMENDED_POLICY["scaling"]))
    return out


def _sweep_job(job: tuple[str, int, Choice]) -> tuple[str, str, dict[str, Any]]:
    name, shift, choice = job
    metrics, _ = simulate(trace(name, shift), choice)
    return name, choice[0], metrics


def _run_jobs(jobs: Sequence[tuple[str, int, Choice]], workers: int) -> Iterator[tuple[str, str, dict[str, Any]]]:
    if workers <= 1:
        yield from map(_sweep_job, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_sweep_job, jobs, chunksize=2)


def closeness(point: Mapping[str, Any], corner: Mapping[str, Any]) -> float:
    """How far ``point`` is from the corner, as the larger of its two ratios to it (<= 1: reached)."""
    return max(point["worker_hours"] / corner["worker_hours"], point["mean_wait_s"] / max(corner["mean_wait_s"], 1e-9))


def pool_by_episode(tasks: Sequence[Task], size: int, profile: SimCloudProfile) -> tuple[float, float]:
    """:func:`fixed_pool` launched afresh for each episode of ``tasks`` (sorted): total worker-hours, mean wait."""
    hours, waited = 0.0, 0.0
    for ep in episodes([t.arrival for t in tasks]):
        wh, wait = fixed_pool([tasks[i] for i in ep], size, profile)
        hours, waited = hours + wh, waited + wait * len(ep)
    return hours, waited / len(tasks)


def fixed_frontier(name: str, corner: Mapping[str, Any]) -> dict[str, Any]:
    """Pools of a fixed size sized in hindsight (launched afresh for each episode): the smallest as
    fast as the corner, and the largest as cheap as it."""
    tasks, profile = sorted(trace(name), key=lambda t: t.arrival), parse_profile(PROFILE)
    largest = max(len(ep) for ep in episodes([t.arrival for t in tasks]))
    out: dict[str, Any] = {"as_fast": None, "as_cheap": None}
    lo, hi = 1, largest  # the wait falls as the size grows: the smallest pool as fast as the corner
    if pool_by_episode(tasks, hi, profile)[1] <= corner["mean_wait_s"]:
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if pool_by_episode(tasks, mid, profile)[1] <= corner["mean_wait_s"] else (mid + 1, hi)
        wh, wait = pool_by_episode(tasks, lo, profile)
        out["as_fast"] = {"workers": lo, "worker_hours": wh, "mean_wait_s": wait}
    lo, hi = 0, largest  # worker-hours grow with the size: the largest pool within the corner's cost
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if pool_by_episode(tasks, mid, profile)[0] <= corner["worker_hours"] else (lo, mid - 1)
    if lo:
        wh, wait = pool_by_episode(tasks, lo, profile)
        out["as_cheap"] = {"workers": lo, "worker_hours": wh, "mean_wait_s": wait}
    out["reaches"] = bool(out["as_fast"] and out["as_fast"]["worker_hours"] <= corner["worker_hours"])
    return out


def analyse_sweep(points: Mapping[str, Mapping[str, Mapping[str, Any]]], ours: Sequence[Choice],
                  oracles: Mapping[str, float]) -> dict[str, Any]:
    """Per trace the corner, what reaches it and what comes closest; per configuration its pairs."""
    labels = [c[0] for c in ours]
    traces: dict[str, Any] = {}

    def brief(per: Mapping[str, Mapping[str, Any]], label: str | None, corner: Mapping[str, Any]) -> dict[str, Any] | None:
        if label is None:
            return None
        m = per[label]
        return {"label": label, "worker_hours": m["worker_hours"], "mean_wait_s": m["mean_wait_s"],
                "launches": m["launches"], "closeness": closeness(m, corner)}

    for name, per in points.items():
        cheapest = min(BASELINES, key=lambda b: per[b]["worker_hours"])
        fastest = min(BASELINES, key=lambda b: per[b]["mean_wait_s"])
        corner = {"worker_hours": per[cheapest]["worker_hours"], "cheapest": cheapest,
                  "mean_wait_s": per[fastest]["mean_wait_s"], "fastest": fastest}

        reached = sorted((x for x in labels if dominates(per[x], corner)), key=lambda x: closeness(per[x], corner))
        fast = [x for x in labels if per[x]["mean_wait_s"] <= corner["mean_wait_s"]]
        cheap = [x for x in labels if per[x]["worker_hours"] <= corner["worker_hours"]]
        traces[name] = {
            "oracle_worker_hours": oracles[name],
            "episodes": len(episodes(sorted(t.arrival for t in trace(name)))),
            "corner": corner,
            "baselines": {b: {k: per[b][k] for k in ("worker_hours", "mean_wait_s", "p95_wait_s", "launches")}
                          for b in BASELINES},
            "feasible": bool(reached),
            "reached_by": reached,
            "closest": brief(per, min(labels, key=lambda x: closeness(per[x], corner)), corner),
            "cheapest_as_fast": brief(per, min(fast, key=lambda x: per[x]["worker_hours"]) if fast else None, corner),
            "fastest_as_cheap": brief(per, min(cheap, key=lambda x: per[x]["mean_wait_s"]) if cheap else None, corner),
            "fixed_pool": fixed_frontier(name, corner),
        }
    configs: dict[str, Any] = {}
    for policy_label, policy, params, scaling in ours:
        beats = {name: [b for b in BASELINES if dominates(per[policy_label], per[b])] for name, per in points.items()}
        by = {name: [x for x in labels if x != policy_label and strictly_dominates(per[x], per[policy_label])]
              for name, per in points.items()}
        configs[policy_label] = {
            "policy": policy, "params": params, "scaling": scaling,
            "pairs": sum(len(v) for v in beats.values()), "beats": beats,
            "dominated_by": {k: v for k, v in by.items() if v},
            "mean_x_oracle": sum(per[policy_label]["worker_hours"] / oracles[n] for n, per in points.items())
            / len(points),
        }
    ranking = sorted(labels, key=lambda x: (-configs[x]["pairs"], len(configs[x]["dominated_by"]),
                                            configs[x]["mean_x_oracle"]))
    return {"traces": traces, "configs": configs, "ranking": ranking}


def run_sweep(*, workers: int = 1) -> dict[str, Any]:
    """Every configuration of :func:`sweep_choices` and every baseline on every trace."""
    ours = sweep_choices()
    baselines: list[Choice] = [(b, b, {}, None) for b in BASELINES]
    jobs = [(name, 0, c) for c in [*baselines, *ours] for name in TRACES]
    points: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in TRACES}
    started = time.perf_counter()
    for i, (name, label, metrics) in enumerate(_run_jobs(jobs, workers), 1):
        points[name][label] = metrics
        if i % 25 == 0 or i == len(jobs):
            print(f"  sweep {i}/{len(jobs)} ({time.perf_counter() - started:.0f} s)", flush=True)
    oracles = {name: oracle(trace(name))[0]["worker_hours"] for name in TRACES}
    result = analyse_sweep(points, ours, oracles)
    # the best of the ranking, and the recommended, again on the second seed
    recommended: Choice = ("recommended", RECOMMENDED_POLICY["name"], RECOMMENDED_POLICY["params"],
                           RECOMMENDED_POLICY["scaling"])
    rec_label = next(c[0] for c in ours if same_config(c, recommended))
    again = list(dict.fromkeys([*result["ranking"][:SWEEP_SECOND], rec_label]))
    chosen = [c for c in ours if c[0] in again]
    jobs = [(name, SECOND_SEED, c) for c in [*baselines, *chosen] for name in TRACES]
    second: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in TRACES}
    for name, label, metrics in _run_jobs(jobs, workers):
        second[name][label] = metrics
    result["second_seed"] = {
        label: {"pairs": sum(sum(dominates(per[label], per[b]) for b in BASELINES) for per in second.values()),
                "points": {n: {k: per[label][k] for k in ("worker_hours", "mean_wait_s")} for n, per in second.items()}}
        for label in again}
    result["recommended_label"] = rec_label
    result["points"] = {name: {label: {k: m[k] for k in ("policy", "params", "scaling", "worker_hours", "mean_wait_s",
                                                           "p95_wait_s", "launches", "unfinished")}
                               for label, m in per.items()} for name, per in points.items()}
    result["configurations"] = len(ours)
    result["wall_seconds"] = time.perf_counter() - started
    return result


def _point(p: Mapping[str, Any] | None) -> str:
    return "none" if p is None else f"`{p['label']}` ({p['worker_hours']:.2f} wh, {p['mean_wait_s']:.1f} s)"


def sweep_findings(name: str, s: Mapping[str, Any], configurations: int) -> str:
    """One trace of the sweep in words: the corner, whether anything reaches it, what comes closest."""
    c, fixed = s["corner"], s["fixed_pool"]
    text = (f"dominating every baseline needs <= {c['worker_hours']:.2f} wh (`{c['cheapest']}`) and "
            f"<= {c['mean_wait_s']:.1f} s (`{c['fastest']}`); ")
    if s["feasible"]:
        text += (f"{len(s['reached_by'])} of the {configurations} configurations of the sweep reach it, "
                 f"e.g. {_point(s['closest'])}")
    else:
        fast, cheap = s["cheapest_as_fast"], s["fastest_as_cheap"]
        text += (f"none of the {configurations} configurations of the sweep does: the closest is {_point(s['closest'])}; "
                 + (f"the cheapest as fast as `{c['fastest']}` is {_point(fast)}" if fast else
                    f"none is as fast as `{c['fastest']}`") + "; "
                 + (f"the fastest as cheap as `{c['cheapest']}` is {_point(cheap)}" if cheap else
                    f"none is as cheap as `{c['cheapest']}`"))
    if fixed["as_fast"]:
        f = fixed["as_fast"]
        each = " per episode" if s["episodes"] > 1 else ""
        text += (f"; a fixed pool sized in hindsight needs {f['workers']} workers{each} and {f['worker_hours']:.2f} wh "
                 f"to wait {f['mean_wait_s']:.1f} s")
        if fixed["as_cheap"] and not fixed["reaches"]:
            g = fixed["as_cheap"]
            text += f", and within {c['worker_hours']:.2f} wh ({g['workers']} workers) it waits {g['mean_wait_s']:.1f} s"
    return text


def sweep_markdown(result: Mapping[str, Any]) -> str:
    n = result["configurations"]
    lines = [f"{n} configurations of our policy families on the traces of `make bench-policies` (same seeds): "
             f"`lookahead` over `patience` {', '.join(f'{p:g}' for p in SWEEP_PATIENCE)}, and at `patience` "
             f"0.5/1/2/3 with `boot_time` 20/60, `service_time` 30/120 or `learn: false`, and at 0.5/1/2 with an "
             f"idle timeout or a stabilization window of 30/60/120 s; `queue_depth` with 1/2/4 tasks per worker x "
             f"idle timeout x stabilization in 0/30/60/120 s; `drain_time` with `target_duration` 30-600 s and a "
             f"service-time prior of 0.5 or 60 s. The corner of a trace is the cheapest baseline's worker-hours "
             f"and the fastest baseline's mean wait: a configuration dominates all four baselines there iff it "
             f"reaches the corner. Closeness = the larger of (worker-hours, mean wait) / corner (<= 1: reached).",
             ""]
    for name, s in result["traces"].items():
        lines.append(f"- **{name}**: {sweep_findings(name, s, n)}.")
    lines += ["", "Configurations that dominate the most (trace, baseline) pairs (of 24); a trace lists the "
              "baselines dominated there; *dominated on* names the traces where another configuration of the "
              "sweep is both cheaper and faster:", "",
              "| configuration | pairs | second seed | " + " | ".join(result["traces"]) + " | dominated on |",
              "|---|---|---|" + "---|" * len(result["traces"]) + "---|"]
    rec = result["recommended_label"]
    shown = list(dict.fromkeys([*result["ranking"][:12], rec]))
    for label in shown:
        cfg = result["configs"][label]
        second = result["second_seed"].get(label, {}).get("pairs", "")
        cells = []
        for name in result["traces"]:
            m = result["points"][name][label]
            abbreviated = ",".join({"keda_hpa": "K", "ray": "R", "spark_da": "S", "aws_target_tracking": "A"}[b]
                                   for b in cfg["beats"][name])
            cells.append(f"{m['worker_hours']:.2f} wh, {m['mean_wait_s']:.1f} s {abbreviated or '-'}")
        mark = " (recommended)" if label == rec else ""
        lines.append(f"| `{label}`{mark} | {cfg['pairs']} | {second} | " + " | ".join(cells) + " | "
                     + (", ".join(cfg["dominated_by"]) or "-") + " |")
    lines += ["", "K = keda_hpa, R = ray, S = spark_da, A = aws_target_tracking. Second seed: pairs dominated "
              f"with every family's seed + {SECOND_SEED} (the best {SWEEP_SECOND} and the recommended only)."]
    return "\n".join(lines)


def sweep_table(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    table = []
    for name, s in result["traces"].items():
        c, best = s["corner"], s["closest"]
        table.append(row(f"{name}: closeness of the best configuration to the corner "
                         f"({c['worker_hours']:.2f} wh, {c['mean_wait_s']:.1f} s)", best["closeness"], "<= 1",
                         s["feasible"], f"{best['label']}: {best['worker_hours']:.2f} wh, {best['mean_wait_s']:.1f} s"))
    top, rec = result["ranking"][0], result["recommended_label"]
    total = len(BASELINES) * len(result["traces"])
    table.append(row("most (trace, baseline) pairs dominated by one configuration", result["configs"][top]["pairs"],
                     f"{total}", None, top))
    table.append(row("pairs dominated by the recommended configuration", result["configs"][rec]["pairs"],
                     f"{total}", None, rec))
    table.append(row("sweep wall time (s)", result["wall_seconds"], "", None,
                     f"{result['configurations']} configurations x {len(result['traces'])} traces"))
    return table


def load_sweep() -> dict[str, Any] | None:
    path = RESULTS / f"{SWEEP}.json"
    return json.loads(path.read_text()) if path.exists() else None


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------


def explain(name: str, per: Mapping[str, Mapping[str, Any]], sweep: Mapping[str, Any] | None) -> str:
    """Where a baseline is not dominated on this trace, and why, with the numbers."""
    rec = per[RECOMMENDED]
    parts = []
    for b in BASELINES:
        status, m = pareto(rec, per[b]), per[b]
        if status in ("equal", "dominated by recommended"):
            continue
        if status == "**trade-off: faster, costlier**":
            parts.append(f"`{b}` waits {m['mean_wait_s']:.1f} s where the recommended waits {rec['mean_wait_s']:.1f} s, "
                         f"for {m['worker_hours'] / rec['worker_hours']:.2f}x its worker-hours ({m['worker_hours']:.2f} "
                         f"vs {rec['worker_hours']:.2f}; {m['launches']} launches vs {rec['launches']}): it {WHY[b]}")
        elif status == "trade-off: cheaper, slower":
            parts.append(f"`{b}` costs {m['worker_hours']:.2f} wh to the recommended's {rec['worker_hours']:.2f} and "
                         f"waits {m['mean_wait_s']:.1f} s to its {rec['mean_wait_s']:.1f} s ({m['launches']} launches vs "
                         f"{rec['launches']}): it {WHY[b]}")
        else:
            parts.append(f"`{b}` is both cheaper ({m['worker_hours']:.2f} wh vs {rec['worker_hours']:.2f}) and faster "
                         f"({m['mean_wait_s']:.1f} s vs {rec['mean_wait_s']:.1f} s): it {WHY[b]}")
    if not parts:
        return "The recommended dominates all four baselines here."
    text = "Where a baseline wins: " + "; ".join(parts) + "."
    if sweep is not None and name in sweep["traces"]:
        findings = sweep_findings(name, sweep["traces"][name], sweep["configurations"])
        text += f" Sweep: {findings}."
        old = sweep["points"][name].get(sweep["recommended_label"])
        if old is None or not (math.isclose(old["worker_hours"], rec["worker_hours"], rel_tol=1e-9)
                               and math.isclose(old["mean_wait_s"], rec["mean_wait_s"], rel_tol=1e-9)):
            text += " (The sweep's numbers for the recommended differ from this run's: re-run `--sweep`.)"
    return text


def choice_text(sweep: Mapping[str, Any] | None) -> str:
    """How the recommended configuration stands in the sweep, and where our own configurations beat it."""
    if sweep is None:
        return "No sweep results: `python -m bench.policies --sweep` maps what our policy families reach."
    n, rec, ranking, configs = sweep["configurations"], sweep["recommended_label"], sweep["ranking"], sweep["configs"]
    best = configs[ranking[0]]["pairs"]
    ties = [x for x in ranking if configs[x]["pairs"] == best]
    cfg = configs[rec]
    total = len(BASELINES) * len(sweep["traces"])
    text = (f"**Choice.** Among the {n} configurations of the sweep (`python -m bench.policies --sweep`, "
            f"bench/results/{SWEEP}.json) the most (trace, baseline) pairs any one dominates is {best} of {total} "
            f"({len(ties)} configuration{'s' if len(ties) > 1 else ''}: {', '.join(f'`{x}`' for x in ties[:6])}"
            f"{', ...' if len(ties) > 6 else ''}); the recommended (`{rec}`) dominates {cfg['pairs']}"
            f" ({sweep['second_seed'].get(rec, {}).get('pairs', '?')} on the second seed).")
    if cfg["dominated_by"]:
        where = []
        for name, others in cfg["dominated_by"].items():
            pts = sweep["points"][name]
            example = min(others, key=lambda x: (configs[x]["pairs"] * -1, pts[x]["mean_wait_s"]))
            saving = pts[rec]["worker_hours"] - min(pts[x]["worker_hours"] for x in others)
            where.append(f"on `{name}` {len(others)}, cheaper by at most {saving:.2f} wh "
                         f"({100 * saving / pts[rec]['worker_hours']:.1f}%) (e.g. `{example}`: "
                         f"{pts[example]['worker_hours']:.2f} wh, {pts[example]['mean_wait_s']:.1f} s vs "
                         f"{pts[rec]['worker_hours']:.2f} wh, {pts[rec]['mean_wait_s']:.1f} s; it dominates "
                         f"{configs[example]['pairs']} pairs in all)")
        most = max(configs[x]["pairs"] for others in cfg["dominated_by"].values() for x in others)
        text += (" Configurations of the sweep that are both cheaper and faster than it: " + "; ".join(where)
                 + f". None of them dominates more than {most} pairs over all traces.")
    else:
        text += " No configuration of the sweep is both cheaper and faster than it on any trace."
    closest: dict[str, list[str]] = {}
    for name, t in sweep["traces"].items():
        if not t["feasible"] and t["closest"]["label"] != rec:
            closest.setdefault(t["closest"]["label"], []).append(name)
    notes = []
    for label, where in closest.items():
        gains = [f"`{b}` on `{n}`" for n in sweep["traces"] for b in configs[label]["beats"][n]
                 if b not in cfg["beats"][n]]
        losses = []
        for name, t in sweep["traces"].items():
            pt = sweep["points"][name][label]
            for b in cfg["beats"][name]:
                if b not in configs[label]["beats"][name]:
                    bt = t["baselines"][b]
                    losses.append(f"`{b}` on `{name}` ({pt['worker_hours']:.2f} wh, {pt['mean_wait_s']:.1f} s vs "
                                  f"{bt['worker_hours']:.2f} wh, {bt['mean_wait_s']:.1f} s)")
        shown = losses[:3] + ([f"{len(losses) - 3} more"] if len(losses) > 3 else [])
        notes.append(f"`{label}` (closest on {', '.join(f'`{w}`' for w in where)}; {configs[label]['pairs']} pairs) "
                     f"gains {', '.join(gains) or 'nothing'} and loses {', '.join(shown) or 'nothing'}")
    if notes:
        text += " The configurations closest to the corners trade pairs: " + "; ".join(notes) + "."
    return text


def markdown(results: Mapping[str, Mapping[str, Mapping[str, Any]]],
             second: Mapping[str, Mapping[str, Mapping[str, Any]]],
             references: Mapping[str, Mapping[str, Any]], sweep: Mapping[str, Any] | None = None) -> str:
    rp = RECOMMENDED_POLICY
    profile = parse_profile(PROFILE)
    lines = [f"Recommended: `{rp['name']}` {rp['params'] or '(its defaults)'} with `scaling:` {rp['scaling']} "
             f"(the same on every trace); `{LOOKAHEAD_DEFAULTS}` is the previous recommendation (`lookahead` with "
             f"its defaults) and `{PREVIOUS}` the one before (`queue_depth`, one worker per task, 30 s "
             f"stabilization and idle timeout). Baselines run with their anchors' defaults and "
             f"`scaling_defaults`. Site profile `{PROFILE}` ({profile.boot_median:g} s median boot, EC2 API limits), "
             f"sim seed {SEED}. Traces: " + "; ".join(f"`{n}` = {f}({', '.join(f'{k}={v:g}' for k, v in p.items())})"
                                                     for n, (f, p) in TRACES.items()) + ".", "",
             f"The site bills every machine from its launch request, so each launch costs a boot "
             f"(~{mean_boot(profile):.0f} s) before it works; the oracle (zero boot, zero wait) pays none. "
             f"**× boot-adj.** divides by the oracle plus the boots of the fewest machines any pool needs to "
             f"wait as little as that policy did (a pool that knows each episode's tasks in advance, launches "
             f"from its first arrival as fast as the API allows and keeps every machine; episodes are split by "
             f"{EPISODE_GAP:.0f} s without arrivals).", ""]
    for name, per in results.items():
        rec, orc = per[RECOMMENDED], per["oracle"]
        adj = rec["boot_adjusted"]
        lines += [f"**{name}** (oracle {orc['worker_hours']:.2f} worker-hours; boot-adjusted at the recommended's "
                  f"wait {adj['worker_hours']:.2f} = oracle + {adj['machines']} machines x {adj['boot_s']:.1f} s)", "",
                  "| policy | worker-hours | × oracle | × boot-adj. | mean wait (s) | p95 wait (s) | launches | "
                  "vs recommended |", "|---|---|---|---|---|---|---|---|"]
        for label, m in per.items():
            status = "—" if label in (RECOMMENDED, "oracle") else pareto(rec, m)
            if label == "oracle":
                status = "lower bound"
            badj = f"{m['worker_hours'] / m['boot_adjusted']['worker_hours']:.2f}" if "boot_adjusted" in m else ""
            lines.append(f"| {label} | {m['worker_hours']:.2f} | {m['worker_hours'] / orc['worker_hours']:.2f} | "
                         f"{badj} | {m['mean_wait_s']:.1f} | {m['p95_wait_s']:.1f} | {m.get('launches', '')} | "
                         f"{status} |")
        lines += ["", explain(name, per, sweep), "", f"![{name}](bench/results/policies-{name}.png)", ""]
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
    lines += ["", choice_text(sweep)]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.policies", description=__doc__)
    parser.add_argument("--sweep", action="store_true",
                        help=f"map our policy families' reach instead; writes bench/results/{SWEEP}.json")
    parser.add_argument("--jobs", type=int, default=1, help="simulations run in parallel by --sweep (default 1)")
    args = parser.parse_args(argv)
    if args.sweep:
        result = run_sweep(workers=max(1, args.jobs))
        path = write_result(SWEEP, {**result, "markdown": sweep_markdown(result)}, sweep_table(result))
        print(f"wrote {path} in {result['wall_seconds']:.0f} s")
        return
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
        adj = rec["boot_adjusted"]
        table.append(row(f"{name}: recommended worker-hours / boot-adjusted oracle at its wait",
                         rec["worker_hours"] / adj["worker_hours"], "", None,
                         f"oracle + {adj['machines']} machines x {adj['boot_s']:.1f} s boot = {adj['worker_hours']:.2f} wh"))
    for name, ref in references.items():
        table.append(row(f"{name}: worker-hours of a fixed pool sized in advance to wait as little as {ref['fastest']}",
                         ref["worker_hours"], "", None,
                         f"{ref['workers']} workers, mean wait {ref['mean_wait_s']:.1f} s; cheapest baseline "
                         f"{ref['cheapest']} {ref['cheapest_worker_hours']:.2f} wh"))
    elapsed = time.perf_counter() - started
    table.append(row("benchmark wall time (s)", elapsed, "", None,
                     f"{len(TRACES)} traces x {len(CHOICES)} policies + {len(SECOND_CHOICES)} on a second seed"))
    sweep = load_sweep()
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
        "sweep": None if sweep is None else {
            "date": sweep.get("date"), "configurations": sweep["configurations"],
            "recommended_label": sweep["recommended_label"], "ranking": sweep["ranking"][:10],
            "feasible": {n: s["feasible"] for n, s in sweep["traces"].items()}},
        "wall_seconds": elapsed,
        "markdown": markdown(results, second, references, sweep),
    }, table)
    print(f"wrote {path} in {elapsed:.0f} s")


if __name__ == "__main__":
    main()
