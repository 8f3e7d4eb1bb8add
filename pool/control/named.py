"""Named domains: workers wanted under names the workload chose (the node names a batch scheduler asked
to power up), reconciled by name rather than by count.

The observation's ``wanted`` maps each name to when it was asked for. A name with no live worker
gets one (placed across the sites like any launch, in the order asked, up to the domain's max);
a live worker whose name is no longer wanted is terminated (a scheduler powers down only idle nodes).
Pure, like the rest of the plan. Imports ``pool.control``, ``pool.core`` and ``policies.placement``.
"""

from __future__ import annotations

from typing import Callable

from pool.control.decider import _launch, _site_slots, _withdraw_stuck
from pool.control.draft import Draft, S
from pool.core.model import Decision, DomainState, NodeRecord


def decide_named(d: Draft) -> Decision:
    """One worker per wanted name, at most the domain's max."""
    wanted, spec = d.obs.wanted or {}, d.obs.spec
    names = sorted(wanted, key=lambda n: (wanted[n], n))
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    capped = f"; max {spec.max}" if len(names) > spec.max else ""
    return Decision(min(len(names), spec.max), f"{len(names)} node(s) wanted by name{': ' + shown if shown else ''}"
                    f"{capped}", {"wanted": float(len(names))})


def run_ahead(named: Decision, ahead: Decision, wanted: int) -> tuple[Decision, int | None]:
    """The named decision, saying what the policy wants too; and the size to ask the scheduler to power
    up toward when the policy wants more nodes than the scheduler asked for (None: nothing to ask).
    The launches stay the scheduler's: a node it powers up asks for itself by name."""
    reason = f"{named.reason}; policy ahead: {ahead.target} ({ahead.reason})"
    decision = Decision(named.target, reason, {**named.inputs, "ahead": float(ahead.target)})
    return decision, (ahead.target if ahead.target > wanted else None)


#: A launch withdrawn from a site that is full or broken, to be placed on another (not a failure).
WITHDRAWN = "not launched: site"


def _given_up(d: Draft) -> set[str]:
    """Wanted names whose worker failed before joining since they were asked for (a boot timeout, a
    failed launch): not launched again under the same request. A ``named_failed`` event says so once;
    the manager then drops the name and the workload tells its scheduler (the node goes DOWN
    with the reason and is powered down, so the job is requeued and placed again)."""
    wanted, out = d.obs.wanted or {}, set[str]()
    for rec in d.nodes.values():
        if rec.name is None or rec.name not in wanted or rec.since < wanted[rec.name]:
            continue
        ended = rec.state in (S.FAILED, S.UNHEALTHY, S.TERMINATED) and rec.entered(S.JOINED) is None
        if ended and not rec.history[-1][2].startswith(WITHDRAWN):  # (withdrawn: placed elsewhere, not failed)
            out.add(rec.name)
            d.events.append(("named_failed", {"node": rec.node_id, "name": rec.name, "why": rec.history[-1][2]}))
    return out


def scale_named(d: Draft, decision: Decision, state: DomainState, live: list[NodeRecord], *,
                new_ids: Callable[[str], tuple[str, str]]) -> tuple[list[NodeRecord], set[str]]:
    """Launch records for wanted names without a live worker; end live workers no longer wanted."""
    wanted, spec, t = d.obs.wanted or {}, d.obs.spec, d.obs.spec.timeouts
    slots = _site_slots(d)
    live, slots = _withdraw_stuck(d, live, slots)
    launches = [n.copy() for n in live if n.state == S.REQUESTED]
    keep: list[NodeRecord] = []
    for rec in live:
        if rec.name in wanted:
            keep.append(rec)
            continue
        if rec in launches:
            launches.remove(rec)
        if rec.state is S.REQUESTED and rec.provider_id is None:
            d.move(rec, S.TERMINATED, "withdrawn before launch: no longer wanted")
        else:
            d.kill(rec, S.TERMINATING, f"{rec.name or 'unnamed'}: no longer wanted (powered down)",
                   grace=t.terminate_grace)
        state.last_scale_down = d.now
    held = {rec.name for rec in keep} | _given_up(d)
    missing = sorted((n for n in wanted if n not in held), key=lambda n: (wanted[n], n))
    room = max(0, spec.max - len(keep))
    fresh: set[str] = set()
    to_place = list(missing[:room])
    if to_place and _launch(d, len(to_place), slots, decision, launches, fresh, new_ids, names=to_place):
        state.last_scale_up = d.now
    for name in to_place:  # no site has room (full, out of capacity, broken): said now, not at ResumeTimeout
        d.events.append(("named_failed", {"node": None, "name": name, "why": "no site has room for it now"}))
    return launches, fresh
