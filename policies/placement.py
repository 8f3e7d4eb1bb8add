"""Placement: how many launches cover machines that never boot, their split over sites, and where to shrink; pure."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

STRATEGIES = ("overflow", "spread", "cheapest", "spot_first")


@dataclass(frozen=True)
class SiteSlot:
    """One site as one domain's placement sees it at one tick."""

    name: str
    rank: int = 0  # overflow order: lower first (list order among equal ranks)
    cap: int | None = None  # max live nodes of this domain on this site (None: no cap)
    weight: float = 1.0  # share under spread; <= 0: spread launches nothing here
    price: float = 0.0  # per node-hour, for cheapest and spot_first
    spot: bool = False  # preemptible capacity
    live: int = 0  # this domain's nodes here in any state that counts against the cap
    available: bool = True  # False: in backoff, broken or out of capacity -> no new launches

    def room(self, count: int) -> int:
        """How many new launches this site takes now, at most ``count``."""
        if not self.available:
            return 0
        return count if self.cap is None else max(0, min(count, self.cap - self.live))


def overprovision(need: int, percent: float) -> int:
    """Launches above ``need`` (nodes still to join) that cover machines that never boot.

    ``x = need * percent / 100`` machines are expected to be lost among the ``need`` launched; the
    margin is ``ceil(x + 2 * sqrt(x))``: that count plus two standard deviations of a count of rare
    losses (``sqrt(x)``, Poisson), so that a shortfall, which costs a replacement's whole boot, is
    unlikely (about 2 %) at every scale. 0 when nothing is needed or ``percent`` is 0.
    """
    if need <= 0 or percent <= 0:
        return 0
    x = need * percent / 100
    return math.ceil(x + 2 * math.sqrt(x) - 1e-9)


def _check(sites: Sequence[SiteSlot], strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown placement {strategy!r}; valid: {', '.join(STRATEGIES)}")
    names = [s.name for s in sites]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate site names in placement: {', '.join(names)}")


def _fill_order(sites: Sequence[SiteSlot], strategy: str) -> list[int]:
    """Indices of ``sites`` in the order an ordered strategy fills them; ties keep list order."""

    def key(i: int) -> tuple[float, ...]:
        s = sites[i]
        if strategy == "cheapest":
            return (s.price, s.rank, i)
        if strategy == "spot_first":  # spot: cheapest first; on-demand fallback: by rank, then price
            return (0, s.price, s.rank, i) if s.spot else (1, s.rank, s.price, i)
        return (s.rank, i)

    return sorted(range(len(sites)), key=key)


def _level(n: int, s: SiteSlot) -> float:
    """Sainte-Lague priority of ``n`` nodes on ``s`` for spread: lower gets the next node."""
    return (n + 0.5) / s.weight if s.weight > 0 else math.inf


def place(count: int, sites: Sequence[SiteSlot], *, strategy: str = "overflow") -> dict[str, int]:
    """Split ``count`` new launches over ``sites``; returns ``{site: n}`` with only ``n > 0``.

    The total is ``min(count, room left by caps and availability)``: the caller reports any
    shortfall. Raises ``ValueError`` for an unknown strategy or duplicate site names.
    """
    _check(sites, strategy)
    if count <= 0:
        return {}
    given = [0] * len(sites)
    if strategy == "spread":  # water-filling one node at a time onto the lowest weighted level
        heap = [(_level(s.live, s), i) for i, s in enumerate(sites) if s.weight > 0 and s.room(1)]
        heapq.heapify(heap)
        for _ in range(count):
            if not heap:
                break
            _, i = heapq.heappop(heap)
            given[i] += 1
            if sites[i].room(given[i] + 1) > given[i]:
                heapq.heappush(heap, (_level(sites[i].live + given[i], sites[i]), i))
    else:
        left = count
        for i in _fill_order(sites, strategy):
            given[i] = sites[i].room(left)
            left -= given[i]
    return {s.name: n for s, n in zip(sites, given) if n > 0}


def scale_in_order(sites: Sequence[SiteSlot], *, strategy: str = "overflow") -> list[str]:
    """All site names, the site to remove nodes from first leading.

    overflow, cheapest, spot_first: the exact reverse of the fill order (highest rank, most
    expensive, on-demand before spot). spread: the site most above its weighted share of the
    live total first. Ties: later in the list first. Availability does not matter here.
    """
    _check(sites, strategy)
    if strategy != "spread":
        return [sites[i].name for i in reversed(_fill_order(sites, strategy))]
    weights = sum(s.weight for s in sites if s.weight > 0)
    total = sum(s.live for s in sites)

    def excess(i: int) -> float:
        s = sites[i]
        return s.live - (total * s.weight / weights if s.weight > 0 else 0.0)

    return [sites[i].name for i in sorted(range(len(sites)), key=lambda i: (-excess(i), -i))]


def unplace(count: int, sites: Sequence[SiteSlot], *, strategy: str = "overflow") -> dict[str, int]:
    """How many of ``count`` removals to take from each site (``{site: n}``, only ``n > 0``).

    Ordered strategies empty sites in :func:`scale_in_order`; spread removes one node at a time
    from the highest weighted level, so several removals keep the shares. At most all live nodes.
    """
    _check(sites, strategy)
    taken = [0] * len(sites)
    if strategy == "spread":
        heap = [(-_level(s.live - 1, s), -i) for i, s in enumerate(sites) if s.live > 0]
        heapq.heapify(heap)
        for _ in range(max(0, count)):
            if not heap:
                break
            _, j = heapq.heappop(heap)
            taken[-j] += 1
            if sites[-j].live > taken[-j]:
                heapq.heappush(heap, (-_level(sites[-j].live - taken[-j] - 1, sites[-j]), j))
    else:
        left = max(0, count)
        for i in reversed(_fill_order(sites, strategy)):
            taken[i] = min(left, max(0, sites[i].live))
            left -= taken[i]
    return {s.name: n for s, n in zip(sites, taken) if n > 0}


def site_preference_for_victims(sites: Sequence[SiteSlot], *, strategy: str = "overflow") -> Callable[[str], int]:
    """Sort key for victims by site: a site no longer configured first, then :func:`scale_in_order`."""
    position = {name: p + 1 for p, name in enumerate(scale_in_order(sites, strategy=strategy))}
    return lambda site: position.get(site, 0)
