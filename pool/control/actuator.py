"""The actuator: carries out the launch and terminate work the tick queued, on the sites.

The tick writes a plan's records and its work items in one fenced commit (``Manager._enqueue``);
the actuator takes the items from the work queue and acts: launches of one domain, site and
deployable type go out in batches (one ``launch_many`` request of up to the site's ``batch`` and
the provisioner's ``batch_limit`` records), a site that is paced, out of launch budget or backing
off holds its items (retried once its wait is over), a site refused for good fails them;
terminations go one by one (a machine no record knows only when the site lists it as the
domain's). One code path, run two ways: by provisioner worker threads (:class:`Workers`,
live managers with ``workers > 0``), or by the tick itself through :meth:`Actuator.drain` at the
tick's ``now`` (``workers == 0``: the simulator, the simulated fleet, single-process tests), which
is deterministic: no threads, held items retried by the first drain at or after their site's wait.

Imports ``pool.core``, ``pool.state``, ``pool.sites``, ``pool.workloads`` and ``sensors``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from pool.control.metrics import Metrics
from pool.core.keys import TAG_DOMAIN, machine_tags
from pool.core.model import DomainSpec, NodeRecord, NodeState, UnknownPlugin
from pool.sites.provisioner import PermanentError, Provisioner, RetryableError
from pool.state.store import Store
from pool.state.workqueue import QueueLike, WorkItem, entry_order
from pool.workloads.images import deployable_type
from sensors import error_text

log = logging.getLogger("elastic_pool.actuator")

S = NodeState

#: Items one worker asks for per take (more when they are launches on a site that batches).
TAKE = 16
#: Items the tick's drain asks for per take (it takes everything queued).
TAKE_ALL = 10_000
#: Shortest wait before a held item is tried again (seconds).
MIN_DELAY = 0.05
#: A site whose wait ends this close after ``now`` counts as ready (a wait added to a time rounds).
DUE_SLACK = 1e-6


@dataclass
class Outcome:
    """What a pass over work items came to: the items done, the items to try again (in order) and, per
    site, the seconds before its items are worth trying again (every reason to hold one is the site's)."""

    done: list[WorkItem] = field(default_factory=list)
    again: list[WorkItem] = field(default_factory=list)
    wait: dict[str, float] = field(default_factory=dict)
    #: ``again`` is out of queueing order (a site held while another batch of it was open)
    reordered: bool = False

    def hold(self, items: list[WorkItem], site: str, wait: float) -> None:
        self.again += items
        self.wait[site] = min(wait, self.wait.get(site, math.inf))

    def delay(self, item: WorkItem) -> float:
        return self.wait.get(item.site, MIN_DELAY)


@dataclass
class _Batch:
    """Launch records of one domain, site and deployable type, sent in one request."""

    spec: DomainSpec
    size: int
    items: list[WorkItem] = field(default_factory=list)
    records: list[NodeRecord] = field(default_factory=list)


class _Holds:
    """The tick's held launch items, per (domain, site) in queueing order, and when each site's wait ends."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, str], list[WorkItem]] = {}
        self.ready_at: dict[str, float] = {}  # site -> when its items are worth trying again
        self.first: dict[str, float] = {}  # domain -> when the first of its sites is ready

    def add(self, item: WorkItem) -> None:
        group = self.groups.setdefault((item.domain, item.site), [])
        if item.deliveries > 1:  # taken over (perhaps from this very pass): once, in its place
            group[:] = sorted([i for i in group if i.entry_id != item.entry_id] + [item], key=entry_order)
        else:
            group.append(item)

    def take_ready(self, now: float, domain: str | None) -> tuple[list[tuple[str, str]], list[list[WorkItem]]]:
        soon = now + DUE_SLACK
        keys = [k for k in self.groups
                if (domain is None or k[0] == domain) and self.ready_at.get(k[1], -math.inf) <= soon]
        return keys, [self.groups.pop(k) for k in keys]

    def put(self, keys: list[tuple[str, str]], out: Outcome, now: float) -> None:
        """Hold again what a pass over the groups ``keys`` could not do."""
        for site, wait in out.wait.items():
            self.ready_at[site] = now + wait
        if len(keys) == 1 and not out.reordered:
            if out.again:
                self.groups[keys[0]] = out.again  # one group: its items, still in order
        else:
            for item in sorted(out.again, key=entry_order) if out.reordered else out.again:
                self.groups.setdefault((item.domain, item.site), []).append(item)
        self.index()

    def index(self) -> None:
        sites = {site for _, site in self.groups}
        self.ready_at = {site: t for site, t in self.ready_at.items() if site in sites}
        first: dict[str, float] = {}
        for domain, site in self.groups:
            first[domain] = min(first.get(domain, math.inf), self.ready_at.get(site, -math.inf))
        self.first = first

    def items(self) -> list[WorkItem]:
        return [item for group in self.groups.values() for item in group]


class Actuator:
    """Takes work items from ``queue`` and carries them out through ``provisioner``; records in ``store``."""

    def __init__(self, *, store: Store, provisioner: Provisioner, queue: QueueLike,
                 attributes: Callable[[DomainSpec, NodeRecord], dict[str, str]],
                 clock: Callable[[], float] = time.time, consumer: str = "actuator",
                 still_leader: Callable[[], None] = lambda: None, metrics: Metrics | None = None) -> None:
        """``attributes``: the bag rendered into a launch's contextualization; ``consumer``: the
        tick's name on the queue; ``still_leader``: raises when the tick's manager lost a role
        (asked before any cloud call of :meth:`drain`)."""
        self.store = store
        self.provisioner = provisioner
        self.queue = queue
        self.attributes = attributes
        self.clock = clock
        self.consumer = consumer
        self.still_leader = still_leader
        self.metrics = metrics
        self._holds = _Holds()  # the drain's launches waiting for their site
        self._ends: list[WorkItem] = []  # terminations the drain took for another domain's pass
        self._last_touch = time.monotonic()

    # -- one pass ---------------------------------------------------------------------------
    def execute(self, item: WorkItem, now: float | None = None) -> float | None:
        """Carry out one item; a delay when it must be tried again later, else ``None`` (done)."""
        out = self.carry_out([item], self.clock() if now is None else now)
        return out.delay(item) if out.again else None

    def carry_out(self, items: Iterable[WorkItem], now: float, *,
                  check: Callable[[], None] | None = None) -> Outcome:
        """Launches in batches, then terminations, in the items' order; ``check`` before each cloud call.
        The items done are not acknowledged here (see :meth:`settle`)."""
        items = list(items)
        check = check or (lambda: None)
        out = Outcome()
        launches = [i for i in items if i.op == "launch"]
        if launches:
            self._launch_all(launches, now, check, out)
        if len(launches) < len(items):
            for item in items:
                if item.op == "terminate":
                    self._terminate(item, now, check)
                elif item.op != "launch":
                    log.error("unknown work item %r: dropped", item)
                if item.op != "launch":
                    out.done.append(item)
        return out

    def drain(self, now: float, *, domain: str | None = None) -> int:
        """The tick's pass: take everything queued and carry it out here at ``now``, with the held launches
        whose site's wait is over; with ``domain``, only that domain's (the others wait for their own
        pass). Launches whose site cannot take them now are held. Returns how many items were done."""
        holds = self._holds
        ends, self._ends = self._ends, []
        for item in self._take_all():
            if item.op == "launch":
                holds.add(item)  # tried below when its site is ready (a site not ready would refuse it)
            else:
                ends.append(item)
        mine = [i for i in ends if domain is None or i.domain == domain]
        self._ends = [i for i in ends if not (domain is None or i.domain == domain)]
        keys, groups = holds.take_ready(now, domain)
        launches = groups[0] if len(groups) == 1 else sorted((i for g in groups for i in g), key=entry_order)
        try:
            out = self.carry_out(launches + mine, now, check=self.still_leader) if launches or mine else Outcome()
        except BaseException:  # deposed, the store away: all of them tried again (each is idempotent)
            holds.groups.update(zip(keys, groups))
            self._ends += mine
            holds.index()
            raise
        self.settle(out.done)
        holds.put(keys, out, now)
        self.keep()
        return len(out.done)

    def keep(self) -> None:
        """Touch the held items (a third of ``reclaim_after`` after the last time), so nobody takes them over."""
        if self._holds.groups and time.monotonic() - self._last_touch > self.queue.reclaim_after / 3:
            self.queue.touch(self.consumer, self._holds.items())
            self._last_touch = time.monotonic()

    def holding(self, now: float | None = None, domain: str | None = None) -> bool:
        """Whether the drain holds items (ready by ``now``, of ``domain``, when given)."""
        if self._ends and any(domain is None or i.domain == domain for i in self._ends):
            return True
        first = self._holds.first
        if not first:
            return False
        by = math.inf if now is None else now + DUE_SLACK
        if domain is not None:
            return first.get(domain, math.inf) <= by
        return any(t <= by for t in first.values())

    def give_back(self) -> None:
        """Hand the drain's held items to other consumers (a clean stop)."""
        held = self._holds.items() + self._ends
        self._holds, self._ends = _Holds(), []
        self.queue.give_back(held)

    def _take_all(self) -> list[WorkItem]:
        out: list[WorkItem] = []
        while True:
            items = self.queue.take(self.consumer, count=TAKE_ALL, block=0)
            if not items:
                return out
            out += items

    def settle(self, done: list[WorkItem]) -> None:
        """Acknowledge the items done and count them."""
        if not done:
            return
        self.queue.done(done)
        if self.metrics is not None:
            for item in done:
                self.metrics.work_done(item.op)

    # -- launches ---------------------------------------------------------------------------
    def _launch_all(self, items: list[WorkItem], now: float, check: Callable[[], None], out: Outcome) -> None:
        """One request per batch: up to the site's `batch` records of one domain, site and deployable type
        (where the site's driver gives each machine of a batch its own identity; else one per request),
        each batch sized to what the site takes when it opens (its budget shrinks as batches go).
        Items of a site that takes no more requests in this pass are held (all the rest, once every
        site of the pass is)."""
        held: dict[str, float] = {}  # site -> its wait: it takes no more launch requests in this pass
        sites = {item.site for item in items}
        open_batches: dict[tuple[str, str, str], _Batch] = {}
        cache: dict[Any, Any] = {}
        for at, item in enumerate(items):
            if item.site in held:
                out.again.append(item)  # (its site's wait is in out.wait already)
                continue
            found = self._requested(item, cache)
            if found is None:
                out.done.append(item)  # cancelled (scale-in before launch), done already, or the domain is gone
                continue
            spec, rec = found
            key = (rec.domain, rec.site, rec.deployable_type)
            batch = open_batches.get(key)
            if batch is None:
                limit = self.provisioner.batch_limit(rec.site, now)
                if limit == 0:  # the site's launch budget is spent: launched when it refills
                    held[rec.site] = max(MIN_DELAY, self.provisioner.budget_wait(rec.site, now))
                    out.hold([item], rec.site, held[rec.site])
                else:
                    batch = open_batches[key] = _Batch(spec, min(spec.site_spec(rec.site).batch, limit))
            if batch is not None:
                batch.items.append(item)
                batch.records.append(rec)
                if len(batch.items) >= batch.size:
                    del open_batches[key]
                    self._send(batch, now, held, check, out)
            if len(held) == len(sites):  # every site of the pass is held: the rest wait too, as they are
                out.again += items[at + 1:]
                break
        for batch in open_batches.values():
            site = batch.records[0].site
            if site in held:
                out.reordered = out.reordered or bool(out.again)
                out.hold(batch.items, site, held[site])
            else:
                self._send(batch, now, held, check, out)

    def _requested(self, item: WorkItem, cache: dict[Any, Any]) -> tuple[DomainSpec, NodeRecord] | None:
        """The item's domain and record, while the record still waits for this launch (its site made ready)."""
        if item.domain not in cache:
            cache[item.domain] = self.store.get_domain(item.domain)
        spec = cache[item.domain]
        rec = self.store.node(item.domain, item.node_id)
        if spec is None or rec is None or rec.state != S.REQUESTED or rec.launch_id != item.launch_id:
            return None
        if rec.site != item.site:  # not an item the tick queued for this record
            log.error("launch item %s names site %r, its record %r: dropped", item.node_id, item.site, rec.site)
            return None
        if (spec.name, rec.site) not in cache:
            self.provisioner.ensure_site(spec.site_spec(rec.site))
            cache[(spec.name, rec.site)] = True
        return spec, rec

    def _send(self, batch: _Batch, now: float, held: dict[str, float], check: Callable[[], None],
              out: Outcome) -> None:
        """One launch request for ``batch``, unless its site is blocked or paced (then the site is ``held``);
        a site refused for good fails the records."""
        first = batch.records[0]
        batched: dict[str, Any] = {"batch": len(batch.records)} if len(batch.records) > 1 else {}
        block = self.provisioner.blocked(first.site, now)
        if block is not None and (block.permanent or block.until is None):
            self._failed(batch.records, block.reason, now, error=block.reason, **batched)
            out.done += batch.items
            return
        if block is not None and block.until is not None:  # backing off, or out of capacity for a while
            wait = max(MIN_DELAY, block.until - now)
        else:
            wait = self.provisioner.may_request(first.site, now)  # takes a request token when it is 0
        if wait > 0:
            held[first.site] = wait
            out.hold(batch.items, first.site, wait)
            return
        try:
            ids = self._request(batch, now, check)
        except RetryableError as exc:
            self.store.record(first.domain, "launch_error", now, node=first.node_id, error=str(exc),
                              retry_in=round(exc.delay, 2), **batched)
            out.hold(batch.items, first.site, max(MIN_DELAY, exc.delay))
            return
        except (PermanentError, UnknownPlugin, ValueError) as exc:
            self._failed(batch.records, f"launch failed: {exc}", now, error=str(exc), **batched)
            out.done += batch.items
            return
        for item, rec, provider_id in zip(batch.items, batch.records, ids):
            if provider_id is None:  # the site had room for fewer: stays REQUESTED
                out.hold([item], rec.site, max(MIN_DELAY, self.provisioner.budget_wait(rec.site, now)))
            else:
                self._accepted(rec, provider_id, now)
                out.done.append(item)

    def _request(self, batch: _Batch, now: float, check: Callable[[], None]) -> list[str | None]:
        """The cloud call: the records' user-data and tags, then one launch (or one batched launch)."""
        spec, first = batch.spec, batch.records[0]
        userdata = [deployable_type(r.deployable_type).render(self.attributes(spec, r)) for r in batch.records]
        tags = [machine_tags(domain=r.domain, launch_id=r.launch_id, node_id=r.node_id) for r in batch.records]
        check()
        site = spec.site_spec(first.site)
        image, size = site.image_for(first.deployable_type), site.size_for(first.deployable_type)
        if len(batch.records) == 1:
            return [self.provisioner.launch(first, userdata=userdata[0], now=now, tags=tags[0], image=image,
                                            size=size, capacity_ttl=spec.capacity_ttl)]
        return self.provisioner.launch_many(batch.records, userdata=userdata, now=now, tags=tags, image=image,
                                            size=size, capacity_ttl=spec.capacity_ttl)

    def _accepted(self, rec: NodeRecord, provider_id: str, now: float) -> None:
        """The site took the launch: REQUESTED -> PENDING with its machine id; a record scaled in meanwhile
        (or gone) has its machine ended at once."""
        orphan = moved = False

        def accepted(r: NodeRecord) -> bool:
            nonlocal orphan, moved
            r.provider_id = provider_id
            if r.state == S.REQUESTED:
                r.set_state(S.PENDING, now, f"launched on {r.site}")
                moved = True
            else:  # scaled in while the launch was in flight: end the machine now
                orphan = r.state in (S.TERMINATING, S.TERMINATED, S.FAILED, S.UNHEALTHY)
            return True

        written = self.store.update_node(rec.domain, rec.node_id, accepted)
        if written is None or orphan:
            self._terminate_machine(rec, provider_id, grace=0.0, now=now, why="launched after scale-in")
        elif moved:
            self.store.record(rec.domain, "node", now, node=rec.node_id, **{"from": "REQUESTED", "to": "PENDING"},
                              detail=rec.site)
            if self.metrics is not None:
                self.metrics.transitions.labels(rec.domain, S.PENDING.value).inc()

    def _failed(self, records: list[NodeRecord], why: str, now: float, *, error: str, **extra: Any) -> None:
        """Launches refused for good: the records still REQUESTED fail (one event for the request)."""
        def failed(r: NodeRecord) -> bool:
            if r.state != S.REQUESTED:
                return False
            r.set_state(S.FAILED, now, why)
            return True

        for rec in records:
            self.store.update_node(rec.domain, rec.node_id, failed)
        self.store.record(records[0].domain, "launch_error", now, node=records[0].node_id, error=error,
                          permanent=True, **extra)

    # -- terminations -----------------------------------------------------------------------
    def _terminate(self, item: WorkItem, now: float, check: Callable[[], None]) -> None:
        rec = self.store.node(item.domain, item.node_id)
        if rec is None and item.provider_id is None:
            return
        spec = self.store.get_domain(item.domain)
        if spec is not None:
            self.provisioner.ensure_site(spec.site_spec(rec.site if rec is not None else item.site))
        if rec is None:  # a zombie: no record; ended by its site id only if the site lists it as ours
            if not self._is_our_machine(item, now):
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
        check()
        self._terminate_machine(rec, provider_id, grace=item.grace, now=now, why=item.reason)

    def _is_our_machine(self, item: WorkItem, now: float) -> bool:
        """Whether the site lists a live machine with the item's id, tagged with the item's domain."""
        try:
            listed = self.provisioner.list(item.site, now=now)
        except Exception:  # unknown site, its listing failed or backs off: not proven ours, so left alone
            return False
        return any(n.provider_id == item.provider_id and n.alive and n.tags.get(TAG_DOMAIN) == item.domain
                   for n in listed.values())

    def _terminate_machine(self, rec: NodeRecord, provider_id: str | None, *, grace: float, now: float,
                           why: str) -> None:
        victim = rec.copy()
        victim.provider_id = provider_id
        try:
            self.provisioner.terminate(victim, grace=grace, now=now)
        except Exception as exc:  # the doctor's "still there" rule asks again
            self.store.record(rec.domain, "terminate_error", now, node=rec.node_id, error=str(exc), why=why)


class Workers:
    """Provisioner worker threads (reactors: every manager with ``workers`` > 0 runs them): each takes
    items from the actuator's queue and carries them out with it, holding those whose site is not
    ready (touching them, so nobody takes them over) until their wait is over."""

    def __init__(self, actuator: Actuator, *, count: int, name: str) -> None:
        self.actuator = actuator
        self.queue = actuator.queue
        self.count = count
        self.name = name
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def start(self) -> None:
        """Start the threads (none when they run already)."""
        if self._threads:
            return
        self._stop.clear()
        for i in range(self.count):
            thread = threading.Thread(target=self._loop, args=(f"{self.name}-w{i}",), name=f"provisioner-{i}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def _loop(self, consumer: str) -> None:
        """Take items, do them, acknowledge; hold items whose site is not ready (touching them)."""
        act, clock = self.actuator, self.actuator.clock
        held: list[tuple[float, WorkItem]] = []  # (due, item)
        last_touch = time.monotonic()
        failures = 0
        while not self._stop.is_set():
            try:
                now = clock()
                due = [i for d, i in held if d <= now]
                held = [(d, i) for d, i in held if d > now]
                block = 0.0 if due else min([0.5, *[d - now for d, _ in held]])
                items = due + self._take(consumer, block)
                if items:
                    now = clock()
                    try:
                        out = act.carry_out(items, now)
                    except Exception:
                        held += [(now, i) for i in items]  # tried again after the pause below
                        raise
                    act.settle(out.done)
                    at = clock()
                    held += [(at + out.delay(item), item) for item in out.again]
                if held and time.monotonic() - last_touch > self.queue.reclaim_after / 3:
                    self.queue.touch(consumer, [i for _, i in held])
                    last_touch = time.monotonic()
                failures = 0
            except Exception as exc:  # the store may be restarting: back off (bounded), keep going
                failures += 1
                delay = min(5.0, 0.25 * 2 ** min(failures, 5))
                log.error("provisioner worker %s: %s; retrying in %.1fs", consumer, error_text(exc), delay)
                self._stop.wait(delay)
        try:
            self.queue.give_back([i for _, i in held])
        except Exception:
            pass  # taken over after reclaim_after

    def _take(self, consumer: str, block: float) -> list[WorkItem]:
        """A take; launches on a site that batches bring more items, up to that site's batch."""
        items = self.queue.take(consumer, count=TAKE, block=block)
        room = 0
        specs: dict[str, DomainSpec | None] = {}
        for item in items:
            if item.op == "launch" and item.site:
                if item.domain not in specs:
                    specs[item.domain] = self.actuator.store.get_domain(item.domain)
                spec = specs[item.domain]
                if spec is not None:
                    room = max(room, spec.site_spec(item.site).batch - len(items))
        return items + self.queue.take(consumer, count=room, block=0) if room > 0 else items
