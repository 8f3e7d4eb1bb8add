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
from pool.core.keys import TAG_DOMAIN, machine_tags
from pool.core.model import (
    NAME_RE,
    DomainSpec,
    NodeRecord,
    NodeState,
    PluginParamError,
    Reading,
    UnknownPlugin,
)
from pool.sites.provisioner import PermanentError, Provisioner, RetryableError, SiteNode
from pool.state.leases import ROLES, Lease, LeaseLost, Leases
from pool.state.redisserver import broker_url_for
from pool.state.store import FencedWrite, Store
from pool.state.workqueue import RECLAIM_AFTER, WorkItem
from pool.workloads.base import DomainService, import_path, workload_for_type
from pool.workloads.images import deployable_type
from sensors import Sensor, error_text, load_sensor

log = logging.getLogger("elastic_pool.manager")

S = NodeState


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
        """``workers`` > 0: launch/terminate calls go through the durable work queue and are done
        by that many provisioner worker threads (started by :meth:`start_workers`), here and in
        every other manager; 0: the tick makes them itself (the simulator, single-process tests).
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
        self.wake = threading.Event()
        self.last_plans: dict[str, Plan] = {}
        self.leases = leases
        self.held: dict[str, Lease] = {}  # the actor roles this manager holds now
        self.store_back_at = 0.0
        self.queue = store.work_queue(reclaim_after=reclaim_after) if workers > 0 else None
        self.n_workers = workers
        self._workers: list[threading.Thread] = []
        self._workers_stop = threading.Event()
        self.list_interval = list_interval
        self._listings: dict[str, tuple[float, Mapping[str, SiteNode]]] = {}
        self.metrics = metrics
        self._repairs: dict[str, tuple[str, float]] = {}  # replacement -> (lost node, last sign of life)
        self._reported: dict[tuple[str, str], str] = {}  # refused specs and records already reported

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
        )

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
            "launch_id": rec.launch_id,
            "broker": self.broker_for(spec),
            "heartbeat_interval": f"{spec.timeouts.heartbeat_interval:g}",
        })
        attrs.update(self.context.get(spec.name, {}))
        return attrs

    def _still_leader(self) -> None:
        """Before any cloud call: refuse to act if a newer manager took one of this manager's roles."""
        if self.leases is not None:
            for lease in self.held.values():
                self.leases.check(lease)

    def apply(self, plan: Plan, spec: DomainSpec, *, store: Store | None = None) -> None:
        """Carry out a plan: through the durable work queue (queue mode), or here (launches in batches,
        then terminations); then the records, the state and the events."""
        store = store or self.store
        now = plan.state.last_decision["time"] if plan.state.last_decision else self.clock()
        if self.queue is not None:
            self._enqueue(plan, spec, store=store, now=now)
            return
        # launch records are written before any machine is asked for (a fenced write)
        store.put_nodes([*plan.changed, *plan.launches])
        events = list(plan.events)
        launched = self._launch_batches(plan, spec, now=now, events=events)
        self._terminate_now(plan, spec, store=store, now=now, events=events)
        store.put_nodes(launched)
        self._record(plan, spec, store=store, now=now, events=events)

    def _launch_batches(self, plan: Plan, spec: DomainSpec, *, now: float,
                        events: list[tuple[str, dict[str, Any]]]) -> list[NodeRecord]:
        """The plan's launches, one request per batch: up to the site's `batch` records of one site and
        deployable type (where the site's driver gives each machine of a batch its own identity; else
        one per request). Returns the records the sites answered (accepted or failed for good)."""
        launched: list[NodeRecord] = []
        sizes: dict[tuple[str, str], int] = {}
        held: set[str] = set()  # sites that take no more launch requests this tick
        open_batch: dict[tuple[str, str], list[NodeRecord]] = {}
        for rec in plan.launches:
            if rec.site in held:
                continue
            key = (rec.site, rec.deployable_type)
            group = open_batch.get(key)
            if group is None:  # a new batch: sized to what the site takes now (its budget shrinks as batches go)
                limit = self.provisioner.batch_limit(rec.site, now)
                if limit == 0:  # the site's launch budget is spent: launched when it refills
                    held.add(rec.site)
                    continue
                group = open_batch[key] = []
                sizes[key] = min(spec.site_spec(rec.site).batch, limit)
            group.append(rec)
            if len(group) >= sizes[key]:
                del open_batch[key]
                self._send_batch(group, spec, now=now, events=events, launched=launched, held=held)
        for group in open_batch.values():
            if group[0].site not in held:
                self._send_batch(group, spec, now=now, events=events, launched=launched, held=held)
        return launched

    def _send_batch(self, batch: list[NodeRecord], spec: DomainSpec, *, now: float,
                    events: list[tuple[str, dict[str, Any]]], launched: list[NodeRecord], held: set[str]) -> None:
        """One launch request for ``batch`` (one site, one deployable type), unless the site is unavailable
        or paced (then it is ``held`` and its records stay REQUESTED for a later tick)."""
        first = batch[0]
        if not self.provisioner.available(first.site, now) or self.provisioner.may_request(first.site, now) > 0:
            held.add(first.site)
            return
        batched = {"batch": len(batch)} if len(batch) > 1 else {}
        try:
            userdata = [deployable_type(rec.deployable_type).render(self.attributes(spec, rec)) for rec in batch]
            tags = [machine_tags(domain=rec.domain, launch_id=rec.launch_id, node_id=rec.node_id) for rec in batch]
            self._still_leader()
            if len(batch) == 1:
                ids: list[str | None] = [self._launch(spec, first, userdata=userdata[0], now=now, tags=tags[0])]
            else:
                site = spec.site_spec(first.site)
                ids = self.provisioner.launch_many(
                    batch, userdata=userdata, now=now, tags=tags, image=site.image_for(first.deployable_type),
                    size=site.size_for(first.deployable_type), capacity_ttl=spec.capacity_ttl)
        except RetryableError as exc:
            events.append(("launch_error", {"node": first.node_id, "error": str(exc),
                                            "retry_in": round(exc.delay, 2), **batched}))
            return
        except (PermanentError, UnknownPlugin, ValueError) as exc:
            for rec in batch:
                rec.set_state(S.FAILED, now, f"launch failed: {exc}")
            events.append(("launch_error", {"node": first.node_id, "error": str(exc), "permanent": True, **batched}))
            launched.extend(batch)
            return
        for rec, provider_id in zip(batch, ids):
            if provider_id is None:
                continue  # the site had room for fewer: stays REQUESTED
            rec.provider_id = provider_id
            rec.set_state(S.PENDING, now, f"launched on {rec.site}")
            events.append(("node", {"node": rec.node_id, "from": "REQUESTED", "to": "PENDING", "detail": rec.site}))
            launched.append(rec)

    def _terminate_now(self, plan: Plan, spec: DomainSpec, *, store: Store, now: float,
                       events: list[tuple[str, dict[str, Any]]]) -> None:
        """The plan's terminations, asked of the sites here (a zombie by its site id)."""
        records = {r.node_id: r for r in (*plan.changed, *plan.launches)}
        for term in plan.terminations:
            victim = records.get(term.node_id) or next(
                (n for n in store.nodes(spec.name) if n.node_id == term.node_id), None)
            if victim is None and term.provider_id is not None:  # a zombie: end it by its site id
                victim = NodeRecord(node_id=term.node_id, domain=spec.name, launch_id="", site=term.site or spec.site,
                                    deployable_type=spec.deployable_type, provider_id=term.provider_id)
            if victim is None:
                continue
            self._still_leader()
            try:
                self.provisioner.terminate(victim, grace=term.grace, now=now)
            except Exception as exc:  # retried by the doctor's "still there" rule
                events.append(("terminate_error", {"node": victim.node_id, "error": str(exc)}))

    def _enqueue(self, plan: Plan, spec: DomainSpec, *, store: Store, now: float) -> None:
        """Queue mode: write the plan's records and its provisioning work in one fenced commit."""
        fresh = [rec for rec in plan.launches if rec.node_id in plan.fresh]  # earlier ones are queued already
        work = [WorkItem("launch", rec.domain, rec.node_id, launch_id=rec.launch_id, site=rec.site,
                         reason=rec.history[-1][2] if rec.history else "") for rec in fresh]
        for term in plan.terminations:
            work.append(WorkItem("terminate", spec.name, term.node_id, grace=term.grace, reason=term.reason,
                                 provider_id=term.provider_id, site=term.site or spec.site))
        store.put_nodes([*plan.changed, *fresh], work=work)
        self._record(plan, spec, store=store, now=now, events=plan.events)

    def _record(self, plan: Plan, spec: DomainSpec, *, store: Store, now: float,
                events: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """The end of every apply: ended records forgotten, the decider's state, the events, metrics."""
        for rec in plan.forget:
            try:
                self.provisioner.forget(rec)
            except Exception:
                pass
        store.forget_nodes(spec.name, [r.node_id for r in plan.forget])
        if "decider" in plan.roles:
            store.put_state(spec.name, plan.state)
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
        """Carry out one work item; returns a delay when it must be retried later, else ``None``."""
        now = self.clock() if now is None else now
        if item.op == "launch":
            return self._execute_launch(item, now)
        if item.op == "terminate":
            self._execute_terminate(item, now)
            return None
        log.error("unknown work item %r: dropped", item)
        return None

    def _execute_launch(self, item: WorkItem, now: float) -> float | None:
        spec = self.store.get_domain(item.domain)
        rec = self.store.node(item.domain, item.node_id)
        if spec is None or rec is None or rec.state != S.REQUESTED or rec.launch_id != item.launch_id:
            return None  # cancelled (scale-in before launch), done already, or the domain is gone
        self.provisioner.ensure_site(spec.site_spec(rec.site))
        block = self.provisioner.blocked(rec.site, now)
        if block is not None:
            if block.permanent or block.until is None:
                self._launch_failed(rec, block.reason, now)
                return None
            return max(0.05, block.until - now)
        if self.provisioner.batch_limit(rec.site, now) == 0:  # the site's launch budget is spent
            return max(0.05, self.provisioner.budget_wait(rec.site, now))
        wait = self.provisioner.may_request(rec.site, now)
        if wait > 0:
            return wait
        try:
            userdata = deployable_type(rec.deployable_type).render(self.attributes(spec, rec))
            tags = machine_tags(domain=rec.domain, launch_id=rec.launch_id, node_id=rec.node_id)
            provider_id = self._launch(spec, rec, userdata=userdata, now=now, tags=tags)
        except RetryableError as exc:
            self.store.record(rec.domain, "launch_error", now, node=rec.node_id, error=str(exc),
                              retry_in=round(exc.delay, 2))
            return max(0.05, exc.delay)
        except (PermanentError, UnknownPlugin, ValueError) as exc:
            self._launch_failed(rec, f"launch failed: {exc}", now)
            return None
        orphan = False

        def accepted(r: NodeRecord) -> bool:
            nonlocal orphan
            r.provider_id = provider_id
            if r.state == S.REQUESTED:
                r.set_state(S.PENDING, now, f"launched on {r.site}")
            else:  # scaled in while the launch was in flight: end the machine now
                orphan = r.state in (S.TERMINATING, S.TERMINATED, S.FAILED, S.UNHEALTHY)
            return True

        written = self.store.update_node(rec.domain, rec.node_id, accepted)
        if written is None or orphan:
            self._terminate_machine(rec, provider_id, grace=0.0, now=now, why="launched after scale-in")
        else:
            self.store.record(rec.domain, "node", now, node=rec.node_id, **{"from": "REQUESTED", "to": "PENDING"},
                              detail=rec.site)
        return None

    def _launch(self, spec: DomainSpec, rec: NodeRecord, *, userdata: str, now: float,
                tags: Mapping[str, str]) -> str:
        site = spec.site_spec(rec.site)
        return self.provisioner.launch(rec, userdata=userdata, now=now, tags=tags,
                                       image=site.image_for(rec.deployable_type),
                                       size=site.size_for(rec.deployable_type), capacity_ttl=spec.capacity_ttl)

    def _launch_failed(self, rec: NodeRecord, why: str, now: float) -> None:
        def failed(r: NodeRecord) -> bool:
            if r.state != S.REQUESTED:
                return False
            r.set_state(S.FAILED, now, why)
            return True

        self.store.update_node(rec.domain, rec.node_id, failed)
        self.store.record(rec.domain, "launch_error", now, node=rec.node_id, error=why, permanent=True)

    def _terminate_machine(self, rec: NodeRecord, provider_id: str | None, *, grace: float, now: float,
                           why: str) -> None:
        victim = rec.copy()
        victim.provider_id = provider_id
        try:
            self.provisioner.terminate(victim, grace=grace, now=now)
        except Exception as exc:  # the doctor's "still there" rule asks again
            self.store.record(rec.domain, "terminate_error", now, node=rec.node_id, error=str(exc), why=why)

    def _execute_terminate(self, item: WorkItem, now: float) -> None:
        rec = self.store.node(item.domain, item.node_id)
        if rec is None and item.provider_id is None:
            return
        spec = self.store.get_domain(item.domain)
        if spec is not None:
            self.provisioner.ensure_site(spec.site_spec(rec.site if rec is not None else item.site))
        if rec is None:  # a zombie: no record; ended by its site id only if the site lists it as ours
            if not self._is_our_machine(item):
                log.warning("terminate of %s on %s refused: the site lists no such machine of domain %s",
                            item.provider_id, item.site, item.domain)
                return
            rec = NodeRecord(node_id=item.node_id, domain=item.domain, launch_id="", site=item.site,
                             deployable_type=spec.deployable_type if spec else "", provider_id=item.provider_id)
        provider_id = rec.provider_id or item.provider_id
        if provider_id is None:  # scaled in before its launch was recorded: find it by its tags
            try:
                listed = self.provisioner.list(rec.site).get(rec.node_id)
            except Exception:
                listed = None
            if listed is None:
                return
            provider_id = listed.provider_id
        self._terminate_machine(rec, provider_id, grace=item.grace, now=now, why=item.reason)

    def _is_our_machine(self, item: WorkItem) -> bool:
        """Whether the site lists a live machine with the item's id, tagged with the item's domain."""
        try:
            listed = self.provisioner.list(item.site, now=self.clock())
        except Exception:  # unknown site, its listing failed or backs off: not proven ours, so left alone
            return False
        return any(n.provider_id == item.provider_id and n.alive and n.tags.get(TAG_DOMAIN) == item.domain
                   for n in listed.values())

    def start_workers(self) -> None:
        """Start this manager's provisioner workers (queue mode)."""
        if self.queue is None or self._workers:
            return
        self._workers_stop.clear()
        for i in range(self.n_workers):
            thread = threading.Thread(target=self._work_loop, args=(f"{self.manager_id}-w{i}",),
                                      name=f"provisioner-{i}", daemon=True)
            thread.start()
            self._workers.append(thread)

    def stop_workers(self, timeout: float = 10.0) -> None:
        self._workers_stop.set()
        for thread in self._workers:
            thread.join(timeout)
        self._workers.clear()

    def _work_loop(self, consumer: str) -> None:
        """Take items, do them, acknowledge; hold items whose site is backing off (touching them)."""
        assert self.queue is not None
        held: list[tuple[float, WorkItem]] = []  # (due, item)
        last_touch = time.monotonic()
        failures = 0
        while not self._workers_stop.is_set():
            try:
                now = self.clock()
                due = [(d, i) for d, i in held if d <= now]
                held = [(d, i) for d, i in held if d > now]
                block = 0.0 if due else min([0.5, *[d - now for d, _ in held]])
                fresh = self.queue.take(consumer, block=block)
                for _, item in due + [(now, i) for i in fresh]:
                    delay = self.execute(item)
                    if delay is None:
                        self.queue.done([item])
                        if self.metrics is not None:
                            self.metrics.work_done(item.op)
                    else:
                        held.append((self.clock() + delay, item))
                if held and time.monotonic() - last_touch > self.queue.reclaim_after / 3:
                    self.queue.touch(consumer, [i for _, i in held])
                    last_touch = time.monotonic()
                failures = 0
            except Exception as exc:  # the store may be restarting: back off (bounded), keep going
                failures += 1
                delay = min(5.0, 0.25 * 2 ** min(failures, 5))
                log.error("provisioner worker %s: %s; retrying in %.1fs", consumer, error_text(exc), delay)
                self._workers_stop.wait(delay)
        try:
            self.queue.give_back([i for _, i in held])
        except Exception:
            pass  # taken over after reclaim_after

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
        for spec in self.store.domains():
            try:
                plans.append(self._tick_domain(spec, now, roles=roles, store=store, listings=listings))
            except (LeaseLost, FencedWrite, redis.ConnectionError, redis.TimeoutError):
                raise  # the whole tick stops: deposed, or the store is away
            except Exception as exc:  # one bad domain never stops the others
                log.error("domain %s: tick failed: %s", spec.name, error_text(exc))
                with contextlib.suppress(Exception):
                    self.store.record(spec.name, "error", now, what="tick", error=error_text(exc))
        self._report_refused(now)
        return plans

    def _tick_domain(self, spec: DomainSpec, now: float, *, roles: frozenset[str], store: Store,
                     listings: dict[str, Mapping[str, SiteNode] | None]) -> Plan:
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
        plan = self._repairs_joined(plan_domain(obs, policy, policy_error=err, roles=roles), now)
        self.apply(plan, spec, store=store)
        self.last_plans[spec.name] = plan
        return plan

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
        """Stop workers and queue watches, close sensors, hand the roles over at once."""
        self.stop_workers()
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
