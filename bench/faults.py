"""Failure mix: a throttling storm, 10 % boot failures and one of three sites failing every launch."""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import Any

from libcloud.common.exceptions import BaseHTTPError

from bench.common import row, write_result
from pool.sim.fleet import Fleet
from pool.sites.sim import RUN, SimNodeDriver, TokenBucket, parse_profile

N = 1000
NEVER_BOOT = 0.1
SITES = ("east", "west", "south")  # south fails every launch
STORM_SITE = "east"
STORM = (30.0, 270.0)  # simulated seconds: east's RunInstances bucket shrinks to STORM_BUCKET
STORM_BUCKET = (1.0, 0.2)  # (size, refill per second): a tenth of EC2's published rate
BUCKET = (5.0, 2.0)  # EC2's RunInstances request bucket, and the pool's pacing (rate 2, burst 5)
LIMIT = 3600.0


class FailingSite(SimNodeDriver):
    """A site that answers every launch with HTTP 500 InternalError (its request bucket still counts)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failed: list[float] = []

    def create_node(self, name: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        now = self.clock()
        self._call(now, RUN, "run_requests")  # an empty bucket answers RequestLimitExceeded, as any site
        self.failed.append(now)
        raise BaseHTTPError(500, "InternalError: An internal error has occurred")


def domain() -> dict[str, Any]:
    return {
        "name": "faults", "deployable_type": "celery-worker", "celery": {"app": "tasks"},
        "min": N, "max": 20_000, "policy": {"name": "fixed", "size": N},
        "sensor": {"name": "sim_queue", "queue": "none"},
        "sites": [{"name": name, "rate": BUCKET[1], "burst": int(BUCKET[0])} for name in SITES],
        "placement": "spread", "overprovision": 12,
        "timeouts": {"heartbeat_interval": 30, "heartbeat_timeout": 120, "boot": 90, "terminate_grace": 5},
    }


def over_bucket(times: list[float], size: float, refill: float) -> int:
    """How many of these requests a token bucket of ``size``, refilled ``refill``/s, would refuse."""
    bucket = TokenBucket(size, refill)
    return sum(1 for t in times if not bucket.take(t))


def site_report(name: str, driver: SimNodeDriver) -> dict[str, Any]:
    calls = [c for c in driver.ex_events() if c.api == RUN]
    attempts = [c.time for c in calls]
    per_second = Counter(math.floor(t) for t in attempts)
    failed = getattr(driver, "failed", [])
    out: dict[str, Any] = {
        "launch_requests": len(calls),
        "accepted": sum(1 for c in calls if c.accepted) - len(failed),
        "throttled": sum(1 for c in calls if not c.accepted),
        "failed": len(failed),
        "machines_launched": sum(c.instances for c in calls if c.accepted),
        "peak_requests_per_s": max(per_second.values(), default=0),
        "bucket": {"size": BUCKET[0], "refill_per_s": BUCKET[1]},
        "bucket_per_s": BUCKET[0] + BUCKET[1],
        "requests_over_bucket": over_bucket(attempts, *BUCKET),
    }
    if failed:
        gaps = [b - a for a, b in zip(failed, failed[1:])]
        out["longest_gap_between_failed_launches_s"] = round(max(gaps, default=0.0), 1)
        out["failed_launches_after_the_first_minute"] = sum(1 for t in failed if t >= failed[0] + 60)
    if name == STORM_SITE:
        during = [c for c in calls if STORM[0] <= c.time < STORM[1]]
        seconds = STORM[1] - STORM[0]
        out["storm"] = {
            "from_s": STORM[0], "to_s": STORM[1],
            "bucket": {"size": STORM_BUCKET[0], "refill_per_s": STORM_BUCKET[1]},
            "requests": len(during), "accepted": sum(1 for c in during if c.accepted),
            "throttled": sum(1 for c in during if not c.accepted),
            "requests_per_s": round(len(during) / seconds, 3),
            "allowed": STORM_BUCKET[0] + STORM_BUCKET[1] * seconds,
        }
    return out


def markdown(sites: dict[str, dict[str, Any]], joined: dict[str, int]) -> str:
    lines = [
        f"One domain of {N} workers spread over three simulated EC2 sites (RunInstances bucket "
        f"{BUCKET[0]:g} requests, refilled {BUCKET[1]:g}/s; the pool paces each site at the same rate and burst, "
        f"one machine per request), {NEVER_BOOT:.0%} of machines never boot (replaced after 90 s), "
        f"12% overprovisioning, 10 provisioner workers with 1 s calls. `{STORM_SITE}` has a throttling storm "
        f"from {STORM[0]:g} to {STORM[1]:g} s (its bucket drops to {STORM_BUCKET[0]:g} request, refilled "
        f"{STORM_BUCKET[1]:g}/s); `south` answers every launch with HTTP 500 InternalError. \"Over bucket\" "
        f"replays every request sent to the site (accepted or not) through the site's published bucket.",
        "",
        "| site | requests | accepted | throttled | failed | machines launched | joined at the end "
        "| peak requests/s | over bucket |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in sites.items():
        lines.append(f"| {name} | {s['launch_requests']} | {s['accepted']} | {s['throttled']} | {s['failed']} "
                     f"| {s['machines_launched']} | {joined[name]} | {s['peak_requests_per_s']} "
                     f"| {s['requests_over_bucket']} |")
    return "\n".join(lines)


def main() -> None:
    started = time.perf_counter()
    clock: dict[str, float] = {"now": 0.0}
    south = FailingSite(ex_clock=lambda: clock["now"], ex_profile=parse_profile("ec2"), ex_seed=99)
    profile = parse_profile(f"ec2:never_boot={NEVER_BOOT:g}")
    fleet = Fleet(domain(), profiles={"east": profile, "west": profile}, drivers={"south": south}, seed=5,
                  provisioners=10, api_latency=1.0)
    south.clock = fleet.clock
    east = fleet.sites[STORM_SITE]
    normal = east.buckets["run_requests"]
    reached: float | None = None
    while fleet.now <= LIMIT:
        if fleet.now == STORM[0]:
            east.buckets["run_requests"] = TokenBucket(*STORM_BUCKET)
        elif fleet.now == STORM[1]:
            east.buckets["run_requests"] = normal
        fleet.step()
        if fleet.joined() >= N:
            reached = fleet.now - fleet.tick_interval
            break
    drivers: dict[str, SimNodeDriver] = {**fleet.sites, "south": south}
    sites = {name: site_report(name, drivers[name]) for name in SITES}
    joined_by_site = {name: fleet.count(site=name) for name in SITES}
    result = {"n": N, "final_size": fleet.joined(), "reached_s": reached, "joined_by_site": joined_by_site,
              "never_boot": NEVER_BOOT, "placement": "spread", "sites": sites, "storm_site": STORM_SITE,
              "wall_s": round(time.perf_counter() - started, 1), "markdown": markdown(sites, joined_by_site)}
    storm = sites[STORM_SITE]["storm"]
    ok_rate = all(s["requests_over_bucket"] == 0 and s["peak_requests_per_s"] <= s["bucket_per_s"]
                  for s in sites.values())
    table = [
        row(f"final size (target {N}), simulated seconds to reach it", fleet.joined(), f">= {N}",
            fleet.joined() >= N, f"reached at {reached} s; joined per site: "
            + ", ".join(f"{k} {v}" for k, v in joined_by_site.items())),
        *[row(f"{name}: peak launch requests in one second", s["peak_requests_per_s"],
              f"<= bucket {BUCKET[0]:g} + {BUCKET[1]:g}/s = {s['bucket_per_s']:g}",
              s["peak_requests_per_s"] <= s["bucket_per_s"] and s["requests_over_bucket"] == 0,
              f"{s['launch_requests']} requests ({s['throttled']} throttled"
              + (f", {s['failed']} failed" if s["failed"] else "") + "); requests a "
              f"({BUCKET[0]:g}, {BUCKET[1]:g}/s) bucket would refuse: {s['requests_over_bucket']}"
              + (f"; longest gap between failed launches {s['longest_gap_between_failed_launches_s']} s"
                 if s["failed"] else ""))
          for name, s in sites.items()],
        row(f"{STORM_SITE} during the storm ({STORM[0]:g}-{STORM[1]:g} s, bucket {STORM_BUCKET[0]:g} + "
            f"{STORM_BUCKET[1]:g}/s): launch requests", storm["requests"], f"<= {storm['allowed']:g} the storm allows",
            storm["requests"] <= storm["allowed"], f"{storm['accepted']} accepted, {storm['throttled']} throttled"),
    ]
    print(f"final size {fleet.joined()} at {reached} s; within buckets: {ok_rate}")
    print(write_result("faults", result, table))


if __name__ == "__main__":
    main()
