"""The decider and the doctor: one domain's plan for one tick, drawn up from its observation.

Pure: no I/O and no clock reads (the time is the observation's; ids come from an injected
generator), so the same code runs in the live manager, in unit tests and in the simulator.
:func:`plan_domain` runs the named steps in order, each on a :class:`Draft` (the plan while it is
drawn up):

1. :func:`doctor`: every record's lifecycle from heartbeats and the site's listing; deadlines;
   terminate retries; preempted nodes drained once replaced; zombies found;
2. :func:`view_of`: the frozen :class:`DomainView` a policy sees;
3. :func:`decide`: the operator's override, the sensor fallback, or the policy, then shaping;
4. :func:`scale`: placement across sites, launches with fresh ids, scale-in victims;
5. :func:`record`: the decision event and the domain's new state, frozen into a :class:`Plan`.

Imports only pure code: ``pool.model``, ``policies`` (and its placement and shaping), the
provisioner's :class:`SiteNode` value type and ``sensors.error_text``.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import AbstractSet, Any, Callable, Iterable, Mapping

from policies import Policy, primary
from policies.placement import SiteSlot, overprovision, place, site_preference_for_victims
from policies.shaping import shape
from pool.leases import ROLES
from pool.model import (
    LIVE_STATES,
    UNJOINED_STATES,
    Decision,
    DomainSpec,
    DomainState,
    DomainView,
    Heartbeat,
    NodeRecord,
    NodeState,
    Reading,
)
from pool.provisioner import SiteNode
from sensors import error_text

S = NodeState
#: How long ended node records stay visible in `pool show`.
TERMINATED_RETENTION = 600.0
#: A PENDING node missing from the site's listing is taken as gone only after this long
#: (cloud listings lag behind launches).
LISTING_GRACE = 30.0
#: States of a node being ended (or failed): terminated again while a machine may be there.
ENDING_STATES = frozenset({S.TERMINATING, S.UNHEALTHY, S.FAILED})
#: Terminate retries a record in an ending state gets while no listing shows its machine alive;
#: then it is retired (TERMINATED, with a ``retired`` event). The first retry comes
#: ``terminate_grace + 15`` s after it entered the state, each next one twice as long after the last.
END_RETRIES = 5
#: Longest wait between two terminate retries of one record (seconds).
END_RETRY_CAP = 900.0
#: The history note a terminate retry leaves (the record keeps its state: no transition).
RETRY_NOTE = "terminate retry"
#: How a record that ended without a machine starts its last history entry.
RETIRED = "retired"


# ---------------------------------------------------------------------------
# Plan: a pure function of one domain's observation
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    """Everything one tick knows about one domain, read before anything is decided."""

    spec: DomainSpec
    state: DomainState
    nodes: tuple[NodeRecord, ...]
    heartbeats: Mapping[str, Heartbeat]
    site_nodes: Mapping[str, SiteNode] | None  # None: no listing this tick (failed, or not the provisioner)
    site_available: bool | Mapping[str, bool]  # per site (a bool: the same for every site)
    readings: Mapping[str, Reading]
    now: float
    #: when the store answered again after an outage: heartbeats lost in it are not held against nodes
    store_back_at: float = 0.0
    #: sites whose listing failed this tick: their nodes are not judged by it
    unlisted: frozenset[str] = frozenset()
    #: when the oldest listing in ``site_nodes`` was fetched: nodes launched after it are not judged by it
    listed_at: float = float("inf")

    def available(self, site: str) -> bool:
        sa = self.site_available
        return sa if isinstance(sa, bool) else bool(sa.get(site, False))


@dataclass(frozen=True)
class Termination:
    node_id: str
    grace: float
    reason: str
    provider_id: str | None = None  # set for zombies: machines no record knows
    site: str = ""  # the zombie's site


@dataclass(frozen=True)
class Plan:
    """A frozen decision for one domain, applied by :meth:`Manager.apply`."""

    domain: str
    decision: Decision
    view: DomainView
    changed: tuple[NodeRecord, ...]  # records whose state moved (new copies)
    launches: tuple[NodeRecord, ...]  # REQUESTED records to hand to the provisioner
    terminations: tuple[Termination, ...]
    forget: tuple[NodeRecord, ...]
    state: DomainState
    events: tuple[tuple[str, dict[str, Any]], ...] = field(default=())
    #: node ids of the launches decided this tick (the rest of ``launches`` are earlier, unaccepted ones)
    fresh: frozenset[str] = frozenset()
    #: the roles whose parts of the plan ran (see :data:`pool.leases.ROLES`)
    roles: frozenset[str] = frozenset(ROLES)


def _new_ids(domain: str) -> tuple[str, str]:
    return f"{domain}-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex


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


def end_retries(rec: NodeRecord) -> int:
    """The terminate retries made for ``rec`` in its current state (its latest history notes)."""
    count = 0
    for state, _, detail in reversed(rec.history):
        if state != rec.state.value or not detail.startswith(RETRY_NOTE):
            break
        count += 1
    return count


def launch_refused(rec: NodeRecord) -> bool:
    """Whether ``rec`` failed because its launch was refused, so that no machine of it can exist.

    No machine id, never past REQUESTED, and failed by the answer to its launch. A launch is
    idempotent under its launch id (a client token, or a search for the tag before launching),
    so a refusal means nothing was made under that id; a token reused with other arguments
    (``IdempotentParameterMismatch``) is no such refusal. A record withdrawn while its site was
    unavailable may have had an earlier try that reached the site: that one is not refused.
    """
    if rec.state is not S.FAILED or rec.provider_id is not None:
        return False
    if any(state not in (S.REQUESTED.value, S.FAILED.value) for state, _, _ in rec.history):
        return False
    detail = next((d for state, _, d in rec.history if state == S.FAILED.value), "")
    return detail.startswith("launch failed") and "IdempotentParameterMismatch" not in detail


def end_retry_wait(rec: NodeRecord, terminate_grace: float) -> float:
    """Seconds after its last change or retry before ``rec`` (ending) is terminated again: doubling, capped."""
    return min(END_RETRY_CAP, (terminate_grace + 15.0) * 2.0 ** min(end_retries(rec), 32))


def _retired(rec: NodeRecord) -> bool:
    """A TERMINATED record retired without its machine confirmed gone (see :data:`END_RETRIES`)."""
    return bool(rec.history) and rec.history[-1][2].startswith(RETIRED)


Event = tuple[str, dict[str, Any]]


@dataclass
class Draft:
    """A plan while it is drawn up: the records as they change (copied on first change, so the
    observation stays intact) and what is to be done. Each step adds to it; :func:`record` freezes it."""

    obs: Observation
    nodes: dict[str, NodeRecord]
    changed: dict[str, NodeRecord] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    terminations: list[Termination] = field(default_factory=list)
    forget: list[NodeRecord] = field(default_factory=list)
    #: (node, last sign of life): workers the doctor condemned, for time-to-repair events
    lost: list[tuple[str, float]] = field(default_factory=list)

    @property
    def now(self) -> float:
        return self.obs.now

    def twin(self, rec: NodeRecord) -> NodeRecord:
        """The record's copy in this plan (made on first use)."""
        twin = self.changed.get(rec.node_id)
        if twin is None:
            twin = self.changed[rec.node_id] = self.nodes[rec.node_id] = rec.copy()
        return twin

    def move(self, rec: NodeRecord, new: NodeState, detail: str, *,
             drain_deadline: float | None = None) -> NodeRecord:
        """A state change (through the one state table), with its event."""
        twin = self.twin(rec)
        old = twin.state
        twin.set_state(new, self.now, detail)
        if drain_deadline is not None:
            twin.drain_deadline = drain_deadline
        self.events.append(("node", {"node": twin.node_id, "from": old.value, "to": new.value, "detail": detail}))
        return twin

    def kill(self, rec: NodeRecord, new: NodeState, detail: str, grace: float = 0.0,
             drain_deadline: float | None = None) -> NodeRecord:
        """A state change and a terminate (after ``grace`` seconds of warm shutdown)."""
        twin = self.move(rec, new, detail, drain_deadline=drain_deadline)
        twin.drain_sent = True
        self.terminations.append(Termination(twin.node_id, grace, detail))
        return twin

    def note(self, rec: NodeRecord, detail: str) -> NodeRecord:
        """A history entry that keeps the record's state (a terminate retry): counted, and when."""
        twin = self.twin(rec)
        twin.history.append((twin.state.value, self.now, detail))
        return twin


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
    view, live = view_of(draft, state)
    decider = "decider" in roles
    decision, errors, value = decide(obs, policy, view, state, decider=decider, policy_error=policy_error)
    launches, fresh = scale(draft, decision, state, live, joined=view.joined, decider=decider, new_ids=new_ids)
    return record(draft, decision, view, state, errors=errors, value=value, launches=launches, fresh=fresh,
                  roles=roles)


# -- 1. doctor ---------------------------------------------------------------------------------


def doctor(d: Draft, roles: AbstractSet[str]) -> None:
    """Every record's lifecycle from its heartbeats and the site's listing (the doctor), and what the
    listing says (the provisioner): machines gone, machines running, zombies."""
    obs = d.obs
    doctoring = "doctor" in roles
    for rec in obs.nodes:
        if doctoring and _steady(obs, rec):
            continue
        if rec.state == S.TERMINATED:
            if "provisioner" in roles and obs.now - rec.since > TERMINATED_RETENTION:
                d.forget.append(rec)
            continue
        judged, listed = _listing_of(obs, rec)
        current = _by_listing(d, rec, judged, listed)
        if current is not None and doctoring:
            _by_heartbeat(d, current, judged, listed)
    if doctoring:
        drain_preempted(d)
    if obs.site_nodes is not None:
        find_zombies(d)


def _steady(obs: Observation, rec: NodeRecord) -> bool:
    """The steady state, decided at once: a joined worker beating in time, its workload alive, no
    preemption notice, and listed alive by its site (or not judged by a listing this tick)."""
    if rec.state is not S.JOINED:
        return False
    hb = obs.heartbeats.get(rec.node_id)
    if (hb is None or not hb.workload_alive or hb.preempt_notice is not None
            or obs.now - max(hb.time, obs.store_back_at) > obs.spec.timeouts.heartbeat_timeout):
        return False
    if obs.site_nodes is None or rec.site in obs.unlisted:
        return True
    listed = obs.site_nodes.get(rec.node_id)
    return listed is not None and listed.alive


def _listing_of(obs: Observation, rec: NodeRecord) -> tuple[bool, SiteNode | None]:
    """Whether this tick's listing judges the record (it was launched before the listing), and its entry."""
    if obs.site_nodes is None:
        return False, None
    judged = rec.site not in obs.unlisted and (rec.entered(S.PENDING) or rec.created) < obs.listed_at
    return judged, obs.site_nodes.get(rec.node_id)


def _by_listing(d: Draft, rec: NodeRecord, judged: bool, listed: SiteNode | None) -> NodeRecord | None:
    """PENDING -> STARTED when the site reports the machine running; a machine the listing no longer
    has is gone (``None``: the record ended here)."""
    if judged and rec.state != S.REQUESTED and not (listed and listed.alive):
        if not (rec.state == S.PENDING and listed is None and d.now - rec.since < LISTING_GRACE):
            if rec.state in (S.PENDING, S.STARTED, S.JOINED):  # (a PENDING one may lag the listing a while)
                hb = d.obs.heartbeats.get(rec.node_id)
                d.lost.append((rec.node_id, hb.time if hb is not None else rec.since))
                rec = d.move(rec, S.UNHEALTHY, "machine gone")
            d.move(rec, S.TERMINATED, "machine gone" if rec.state == S.UNHEALTHY else "ended")
            return None
    if rec.state == S.PENDING and judged and listed is not None and listed.running:
        rec = d.move(rec, S.STARTED, "site reports it running")  # the lifecycle sensor
    return rec


def _by_heartbeat(d: Draft, rec: NodeRecord, judged: bool, listed: SiteNode | None) -> None:
    """PENDING -> STARTED -> JOINED from the agent's beats; silence, a dead workload, the boot
    timeout, a preemption notice and the drain deadline end a node; ending ones are retried."""
    now, t = d.now, d.obs.spec.timeouts
    hb = d.obs.heartbeats.get(rec.node_id)
    if rec.state == S.PENDING and hb is not None:
        rec = d.move(rec, S.STARTED, "agent heartbeat")
    if rec.state == S.STARTED and hb is not None and hb.ready:
        rec = d.move(rec, S.JOINED, "workload pulling work")
    # silence counts once the agent has beaten (before that, the boot timeout does)
    if rec.state in (S.JOINED, S.DRAINING) or (rec.state == S.STARTED and hb is not None):
        last = max(hb.time if hb is not None else rec.since, d.obs.store_back_at)
        if now - last > t.heartbeat_timeout:
            d.kill(rec, S.UNHEALTHY, f"no heartbeat for {now - last:.1f}s (timeout {t.heartbeat_timeout:g}s)")
            if rec.state != S.DRAINING:
                d.lost.append((rec.node_id, hb.time if hb is not None else rec.since))
            return
        if hb is not None and not hb.workload_alive and rec.state != S.DRAINING:
            d.kill(rec, S.UNHEALTHY, "workload process died")
            d.lost.append((rec.node_id, hb.time))
            return
    if rec.state in (S.PENDING, S.STARTED) and now - (rec.entered(S.PENDING) or rec.created) > t.boot:
        d.kill(rec, S.FAILED, f"not joined within boot timeout {t.boot:g}s of launch")
    elif rec.state in (S.STARTED, S.JOINED) and hb is not None and hb.preempt_notice is not None:
        # the site will reclaim it: it stops counting (so it is replaced now) but keeps serving
        # until its replacement joins (or half its drain window passed), then drains
        d.move(rec, S.DRAINING, "preemption notice: replaced; serving until the replacement joins",
               drain_deadline=now + t.drain)
    elif rec.state == S.DRAINING and rec.drain_deadline is not None and now > rec.drain_deadline:
        d.kill(rec, S.TERMINATING, "drain deadline passed")
    elif rec.state in ENDING_STATES:
        _end_again(d, rec, listed if judged and listed is not None and listed.alive else None)


def _end_again(d: Draft, rec: NodeRecord, alive: SiteNode | None) -> None:
    """A record being ended whose machine the site lists alive (``alive``), or that no listing judges
    (failing, backing off, broken site): retired when its launch was refused, else terminated again
    with growing waits, and retired after :data:`END_RETRIES` retries that no listing answered."""
    if alive is None and launch_refused(rec):  # nothing to end: no call
        d.move(rec, S.TERMINATED, f"{RETIRED}: its launch was refused; no machine to end")
        return
    if d.now - rec.since <= end_retry_wait(rec, d.obs.spec.timeouts.terminate_grace):
        return
    retries = end_retries(rec)
    if retries >= END_RETRIES and alive is None:
        why = "machine id unknown" if rec.provider_id is None else f"machine {rec.provider_id} may remain"
        d.move(rec, S.TERMINATED, f"{RETIRED} after {retries} terminate retries; no listing "
                                  f"of site {rec.site} shows it ({why})")
        d.events.append(("retired", {"node": rec.node_id, "site": rec.site, "retries": retries,
                                     "provider_id": rec.provider_id,
                                     "why": "no listing confirmed the machine gone; should it show "
                                            "up alive it is ended as a zombie"}))
        return
    d.note(rec, f"{RETRY_NOTE} {retries + 1}")
    by_listing = alive is not None and rec.provider_id is None
    d.terminations.append(Termination(rec.node_id, 0.0, "still there after terminate: kill",
                                      alive.provider_id if by_listing and alive is not None else None,
                                      rec.site if by_listing else ""))


def drain_preempted(d: Draft) -> None:
    """Preempted nodes still serving are drained once their replacements have joined (or half
    their drain window passed)."""
    waiting = [n for n in d.nodes.values() if n.state is S.DRAINING and not n.drain_sent]
    if not waiting:
        return
    now, t = d.now, d.obs.spec.timeouts
    waiting.sort(key=lambda n: n.since)
    joined_now = sum(1 for n in d.nodes.values() if n.state == S.JOINED)
    for rec in waiting:
        half = rec.since + (t.drain / 2)
        if joined_now >= d.obs.state.intended or now >= half:
            twin = d.twin(rec)
            twin.drain_sent = True
            remaining = max(0.0, (twin.drain_deadline or now) - now)
            d.terminations.append(Termination(twin.node_id, remaining, "preempted node: replacement joined, drain"))
            d.events.append(("drain", {"node": twin.node_id, "why": "replacement joined" if now < half
                                       else "half the drain window passed"}))


def find_zombies(d: Draft) -> None:
    """Machines tagged as this domain's that no record knows (launched by a deposed leader, say)
    are ended. A record retired before its launch was accepted has no machine id, and one retired
    after its terminate retries was not seen gone: a machine of theirs that shows up is ended too."""
    spec = d.obs.spec
    assert d.obs.site_nodes is not None
    for node_id, listed in d.obs.site_nodes.items():
        known = d.nodes.get(node_id)
        if (listed.alive and (known is None or (known.state is S.TERMINATED
                                                and (known.provider_id is None or _retired(known))))
                and listed.tags.get("elastic-pool/domain") == spec.name):
            d.terminations.append(Termination(node_id, 0.0, "zombie: no record", listed.provider_id,
                                              listed.site or spec.site))
            d.events.append(("zombie", {"node": node_id, "provider_id": listed.provider_id}))


# -- 2. view -----------------------------------------------------------------------------------


def view_of(d: Draft, state: DomainState) -> tuple[DomainView, list[NodeRecord]]:
    """What a policy sees of the domain after the doctor, and its live records (they count toward
    the actual size)."""
    live: list[NodeRecord] = []
    n_joined = n_busy = n_draining = 0
    hb_get = d.obs.heartbeats.get
    for n in d.nodes.values():
        if n.state in LIVE_STATES:
            live.append(n)
            if n.state is S.JOINED:
                n_joined += 1
                hb = hb_get(n.node_id)
                if hb is not None and hb.active > 0:
                    n_busy += 1
        elif n.state is S.DRAINING:
            n_draining += 1
    spec = d.obs.spec
    view = DomainView(name=spec.name, min_size=spec.min, max_size=spec.max, actual=len(live), joined=n_joined,
                      booting=len(live) - n_joined, busy=n_busy, idle=n_joined - n_busy, draining=n_draining,
                      intended=state.intended, last_scale_up=state.last_scale_up,
                      last_scale_down=state.last_scale_down, memory=dict(state.policy_memory))
    return view, live


# -- 3. decide ---------------------------------------------------------------------------------


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


# -- 4. scale and place ------------------------------------------------------------------------


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
            fresh: set[str], new_ids: Callable[[str], tuple[str, str]]) -> bool:
    """``count`` launch records with fresh ids, placed across the sites (what no site has room for is
    deferred, with an event saying why). True if placement chose any site."""
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
                                 deployable_type=spec.deployable_type, now=d.now, detail=decision.reason)
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
    """Remove ``count`` workers: launch requests never made are withdrawn; a busy worker is drained
    (warm shutdown until the drain deadline), never killed; the rest are terminated."""
    spec, now, t = d.obs.spec, d.now, d.obs.spec.timeouts
    order = site_preference_for_victims(slots, strategy=spec.placement)
    for rec in choose_victims(live, d.obs.heartbeats, count, now=now, idle_timeout=spec.scaling.idle_timeout,
                              site_order=order):
        hb = d.obs.heartbeats.get(rec.node_id)
        if rec in launches:
            launches.remove(rec)
        if rec.state is S.REQUESTED and rec.provider_id is None:  # never reached a site: no call
            d.move(rec, S.TERMINATED, "scale-in: withdrawn before launch")
        elif rec.state == S.JOINED and hb is not None and hb.active > 0:
            d.kill(rec, S.DRAINING, f"scale-in: drain busy worker (deadline {t.drain:g}s)", grace=t.drain,
                   drain_deadline=now + t.drain)
        else:
            d.kill(rec, S.TERMINATING, f"scale-in: {rec.state.value.lower()} worker", grace=t.terminate_grace)


# -- 5. record ---------------------------------------------------------------------------------


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
    state.readings = {name: {"value": r.value, "time": r.time, "error": r.error, **dict(r.detail)}
                      for name, r in obs.readings.items()}
    return Plan(domain=obs.spec.name, decision=decision, view=view, changed=tuple(d.changed.values()),
                launches=tuple(launches), terminations=tuple(d.terminations), forget=tuple(d.forget), state=state,
                events=tuple(d.events), fresh=frozenset(fresh), roles=frozenset(roles))
