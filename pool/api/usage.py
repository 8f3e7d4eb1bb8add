"""`GET /usage`: worker-seconds and cost per domain and site, from the node records the store keeps and
the totals banked when ended records were forgotten (the computation is ``pool.core.usage``, pure;
this module only reads).

Imports ``pool.core`` and ``pool.state``.
"""

from __future__ import annotations

from pool.core.usage import Totals, billed_span, combine, parse_totals, records_usage, report, site_prices
from pool.state.store import Store

#: reads of the banked totals and the records that may be retried when a forget ran in between
READ_ATTEMPTS = 5


def usage(store: Store, now: float) -> dict[str, object]:
    """``{"domains": {name: {"worker_seconds", "cost", "sites": {site: {...}}}}, "since": T}``.

    Domains that were deleted keep their banked usage. The banked totals are read before and after the
    records: a forget that moved seconds from the records to the totals in between would count them
    twice or not at all, so the read is made again (a few times at most).
    """
    raw = store.usage_totals()
    for _ in range(READ_ATTEMPTS):
        live_totals, starts = _live(store, now)
        again = store.usage_totals()
        if again == raw:
            break
        raw = again
    banked, since = parse_totals(raw)
    totals = combine(banked, live_totals)
    earliest = min([t for t in (since, *starts) if t is not None], default=now)
    return report(totals, since=earliest)


def _live(store: Store, now: float) -> tuple[Totals, list[float]]:
    """Usage of the records each domain still keeps, by domain and site, and their billed starts."""
    out: Totals = {}
    starts: list[float] = []
    for spec in store.domains():
        records = store.nodes(spec.name)
        used = records_usage(records, price=site_prices(spec), now=now)
        if used:
            out[spec.name] = used
        starts += [span[0] for rec in records if (span := billed_span(rec, now)) is not None]
    return out, starts
