"""One domain's plan for one tick: the doctor, then the decider, on the domain's observation.

Pure: no I/O and no clock reads (the time is the observation's; ids come from an injected
generator), so the same code runs in the live manager, in unit tests and in the simulator.
:func:`plan_domain` runs the named steps in order on a :class:`~pool.control.draft.Draft`:

1. :func:`pool.control.doctor.doctor`: every record's lifecycle from heartbeats and the listing;
   :func:`pool.control.backoff.note_boot_failures` counts the nodes that failed before joining;
2. :func:`pool.control.decider.view_of`: the frozen view a policy sees;
3. :func:`pool.control.decider.decide`: override, sensor fallback or the policy, shaped;
4. :func:`pool.control.decider.scale`: placement, launches with fresh ids, scale-in victims;
5. :func:`pool.control.decider.record`: the decision event and the domain's new state, frozen.
"""

from __future__ import annotations

from dataclasses import replace
from typing import AbstractSet, Callable

from policies import Policy, primary
from pool.control.backoff import note_boot_failures
from pool.control.decider import choose_victims, decide, record, scale, view_of
from pool.control.doctor import doctor
from pool.control.draft import (
    END_RETRIES,
    END_RETRY_CAP,
    LISTING_GRACE,
    TERMINATED_RETENTION,
    Draft,
    Event,
    Observation,
    Plan,
    Termination,
    _new_ids,
)
from pool.control.named import decide_named, run_ahead, scale_named
from pool.core.model import Decision, DomainState
from pool.state.leases import ROLES

__all__ = ["END_RETRIES", "END_RETRY_CAP", "LISTING_GRACE", "TERMINATED_RETENTION", "Observation", "Plan",
           "Termination", "choose_victims", "plan_domain"]

def plan_domain(
    obs: Observation,
    policy: Policy | None,
    *,
    policy_error: str | None = None,
    new_ids: Callable[[str], tuple[str, str]] = _new_ids,
    roles: AbstractSet[str] = frozenset(ROLES),
    paused_by: str | None = None,
    deleting: str | None = None,
) -> Plan:
    """Doctor, decide, shape and choose actions for one domain. No I/O, no clock reads.

    ``paused_by`` (who paused the domain) holds its intended size: the policy is not consulted, dead
    workers are still replaced, an operator's override still counts. ``deleting`` (who deleted it)
    drains every worker, whatever the policy, the override or the domain's minimum say.

    ``roles`` says which actor parts run: ``doctor`` (heartbeats, deadlines), ``provisioner``
    (the site's listing: vanished machines, zombies; pass ``site_nodes=None`` to skip it) and
    ``decider`` (policy, launches, scale-in). A manager holding all three replaces a node the
    doctor condemned in the same tick.
    """
    draft = Draft(obs=obs, nodes={n.node_id: n for n in obs.nodes})
    doctor(draft, roles)
    state = replace(obs.state, recent=list(obs.state.recent))
    note_boot_failures(draft, state)
    view, live = view_of(draft, state)
    decider = "decider" in roles
    errors: list[Event] = []
    value: float | None
    warm: int | None = None
    held = operator_hold(obs, state, paused_by=paused_by, deleting=deleting) if decider else None
    if held is not None:  # paused or being deleted: the size an operator holds it at
        reading = primary(obs.readings)
        decision, value = held, (reading.value if reading is not None else None)
        launches, fresh = scale(draft, decision, state, live, joined=view.joined, decider=decider, new_ids=new_ids)
    elif obs.wanted is not None and decider:  # a named domain: the workload says which nodes (a scheduler's resume request)
        decision, value = decide_named(draft), float(len(obs.wanted))
        if obs.ahead:  # the policy may run ahead of the scheduler: its size is asked of the scheduler, not launched
            ahead, errors, value = decide(obs, policy, view, state, decider=decider, policy_error=policy_error)
            decision, warm = run_ahead(decision, ahead, len(obs.wanted))
        launches, fresh = scale_named(draft, decision, state, live, new_ids=new_ids)
    else:
        decision, errors, value = decide(obs, policy, view, state, decider=decider, policy_error=policy_error)
        launches, fresh = scale(draft, decision, state, live, joined=view.joined, decider=decider, new_ids=new_ids)
    plan = record(draft, decision, view, state, errors=errors, value=value, launches=launches, fresh=fresh,
                  roles=roles)
    return replace(plan, warm=warm) if warm is not None else plan


def operator_hold(obs: Observation, state: DomainState, *, paused_by: str | None,
                  deleting: str | None) -> Decision | None:
    """The decision when an operator holds the domain (``None``: the usual path decides).

    Being deleted: size 0. Paused (a domain sized by count, with no override): the intended size it
    had, within the spec's bounds."""
    if deleting is not None:
        return Decision(0, f"deleting (by {deleting}): draining every worker")
    if paused_by is None or state.override is not None or obs.wanted is not None:
        return None
    spec = obs.spec
    return Decision(max(spec.min, min(spec.max, state.intended)), f"paused by {paused_by}")
