"""Usage accounting, pure: the worker-seconds and cost of node records, and the running totals that
keep them after the records are forgotten.

A node is billed from the moment its site took the launch (the first state after REQUESTED that
means a machine exists: PENDING, STARTED, JOINED, DRAINING or UNHEALTHY) until it entered
TERMINATED, or until ``now`` while it has not. A launch the site refused (REQUESTED -> FAILED) costs
nothing. Cost is worker-hours times the site's ``price`` (per node-hour, from the domain's site spec).

When the manager forgets ended records it banks their usage in the same commit (:func:`bank`): the
store keeps, per domain and site, a running total of seconds and cost (members
``{domain}|{site}|seconds`` and ``{domain}|{site}|cost``) and the earliest billed start (``since``).
:func:`parse_totals` validates those totals as read back (untrusted), :func:`combine` adds the records
still kept.

Imports ``pool.core.model`` and the standard library only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from pool.core.model import ID_RE, NAME_RE, DomainSpec, NodeRecord, NodeState

S = NodeState
#: States that say the site took the launch: a machine exists from the first of them on.
BILLED_STATES = frozenset({S.PENDING.value, S.STARTED.value, S.JOINED.value, S.DRAINING.value, S.UNHEALTHY.value})
#: The member of the totals holding the earliest billed start.
SINCE = "since"
_MEMBER = re.compile(r"(?P<domain>[^|]+)\|(?P<site>[^|]+)\|(?P<what>seconds|cost)")


@dataclass(frozen=True)
class SiteUsage:
    """Worker-seconds and their cost on one site."""

    worker_seconds: float = 0.0
    cost: float = 0.0

    def __add__(self, other: "SiteUsage") -> "SiteUsage":
        return SiteUsage(self.worker_seconds + other.worker_seconds, self.cost + other.cost)


#: domain -> site -> usage
Totals = dict[str, dict[str, SiteUsage]]


def billed_span(rec: NodeRecord, now: float) -> tuple[float, float] | None:
    """``(start, end)`` of the time a machine existed for ``rec``; ``None``: none ever did."""
    start = next((when for state, when, _ in rec.history if state in BILLED_STATES), None)
    if start is None:
        return None
    end = next((when for state, when, _ in rec.history if state == S.TERMINATED.value), None)
    if end is None:
        end = rec.since if rec.state is S.TERMINATED else now
    return start, max(start, end)


def node_usage(rec: NodeRecord, *, price: float, now: float) -> SiteUsage:
    """The worker-seconds of one record until ``now`` and their cost at ``price`` per node-hour."""
    span = billed_span(rec, now)
    if span is None:
        return SiteUsage()
    seconds = span[1] - span[0]
    return SiteUsage(seconds, seconds / 3600.0 * price)


def site_prices(spec: DomainSpec | None) -> Callable[[str], float]:
    """The price per node-hour of each site of ``spec`` (0 for a site it no longer lists, or no spec)."""
    prices = {site.name: float(site.price) for site in spec.sites} if spec is not None else {}
    return lambda site: prices.get(site, 0.0)


def records_usage(records: Iterable[NodeRecord], *, price: Callable[[str], float], now: float
                  ) -> dict[str, SiteUsage]:
    """Usage of ``records`` by site (records that never had a machine are left out)."""
    out: dict[str, SiteUsage] = {}
    for rec in records:
        if billed_span(rec, now) is None:
            continue
        out[rec.site] = out.get(rec.site, SiteUsage()) + node_usage(rec, price=price(rec.site), now=now)
    return out


def bank(spec: DomainSpec | None, records: Iterable[NodeRecord], *, now: float) -> dict[str, float]:
    """What forgetting ``records`` adds to the running totals: ``{member: increment}``, plus ``since`` (the
    earliest billed start among them, kept as a minimum by the store). Empty when nothing was billed."""
    records = list(records)
    if spec is None:
        return {}
    out: dict[str, float] = {}
    for site, use in records_usage(records, price=site_prices(spec), now=now).items():
        out[f"{spec.name}|{site}|seconds"] = use.worker_seconds
        out[f"{spec.name}|{site}|cost"] = use.cost
    starts = [span[0] for rec in records if (span := billed_span(rec, now)) is not None]
    if starts:
        out[SINCE] = min(starts)
    return out


def parse_totals(raw: Mapping[str, float]) -> tuple[Totals, float | None]:
    """The banked totals as read back from the store, validated: members that are not
    ``{domain}|{site}|seconds|cost`` with a domain and a site name, or whose value is not a finite
    number >= 0, are left out. Returns the totals and the earliest billed start (None: none)."""
    totals: Totals = {}
    since: float | None = None
    for member, value in raw.items():
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            continue
        if member == SINCE:
            since = float(value)
            continue
        found = _MEMBER.fullmatch(member) if isinstance(member, str) else None
        if found is None or not NAME_RE.fullmatch(found["domain"]) or not ID_RE.fullmatch(found["site"]):
            continue
        sites = totals.setdefault(found["domain"], {})
        use = SiteUsage(float(value), 0.0) if found["what"] == "seconds" else SiteUsage(0.0, float(value))
        sites[found["site"]] = sites.get(found["site"], SiteUsage()) + use
    return totals, since


def combine(banked: Totals, live: Mapping[str, Mapping[str, SiteUsage]]) -> Totals:
    """The banked totals plus the usage of the records still kept, per domain and site."""
    out: Totals = {domain: dict(sites) for domain, sites in banked.items()}
    for domain, sites in live.items():
        mine = out.setdefault(domain, {})
        for site, use in sites.items():
            mine[site] = mine.get(site, SiteUsage()) + use
    return out


def report(totals: Totals, *, since: float) -> dict[str, object]:
    """The usage report: per domain its worker-seconds and cost, and the same per site (rounded to
    milliseconds and to 1e-6 of a currency unit), and since when it counts."""
    domains: dict[str, object] = {}
    for domain in sorted(totals):
        sites = totals[domain]
        whole = SiteUsage()
        for use in sites.values():
            whole = whole + use
        domains[domain] = {
            "worker_seconds": round(whole.worker_seconds, 3), "cost": round(whole.cost, 6),
            "sites": {site: {"worker_seconds": round(use.worker_seconds, 3), "cost": round(use.cost, 6)}
                      for site, use in sorted(sites.items())},
        }
    return {"domains": domains, "since": since}
