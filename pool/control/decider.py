"""The decider: what the policy sees, what it decides, and the actions that make the actual size
match it.

:func:`view_of` freezes the domain for the policy; :func:`decide` takes the operator's override,
the sensor fallback or the policy's decision, shaped (min/max, activation, scale-up limits,
stabilization); :func:`scale` places launches across the sites or chooses scale-in victims
(requested first, then booting, then idle longest; a worker whose agent runs is removed by the
drain handshake, never killed before its drain deadline);
:func:`record` freezes the plan with its decision event. Pure: imports ``policies`` and ``pool.core``.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from typing import AbstractSet, Callable, Iterable, Mapping

from policies import Policy, primary
from policies import registry as policy_registry
from policies.placement import SiteSlot, overprovision, place, site_preference_for_victims
from policies.shaping import shape
from pool.control.backoff import launches_allowed
from pool.control.draft import Draft, Event, Observation, Plan, S
from pool.core.model import LIVE_STATES, UNJOINED_STATES, Decision, DomainState, DomainView, Heartbeat, NodeRecord
from sensors import error_text


def _idle_since(rec: NodeRecord, hb: Heartbeat | None) -> float:
    if hb is not None and hb.idle_since is not None:
        return hb.idle_since
    return rec.entered(S.JOINED) or rec.created

def choose_victims(
    live: Iterable[NodeRecord],
    heartbeats: Mapping[str, Heartbeat],
    count: int,
    *,
    now: float,
    idle_timeout: float = 0.0,
    site_order: Callable[[str], int] | None = None,
) -> list[NodeRecord]:
    """Scale-in order: not yet joined (least advanced, newest first), then idle longest, then busy.

    A busy worker is chosen only when no joined worker is idle; an idle worker younger than
    ``idle_timeout`` is kept (and so protects the busy ones).
    """
    if count <= 0:
        return []
    live = list(live)
    rank = {S.REQUESTED: 0, S.PENDING: 1, S.STARTED: 2}
    where = site_order or (lambda site: 0)  # placement's scale-in order of sites (e.g. highest rank first)
    unjoined = sorted(
        (n for n in live if n.state in UNJOINED_STATES), key=lambda n: (rank[n.state], where(n.site), -n.created)
    )
    joined = [n for n in live if n.state == S.JOINED]
    idle = [n for n in joined if (heartbeats.get(n.node_id) or Heartbeat(0)).active == 0]
    busy = [n for n in joined if (heartbeats.get(n.node_id) or Heartbeat(0)).active > 0]
    idle.sort(key=lambda n: (where(n.site), _idle_since(n, heartbeats.get(n.node_id))))
    ripe = [n for n in idle if now - _idle_since(n, heartbeats.get(n.node_id)) >= idle_timeout]
    victims = (unjoined + ripe)[:count]
    if len(victims) < count and not idle:
        busy.sort(key=lambda n: (heartbeats[n.node_id].active, -(n.entered(S.JOINED) or 0)))
        victims += busy[: count - len(victims)]
    return victims

#: How many of the domain's latest boots :func:`boot_seconds` takes the median of.
RECENT_BOOTS = 20


def boot_seconds(nodes: Iterable[NodeRecord], recent: int = RECENT_BOOTS) -> float | None:
    """The site's boot time: median seconds from the launch reaching the site (PENDING; else the
    request) to JOINED over the ``recent`` joined nodes that joined last; None if none has joined.
    Time a request queued behind the site's API rate limits is left out: it depends on how many were
    asked. ``nodes`` are joined records; cheap: one look at each one's last history entry (its join)."""
    joined = [n for n in nodes if n.history and n.history[-1][0] == "JOINED"]
    when_joined = [n.history[-1][1] for n in joined]
    cutoff = min(heapq.nlargest(recent, when_joined)) if len(joined) > recent else -math.inf
    latest = sorted((w, i) for i, w in enumerate(when_joined) if w >= cutoff)[-recent:]
    boots = []
    for when, i in latest:
        n = joined[i]
        start = n.entered(S.PENDING)
        start = n.created if start is None else start
        if when >= start:
            boots.append(when - start)
    if not boots:
        return None
    boots.sort()
    mid = len(boots) // 2
    return boots[mid] if len(boots) % 2 else (boots[mid - 1] + boots[mid]) / 2

def _uses_boot_seconds(policy: str) -> bool:
    """Whether the policy class asks for ``view.boot_seconds`` (``uses_boot_seconds = True``): only
    then is it worked out, so other domains' ticks do not pay for it."""
    try:
        return bool(getattr(policy_registry.resolve(policy), "uses_boot_seconds", False))
    except Exception:  # noqa: BLE001 (an unknown policy is reported where it is built)
        return False

def view_of(d: Draft, state: DomainState) -> tuple[DomainView, list[NodeRecord]]:
    """What a policy sees of the domain after the doctor, and its live records (they count toward
    the actual size)."""
    live: list[NodeRecord] = []
    joined: list[NodeRecord] = []
    n_busy = n_draining = 0
    hb_get = d.obs.heartbeats.get
    for n in d.nodes.values():
        if n.state in LIVE_STATES:
            live.append(n)
            if n.state is S.JOINED:
                joined.append(n)
                hb = hb_get(n.node_id)
                if hb is not None and hb.active > 0:
                    n_busy += 1
        elif n.state is S.DRAINING:
            n_draining += 1
    spec, n_joined = d.obs.spec, len(joined)
    boot = boot_seconds(joined) if _uses_boot_seconds(spec.policy.name) else None
    view = DomainView(name=spec.name, min_size=spec.min, max_size=spec.max, actual=len(live), joined=n_joined,
                      booting=len(live) - n_joined, busy=n_busy, idle=n_joined - n_busy, draining=n_draining,
                      intended=state.intended, last_scale_up=state.last_scale_up,
                      last_scale_down=state.last_scale_down, memory=dict(state.policy_memory),
                      boot_seconds=boot)
    return view, live

def decide(obs: Observation, policy: Policy | None, view: DomainView, state: DomainState, *, decider: bool,
           policy_error: str | None) -> tuple[Decision, list[Event], float | None]:
    """The intended size and why: held (not the decider), the operator's override, held (no policy),
    the sensor fallback, or the policy's decision shaped (``state`` keeps its memory and the
    stabilization window). Also the errors to record and the primary reading's value."""
    spec, now = obs.spec, obs.now
    reading = primary(obs.readings)
    value = reading.value if reading is not None else None
    failing = {name: r.error for name, r in obs.readings.items() if not r.ok}
    errors: list[Event] = []  # recorded when they change, not every tick
    if not decider:
        return Decision(state.intended, "held by the decider"), errors, value
    if state.override is not None:
        return Decision(max(0, min(spec.max, state.override)), f"operator override {state.override}"), errors, value
    if policy is None:
        errors.append(("error", {"what": "policy", "error": policy_error}))
        return Decision(max(spec.min, min(spec.max, state.intended)), f"hold: {policy_error}"), errors, value
    if failing and not getattr(policy, "handles_errors", False):
        size = spec.scaling.fallback_size if spec.scaling.fallback == "fixed" else state.intended
        what = "fallback size" if spec.scaling.fallback == "fixed" else "hold"
        reason = f"sensor failed ({'; '.join(f'{k}: {v}' for k, v in failing.items())}): {what} {size}"
        return Decision(max(spec.min, min(spec.max, size)), reason), errors, value
    try:
        raw = policy.decide(view, obs.readings, now)
        if not isinstance(raw, Decision) or not isinstance(raw.target, int):
            raise TypeError(f"decide() must return a Decision with an int target, got {raw!r}")
        if raw.memory is not None:
            state.policy_memory = dict(raw.memory)
    except Exception as exc:  # a broken policy holds the size and says why
        raw = Decision(state.intended, f"policy error ({error_text(exc)}): hold {state.intended}")
        errors.append(("error", {"what": "policy", "error": error_text(exc)}))
    decision = shape(raw, view=view, scaling=spec.scaling, value=value, recent=state.recent, now=now)
    bounded = max(spec.min, min(spec.max, raw.target))
    state.recent = [(w, x) for (w, x) in state.recent if now - w <= spec.scaling.stabilization]
    state.recent.append((now, bounded))
    return decision, errors, value

def scale(d: Draft, decision: Decision, state: DomainState, live: list[NodeRecord], *, joined: int,
          decider: bool, new_ids: Callable[[str], tuple[str, str]]) -> tuple[list[NodeRecord], set[str]]:
    """Make the actual size match the decision: launch requests placed across the sites, or scale-in
    victims. Returns the launches to hand to the provisioner (new and not yet accepted ones) and the
    ids of the new ones."""
    fresh: set[str] = set()
    if not decider:
        return [], fresh
    slots = _site_slots(d)
    live, slots = _withdraw_stuck(d, live, slots)
    launches = [n.copy() for n in live if n.state == S.REQUESTED]  # not yet accepted
    delta, live = _delta(d, decision.target, state, live, joined)
    if delta > 0:  # workers that keep failing before they join: one probe at a time, after a wait
        delta = launches_allowed(state, delta, booting=sum(1 for n in live if n.state in UNJOINED_STATES), now=d.now)
    if delta > 0:
        if _launch(d, delta, slots, decision, launches, fresh, new_ids):
            state.last_scale_up = d.now
    elif delta < 0:
        _scale_in(d, -delta, live, slots, launches)
        state.last_scale_down = d.now
    return launches, fresh

def _site_slots(d: Draft) -> list[SiteSlot]:
    """The domain's sites as placement sees them; what may still hold a machine counts against a cap."""
    held = Counter(n.site for n in d.nodes.values()
                   if n.state != S.TERMINATED and (n.state != S.FAILED or n.provider_id))
    return [SiteSlot(name=site.name, rank=site.rank, cap=site.max, weight=site.weight, price=site.price,
                     spot=site.spot, live=held[site.name], available=d.obs.available(site.name))
            for site in d.obs.spec.sites]

def _withdraw_stuck(d: Draft, live: list[NodeRecord],
                    slots: list[SiteSlot]) -> tuple[list[NodeRecord], list[SiteSlot]]:
    """Launches waiting on a site that is full, broken or backing off are withdrawn, to be placed
    elsewhere where there is room."""
    stuck = [n for n in live if n.state == S.REQUESTED and not d.obs.available(n.site)]
    movable = sum(place(len(stuck), slots, strategy=d.obs.spec.placement).values()) if stuck else 0
    if not movable:
        return live, slots
    withdrawn = {d.move(rec, S.FAILED, f"not launched: site {rec.site} unavailable; placed elsewhere").node_id
                 for rec in stuck[:movable]}
    return [n for n in live if n.node_id not in withdrawn], _site_slots(d)

def _delta(d: Draft, target: int, state: DomainState, live: list[NodeRecord],
           joined: int) -> tuple[int, list[NodeRecord]]:
    """How many to launch (> 0) or remove (< 0), and the live records scale-in may choose from.

    Overprovisioning (some machines never boot): while fewer than the target have joined, a margin
    above what is still to join is launched; booting machines are not scaled in while the target
    has not joined (only launch requests not yet made are withdrawn), unless more boot than the
    target with its whole margin could use. A node neither joined nor heard from `boot_replace`
    seconds after its launch is presumed dead for planning only: it is replaced at once and kept
    until the boot timeout (or the target has joined), in case it joins late.
    """
    spec, now, t = d.obs.spec, d.now, d.obs.spec.timeouts
    goal = target
    if spec.overprovision > 0 and state.override is None and target > joined:
        goal += overprovision(target - joined, spec.overprovision)
    if target <= joined:  # the target has joined: the surplus goes, unjoined first (presumed dead too)
        return goal - len(live), live
    replace_after = t.boot_replace if t.boot_replace is not None else t.boot
    hb_get = d.obs.heartbeats.get
    counted = [n for n in live if n.state is S.JOINED or n.state is S.REQUESTED
               or hb_get(n.node_id) is not None or now - (n.entered(S.PENDING) or n.created) <= replace_after]
    delta = goal - len(counted)
    if delta >= 0:
        return delta, live
    # keep booting machines (the margin) until the target has joined
    requested = sum(1 for n in counted if n.state is S.REQUESTED)
    spare = len(counted) - target - overprovision(target, spec.overprovision if state.override is None else 0)
    return -min(-delta, requested + max(0, spare)), counted

def _launch(d: Draft, count: int, slots: list[SiteSlot], decision: Decision, launches: list[NodeRecord],
            fresh: set[str], new_ids: Callable[[str], tuple[str, str]], names: list[str] | None = None) -> bool:
    """``count`` launch records with fresh ids, placed across the sites (what no site has room for is
    deferred, with an event saying why), named from ``names`` in order when given. True if placement
    chose any site."""
    spec = d.obs.spec
    placed = place(count, slots, strategy=spec.placement)
    short = count - sum(placed.values())
    if short:
        why = ", ".join(f"{s.name}: {'full (cap)' if s.available else 'in backoff, broken or out of capacity'}"
                        for s in slots)
        d.events.append(("deferred", {"launches": short, "why": why}))
    for site_name, n in placed.items():
        for _ in range(n):
            node_id, launch_id = new_ids(spec.name)
            rec = NodeRecord.new(node_id=node_id, domain=spec.name, launch_id=launch_id, site=site_name,
                                 deployable_type=spec.deployable_type, now=d.now, detail=decision.reason,
                                 name=names.pop(0) if names else None)
            launches.append(rec)
            fresh.add(node_id)
            d.events.append(("node", {"node": node_id, "from": None, "to": "REQUESTED", "detail": "launch"}))
            if d.lost:  # time to repair, first stage: last sign of life -> replacement requested
                gone, seen = d.lost.pop(0)
                d.events.append(("repair", {"node": gone, "replacement": node_id, "stage": "requested",
                                            "seconds": round(d.now - seen, 3), "lost_at": seen}))
    return bool(placed)

def _scale_in(d: Draft, count: int, live: list[NodeRecord], slots: list[SiteSlot],
              launches: list[NodeRecord]) -> None:
    """Remove ``count`` workers: launch requests never made are withdrawn; machines whose agent has not
    spoken yet hold no work and are terminated; every other worker is removed by handshake: asked
    to drain through its record, terminated once it reports drained (the doctor), killed only at
    its drain deadline. Busy or idle comes from the worker itself, so even an idle-looking one drains."""
    spec, now, t = d.obs.spec, d.now, d.obs.spec.timeouts
    order = site_preference_for_victims(slots, strategy=spec.placement)
    for rec in choose_victims(live, d.obs.heartbeats, count, now=now, idle_timeout=spec.scaling.idle_timeout,
                              site_order=order):
        hb = d.obs.heartbeats.get(rec.node_id)
        if rec in launches:
            launches.remove(rec)
        if rec.state is S.REQUESTED and rec.provider_id is None:  # never reached a site: no call
            d.move(rec, S.TERMINATED, "scale-in: withdrawn before launch")
        elif rec.state is S.JOINED or (rec.state is S.STARTED and hb is not None):
            busy = f"busy ({hb.active} running)" if hb is not None and hb.active > 0 else "idle"
            d.drain(rec, f"scale-in: drain {busy} {rec.state.value.lower()} worker (deadline {t.drain:g}s)",
                    deadline=now + t.drain)
        else:
            d.kill(rec, S.TERMINATING, f"scale-in: {rec.state.value.lower()} worker", grace=t.terminate_grace)

def record(d: Draft, decision: Decision, view: DomainView, state: DomainState, *, errors: list[Event],
           value: float | None, launches: list[NodeRecord], fresh: set[str], roles: AbstractSet[str]) -> Plan:
    """The decision event (when something changed), the domain's new state, and the frozen plan."""
    obs = d.obs
    previous_reason = (obs.state.last_decision or {}).get("reason")
    if errors and decision.reason != previous_reason:
        d.events.extend(errors)
    acted = any(kind == "node" for kind, _ in d.events)  # launches, scale-in, doctor moves
    if "decider" in roles and (decision.target != obs.state.intended or acted
                               or state.override != obs.state.override):
        d.events.append(("decision", {"target": decision.target, "actual": view.actual, "reason": decision.reason,
                                      "inputs": dict(decision.inputs), "value": value}))
    state.intended = decision.target
    state.last_decision = {"time": obs.now, "target": decision.target, "reason": decision.reason,
                           "actual": view.actual}
    for name, r in obs.readings.items():  # what a sensor did not count, and why: said when it changes
        if r.notes and list(r.notes) != (obs.state.readings.get(name) or {}).get("notes"):
            d.events.append(("sensor", {"sensor": name, "notes": list(r.notes)}))
    state.readings = {name: {"value": r.value, "time": r.time, "error": r.error, **dict(r.detail),
                             **({"notes": list(r.notes)} if r.notes else {}),
                             **({"nodes": dict(r.nodes)} if r.nodes is not None else {})}
                      for name, r in obs.readings.items()}
    return Plan(domain=obs.spec.name, decision=decision, view=view, changed=tuple(d.changed.values()),
                launches=tuple(launches), terminations=tuple(d.terminations), forget=tuple(d.forget), state=state,
                events=tuple(d.events), fresh=frozenset(fresh), roles=frozenset(roles))
