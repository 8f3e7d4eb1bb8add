"""Time to scale from 0 to N on the `sim` site (EC2 limits, 10 % never boot) against the physical lower bound."""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import time
from typing import Any

from bench.common import row, write_result
from pool.drivers.sim import RUN, TERMINATE, SimCloudProfile, parse_profile
from pool.model import NodeState
from pool.simfleet import Fleet

SIZES = (100, 1850, 10_000)
WORKERS = (1, 10)
BATCH = 200  # 5 requests (EC2's request bucket) x 200 = the 1,000-instance resource bucket at once
NEVER_BOOT = 0.1
PROFILE = f"ec2:never_boot={NEVER_BOOT:g}"
API_LATENCY = 1.0  # seconds one RunInstances/TerminateInstances call keeps a provisioner worker busy
OVERPROVISION = 12  # percent: a margin for the 10 % that never boot
BOOT_TIMEOUT = 90.0  # a machine not joined 90 s after launch is replaced (boot p99.9 is ~101 s)
BOOT_QUANTILE = 0.5  # the bound's boot time of the last node: the median boot
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


def lower_bound(n: float, *, profile: SimCloudProfile, k: int, boot: float) -> float:
    """T(N) = max((N - B_res)+ / r_res, (ceil(N/k) - B_req)+ / r_req) + the last node's boot time."""
    b_res, r_res = profile.bucket("run_instances")
    b_req, r_req = profile.bucket("run_requests")
    return max(max(0.0, n - b_res) / r_res, max(0.0, math.ceil(n / k) - b_req) / r_req) + boot


def domain(n: int, batch: int) -> dict[str, Any]:
    return {
        "name": "tts", "deployable_type": "celery-worker", "celery": {"app": "tasks"},
        "min": n, "max": 20_000, "policy": {"name": "fixed", "size": n},
        "sensor": {"name": "sim_queue", "queue": "none"},
        "sites": [{"name": "sim", "rate": 2, "burst": 5, "batch": batch}],
        "overprovision": OVERPROVISION,
        "timeouts": {"heartbeat_interval": 30, "heartbeat_timeout": 120, "boot": BOOT_TIMEOUT, "terminate_grace": 5},
    }


def scale_once(n: int, workers: int, batch: int, seed: int) -> dict[str, Any]:
    """One run from 0 to ``n`` joined workers; simulated seconds and what the site saw."""
    profile = parse_profile(PROFILE)
    fleet = Fleet(domain(n, batch), profiles={"sim": profile}, seed=seed, tick=tick_for(n),
                  provisioners=workers, api_latency=API_LATENCY)
    gc.collect()
    gc.freeze()  # the setup's objects are never garbage: keep the collector off them
    started, cpu = time.perf_counter(), time.process_time()
    tts = fleet.run_until(lambda f: f.joined() >= n, limit=60_000)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    gc.unfreeze()
    # when the last of the first n machines to join was launched: the rest of the time is boot and repair
    joins = sorted((joined, rec.entered(NodeState.PENDING) or rec.created) for rec in fleet.store.nodes("tts")
                   if (joined := rec.entered(NodeState.JOINED)) is not None)
    last_launch = max((launched for _, launched in joins[:n]), default=None)
    site = fleet.sites["sim"]
    rates = site.ex_request_rates()
    run, term = rates[RUN], rates[TERMINATE]
    return {"seed": seed, "tts_s": tts, "last_needed_launch_s": last_launch, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "ticks": fleet.ticks,
            "launch_calls": int(run["accepted"] + run["throttled"]), "launch_calls_throttled": int(run["throttled"]),
            "instances_launched": int(run["instances"]), "terminate_calls": int(term["accepted"] + term["throttled"]),
            "terminate_calls_throttled": int(term["throttled"]),
            "max_launch_calls_per_s": int(run["max_per_second"])}


def measure(n: int, workers: int, batch: int, seeds: tuple[int, ...]) -> dict[str, Any]:
    profile = parse_profile(PROFILE)
    runs = [scale_once(n, workers, batch, seed) for seed in seeds]
    reached = [r["tts_s"] for r in runs if r["tts_s"] is not None]
    tts = statistics.median(reached) if len(reached) == len(runs) else None
    boot = boot_quantile(profile, BOOT_QUANTILE)
    needed = n / (1 - NEVER_BOOT)  # launches that give n booted machines on average
    bound = lower_bound(n, profile=profile, k=batch, boot=boot)
    adjusted = lower_bound(needed, profile=profile, k=batch, boot=boot)
    launch_part = adjusted - boot
    with_workers = max(launch_part, math.ceil(needed / batch) * API_LATENCY / workers) + boot
    out: dict[str, Any] = {
        "n": n, "provisioners": workers, "k": batch, "tts_s": tts,
        "bound_s": round(bound, 1), "ratio": round(tts / bound, 3) if tts else None,
        "bound_failure_adjusted_s": round(adjusted, 1),
        "ratio_failure_adjusted": round(tts / adjusted, 3) if tts else None,
        "bound_with_workers_s": round(with_workers, 1),
        "ratio_with_workers": round(tts / with_workers, 3) if tts else None,
        "tts_min_s": min(reached, default=None), "tts_max_s": max(reached, default=None),
        "boot_quantile": BOOT_QUANTILE, "boot_s": round(boot, 1), "tick_s": tick_for(n),
        "wall_s": round(sum(r["wall_s"] for r in runs), 1),
        **{key: statistics.median(r[key] for r in runs)
           for key in ("launch_calls", "launch_calls_throttled", "instances_launched", "terminate_calls",
                       "terminate_calls_throttled", "last_needed_launch_s")},
        "seeds": runs,
    }
    if n == 1850 and tts:
        out["paper_s"] = PAPER_1850_S
        out["ratio_paper"] = round(tts / PAPER_1850_S, 3)
    print(f"n={n} P={workers} k={batch}: tts {tts} s, bound {bound:.0f} s (x{out['ratio']}), "
          f"failure-adjusted {adjusted:.0f} s (x{out['ratio_failure_adjusted']}), wall {out['wall_s']} s", flush=True)
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
        ok = tts is not None and tts <= TARGET * r["bound_s"]
        adj_ok = tts is not None and tts <= TARGET * r["bound_failure_adjusted_s"]
        note = (f"x{r['ratio_failure_adjusted']} of the failure-adjusted bound {r['bound_failure_adjusted_s']:.0f} s "
                f"({'within' if adj_ok else 'over'} 1.05); {r['launch_calls']:.0f} launch calls "
                f"({r['launch_calls_throttled']:.0f} throttled), {r['terminate_calls']:.0f} terminate calls")
        if "paper_s" in r:
            note += f"; paper ~{r['paper_s'] / 60:.0f} min: x{r['ratio_paper']}"
        rows.append(row(f"0 -> {r['n']:,} nodes, {r['provisioners']} worker{'s' if r['provisioners'] > 1 else ''}, "
                        f"k={r['k']}: time to scale, s", tts if tts is not None else "not reached",
                        f"<= {TARGET} x bound {r['bound_s']:.0f} s", ok, note))
    return rows


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        f"Simulated seconds on one `sim` site with EC2's default limits (RunInstances: 5 requests, refilled "
        f"2/s; 1,000 instances, refilled 2/s), boots log-normal around 40 s (sigma 0.3), {NEVER_BOOT:.0%} of "
        f"machines never boot. Each launch or terminate call keeps a provisioner worker busy "
        f"{API_LATENCY:g} s (RunInstances' latency), so 1 worker makes at most 1 call/s. The pool paces "
        f"launches at 2/s with a burst of 5, overprovisions {OVERPROVISION}%, replaces a machine not joined "
        f"{BOOT_TIMEOUT:g} s after launch. k is the most machines per launch request (k={BATCH}: one request per "
        f"5 takes the whole 1,000-instance bucket; after a throttled batch the site launches one per request and "
        f"the batch doubles each minute after that). The bound T(N) = max((N-B_res)+/r_res, "
        f"(ceil(N/k)-B_req)+/r_req) + the median boot (40 s); the failure-adjusted bound puts N/0.9 "
        f"launches in it; the workers' bound adds ceil(N/0.9/k) calls at workers/latency per second. "
        f"Median of {len(SEEDS[1850])} seeds below 10,000 nodes, one seed at 10,000. \"Last launch\" is when the "
        f"last of the first N machines to join was launched: what follows it is boot, and the wait for "
        f"replacements of machines that never boot (the overprovisioning margin shrinks as machines join, so "
        f"the last few wait for the boot timeout). Terminate calls include the trimmed margin: a launch record "
        f"removed before its launch still costs a TerminateInstances call.",
        "",
        "| N | workers | k | time to scale, s (min-max) | bound, s | ratio | failure-adjusted bound, s | ratio "
        "| workers' bound, s | ratio | last launch, s | launch calls (throttled) | machines launched "
        "| terminate calls | wall, s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        spread = f" ({r['tts_min_s']:g}-{r['tts_max_s']:g})" if len(r["seeds"]) > 1 and r["tts_min_s"] is not None else ""
        lines.append(
            f"| {r['n']:,} | {r['provisioners']} | {r['k']} | {r['tts_s']}{spread} | {r['bound_s']:.0f} | {r['ratio']} "
            f"| {r['bound_failure_adjusted_s']:.0f} | {r['ratio_failure_adjusted']} | {r['bound_with_workers_s']:.0f} "
            f"| {r['ratio_with_workers']} | {r['last_needed_launch_s']:g} "
            f"| {r['launch_calls']:.0f} ({r['launch_calls_throttled']:.0f}) "
            f"| {r['instances_launched']:.0f} | {r['terminate_calls']:.0f} | {r['wall_s']:g} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="also one machine per request at 10,000 nodes, 1 worker")
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES), help="only these N (a quick look)")
    args = parser.parse_args()
    started = time.perf_counter()
    results = [measure(n, w, k, SEEDS.get(n, (1,))) for n, w, k in configurations(args.full) if n in args.sizes]
    summary = {"profile": PROFILE, "api_latency_s": API_LATENCY, "overprovision_percent": OVERPROVISION,
               "boot_timeout_s": BOOT_TIMEOUT, "pacing": {"rate": 2, "burst": 5}, "batch": BATCH,
               "wall_s": round(time.perf_counter() - started, 1)}
    print(write_result("tts", {**summary, "runs": results, "markdown": markdown(results)}, table(results)))


if __name__ == "__main__":
    main()
