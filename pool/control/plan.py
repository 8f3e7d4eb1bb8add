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

from policies import Policy
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
from pool.control.named import decide_named, scale_named
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
) -> Plan:
    """Doctor, decide, shape and choose actions for one domain. No I/O, no clock reads.

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
    if obs.wanted is not None and decider:  # a named domain: the workload says which nodes (a scheduler's resume request)
        decision, value = decide_named(draft), float(len(obs.wanted))
        launches, fresh = scale_named(draft, decision, state, live, new_ids=new_ids)
    else:
        decision, errors, value = decide(obs, policy, view, state, decider=decider, policy_error=policy_error)
        launches, fresh = scale(draft, decision, state, live, joined=view.joined, decider=decider, new_ids=new_ids)
    return record(draft, decision, view, state, errors=errors, value=value, launches=launches, fresh=fresh,
                  roles=roles)
