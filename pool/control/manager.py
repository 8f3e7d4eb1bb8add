"""The domain manager: the decider and doctor tick (observe, plan, act, record) over every domain."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import replace
from typing import Any, Callable, Iterable, Mapping

import redis

from policies import Policy, load_policy
from pool.control.actuator import Actuator, Workers
from pool.control.metrics import Metrics
from pool.control.plan import (  # noqa: F401  (re-exported: the planner's names as they were before it had a module)
    END_RETRIES,
    END_RETRY_CAP,
    LISTING_GRACE,
    TERMINATED_RETENTION,
    Observation,
    Plan,
    Termination,
    choose_victims,
    plan_domain,
)
from pool.core.model import (
    NAME_RE,
    DomainSpec,
    Heartbeat,
    NodeRecord,
    NodeState,
    PluginParamError,
    Reading,
    UnknownPlugin,
)
from pool.sites.provisioner import Provisioner, RetryableError, SiteNode
from pool.state.leases import ROLES, Lease, LeaseLost, Leases
from pool.state.redisserver import broker_url_for
from pool.state.store import FencedWrite, Marks, ReadingPoint, Store
from pool.state.workqueue import RECLAIM_AFTER, WorkItem
from pool.workloads.base import DomainService, import_path, workload_for_type
from sensors import Sensor, error_text, load_sensor

log = logging.getLogger("elastic_pool.manager")

S = NodeState

#: least seconds between two power-up requests of a domain whose policy runs ahead of its scheduler
WARM_INTERVAL = 5.0


def _runs_ahead(spec: DomainSpec) -> bool:
    """Whether a named domain's policy may ask its scheduler for nodes ahead of it (the workload says)."""
    runs = getattr(workload_for_type(spec.deployable_type), "runs_ahead", None)
    return bool(runs(spec)) if runs is not None else False


def bank_usage(spec: DomainSpec, forgotten: Iterable[NodeRecord], now: float) -> dict[str, float]:
    """The worker-seconds and cost of the ended records a plan forgets, added to the running usage totals
    in the commit that forgets them, so that usage outlives the records (``pool.core.usage``)."""
    from pool.core.usage import bank

    forgotten = list(forgotten)
    return bank(spec, forgotten, now=now) if forgotten else {}


# ---------------------------------------------------------------------------
# Manager: the I/O around plan_domain
# ---------------------------------------------------------------------------


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
        workers: int = 0,
        reclaim_after: float = RECLAIM_AFTER,
        list_interval: float = 0.0,
        metrics: Metrics | None = None,
        sensor_factory: Callable[[str, Mapping[str, Any]], Sensor] = load_sensor,
    ) -> None:
        """Launch/terminate work always goes through the work queue (the store's: durable in Redis, in
        memory for a :class:`MemoryStore`) and is carried out by the :class:`Actuator`. ``workers`` > 0:
        by that many provisioner worker threads (started by :meth:`start_workers`), here and in every
        other manager; 0: by the tick itself, right after it queues each domain's work, at the tick's
        ``now`` (the simulator, the simulated fleet, single-process tests).
        ``list_interval`` bounds how often each site's node listing is fetched."""
        self.store = store
        self.sensor_factory = sensor_factory  # a simulation injects one that attaches its queues
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
        self._idle_since: dict[str, dict[str, float]] = {}  # per domain and node, from Reading.nodes
        self.wake = threading.Event()
        self.last_plans: dict[str, Plan] = {}
        self.leases = leases
        self.held: dict[str, Lease] = {}  # the actor roles this manager holds now
        self.store_back_at = 0.0
        self.queue = store.work_queue(reclaim_after=reclaim_after)
        self.n_workers = workers
        self.list_interval = list_interval
        self._listings: dict[str, tuple[float, Mapping[str, SiteNode]]] = {}
        self._warmed: dict[str, float] = {}  # per domain: when its scheduler was last asked to power nodes up
        self.metrics = metrics
        self.actuator = Actuator(store=store, provisioner=provisioner, queue=self.queue, attributes=self.attributes,
                                 clock=clock, consumer=f"{self.manager_id}-tick", still_leader=self._still_leader,
                                 metrics=metrics)
        self.workers = Workers(self.actuator, count=workers, name=self.manager_id)
        self._repairs: dict[str, tuple[str, float]] = {}  # replacement -> (lost node, last sign of life)
        self._reported: dict[tuple[str, str], str] = {}  # refused specs and records already reported
        self._last_points: dict[str, ReadingPoint] = {}  # per domain: the readings history's last point

    @property
    def lease(self) -> Lease | None:
        """The decider role, while this manager holds it."""
        return self.held.get("decider")

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
        workload = workload_for_type(spec.deployable_type)
        for key, value in workload.sensor_defaults(spec, broker=self.broker_for(spec)).items():
            params.setdefault(key, value)
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
                sensor: Sensor | None = self.sensor_factory(spec.sensor.name, self.sensor_params(spec))
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
        heartbeats = self._busy_from_readings(spec.name, readings, heartbeats, now)
        sites = {site.name for site in spec.sites} | {n.site for n in nodes if n.state != S.TERMINATED}
        for site in spec.sites:
            self.provisioner.ensure_site(site)
        site_nodes: dict[str, SiteNode] | None = None
        unlisted: set[str] = set()
        if self.holds("provisioner"):
            site_nodes = {}
            for site_name in sorted(sites):
                if site_name not in listings:
                    listings[site_name] = self.listing(site_name, now)
                listed = listings[site_name]
                if listed is None:
                    unlisted.add(site_name)
                elif len(sites) == 1:
                    site_nodes = dict(listed) if not isinstance(listed, dict) else listed
                else:
                    site_nodes.update(listed)
        return Observation(
            spec=spec,
            state=self.store.get_state(spec.name),
            nodes=nodes,
            heartbeats=heartbeats,
            site_nodes=site_nodes,
            site_available={name: self.provisioner.available(name, now) for name in sites},
            readings=readings,
            now=now,
            store_back_at=self.store_back_at,
            unlisted=frozenset(unlisted),
            listed_at=min((self._listings[s][0] for s in sites if s in self._listings), default=now),
            wanted=self.store.wanted(spec.name) if getattr(workload_for_type(spec.deployable_type), "named", False)
            else None,
            ahead=_runs_ahead(spec),
        )

    def _busy_from_readings(self, domain: str, readings: Mapping[str, Reading], heartbeats: dict[str, Heartbeat],
                            now: float) -> dict[str, Heartbeat]:
        """Heartbeats with ``active`` and ``idle_since`` from a reading that reads every node's work at
        once (``Reading.nodes``); nodes it does not list keep what their heartbeat says. When each
        node became idle is remembered here (after a restart: from the first tick that sees it)."""
        view = next((r.nodes for r in readings.values() if r.ok and r.nodes is not None), None)
        if view is None:
            return heartbeats
        since = self._idle_since.setdefault(domain, {})
        out = dict(heartbeats)
        for node_id, hb in heartbeats.items():
            active = view.get(node_id)
            if active is None:
                continue
            idle = None if active > 0 else since.setdefault(node_id, now)
            if active > 0:
                since.pop(node_id, None)
            out[node_id] = replace(hb, active=int(active), idle_since=idle)
        for gone in set(since) - set(heartbeats):
            del since[gone]
        return out

    def holds(self, role: str) -> bool:
        return self.leases is None or role in self.held

    def listing(self, site: str, now: float) -> Mapping[str, SiteNode] | None:
        """The site's node listing, fetched at most once per ``list_interval`` (``None``: it failed).

        Failed listings back off per site (exponential with jitter, capped, reset by one that
        works: :meth:`Provisioner.list`); while a site's listing backs off it is not called, and
        its nodes are not judged by a listing.
        """
        block = self.provisioner.blocked(site, now)
        if block is not None and block.permanent:
            return None
        cached = self._listings.get(site)
        if cached is not None and now - cached[0] < self.list_interval:
            return cached[1]
        if self.provisioner.listing_wait(site, now) > 0:
            return None
        try:
            nodes = self.provisioner.list(site, now=now)
        except Exception as exc:
            log.warning("listing site %s: %s", site, error_text(exc))
            return None
        self._listings[site] = (now, nodes)
        return nodes

    # -- act -------------------------------------------------------------------------------
    def attributes(self, spec: DomainSpec, rec: NodeRecord) -> dict[str, str]:
        """The attribute bag rendered into the node's contextualization.

        The spec's own ``attributes`` go in first: nothing a spec says can shadow what the pool
        sets (its store, namespace, identity, broker, interpreter), whatever validation let through.
        """
        workload = workload_for_type(spec.deployable_type)
        attrs = dict(spec.attributes)
        attrs.update(workload.attributes(spec))
        attrs.update({
            "workload": import_path(workload),
            "python": self.python,
            "redis_url": self.redis_url,
            "namespace": self.store.ns,
            "domain": spec.name,
            "node_id": rec.node_id,
            "node_name": rec.name or rec.node_id,  # the workload's name for it (a batch scheduler's node name)
            "launch_id": rec.launch_id,
            "broker": self.broker_for(spec),
            "heartbeat_interval": f"{spec.timeouts.heartbeat_interval:g}",
        })
        attrs.update(self.context.get(spec.name, {}))
        missing = [a for a in workload.deployable_type.required if a not in attrs]
        waiting = [type(s).__name__ for s in self.services if s.applies(spec)]
        if missing and waiting:  # a central manager or master still starting: launched once it is up
            raise RetryableError(f"domain {spec.name}: waiting for {', '.join(waiting)} (missing "
                                 f"{', '.join(missing[:4])})", delay=2.0)
        return attrs

    def _still_leader(self) -> None:
        """Before any cloud call: refuse to act if a newer manager took one of this manager's roles."""
        if self.leases is not None:
            for lease in self.held.values():
                self.leases.check(lease)

    def apply(self, plan: Plan, spec: DomainSpec, *, store: Store | None = None) -> None:
        """Carry out a plan: its records and its provisioning work in one fenced commit, the state and the
        events; then, with no provisioner workers, the actuator does the domain's work here (at the
        plan's time: launches in batches, then terminations)."""
        store = store or self.store
        now = plan.state.last_decision["time"] if plan.state.last_decision else self.clock()
        queued = self._enqueue(plan, spec, store=store, now=now)
        if self.n_workers == 0 and (queued or self.actuator.holding(now, spec.name)):
            self.actuator.drain(now, domain=spec.name)

    def _enqueue(self, plan: Plan, spec: DomainSpec, *, store: Store, now: float) -> int:
        """Write the plan's records and its provisioning work in one fenced commit (launch records before
        any machine is asked for), then record; returns the items queued."""
        fresh = [rec for rec in plan.launches if rec.node_id in plan.fresh]  # earlier ones are queued already
        work = [WorkItem("launch", rec.domain, rec.node_id, launch_id=rec.launch_id, site=rec.site,
                         reason=rec.history[-1][2] if rec.history else "") for rec in fresh]
        for term in plan.terminations:
            work.append(WorkItem("terminate", spec.name, term.node_id, grace=term.grace, reason=term.reason,
                                 provider_id=term.provider_id, site=term.site or spec.site))
        store.put_nodes([*plan.changed, *fresh], work=work)
        self._record(plan, spec, store=store, now=now, events=plan.events)
        self._named_failed(plan, spec, store=store)
        self._warm(plan, spec, store=store, now=now)
        return len(work)

    def _named_failed(self, plan: Plan, spec: DomainSpec, *, store: Store) -> None:
        """Names whose worker failed before joining: dropped, and the workload told (a batch scheduler marks the
        node DOWN with the reason and powers it down, so its job is requeued, not stuck)."""
        failed = [(data["name"], str(data.get("why", ""))) for kind, data in plan.events if kind == "named_failed"]
        if not failed:
            return
        store.unwant(spec.name, [name for name, _ in failed])
        hook = getattr(workload_for_type(spec.deployable_type), "node_failed", None)
        for name, why in failed:
            if hook is None:
                continue
            try:
                hook(spec, name, why)
            except Exception as exc:  # reported; the scheduler's own timeout still applies
                store.record(spec.name, "error", self.clock(), what="node_failed", node=name, error=error_text(exc))

    def _warm(self, plan: Plan, spec: DomainSpec, *, store: Store, now: float) -> None:
        """A named domain whose policy runs ahead of its scheduler: ask the scheduler to power up nodes toward
        the policy's size (the workload's ``warm``: the scheduler then asks for them by name), at
        most every few seconds; what was asked is recorded (``prewarm`` events)."""
        if plan.warm is None or now - self._warmed.get(spec.name, float("-inf")) < WARM_INTERVAL:
            return
        self._warmed[spec.name] = now
        hook = getattr(workload_for_type(spec.deployable_type), "warm", None)
        try:
            names = list(hook(spec, target=plan.warm)) if hook is not None else []
        except Exception as exc:  # said; the scheduler still powers nodes up on its own
            store.record(spec.name, "error", now, what="prewarm", error=error_text(exc))
            return
        if names:
            store.record(spec.name, "prewarm", now, target=plan.warm, names=names)

    def _record(self, plan: Plan, spec: DomainSpec, *, store: Store, now: float,
                events: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """The end of every apply: ended records forgotten, the decider's state, the events, metrics."""
        for rec in plan.forget:
            try:
                self.provisioner.forget(rec)
            except Exception:
                pass
        store.forget_nodes(spec.name, [r.node_id for r in plan.forget], usage=bank_usage(spec, plan.forget, now))
        if "decider" in plan.roles:
            store.put_state(spec.name, plan.state, reading=self._reading_due(plan, spec, now))
        events = list(events)
        for kind, data in events:
            store.record(spec.name, kind, now, **data)
        self._observe_metrics(plan, events)

    def _repairs_joined(self, plan: Plan, now: float) -> Plan:
        """Time to repair, second stage: the replacement joined (tracked by the manager that saw both)."""
        extra: list[tuple[str, dict[str, Any]]] = []
        for kind, data in plan.events:
            if kind == "repair" and data.get("stage") == "requested":
                self._repairs[str(data["replacement"])] = (str(data["node"]), float(data["lost_at"]))
            elif kind == "node" and data.get("to") == "JOINED" and data.get("node") in self._repairs:
                gone, seen = self._repairs.pop(str(data["node"]))
                extra.append(("repair", {"node": gone, "replacement": data["node"], "stage": "joined",
                                         "seconds": round(now - seen, 3), "lost_at": seen}))
            elif kind == "node" and data.get("to") in ("FAILED", "TERMINATING", "UNHEALTHY"):
                self._repairs.pop(str(data.get("node")), None)
        return replace(plan, events=plan.events + tuple(extra)) if extra else plan

    def _observe_metrics(self, plan: Plan, events: Iterable[tuple[str, dict[str, Any]]]) -> None:
        if self.metrics is not None:
            self.metrics.observe_plan(plan, events)

    # -- provisioner workers (reactors: every manager runs them) -----------------------------
    def execute(self, item: WorkItem, now: float | None = None) -> float | None:
        """Carry out one work item (see :meth:`Actuator.execute`): a delay when it must be retried, else ``None``."""
        return self.actuator.execute(item, now)

    def start_workers(self) -> None:
        """Start this manager's provisioner workers (``workers`` > 0)."""
        if self.n_workers > 0:
            self.workers.start()

    def stop_workers(self, timeout: float = 10.0) -> None:
        self.workers.stop(timeout)

    # -- the tick --------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> list[Plan]:
        """One pass over every domain: observe all, then plan and apply each."""
        now = self.clock() if now is None else now
        store = self.store
        roles: frozenset[str] = frozenset(ROLES)
        if self.leases is not None:
            self.held = {}
            for role in ROLES:
                lease = self.leases.acquire(role)
                if lease is not None:
                    self.held[role] = lease
            if not self.held:
                if self.metrics is not None:
                    self.metrics.held((), ROLES)
                return []  # a standby for every role: a reactor only (its workers still take work)
            roles = frozenset(self.held)
            store = self.store.fenced_roles({role: lease.token for role, lease in self.held.items()})
        if self.metrics is not None:
            self.metrics.held(roles, ROLES)
        listings: dict[str, Mapping[str, SiteNode] | None] = {}
        plans = []
        marks = self.store.marks()  # paused domains and domains being deleted, in one read
        for spec in self.store.domains():
            try:
                plans.append(self._tick_domain(spec, now, roles=roles, store=store, listings=listings, marks=marks))
            except (LeaseLost, FencedWrite, redis.ConnectionError, redis.TimeoutError):
                raise  # the whole tick stops: deposed, or the store is away
            except Exception as exc:  # one bad domain never stops the others
                log.error("domain %s: tick failed: %s", spec.name, error_text(exc))
                with contextlib.suppress(Exception):
                    self.store.record(spec.name, "error", now, what="tick", error=error_text(exc))
        if self.n_workers == 0:
            if self.actuator.holding(now):
                self._drain_left(now)
            self.actuator.keep()
        self._report_refused(now)
        return plans

    def _drain_left(self, now: float) -> None:
        """No workers: the held work that is due and no domain's pass took (its domain is gone, its tick failed)."""
        try:
            self.actuator.drain(now)
        except (LeaseLost, FencedWrite, redis.ConnectionError, redis.TimeoutError):
            raise
        except Exception as exc:  # reported; the items are tried again by the next pass
            log.error("work left over: %s", error_text(exc))

    def _tick_domain(self, spec: DomainSpec, now: float, *, roles: frozenset[str], store: Store,
                     listings: dict[str, Mapping[str, SiteNode] | None], marks: Marks | None = None) -> Plan:
        """Services, observe, plan (pure) and apply for one domain."""
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
        marks = marks or Marks()
        deleting = marks.deleting.get(spec.name)
        plan = self._repairs_joined(plan_domain(obs, policy, policy_error=err, roles=roles,
                                                paused_by=marks.paused_by(spec.name),
                                                deleting=None if deleting is None else str(deleting["by"])), now)
        self.apply(plan, spec, store=store)
        self.last_plans[spec.name] = plan
        if deleting is not None and "decider" in roles:
            self._finish_deletion(spec, now, by=str(deleting["by"]))
        return plan

    # -- readings history and deletion -------------------------------------------------------
    #: seconds between two points of a domain's readings history while nothing changes
    READING_EVERY = 5.0

    def _reading_due(self, plan: Plan, spec: DomainSpec, now: float) -> ReadingPoint | None:
        """A point for the domain's readings history when its value, intended or actual size changed, or
        :attr:`READING_EVERY` seconds passed since the last one (``None``: nothing to write this tick)."""
        reading = plan.state.readings.get(spec.sensor.name) or {}
        value = reading.get("value")
        point = ReadingPoint(time=now, value=float(value) if isinstance(value, (int, float)) else None,
                             intended=plan.state.intended, actual=plan.view.actual)
        last = self._last_points.get(spec.name)
        if last is not None and point.same(last) and now - last.time < self.READING_EVERY:
            return None
        self._last_points[spec.name] = point
        return point

    def _finish_deletion(self, spec: DomainSpec, now: float, *, by: str) -> None:
        """A domain being deleted goes once no node of it may still run: its services stopped, its records
        forgotten (their usage banked), a ``deleted`` event, then the domain (its event log kept a day)."""
        records = self.store.nodes(spec.name)
        if any(n.state != S.TERMINATED and not (n.state == S.FAILED and n.provider_id is None) for n in records):
            return
        for service in self.services:
            if service.applies(spec):
                try:
                    service.stop(spec)
                except Exception as exc:  # said; the domain still goes
                    self.store.record(spec.name, "error", now, what="service stop", error=error_text(exc))
        self.store.forget_nodes(spec.name, [n.node_id for n in records], usage=bank_usage(spec, records, now))
        self.store.record(spec.name, "deleted", now, by=by)
        self.store.delete_domain(spec.name, keep_events=True)
        self._last_points.pop(spec.name, None)
        self.last_plans.pop(spec.name, None)
        self.context.pop(spec.name, None)
        cached = self._sensors.pop(spec.name, None)
        if cached is not None and cached[1] is not None:
            cached[1].close()
        stop_watch = self._watches.pop(spec.name, None)
        if stop_watch is not None:
            stop_watch()
        log.info("domain %s deleted (by %s)", spec.name, by)

    def _report_refused(self, now: float) -> None:
        """One event per stored spec or record that did not validate (it is left alone, not acted on)."""
        for name, reason in list(self.store.refused.items()):
            if self._reported.get(("spec", name)) != reason:
                self._reported[("spec", name)] = reason
                log.error("domain %r: stored spec refused: %s", name[:64], reason)
                if NAME_RE.fullmatch(name):
                    self.store.record(name, "refused", now, what="spec", error=reason)
        for (domain, node_id), reason in list(self.store.refused_records.items()):
            if self._reported.get((domain, node_id)) != reason:
                self._reported[(domain, node_id)] = reason
                self.store.record(domain, "refused", now, what="node record", node=node_id[:64], error=reason)

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
                log.warning("lost a role: %s", exc)
                self.held = {}
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
        """Stop workers and queue watches, hand held work and the roles over at once, close sensors."""
        self.stop_workers()
        with contextlib.suppress(Exception):  # else taken over after reclaim_after
            self.actuator.give_back()
        if self.leases is not None:
            for role in list(self.held):
                try:
                    self.leases.release(role)
                except Exception:
                    pass
            self.held = {}
        for stop_watch in self._watches.values():
            stop_watch()
        self._watches.clear()
        for _, sensor, _ in self._sensors.values():
            if sensor is not None:
                sensor.close()
        self._sensors.clear()

    def drain_all(self, *, timeout: float, poll: float = 0.5) -> bool:
        """Scale every domain to zero (busy workers drain) and wait until no node is left.

        Ticks at least once, and starts no tick after ``timeout`` seconds: returns ``False`` then
        (what remains is in the store). A tick that fails (the store restarting, a role lost) is
        logged and tried again until then.
        """
        specs = self.store.domains()
        previous = {spec.name: self.store.get_state(spec.name).override for spec in specs}
        deadline = time.monotonic() + max(0.0, timeout)
        done = False
        try:
            for spec in specs:
                self.store.set_override(spec.name, 0)
            while True:
                try:
                    self.tick()
                    done = not any(n.state != S.TERMINATED for spec in specs for n in self.store.nodes(spec.name))
                except Exception as exc:  # noqa: BLE001  (reported; the next tick may work)
                    log.error("drain: tick failed (%s)", error_text(exc))
                left = deadline - time.monotonic()
                if done or left <= 0:
                    break
                time.sleep(min(poll, left))
        finally:
            for name, size in previous.items():  # the operator's own override outlives a restart
                self.store.set_override(name, size)
        return done
