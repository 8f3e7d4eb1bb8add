"""A simulated fleet: the live manager over simulated sites whose machines heartbeat once booted."""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Any, Callable, Mapping

from pool.control.manager import Manager
from pool.core.keys import TAG_NODE
from pool.core.model import DomainSpec, NodeState, SensorSpec, parse_domain_spec
from pool.sites.provisioner import Provisioner
from pool.sites.sim import SimCloudProfile, SimNodeDriver
from pool.state.store import MemoryStore
from sensors import simqueue

S = NodeState
_fleets = itertools.count(1)
NODE_TAG = TAG_NODE


class Fleet:
    """Drives a real :class:`Manager` (and its provisioner) on a simulated clock over ``sim`` sites.

    The manager has no provisioner worker threads (``workers=0``): each tick queues its launches and
    terminations on the in-memory store's work queue and its actuator carries them out at once, at
    the simulated ``now`` (launches batched; items a paced site holds are retried in a later tick).

    Machines that finish booting heartbeat ``ready`` every heartbeat interval (a worker with
    nothing to do); machines asked to stop end at once. There is no queue: the domain's policy
    gives the size (e.g. ``fixed``), which is what time-to-scale and failure-mix runs need.
    ``provisioners`` and ``api_latency`` model the paper's provisioner workers: each launch or
    terminate call occupies one worker for ``api_latency`` simulated seconds, so at most
    ``provisioners / api_latency`` such calls per second reach the sites (a launch waits for a
    free worker; a terminate is made at once and the workers owe its time to later launches).
    ``list_interval`` is the manager's: how often each site's listing is fetched.
    """

    def __init__(self, spec: DomainSpec | Mapping[str, Any], *, profiles: Mapping[str, SimCloudProfile | str],
                 seed: int = 0, tick: float = 1.0, provisioners: int = 1, api_latency: float = 0.0,
                 drivers: Mapping[str, Any] | None = None, list_interval: float = 0.0) -> None:
        self.spec = spec if isinstance(spec, DomainSpec) else parse_domain_spec(dict(spec))
        self.queue_name = ""
        if self.spec.sensor.name == "sim_queue":  # an empty queue of this fleet's own (the policy sizes it)
            self.queue_name = f"fleet-{next(_fleets)}"
            self.spec = self.spec.model_copy(update={"sensor": SensorSpec(name="sim_queue", queue=self.queue_name)})
        self.now = 0.0
        self.tick_interval = tick
        self.store = MemoryStore()
        self.sites: dict[str, SimNodeDriver] = {
            name: SimNodeDriver(ex_clock=self.clock, ex_profile=profile, ex_seed=seed + i)
            for i, (name, profile) in enumerate(sorted(profiles.items()))
        }
        all_drivers: dict[str, Any] = {**self.sites, **dict(drivers or {})}
        self.provisioner = Provisioner(all_drivers, gate=self)
        self.provisioner.seed(seed)
        self.calls_per_tick = math.inf if api_latency <= 0 else provisioners * tick / api_latency
        self._budget = 0.0
        self.launch_calls = 0  # launch requests the provisioner workers made (accepted or not)
        self.terminate_calls = 0
        self.manager = Manager(store=self.store, provisioner=self.provisioner, redis_url="memory://fleet",
                               clock=self.clock, manager_id="fleet", wakeups=False, list_interval=list_interval,
                               sensor_factory=simqueue.attach({self.queue_name: self} if self.queue_name else {}))
        self.store.put_domain(self.spec)
        self.booted: dict[str, tuple[str, float]] = {}  # node id -> (site, last beat)
        self._beats: list[tuple[float, str]] = []  # (next beat due, node id): a heap
        self.ticks = 0

    def clock(self) -> float:
        return self.now

    def depth(self) -> tuple[int, int]:
        return 0, 0

    # -- the provisioner workers' throughput (the provisioner's call gate) ------------------
    def wait(self, site: str, now: float) -> float:
        """Before a launch request: every worker busy until the next tick, or free now."""
        limited = not math.isinf(self.calls_per_tick)
        return self.tick_interval if limited and self._budget < 1.0 else 0.0

    def made(self, op: str) -> None:
        """A launch or terminate call was made: counted, and its worker time taken from the budget
        (a terminate's from later launches)."""
        if op == "launch":
            self.launch_calls += 1
        else:
            self.terminate_calls += 1
        if not math.isinf(self.calls_per_tick):
            self._budget -= 1.0

    def step(self) -> None:
        """One tick: heartbeats, the manager's tick, then what the sites did meanwhile."""
        t = self.now
        # idle workers bank at most one tick (and a fraction of a call: 2.5 calls a tick make 5 in two)
        self._budget = min(self._budget + self.calls_per_tick, max(1.0, self.calls_per_tick) + 1.0 - 1e-9)
        interval = self.spec.timeouts.heartbeat_interval
        beats = self._beats
        while beats and beats[0][0] <= t:
            _, node_id = heapq.heappop(beats)
            entry = self.booted.get(node_id)
            if entry is None or t - entry[1] < interval:
                continue  # ended, or a stale entry
            self.store.beat(self.spec.name, node_id, time=t)
            self.booted[node_id] = (entry[0], t)
            heapq.heappush(beats, (t + interval, node_id))
        self.manager.tick(t)
        self.ticks += 1
        self._drain_requests(t)
        for name, driver in self.sites.items():
            for request in driver.ex_shutdown_requests():
                driver.ex_shutdown_complete(request.node, t)
            for node in driver.ex_booted(t):
                node_id = (node.extra.get("tags") or {}).get(NODE_TAG, node.name)
                self.booted[node_id] = (name, t)
                heapq.heappush(self._beats, (t + interval, node_id))
                self.store.beat(self.spec.name, node_id, time=t, ready=True, active=0, idle_since=t,
                                workload_alive=True, draining=False)
            for node in driver.ex_ended(t):
                node_id = (node.extra.get("tags") or {}).get(NODE_TAG, node.name)
                self.booted.pop(node_id, None)
        self.now = t + self.tick_interval

    def _drain_requests(self, t: float) -> None:
        """The agents' side of the scale-in handshake: a booted machine has nothing to finish, so one
        whose record the tick marked DRAINING (drain sent) reports drained at once."""
        plan = self.manager.last_plans.get(self.spec.name)
        for kind, data in plan.events if plan is not None else ():
            node_id = str(data.get("node")) if kind == "drain" else ""
            if node_id not in self.booted:
                continue
            rec = self.store.node(self.spec.name, node_id)
            if rec is not None and rec.state is S.DRAINING and rec.drain_sent:
                self.store.beat(self.spec.name, node_id, time=t, draining=True, drained=True, active=0,
                                workload_alive=False)

    def joined(self) -> int:
        """Workers JOINED at the last tick, from the manager's own view (cheap at 10,000 nodes)."""
        plan = self.manager.last_plans.get(self.spec.name)
        return plan.view.joined if plan is not None else 0

    def count(self, *states: NodeState, site: str | None = None) -> int:
        wanted = states or (S.JOINED,)
        return sum(1 for n in self.store.nodes(self.spec.name)
                   if n.state in wanted and (site is None or n.site == site))

    def run_until(self, done: Callable[[Fleet], bool], *, limit: float) -> float | None:
        """Step until ``done(self)``; the simulated time it became true, or ``None`` past ``limit``."""
        while self.now <= limit:
            self.step()
            if done(self):
                return self.now - self.tick_interval
        return None
