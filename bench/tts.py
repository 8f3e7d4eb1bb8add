"""Time to scale from 0 to N on the `sim` site (EC2 limits, 10 % never boot) against the physical lower bound.

The bound. With B_res, r_res the RunInstances resource bucket (1,000 instances, refilled 2/s),
B_req, r_req its request bucket (5 requests, refilled 2/s) and k machines per request, L launches
cannot all have been made before ``launch(L) = max((L-B_res)+/r_res, (ceil(L/k)-B_req)+/r_req)``.
The last node to join then still boots: T = launch(L) + the boot time of the last node, read as
the quantile that the last of m log-normal boots has on average, m/(m+1):

- when every launch fits the buckets at once (launch(L) = 0), the last node to join is the slowest
  of the N boots: m = N (N=100: the 0.990 quantile, 80.4 s);
- when the launches are paced, the last node comes from the final launch step: m is the machines
  launched in that step, one second of the pacing bucket's rate (r_res = 2: the 2/3 quantile, 45.5 s).

Two readings of L. The literal bound launches L = N machines. With a fraction f = 10 % that never
boot, N joined nodes need at least N/(1-f) launches on average, and the resource bucket paces them:
the failure-adjusted bound puts L = N/(1-f) in. The literal bound cannot be reached at 1,850 and
10,000 nodes: it has the last launch at (1,850-1,000)/2 = 425 s (resp. (10,000-1,000)/2 = 4,500 s),
by when only 1,850 (10,000) machines can have been launched, of which about 1,665 (9,000) boot; the
2,056 (11,111) launches that N joins need take the bucket until (2,056-1,000)/2 = 528 s
((11,111-1,000)/2 = 5,056 s). Both bounds are for a pool that launches no more machines than that:
a pool that launches more at once (here the overprovisioning margin, at N=100) may see its N-th
join before the slowest of N boots, so a ratio below 1 there is not a broken bound but the price
paid in machines (reported beside it). The workers' bound adds the provisioner workers' calls: the
first ``workers`` calls go at once, then ``workers/latency`` a second, so the last of ceil(L/k)
calls is not made before (ceil(L/k)-workers)+ x latency/workers; its m is the machines per second
of whichever limit binds last.

The target is <= 1.05 x the failure-adjusted bound for batched launches (k=200, 1 and 10 workers);
one machine per request (k=1) is reported against the workers' bound. The manager ticks every
second, every 2.5 s at 10,000 nodes (see :func:`tick_for`): times there are read to 2.5 s.
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import time
from typing import Any

from bench.common import row, write_result
from pool.core.model import NodeState
from pool.sim.fleet import Fleet
from pool.sites.sim import RUN, TERMINATE, SimCloudProfile, parse_profile

SIZES = (100, 1850, 10_000)
WORKERS = (1, 10)
BATCH = 200  # 5 requests (EC2's request bucket) x 200 = the 1,000-instance resource bucket at once
NEVER_BOOT = 0.1
PROFILE = f"ec2:never_boot={NEVER_BOOT:g}"
API_LATENCY = 1.0  # seconds one RunInstances/TerminateInstances call keeps a provisioner worker busy
OVERPROVISION = 12  # percent: the margin for the 10 % that never boot (see policies.placement.overprovision)
BOOT_TIMEOUT = 90.0  # a machine not joined 90 s after launch is FAILED and terminated (boot p99.9 is ~101 s)
BOOT_REPLACE = 65.0  # ... and replaced from 65 s (the boot p95): unjoined then, it is dead with odds ~70 %
PAPER_1850_S = 13 * 60.0  # Phantom (Keahey et al., 2012): ~13 min to 1,850 nodes
TARGET = 1.05
SEEDS = {100: (1, 2, 3), 1850: (1, 2, 3), 10_000: (1,)}


def tick_for(n: int) -> float:
    """The manager's tick: 1 s; 2.5 s at 10,000 nodes (one tick costs ~0.1 s of CPU there).

    The pacing bucket (5 requests, 2 a second) refills exactly 5 requests in 2.5 s, so the coarser
    tick keeps the launch rate; the time to scale is then read to the nearest 2.5 s.
    """
    return 2.5 if n > 5000 else 1.0


def boot_quantile(profile: SimCloudProfile, q: float) -> float:
    """The boot-time distribution's ``q`` quantile (log-normal around the median)."""
    return profile.boot_median * math.exp(profile.boot_sigma * statistics.NormalDist().inv_cdf(q))


def lower_bound(n: int, launches: float, *, profile: SimCloudProfile, k: int,
                workers: int | None = None) -> dict[str, float]:
    """T for ``n`` joined nodes out of ``launches`` launches (see the module docstring).

    Returns the launch part, ``m`` (machines whose slowest boot is the last node's), the boot
    quantile ``m/(m+1)``, its boot time and the bound. ``workers``: add the workers' calls.
    """
    b_res, r_res = profile.bucket("run_instances")
    b_req, r_req = profile.bucket("run_requests")
    calls = math.ceil(launches / k)
    parts = [(max(0.0, launches - b_res) / r_res, r_res), (max(0.0, calls - b_req) / r_req, k * r_req)]
    if workers is not None:
        parts.append((max(0, calls - workers) * API_LATENCY / workers, k * workers / API_LATENCY))
    launch, rate = max(parts)
    m = float(n) if launch <= 0 else max(1.0, min(rate, launches))
    q = m / (m + 1)
    boot = boot_quantile(profile, q)
    return {"launch_s": launch, "m": m, "quantile": q, "boot_s": boot, "bound_s": launch + boot}


def domain(n: int, batch: int) -> dict[str, Any]:
    return {
        "name": "tts", "deployable_type": "celery-worker", "celery": {"app": "tasks"},
        "min": n, "max": 20_000, "policy": {"name": "fixed", "size": n},
        "sensor": {"name": "sim_queue", "queue": "none"},
        "sites": [{"name": "sim", "rate": 2, "burst": 5, "batch": batch, "instance_rate": 2, "instance_burst": 1000}],
        "overprovision": OVERPROVISION,
        "timeouts": {"heartbeat_interval": 30, "heartbeat_timeout": 120, "boot": BOOT_TIMEOUT,
                     "boot_replace": BOOT_REPLACE, "terminate_grace": 5},
    }


def _calls(fleet: Fleet) -> dict[str, int]:
    rates = fleet.sites["sim"].ex_request_rates()
    run, term = rates[RUN], rates[TERMINATE]
    return {"launch_calls": int(run["accepted"] + run["throttled"]), "launch_calls_throttled": int(run["throttled"]),
            "instances_launched": int(run["instances"]), "terminate_calls": int(term["accepted"] + term["throttled"]),
            "terminate_calls_throttled": int(term["throttled"]), "max_launch_calls_per_s": int(run["max_per_second"])}


def scale_once(n: int, workers: int, batch: int, seed: int) -> dict[str, Any]:
    """One run from 0 to ``n`` joined workers, then until the surplus is trimmed; simulated seconds and calls."""
    profile = parse_profile(PROFILE)
    fleet = Fleet(domain(n, batch), profiles={"sim": profile}, seed=seed, tick=tick_for(n),
                  provisioners=workers, api_latency=API_LATENCY)
    gc.collect()
    gc.freeze()  # the setup's objects are never garbage: keep the collector off them
    started, cpu = time.perf_counter(), time.process_time()
    tts = fleet.run_until(lambda f: f.joined() >= n, limit=60_000)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    at_tts = _calls(fleet)
    # then the surplus (margin, replacements of presumed-dead machines that booted after all) is trimmed
    plan = lambda f: f.manager.last_plans["tts"].view  # noqa: E731
    trimmed = fleet.run_until(lambda f: plan(f).actual == n and plan(f).joined == n, limit=fleet.now + 600) \
        if tts is not None else None
    gc.unfreeze()
    # when the last of the first n machines to join was launched: the rest of the time is boot and repair
    joins = sorted((joined, rec.entered(NodeState.PENDING) or rec.created) for rec in fleet.store.nodes("tts")
                   if (joined := rec.entered(NodeState.JOINED)) is not None)
    last_launch = max((launched for _, launched in joins[:n]), default=None)
    after = _calls(fleet)
    return {"seed": seed, "tts_s": tts, "last_needed_launch_s": last_launch, "trimmed_s": trimmed,
            "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "ticks": fleet.ticks, **at_tts,
            "instances_launched_total": after["instances_launched"],
            "terminate_calls_total": after["terminate_calls"]}


def measure(n: int, workers: int, batch: int, seeds: tuple[int, ...]) -> dict[str, Any]:
    profile = parse_profile(PROFILE)
    runs = [scale_once(n, workers, batch, seed) for seed in seeds]
    reached = [r["tts_s"] for r in runs if r["tts_s"] is not None]
    tts = statistics.median(reached) if len(reached) == len(runs) else None
    needed = n / (1 - NEVER_BOOT)  # launches that give n booted machines on average
    literal = lower_bound(n, n, profile=profile, k=batch)
    adjusted = lower_bound(n, needed, profile=profile, k=batch)
    with_workers = lower_bound(n, needed, profile=profile, k=batch, workers=workers)

    def ratio(bound: dict[str, float]) -> float | None:
        return round(tts / bound["bound_s"], 3) if tts else None

    checked = adjusted if batch > 1 else with_workers
    out: dict[str, Any] = {
        "n": n, "provisioners": workers, "k": batch, "tts_s": tts,
        "bound_s": round(literal["bound_s"], 1), "ratio": ratio(literal),
        "bound_failure_adjusted_s": round(adjusted["bound_s"], 1), "ratio_failure_adjusted": ratio(adjusted),
        "bound_with_workers_s": round(with_workers["bound_s"], 1), "ratio_with_workers": ratio(with_workers),
        "checked_against": "failure-adjusted" if batch > 1 else "workers",
        "ok": tts is not None and tts <= TARGET * checked["bound_s"],
        "tts_min_s": min(reached, default=None), "tts_max_s": max(reached, default=None),
        **{f"{name}_{key}": round(b[key], 3) for name, b in (("literal", literal), ("adjusted", adjusted),
                                                             ("workers", with_workers))
           for key in ("launch_s", "m", "quantile", "boot_s")},
        "tick_s": tick_for(n),
        "wall_s": round(sum(r["wall_s"] for r in runs), 1),
        **{key: statistics.median(r[key] for r in runs)
           for key in ("launch_calls", "launch_calls_throttled", "instances_launched", "terminate_calls",
                       "terminate_calls_throttled", "last_needed_launch_s", "instances_launched_total",
                       "terminate_calls_total")},
        "seeds": runs,
    }
    if n == 1850 and tts:
        out["paper_s"] = PAPER_1850_S
        out["ratio_paper"] = round(tts / PAPER_1850_S, 3)
    print(f"n={n} P={workers} k={batch}: tts {tts} s (min {out['tts_min_s']}, max {out['tts_max_s']}), "
          f"bound {literal['bound_s']:.1f} s (x{out['ratio']}), failure-adjusted {adjusted['bound_s']:.1f} s "
          f"(x{out['ratio_failure_adjusted']}), workers' {with_workers['bound_s']:.1f} s (x{out['ratio_with_workers']}), "
          f"launched {out['instances_launched']:.0f} ({out['instances_launched_total']:.0f} in all), "
          f"terminate calls {out['terminate_calls']:.0f} ({out['terminate_calls_total']:.0f}), wall {out['wall_s']} s",
          flush=True)
    return out


def configurations(full: bool) -> list[tuple[int, int, int]]:
    """(n, workers, k): batched launches everywhere; one machine per request too, except at
    10,000 nodes with one worker (over 3 simulated hours, ~10 min of wall time) unless ``full``."""
    out = [(n, w, BATCH) for n in SIZES for w in WORKERS]
    out += [(n, w, 1) for n in SIZES for w in WORKERS if full or not (n == 10_000 and w == 1)]
    return out


def table(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        tts = r["tts_s"]
        if r["checked_against"] == "workers":
            target = f"<= {TARGET} x workers' bound {r['bound_with_workers_s']:.0f} s"
            checked = f"x{r['ratio_with_workers']} of the workers' bound"
        else:
            target = f"<= {TARGET} x failure-adjusted bound {r['bound_failure_adjusted_s']:.0f} s"
            checked = f"x{r['ratio_failure_adjusted']} of the failure-adjusted bound"
        note = (f"{checked}; x{r['ratio']} of the literal bound {r['bound_s']:.0f} s (N launches); "
                f"{r['instances_launched']:.0f} machines in {r['launch_calls']:.0f} launch calls "
                f"({r['launch_calls_throttled']:.0f} throttled), {r['terminate_calls']:.0f} terminate calls by then, "
                f"{r['terminate_calls_total']:.0f} once the surplus is trimmed")
        if "paper_s" in r:
            note += f"; paper ~{r['paper_s'] / 60:.0f} min: x{r['ratio_paper']}"
        rows.append(row(f"0 -> {r['n']:,} nodes, {r['provisioners']} worker{'s' if r['provisioners'] > 1 else ''}, "
                        f"k={r['k']}: time to scale, s", tts if tts is not None else "not reached",
                        target, r["ok"], note))
    return rows


def markdown(results: list[dict[str, Any]]) -> str:
    profile = parse_profile(PROFILE)
    last = boot_quantile(profile, 2 / 3)
    lines = [
        f"Simulated seconds on one `sim` site with EC2's default limits (RunInstances: 5 requests, refilled "
        f"2/s; 1,000 instances, refilled 2/s), boots log-normal around 40 s (sigma 0.3), {NEVER_BOOT:.0%} of "
        f"machines never boot. Each launch or terminate call keeps a provisioner worker busy "
        f"{API_LATENCY:g} s (RunInstances' latency), so 1 worker makes at most 1 call/s, terminates included. "
        f"The pool paces launches at 2/s with a burst of 5 and overprovisions {OVERPROVISION}%: while fewer "
        f"than N have joined it keeps x + 2 sqrt(x) launches above the n still to join (x = {OVERPROVISION}% of "
        f"n), never scales in a booting machine, and counts a machine not joined {BOOT_REPLACE:g} s after "
        f"launch (the boot p95) as lost, so its replacement starts then; the machine itself is terminated at "
        f"the boot timeout ({BOOT_TIMEOUT:g} s) or once N have joined, with the rest of the surplus. A launch "
        f"record withdrawn before its launch costs no call. k is the most machines per launch request "
        f"(k={BATCH}: 5 requests take the whole 1,000-instance bucket; after that the pool sizes each batch "
        f"to what it tracks as left of the site's instance budget, `instance_rate` 2/s and `instance_burst` "
        f"1,000, EC2's published RunInstances resource bucket). "
        f"**Bounds**: T = max((L-B_res)+/r_res, (ceil(L/k)-B_req)+/r_req) + the boot of the last node, the "
        f"m/(m+1) quantile of the boot time: m = N when all launches fit the buckets at once (N=100: 80.4 s), "
        f"else m = the machines of the final one-second launch step (r_res = 2: {last:.1f} s). The literal "
        f"bound has L = N; the failure-adjusted bound L = N/0.9 (N joins need that many launches on average: "
        f"at 1,850 the literal bound's last launch at (1,850-1,000)/2 = 425 s leaves ~1,665 booted machines, "
        f"and 2,056 launches take the bucket to 528 s; at 10,000, 4,500 s vs 5,056 s). The workers' bound "
        f"adds the workers' calls ((ceil(L/k)-workers)+ x latency/workers). The check is <= {TARGET} x the "
        f"failure-adjusted bound at k={BATCH} and x the workers' bound at k=1. The bounds assume no more "
        f"launches than L: at N=100 all 100+margin launches go at once, so the N-th join comes before the "
        f"slowest of N boots (ratios below 1, paid in machines). Median of {len(SEEDS[1850])} seeds below "
        f"10,000 nodes, one seed at 10,000, where the manager ticks every 2.5 s (times to the nearest 2.5 s). "
        f"\"Last launch\" is when the last of the first N machines to join was launched. Machines and "
        f"terminate calls are counted when N have joined; \"in all\" once the surplus is trimmed. With one "
        f"worker (1 call/s, terminates included) the launch rate falls below the bucket's 2/s where a batch "
        f"has been throttled (the sixth one, in the first seconds): the site then launches one machine per "
        f"request for a minute, and the ~100 machines of the first 1,000 that never boot cost 100 s of the "
        f"worker's calls to terminate at their boot timeout. Over 10,000 nodes that is absorbed; at 1,850 it "
        f"is not.",
        "",
        "| N | workers | k | time to scale, s (min-max) | bound, s | ratio | failure-adjusted bound, s | ratio "
        "| workers' bound, s | ratio | last launch, s | launch calls (throttled) | machines launched (in all) "
        "| terminate calls (in all) | wall, s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        spread = f" ({r['tts_min_s']:g}-{r['tts_max_s']:g})" if len(r["seeds"]) > 1 and r["tts_min_s"] is not None else ""
        lines.append(
            f"| {r['n']:,} | {r['provisioners']} | {r['k']} | {r['tts_s']}{spread} | {r['bound_s']:.0f} | {r['ratio']} "
            f"| {r['bound_failure_adjusted_s']:.0f} | {r['ratio_failure_adjusted']} | {r['bound_with_workers_s']:.0f} "
            f"| {r['ratio_with_workers']} | {r['last_needed_launch_s']:g} "
            f"| {r['launch_calls']:.0f} ({r['launch_calls_throttled']:.0f}) "
            f"| {r['instances_launched']:.0f} ({r['instances_launched_total']:.0f}) "
            f"| {r['terminate_calls']:.0f} ({r['terminate_calls_total']:.0f}) | {r['wall_s']:g} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="also one machine per request at 10,000 nodes, 1 worker")
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES), help="only these N (a quick look)")
    args = parser.parse_args()
    started = time.perf_counter()
    results = [measure(n, w, k, SEEDS.get(n, (1,))) for n, w, k in configurations(args.full) if n in args.sizes]
    summary = {"profile": PROFILE, "api_latency_s": API_LATENCY, "overprovision_percent": OVERPROVISION,
               "boot_timeout_s": BOOT_TIMEOUT, "boot_replace_s": BOOT_REPLACE, "pacing": {"rate": 2, "burst": 5}, "batch": BATCH,
               "wall_s": round(time.perf_counter() - started, 1)}
    print(write_result("tts", {**summary, "runs": results, "markdown": markdown(results)}, table(results)))


if __name__ == "__main__":
    main()
