"""Wait targets: the ``wait_target`` policy against a hindsight search over every built-in policy.

For each trace of ``bench.policies`` and each p95 wait target (10, 30, 120 s), the hindsight search
simulates every configuration of the other built-in policies (the parameter sweep of
``bench.policies``, the baselines with their defaults, and fixed pools of many sizes) and keeps the
cheapest that met the target; ``wait_target`` (told only the target) is reported as a ratio of
worker-hours to it. Seasonality is shown on the diurnal trace against the same policy without it.
Seasonality is measured twice: learned within the trace (its first cycle is the only history), and
after a week of history (the policy first runs seven earlier days of the same family, other seeds,
and keeps what it learned: the profile and a mean target's correction, as the store keeps them for a
domain that runs on). A clairvoyant pool, told the trace's true arrival rate one boot ahead and when
the arrivals end, is shown beside it: what no learned forecast can beat.
``python -m bench.waittarget [--jobs N]`` writes ``bench/results/waittarget.json``; ``make
bench-policies`` runs it after ``bench.policies``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from bench.common import RESULTS, row, write_result
from bench.policies import BASELINES, PROFILE, SEED, TRACES, Choice, _run_jobs, label_of, sweep_choices, trace
from policies import registry as policy_registry
from policies.wait_target import WaitTarget
from pool.core.model import Decision, DomainView, Reading
from pool.sim.simulate import DOMAIN, PolicyChoice, Simulation
from pool.sim.traces import Task
from pool.sites.sim import parse_profile

TARGETS = (10.0, 30.0, 120.0)
#: The ratio to the hindsight optimum the policy should stay within.
RATIO_GOAL = 1.1
FIXED_SIZES = (5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 60, 70, 80, 90, 100, 120, 150, 200, 300)
#: Extra configurations of the fast policies, for tight targets.
FAST: list[Choice] = [
    *[(label_of("queue_depth", {"tasks_per_worker": t}), "queue_depth", {"tasks_per_worker": t}, None)
      for t in (0.5, 0.75)],
    *[(label_of("drain_time", {"target_duration": d, "initial_service_time": 60.0}), "drain_time",
       {"target_duration": d, "initial_service_time": 60.0}, None) for d in (5.0, 10.0, 15.0)],
    *[(label_of("lookahead", {"patience": p}), "lookahead", {"patience": p}, None) for p in (0.05, 0.1)],
]
SEASON_TRACE = "diurnal"
#: The diurnal trace's period (bench.policies.TRACES): the season the policy learns.
SEASON_PERIOD = 1800.0
SEASON_TARGET: dict[str, Any] = {"mean_wait": 4.0}
#: Days of history the seasonal comparison gives the policy (the family's seeds + 100, + 101, ...).
HISTORY_DAYS = 7
HISTORY_SEED = 100
CLAIRVOYANT = "clairvoyant"


@dataclass(frozen=True)
class Clairvoyant:
    """A reference, not a policy to use: the diurnal trace's true arrival rate (``rate`` per second
    on average, ``1 + amplitude × sin(2πt / period)``) at its highest over the next ``boot`` seconds,
    times ``service``, as workers, no headroom, and never fewer than the busy ones (a busy worker asked
    to drain stops taking tasks); none after ``end`` (it knows when arrivals stop)."""

    scaling_defaults: ClassVar[dict[str, float]] = {"stabilization": 0.0, "idle_timeout": 0.0}
    rate: float = 1.0
    amplitude: float = 0.8
    period: float = 1800.0
    service: float = 60.0
    boot: float = 40.0
    end: float = 3600.0

    def decide(self, view: DomainView, readings: dict[str, Reading], now: float) -> Decision:
        del readings
        if now >= self.end:
            return Decision(view.busy, "arrivals over")
        top = max(self.rate * (1 + self.amplitude * math.sin(2 * math.pi * (now + s) / self.period))
                  for s in range(0, int(self.boot) + 1, 5))
        return Decision(max(math.ceil(top * self.service), view.busy), f"true rate {top:.3g}/s")


def clairvoyant_params() -> dict[str, Any]:
    family, params = TRACES[SEASON_TRACE]
    assert family == "diurnal"
    day = params["period"] * params["cycles"]
    return {"rate": params["n"] / day, "period": params["period"], "end": day}


def _clairvoyant_run() -> dict[str, Any]:
    policy_registry.aliases[CLAIRVOYANT] = f"{__name__}:Clairvoyant"  # this process only
    sim = Simulation(trace(SEASON_TRACE), PolicyChoice(CLAIRVOYANT, CLAIRVOYANT, clairvoyant_params()),
                     profile=parse_profile(PROFILE), seed=SEED)
    return _metrics(sim.run())


def _metrics(r: Mapping[str, Any]) -> dict[str, Any]:
    """A simulation's results under this benchmark's names."""
    return {"worker_hours": r["worker_hours"], "mean_wait_s": r["mean_wait"], "p95_wait_s": r["p95_wait"],
            "launches": r["launches"]}


def history_day() -> float:
    return float(TRACES[SEASON_TRACE][1]["period"] * TRACES[SEASON_TRACE][1]["cycles"])


def _with_history(params: dict[str, Any]) -> dict[str, Any]:
    """``wait_target`` with ``params`` on the season trace after :data:`HISTORY_DAYS` days of history."""
    day = history_day()
    days = [Task(t.arrival + day * d, t.service) for d in range(HISTORY_DAYS)
            for t in trace(SEASON_TRACE, HISTORY_SEED + d)]
    choice = PolicyChoice("history", "wait_target", params)
    warm = Simulation(days, choice, profile=parse_profile(PROFILE), seed=SEED, horizon=day * HISTORY_DAYS)
    warm.run()
    learned = WaitTarget.learned(warm.store.get_state(DOMAIN).policy_memory)
    sim = Simulation(trace(SEASON_TRACE), choice, profile=parse_profile(PROFILE), seed=SEED, memory=learned)
    return {**_metrics(sim.run()), "learned": sorted(k for k in learned if k != "policy")}


def ours(target: float) -> Choice:
    params = {"p95_wait": target}
    return label_of("wait_target", params), "wait_target", params, None


def hindsight_choices() -> list[Choice]:
    """Every configuration the hindsight search tries (no ``wait_target`` among them)."""
    out: list[Choice] = [(b, b, {}, None) for b in BASELINES]
    out += [(label_of("fixed", {"size": n}), "fixed", {"size": n}, None) for n in FIXED_SIZES]
    out += sweep_choices() + FAST
    return list({c[0]: c for c in out}.values())


def season_choices() -> list[Choice]:
    plain = dict(SEASON_TARGET)
    seasonal = {**SEASON_TARGET, "season_period": SEASON_PERIOD}
    return [(label_of("wait_target", plain), "wait_target", plain, None),
            (label_of("wait_target", seasonal), "wait_target", seasonal, None)]


def met(m: Mapping[str, Any], target: float) -> bool:
    return not m.get("unfinished") and m["p95_wait_s"] is not None and m["p95_wait_s"] <= target


def analyse(points: Mapping[str, Mapping[str, Mapping[str, Any]]], hindsight: Sequence[Choice]) -> dict[str, Any]:
    """The issue's shape: per target and trace, ours against the cheapest configuration that met it."""
    out: dict[str, Any] = {}
    for target in TARGETS:
        per_trace: dict[str, Any] = {}
        for name, per in points.items():
            m = per[ours(target)[0]]
            feasible = [c[0] for c in hindsight if met(per[c[0]], target)]
            best = min(feasible, key=lambda x: per[x]["worker_hours"]) if feasible else None
            hind = per[best]["worker_hours"] if best else None
            per_trace[name] = {
                "met": met(m, target), "p95_wait_s": m["p95_wait_s"], "mean_wait_s": m["mean_wait_s"],
                "worker_hours": m["worker_hours"], "hindsight_worker_hours": hind, "hindsight": best,
                "hindsight_p95_wait_s": per[best]["p95_wait_s"] if best else None,
                "feasible_configurations": len(feasible),
                "ratio": m["worker_hours"] / hind if hind else None,
            }
        out[f"p95_{target:g}"] = per_trace
    return out


def seasonality(per: Mapping[str, Mapping[str, Any]], history: Mapping[str, Mapping[str, Any]],
                clairvoyant: Mapping[str, Any]) -> dict[str, Any]:
    """The diurnal trace: the policy with and without seasonality, learned within the trace and after
    a week of history, next to a clairvoyant pool, spark_da and keda_hpa."""
    plain, seasonal = (per[c[0]] for c in season_choices())
    keep = ("worker_hours", "mean_wait_s", "p95_wait_s", "launches")
    spark, keda = per["spark_da"], per["keda_hpa"]
    # the cheapest other configuration with a mean wait below spark_da's: how far the goal is from anything built in
    below = [(label, m) for label, m in per.items() if m.get("policy") != "wait_target"
             and not m.get("unfinished") and m["mean_wait_s"] < spark["mean_wait_s"]]
    cheapest = min(below, key=lambda lm: lm[1]["worker_hours"]) if below else None

    def goal(m: Mapping[str, Any]) -> bool:
        return bool(m["mean_wait_s"] < spark["mean_wait_s"] and m["worker_hours"] <= keda["worker_hours"])

    return {
        "trace": SEASON_TRACE, "params": dict(SEASON_TARGET), "season_period": SEASON_PERIOD,
        "history_days": HISTORY_DAYS,
        "without": {k: plain.get(k) for k in keep}, "with": {k: seasonal.get(k) for k in keep},
        "without_history": {k: history["without"].get(k) for k in keep},
        "with_history": {k: history["with"].get(k) for k in keep},
        "clairvoyant": {k: clairvoyant.get(k) for k in keep},
        "spark_da": {k: spark.get(k) for k in keep}, "keda_hpa": {k: keda.get(k) for k in keep},
        "cheapest_other_below_spark_da": None if cheapest is None else
        {"configuration": cheapest[0], **{k: cheapest[1].get(k) for k in keep}},
        "goal_met": goal(seasonal) or goal(history["with"]),
        "goal_met_cold": goal(seasonal), "goal_met_with_history": goal(history["with"]),
        "goal_met_by_clairvoyant": goal(clairvoyant),
    }


def stored_hindsight(hindsight: Sequence[Choice]) -> dict[str, dict[str, dict[str, Any]]]:
    """The hindsight points of the last ``waittarget.json``, if it holds every configuration of this
    search with the same parameters on every trace (they do not depend on ``wait_target``)."""
    path = RESULTS / "waittarget.json"
    stored = json.loads(path.read_text()).get("points", {}) if path.exists() else {}
    out: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in TRACES}
    for name in TRACES:
        for label, policy, params, _ in [*hindsight, *[(b, b, {}, None) for b in BASELINES]]:
            m = stored.get(name, {}).get(label)
            if m is None or m.get("policy") != policy or m.get("params") != params:
                raise SystemExit(f"--reuse-hindsight: {path} lacks {label} on {name}; run without it")
            out[name][label] = m
    return out


def run(workers: int, *, reuse: bool = False) -> dict[str, Any]:
    hindsight = hindsight_choices()
    mine = [ours(t) for t in TARGETS]
    points: dict[str, dict[str, dict[str, Any]]] = stored_hindsight(hindsight) if reuse else \
        {name: {} for name in TRACES}
    jobs = [(name, 0, c) for c in (mine if reuse else [*mine, *hindsight]) for name in TRACES]
    jobs += [(SEASON_TRACE, 0, c) for c in season_choices()]
    started = time.perf_counter()
    for i, (name, label, metrics) in enumerate(_run_jobs(jobs, workers), 1):
        points[name][label] = metrics
        if i % 50 == 0 or i == len(jobs):
            print(f"  waittarget {i}/{len(jobs)} ({time.perf_counter() - started:.0f} s)", flush=True)
    plain, seasonal = (c[2] for c in season_choices())
    history = {"without": _with_history(dict(plain)), "with": _with_history(dict(seasonal))}
    print(f"  waittarget: {HISTORY_DAYS} days of history ({time.perf_counter() - started:.0f} s)", flush=True)
    return {"targets": analyse(points, hindsight),
            "seasonality": seasonality(points[SEASON_TRACE], history, _clairvoyant_run()),
            "configurations": len(hindsight), "simulations": len(jobs),
            "points": {n: {label: {k: m.get(k) for k in ("policy", "params", "worker_hours", "mean_wait_s",
                                                      "p95_wait_s", "launches", "unfinished")}
                           for label, m in per.items()} for n, per in points.items()},
            "hindsight_reused": reuse, "wall_seconds": time.perf_counter() - started}


def _cell(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def markdown(result: Mapping[str, Any]) -> str:
    lines = [f"`wait_target` told only `p95_wait` against the cheapest of {result['configurations']} configurations "
             "of the other built-in policies that met the same target on the same trace, found in hindsight "
             "(worker-hours; \"-\": no configuration met it)."
             + (" The other policies' points come from the previous full run of this search (`--reuse-hindsight`: "
                "they do not depend on `wait_target`)." if result.get("hindsight_reused") else ""), ""]
    for key, per in result["targets"].items():
        lines += [f"**{key.replace('_', ' ')} s**", "", "| trace | met | p95 wait (s) | worker-hours | hindsight "
                  "worker-hours | ratio | cheapest that met it (its p95) |", "|---|---|---|---|---|---|---|"]
        for name, r in per.items():
            best = f"`{r['hindsight']}` ({r['hindsight_p95_wait_s']:.1f} s)" if r["hindsight"] else "none"
            lines.append(f"| {name} | {'yes' if r['met'] else '**no**'} | {r['p95_wait_s']:.1f} | "
                         f"{r['worker_hours']:.2f} | {_cell(r['hindsight_worker_hours'])} | {_cell(r['ratio'])} | "
                         f"{best} |")
        lines.append("")
    s = result["seasonality"]
    labels = {"without": "without seasonality, learned within the trace",
              "with": "with seasonality, learned within the trace (one cycle of history)",
              "without_history": f"without seasonality, after {s['history_days']} days of history",
              "with_history": f"with seasonality, after {s['history_days']} days of history",
              "clairvoyant": "clairvoyant: the true rate one boot ahead, no headroom (a reference)",
              "spark_da": "`spark_da`", "keda_hpa": "`keda_hpa`"}
    lines += [f"**Seasonality** on `{s['trace']}` (`{s['params']}`, `season_period: {s['season_period']:g}`):", "",
              "| | worker-hours | mean wait (s) | p95 wait (s) | launches |", "|---|---|---|---|---|"]
    for label, text in labels.items():
        m = s[label]
        lines.append(f"| {text} | {m['worker_hours']:.2f} | {m['mean_wait_s']:.1f} | {m['p95_wait_s']:.1f} | "
                     f"{m['launches'] if m['launches'] is not None else '-'} |")
    c = s.get("cheapest_other_below_spark_da")
    if c:
        lines += ["", f"Goal: a mean wait below `spark_da`'s at no more than `keda_hpa`'s worker-hours "
                  f"({'met' if s['goal_met'] else '**not met**'}; by the clairvoyant pool: "
                  f"{'yes' if s['goal_met_by_clairvoyant'] else 'no'}). The cheapest configuration of the other "
                  f"built-in policies with a mean wait below `spark_da`'s is `{c['configuration']}` at "
                  f"{c['worker_hours']:.2f} worker-hours ({c['mean_wait_s']:.1f} s)."]
    return "\n".join(lines)


def table(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, per in result["targets"].items():
        missed = [n for n, r in per.items() if not r["met"]]
        feasible = [n for n, r in per.items() if r["hindsight"]]
        lost = [n for n in feasible if n in missed]
        rows.append(row(f"{key}: traces where wait_target met the target, of those where any configuration did",
                        len(feasible) - len(lost), f"{len(feasible)}", not lost,
                        ("missed: " + ", ".join(lost) + "; " if lost else "")
                        + f"met by no configuration: {', '.join(n for n in per if n not in feasible) or 'none'}"))
        ratios = {n: r["ratio"] for n, r in per.items() if r["ratio"] is not None}
        over = [f"{n} {v:.2f}" for n, v in ratios.items() if v > RATIO_GOAL]
        rows.append(row(f"{key}: worst worker-hours ratio to the hindsight optimum (traces it exists on)",
                        max(ratios.values()) if ratios else float("nan"), f"<= {RATIO_GOAL}",
                        bool(ratios) and not over,
                        ("above: " + ", ".join(over) + "; " if over else "")
                        + f"no configuration met it on: {', '.join(n for n in per if n not in ratios) or 'none'}"))
    s = result["seasonality"]
    w, h, c = s["with"], s["with_history"], s["clairvoyant"]
    rows.append(row("diurnal with seasonality: mean wait below spark_da's at <= keda_hpa's worker-hours",
                    h["worker_hours"], f"<= {s['keda_hpa']['worker_hours']:.2f} wh at < {s['spark_da']['mean_wait_s']:.1f} s",
                    s["goal_met"],
                    f"after {s['history_days']} days: {h['worker_hours']:.2f} wh at {h['mean_wait_s']:.1f} s; within the "
                    f"trace: {w['worker_hours']:.2f} wh at {w['mean_wait_s']:.1f} s; clairvoyant: "
                    f"{c['worker_hours']:.2f} wh at {c['mean_wait_s']:.1f} s"
                    + (f"; cheapest other policy below spark_da's mean wait: "
                       f"{s['cheapest_other_below_spark_da']['worker_hours']:.2f} wh"
                       if s.get("cheapest_other_below_spark_da") else "")))
    rows.append(row("benchmark wall time (s)", result["wall_seconds"], "", None,
                    f"{result['simulations']} simulations"))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.waittarget", description=__doc__)
    parser.add_argument("--jobs", type=int, default=2, help="simulations run in parallel (default 2)")
    parser.add_argument("--reuse-hindsight", action="store_true",
                        help="take the other policies' points from the last waittarget.json; simulate only "
                             "wait_target (after a change to it)")
    args = parser.parse_args(argv)
    result = run(max(1, args.jobs), reuse=args.reuse_hindsight)
    path = write_result("waittarget", {**result, "markdown": markdown(result)}, table(result))
    print(f"wrote {path} in {result['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
