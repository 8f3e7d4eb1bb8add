"""The domain manager: the decider and doctor tick (observe, plan, act, record) over every domain."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Protocol

from policies import Policy, load_policy, primary
from policies.shaping import shape
from pool.images import deployable_type
from pool.leases import Lease, LeaseLost, Leases
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
    PluginParamError,
    Reading,
    UnknownPlugin,
)
from pool.provisioner import PermanentError, Provisioner, RetryableError, SiteNode
from pool.redisserver import broker_url_for
from pool.store import FencedWrite, Store
from sensors import Sensor, error_text, load_sensor

log = logging.getLogger("elastic_pool.manager")

S = NodeState
#: How long ended node records stay visible in `pool show`.
TERMINATED_RETENTION = 600.0
#: A PENDING node missing from the site's listing is taken as gone only after this long
#: (cloud listings lag behind launches).
LISTING_GRACE = 30.0


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
    site_nodes: Mapping[str, SiteNode] | None  # None: the site's listing failed this tick
    site_available: bool
    readings: Mapping[str, Reading]
    now: float
    #: when the store answered again after an outage: heartbeats lost in it are not held against nodes
    store_back_at: float = 0.0


@dataclass(frozen=True)
class Termination:
    node_id: str
    grace: float
    reason: str
    provider_id: str | None = None  # set for zombies: machines no record knows


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
) -> list[NodeRecord]:
    """Scale-in order: not yet joined (least advanced, newest first), then idle longest, then busy.

    A busy worker is chosen only when no joined worker is idle; an idle worker younger than
    ``idle_timeout`` is kept (and so protects the busy ones).
    """
    if count <= 0:
        return []
    live = list(live)
    rank = {S.REQUESTED: 0, S.PENDING: 1, S.STARTED: 2}
    unjoined = sorted(
        (n for n in live if n.state in UNJOINED_STATES), key=lambda n: (rank[n.state], -n.created)
    )
    joined = [n for n in live if n.state == S.JOINED]
    idle = [n for n in joined if (heartbeats.get(n.node_id) or Heartbeat(0)).active == 0]
    busy = [n for n in joined if (heartbeats.get(n.node_id) or Heartbeat(0)).active > 0]
    idle.sort(key=lambda n: _idle_since(n, heartbeats.get(n.node_id)))
    ripe = [n for n in idle if now - _idle_since(n, heartbeats.get(n.node_id)) >= idle_timeout]
    victims = (unjoined + ripe)[:count]
    if len(victims) < count and not idle:
        busy.sort(key=lambda n: (heartbeats[n.node_id].active, -(n.entered(S.JOINED) or 0)))
        victims += busy[: count - len(victims)]
    return victims


def plan_domain(
    obs: Observation,
    policy: Policy | None,
    *,
    policy_error: str | None = None,
    new_ids: Callable[[str], tuple[str, str]] = _new_ids,
) -> Plan:
    """Doctor, decide, shape and choose actions for one domain. No I/O, no clock reads."""
    spec, now, t = obs.spec, obs.now, obs.spec.timeouts
    events: list[tuple[str, dict[str, Any]]] = []
    nodes = {n.node_id: n for n in obs.nodes}  # copied on first change: the observation stays intact
    changed: dict[str, NodeRecord] = {}
    terminations: list[Termination] = []
    forget: list[NodeRecord] = []

    def move(rec: NodeRecord, new: NodeState, detail: str, *, drain_deadline: float | None = None) -> NodeRecord:
        twin = changed.get(rec.node_id)
        if twin is None:
            twin = changed[rec.node_id] = nodes[rec.node_id] = rec.copy()
        old = twin.state
        twin.set_state(new, now, detail)
        if drain_deadline is not None:
            twin.drain_deadline = drain_deadline
        events.append(("node", {"node": twin.node_id, "from": old.value, "to": new.value, "detail": detail}))
        return twin

    def kill(rec: NodeRecord, new: NodeState, detail: str, grace: float = 0.0,
             drain_deadline: float | None = None) -> NodeRecord:
        twin = move(rec, new, detail, drain_deadline=drain_deadline)
        terminations.append(Termination(twin.node_id, grace, detail))
        return twin

    # -- doctor: lifecycle from heartbeats and the site's listing ----------------------------
    for rec in obs.nodes:
        if rec.state == S.TERMINATED:
            if now - rec.since > TERMINATED_RETENTION:
                forget.append(rec)
            continue
        hb = obs.heartbeats.get(rec.node_id)
        listed = obs.site_nodes.get(rec.node_id) if obs.site_nodes is not None else None
        if obs.site_nodes is not None and rec.state != S.REQUESTED and not (listed and listed.alive):
            if rec.state == S.PENDING and listed is None and now - rec.since < LISTING_GRACE:
                pass  # the listing may lag the launch
            else:
                if rec.state in (S.PENDING, S.STARTED, S.JOINED):
                    rec = move(rec, S.UNHEALTHY, "machine gone")
                move(rec, S.TERMINATED, "machine gone" if rec.state == S.UNHEALTHY else "ended")
                continue
        if rec.state == S.PENDING and hb is not None:
            rec = move(rec, S.STARTED, "agent heartbeat")
        if rec.state == S.STARTED and hb is not None and hb.ready:
            rec = move(rec, S.JOINED, "workload pulling work")
        if rec.state in (S.STARTED, S.JOINED, S.DRAINING):
            last = max(hb.time if hb is not None else rec.since, obs.store_back_at)
            if now - last > t.heartbeat_timeout:
                kill(rec, S.UNHEALTHY, f"no heartbeat for {now - last:.1f}s (timeout {t.heartbeat_timeout:g}s)")
                continue
            if hb is not None and not hb.workload_alive and rec.state != S.DRAINING:
                kill(rec, S.UNHEALTHY, "workload process died")
                continue
        if rec.state in (S.PENDING, S.STARTED) and now - (rec.entered(S.PENDING) or rec.created) > t.boot:
            kill(rec, S.FAILED, f"not joined within boot timeout {t.boot:g}s of launch")
            continue
        if rec.state in (S.STARTED, S.JOINED) and hb is not None and hb.preempt_notice is not None:
            # the site will reclaim it: replace it now (it stops counting) and let it drain
            kill(rec, S.DRAINING, "preemption notice: replaced and draining", grace=t.drain,
                 drain_deadline=now + t.drain)
            continue
        if rec.state == S.DRAINING and rec.drain_deadline is not None and now > rec.drain_deadline:
            kill(rec, S.TERMINATING, "drain deadline passed")
            continue
        if rec.state in (S.TERMINATING, S.UNHEALTHY, S.FAILED) and now - rec.since > t.terminate_grace + 15:
            terminations.append(Termination(rec.node_id, 0.0, "still there after terminate: kill"))

    # machines tagged as this domain's that no record knows (e.g. launched by a deposed leader)
    if obs.site_nodes is not None:
        for node_id, listed in obs.site_nodes.items():
            if (listed.alive and node_id not in nodes
                    and listed.tags.get("elastic-pool/domain") == spec.name):
                terminations.append(Termination(node_id, 0.0, "zombie: no record", listed.provider_id))
                events.append(("zombie", {"node": node_id, "provider_id": listed.provider_id}))

    # -- view ---------------------------------------------------------------------------------
    live = [n for n in nodes.values() if n.state in LIVE_STATES]
    joined = [n for n in live if n.state == S.JOINED]
    busy = [n for n in joined if (obs.heartbeats.get(n.node_id) or Heartbeat(0)).active > 0]
    state = replace(obs.state, recent=list(obs.state.recent))
    view = DomainView(
        name=spec.name,
        min_size=spec.min,
        max_size=spec.max,
        actual=len(live),
        joined=len(joined),
        booting=len(live) - len(joined),
        busy=len(busy),
        idle=len(joined) - len(busy),
        draining=sum(1 for n in nodes.values() if n.state == S.DRAINING),
        intended=state.intended,
        last_scale_up=state.last_scale_up,
        last_scale_down=state.last_scale_down,
        memory=dict(state.policy_memory),
    )

    # -- decide + shape -------------------------------------------------------------------------
    reading = primary(obs.readings)
    value = reading.value if reading is not None else None
    failing = {name: r.error for name, r in obs.readings.items() if not r.ok}
    errors: list[tuple[str, dict[str, Any]]] = []  # recorded when they change, not every tick
    if state.override is not None:
        decision = Decision(max(0, min(spec.max, state.override)), f"operator override {state.override}")
    elif policy is None:
        decision = Decision(max(spec.min, min(spec.max, state.intended)), f"hold: {policy_error}")
        errors.append(("error", {"what": "policy", "error": policy_error}))
    elif failing and not getattr(policy, "handles_errors", False):
        if spec.scaling.fallback == "fixed":
            size = spec.scaling.fallback_size
            reason = f"sensor failed ({'; '.join(f'{k}: {v}' for k, v in failing.items())}): fallback size {size}"
        else:
            size = state.intended
            reason = f"sensor failed ({'; '.join(f'{k}: {v}' for k, v in failing.items())}): hold {size}"
        decision = Decision(max(spec.min, min(spec.max, size)), reason)
    else:
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

    # -- place + act ----------------------------------------------------------------------------
    launches = [n.copy() for n in live if n.state == S.REQUESTED]  # earlier launches not yet accepted
    delta = decision.target - len(live)
    if delta > 0:
        if obs.site_available:
            for _ in range(delta):
                node_id, launch_id = new_ids(spec.name)
                rec = NodeRecord.new(node_id=node_id, domain=spec.name, launch_id=launch_id, site=spec.site,
                                     deployable_type=spec.deployable_type, now=now, detail=decision.reason)
                launches.append(rec)
                events.append(("node", {"node": node_id, "from": None, "to": "REQUESTED", "detail": "launch"}))
            state.last_scale_up = now
        else:
            events.append(("deferred", {"launches": delta, "why": f"site {spec.site} in backoff or broken"}))
    elif delta < 0:
        for rec in choose_victims(live, obs.heartbeats, -delta, now=now, idle_timeout=spec.scaling.idle_timeout):
            hb = obs.heartbeats.get(rec.node_id)
            if rec in launches:
                launches.remove(rec)
            if rec.state == S.JOINED and hb is not None and hb.active > 0:
                kill(rec, S.DRAINING, f"scale-in: drain busy worker (deadline {t.drain:g}s)", grace=t.drain,
                     drain_deadline=now + t.drain)
            else:
                kill(rec, S.TERMINATING, f"scale-in: {rec.state.value.lower()} worker", grace=t.terminate_grace)
        state.last_scale_down = now

    # -- record ----------------------------------------------------------------------------------
    previous_reason = (obs.state.last_decision or {}).get("reason")
    if errors and decision.reason != previous_reason:
        events.extend(errors)
    acted = any(kind == "node" for kind, _ in events)  # launches, scale-in, doctor moves
    if decision.target != obs.state.intended or acted or state.override != obs.state.override:
        events.append(("decision", {"target": decision.target, "actual": view.actual, "reason": decision.reason,
                                    "inputs": dict(decision.inputs), "value": value}))
    state.intended = decision.target
    state.last_decision = {"time": now, "target": decision.target, "reason": decision.reason,
                           "actual": view.actual}
    state.readings = {
        name: {"value": r.value, "time": r.time, "error": r.error, **dict(r.detail)}
        for name, r in obs.readings.items()
    }
    return Plan(
        domain=spec.name,
        decision=decision,
        view=view,
        changed=tuple(changed.values()),
        launches=tuple(launches),
        terminations=tuple(terminations),
        forget=tuple(forget),
        state=state,
        events=tuple(events),
    )


# ---------------------------------------------------------------------------
# Manager: the I/O around plan_domain
# ---------------------------------------------------------------------------


class DomainService(Protocol):
    """Something a domain needs besides its workers (e.g. a Spark master), kept up by the manager.

    ``ensure`` runs at the start of every tick for the domains it ``applies`` to; the mapping it
    returns is added to those domains' attribute bag and offered to their sensor as defaults
    (keys the sensor does not take are left out).
    """

    def applies(self, spec: DomainSpec) -> bool: ...

    def ensure(self, spec: DomainSpec, now: float) -> Mapping[str, str]: ...

    def stop(self, spec: DomainSpec) -> None: ...


class Manager:
    """Runs the tick for every domain in the store: observe, plan (pure), apply, record."""

    def __init__(
        self,
        *,
        store: Store,
        provisioner: Provisioner,
        redis_url: str,
        clock: Callable[[], float] = time.time,
        python: str = sys.executable,
        manager_id: str | None = None,
        services: Iterable[DomainService] = (),
        wakeups: bool = True,
        leases: Leases | None = None,
    ) -> None:
        self.store = store
        self.services = list(services)
        self.context: dict[str, dict[str, str]] = {}  # per domain: what its services provide
        self.provisioner = provisioner
        self.redis_url = redis_url
        self.clock = clock
        self.python = python
        self.manager_id = manager_id or f"{socket.gethostname()}-{os.getpid()}"
        self._sensors: dict[str, tuple[str, Sensor | None, str | None]] = {}
        self._watches: dict[str, Callable[[], None]] = {}
        self.wakeups = wakeups
        self._policies: dict[str, tuple[str, Policy | None, str | None]] = {}
        self.wake = threading.Event()
        self.last_plans: dict[str, Plan] = {}
        self.leases = leases
        self.lease: Lease | None = None  # the decider role, while this manager holds it
        self.store_back_at = 0.0

    # -- plug-ins, cached per spec ---------------------------------------------------------
    def broker_for(self, spec: DomainSpec) -> str:
        return spec.broker or broker_url_for(self.redis_url)

    def sensor_params(self, spec: DomainSpec) -> dict[str, Any]:
        params = dict(spec.sensor.params)
        from sensors import registry as sensors

        try:
            import dataclasses

            cls = sensors.resolve(spec.sensor.name)
            taken = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
        except UnknownPlugin:
            taken = set()
        for key, value in self.context.get(spec.name, {}).items():
            if key in taken:
                params.setdefault(key, value)
        if spec.sensor.name == "celery":
            params.setdefault("broker", self.broker_for(spec))
            if spec.celery is not None:
                params.setdefault("queue", spec.celery.queue)
                # AMQP: in-flight messages are bounded by consumers x prefetch (one per task slot)
                params.setdefault("prefetch", spec.celery.concurrency)
            params.setdefault("timeout", spec.sensor.timeout)
        return params

    def sensor_for(self, spec: DomainSpec) -> tuple[Sensor | None, str | None]:
        key = spec.sensor.model_dump_json() + self.broker_for(spec) + repr(sorted(self.context.get(spec.name, {}).items()))
        cached = self._sensors.get(spec.name)
        if cached is None or cached[0] != key:
            if cached is not None and cached[1] is not None:
                cached[1].close()
            stop_watch = self._watches.pop(spec.name, None)
            if stop_watch is not None:
                stop_watch()
            try:
                sensor: Sensor | None = load_sensor(spec.sensor.name, self.sensor_params(spec))
                err = None
            except (UnknownPlugin, PluginParamError) as exc:
                sensor, err = None, str(exc)
            watch = getattr(sensor, "watch", None)
            if self.wakeups and watch is not None:
                stopper = watch(self.wake.set)  # a burst wakes the decider at once
                if stopper is not None:
                    self._watches[spec.name] = stopper
            cached = (key, sensor, err)
            self._sensors[spec.name] = cached
        return cached[1], cached[2]

    def policy_for(self, spec: DomainSpec) -> tuple[Policy | None, str | None]:
        key = spec.policy.model_dump_json()
        cached = self._policies.get(spec.name)
        if cached is None or cached[0] != key:
            try:
                policy: Policy | None = load_policy(spec.policy.name, spec.policy.params)
                err = None
            except (UnknownPlugin, PluginParamError) as exc:
                policy, err = None, str(exc)
            cached = (key, policy, err)
            self._policies[spec.name] = cached
        return cached[1], cached[2]

    # -- observe ---------------------------------------------------------------------------
    def observe(self, spec: DomainSpec, now: float, listings: dict[str, Mapping[str, SiteNode] | None]) -> Observation:
        sensor, err = self.sensor_for(spec)
        if sensor is None:
            readings = {spec.sensor.name: Reading(spec.sensor.name, None, now, error=err)}
        else:
            readings = {spec.sensor.name: sensor.read(now)}
        nodes = tuple(self.store.nodes(spec.name))
        heartbeats = self.store.heartbeats(
            spec.name, [n.node_id for n in nodes if n.state != S.TERMINATED]
        )
        if spec.site not in listings:
            try:
                listings[spec.site] = self.provisioner.list(spec.site)
            except Exception as exc:
                log.warning("listing site %s failed: %s", spec.site, exc)
                listings[spec.site] = None
        return Observation(
            spec=spec,
            state=self.store.get_state(spec.name),
            nodes=nodes,
            heartbeats=heartbeats,
            site_nodes=listings[spec.site],
            site_available=self.provisioner.available(spec.site, now),
            readings=readings,
            now=now,
            store_back_at=self.store_back_at,
        )

    # -- act -------------------------------------------------------------------------------
    def attributes(self, spec: DomainSpec, rec: NodeRecord) -> dict[str, str]:
        """The attribute bag rendered into the node's contextualization."""
        celery = spec.celery
        attrs = {
            "python": self.python,
            "redis_url": self.redis_url,
            "namespace": self.store.ns,
            "domain": spec.name,
            "node_id": rec.node_id,
            "launch_id": rec.launch_id,
            "broker": self.broker_for(spec),
            "heartbeat_interval": f"{spec.timeouts.heartbeat_interval:g}",
        }
        if celery is not None:
            attrs.update(
                queue=celery.queue,
                celery_app=celery.app,
                celery_path=os.path.abspath(celery.path) if celery.path else "",
                concurrency=str(celery.concurrency),
                celery_pool=celery.pool,
                visibility_timeout=f"{celery.visibility_timeout:g}",
                loglevel=celery.loglevel,
            )
        attrs.update(self.context.get(spec.name, {}))
        attrs.update(spec.attributes)
        return attrs

    def _still_leader(self) -> None:
        """Before any cloud call: refuse to act if a newer manager took the decider role."""
        if self.leases is not None and self.lease is not None:
            self.leases.check(self.lease)

    def apply(self, plan: Plan, spec: DomainSpec, *, store: Store | None = None) -> None:
        store = store or self.store
        now = plan.state.last_decision["time"] if plan.state.last_decision else self.clock()
        # launch records are written before any machine is asked for (a fenced write)
        store.put_nodes([*plan.changed, *plan.launches])
        events = list(plan.events)
        launched: list[NodeRecord] = []
        records = {r.node_id: r for r in (*plan.changed, *plan.launches)}
        for rec in plan.launches:
            if not self.provisioner.available(rec.site, now):
                break
            try:
                userdata = deployable_type(rec.deployable_type).render(self.attributes(spec, rec))
                tags = {"elastic-pool/domain": rec.domain, "elastic-pool/launch": rec.launch_id,
                        "elastic-pool/node": rec.node_id}
                self._still_leader()
                rec.provider_id = self.provisioner.launch(rec, userdata=userdata, now=now, tags=tags)
                rec.set_state(S.PENDING, now, f"launched on {rec.site}")
                events.append(("node", {"node": rec.node_id, "from": "REQUESTED", "to": "PENDING", "detail": rec.site}))
            except RetryableError as exc:
                events.append(("launch_error", {"node": rec.node_id, "error": str(exc), "retry_in": round(exc.delay, 2)}))
                continue
            except (PermanentError, UnknownPlugin, ValueError) as exc:
                rec.set_state(S.FAILED, now, f"launch failed: {exc}")
                events.append(("launch_error", {"node": rec.node_id, "error": str(exc), "permanent": True}))
            launched.append(rec)
        for term in plan.terminations:
            victim = records.get(term.node_id) or next(
                (n for n in store.nodes(spec.name) if n.node_id == term.node_id), None)
            if victim is None and term.provider_id is not None:  # a zombie: end it by its site id
                victim = NodeRecord(node_id=term.node_id, domain=spec.name, launch_id="", site=spec.site,
                                    deployable_type=spec.deployable_type, provider_id=term.provider_id)
            if victim is None:
                continue
            self._still_leader()
            try:
                self.provisioner.terminate(victim, grace=term.grace, now=now)
            except Exception as exc:  # retried by the doctor's "still there" rule
                events.append(("terminate_error", {"node": victim.node_id, "error": str(exc)}))
        store.put_nodes(launched)
        for rec in plan.forget:
            try:
                self.provisioner.forget(rec)
            except Exception:
                pass
        store.forget_nodes(spec.name, [r.node_id for r in plan.forget])
        store.put_state(spec.name, plan.state)
        for kind, data in events:
            store.record(spec.name, kind, now, **data)

    # -- the tick --------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> list[Plan]:
        """One pass over every domain: observe all, then plan and apply each."""
        now = self.clock() if now is None else now
        store = self.store
        if self.leases is not None:
            self.lease = self.leases.acquire("decider")
            if self.lease is None:
                return []  # a standby: another manager decides
            store = self.store.fenced("decider", self.lease.token)
        listings: dict[str, Mapping[str, SiteNode] | None] = {}
        plans = []
        for spec in self.store.domains():
            context: dict[str, str] = {}
            for service in self.services:
                if service.applies(spec):
                    try:
                        context.update(service.ensure(spec, now))
                    except Exception as exc:  # reported, never fatal to the tick
                        self.store.record(spec.name, "error", now, what="service", error=error_text(exc))
            self.context[spec.name] = context
            obs = self.observe(spec, now, listings)
            policy, err = self.policy_for(spec)
            plan = plan_domain(obs, policy, policy_error=err)
            self.apply(plan, spec, store=store)
            self.last_plans[spec.name] = plan
            plans.append(plan)
        return plans

    def run(self, *, interval: float = 1.0, stop: threading.Event, min_gap: float = 0.1) -> None:
        """Tick every ``interval`` s (sooner when woken) until ``stop`` is set."""
        failures = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                if failures:
                    self.store_back_at = self.clock()  # agents could not beat while the store was away
                self.tick()
                failures = 0
            except (LeaseLost, FencedWrite) as exc:  # deposed mid-tick: stand by, act no more
                log.warning("lost the decider role: %s", exc)
                self.lease = None
                continue
            except Exception as exc:  # the store may be restarting: back off, keep going
                failures += 1
                delay = min(5.0, 0.25 * 2 ** min(failures, 5))
                log.error("tick failed (%s); retrying in %.1fs", error_text(exc), delay)
                stop.wait(delay)
                continue
            self.wake.clear()
            elapsed = time.monotonic() - started
            self.wake.wait(max(0.0, interval - elapsed))
            if stop.is_set():
                break
            gap = min_gap - (time.monotonic() - started)
            if gap > 0:
                time.sleep(gap)

    def close(self) -> None:
        """Stop queue watches, close sensors, hand the decider role over at once."""
        if self.leases is not None and self.lease is not None:
            try:
                self.leases.release("decider")
            except Exception:
                pass
            self.lease = None
        for stop_watch in self._watches.values():
            stop_watch()
        self._watches.clear()
        for _, sensor, _ in self._sensors.values():
            if sensor is not None:
                sensor.close()
        self._sensors.clear()

    def drain_all(self, *, timeout: float, poll: float = 0.5) -> bool:
        """Scale every domain to zero (busy workers drain) and wait until no node is left."""
        specs = self.store.domains()
        previous = {spec.name: self.store.get_state(spec.name).override for spec in specs}
        for spec in specs:
            self.store.set_override(spec.name, 0)
        deadline = time.monotonic() + timeout
        done = False
        try:
            while time.monotonic() < deadline and not done:
                self.tick()
                done = not any(n.state != S.TERMINATED for spec in specs for n in self.store.nodes(spec.name))
                if not done:
                    time.sleep(poll)
        finally:
            for name, size in previous.items():  # the operator's own override outlives a restart
                self.store.set_override(name, size)
        return done
