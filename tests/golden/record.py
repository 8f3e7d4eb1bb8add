"""Record the golden data: every ``plan_domain`` call of a set of scenarios, and ``pool simulate`` reports.

    python -m tests.golden.record [--out DIR] [--only plans|simulate]

writes ``DIR/plans.jsonl.gz`` (observation -> plan pairs, see :mod:`tests.golden.codec` for the
canonical form) and ``DIR/simulate.json`` (the simulator's report numbers); ``DIR`` defaults to
this directory. Run it from the source tree whose behaviour is to be recorded: the code is
imported from the working directory (``python -m`` puts it first on ``sys.path``).

While it records, the ``plan_domain`` that the live :class:`Manager` calls is replaced by a
wrapper that passes the deterministic ids of :func:`codec.golden_ids` and keeps each call's
observation, policy (name and parameters, or ``None`` with the policy error), roles and plan.
Every call is checked at once: the observation must be left unchanged, must read back from its
JSON to the same JSON, and replaying it (policy rebuilt by name, as the test does) must give the
same plan. A scenario whose pairs fail any of these stops the recording.

Stored: every pair whose plan launches, terminates, forgets or records an event, plus every
``EVERY``-th pair of a simulator run (``FLEET_EVERY``-th of a fleet run; every hand-built one);
``seq`` counts all of a scenario's calls, stored or not.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import itertools
import json
import math
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tests.golden import adapter as A
from tests.golden.codec import (
    dumps,
    golden_ids,
    observation_from_data,
    observation_to_data,
    plain,
    plan_to_data,
)

HERE = Path(__file__).resolve().parent
PLANS = "plans.jsonl.gz"
SIMULATE = "simulate.json"
#: Every how many calls of a scenario one is stored even when its plan does nothing (simulator
#: runs; fleet runs: ``FLEET_EVERY``; hand-built observations: all).
EVERY = 40
FLEET_EVERY = 10
#: Version of the file layout (not of the code recorded).
FORMAT = 1

NODE_TAG = "elastic-pool/node"
DOMAIN_TAG = "elastic-pool/domain"


# ---------------------------------------------------------------------------
# Replay: shared by the recorder's self-check and the test
# ---------------------------------------------------------------------------


def policy_of(entry: Mapping[str, Any]) -> Any:
    """The policy of a stored pair, rebuilt from its name and parameters (``None``: none was built)."""
    pol = entry["policy"]
    return None if pol is None else A.load_policy(pol["name"], pol["params"])


def replay(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The plan (canonical data) today's ``plan_domain`` makes of a stored pair's observation."""
    obs = observation_from_data(entry["observation"])
    plan = A.plan_domain(obs, policy_of(entry), policy_error=entry["policy_error"],
                         new_ids=golden_ids(entry["seq"]), roles=frozenset(entry["roles"]))
    return plan_to_data(plan)


# ---------------------------------------------------------------------------
# The recorder
# ---------------------------------------------------------------------------


class RecordingError(AssertionError):
    pass


class Recorder:
    """Wraps ``plan_domain`` (where the manager calls it) and keeps the pairs of the current scenario."""

    def __init__(self) -> None:
        self.original = A.plan_domain
        self.entries: list[dict[str, Any]] = []
        self.calls: Counter[str] = Counter()
        self.kept: Counter[str] = Counter()
        self.name: str | None = None
        self.seq = 0
        self.every = EVERY

    @contextlib.contextmanager
    def scenario(self, name: str, *, every: int = EVERY) -> Iterator[None]:
        """Record the ``plan_domain`` calls made inside, storing the active ones and every ``every``-th."""
        if name in self.calls:
            raise RecordingError(f"scenario {name!r} recorded twice")
        _reset_counters()
        self.name, self.seq, self.every = name, 0, every
        self.calls[name] = 0
        host = A.PLANNER_HOST
        saved = host.plan_domain
        host.plan_domain = self.wrapper
        try:
            yield
        finally:
            host.plan_domain = saved
            self.name = None
        if self.calls[name] == 0:
            raise RecordingError(f"scenario {name!r} made no plan_domain call")

    def wrapper(self, obs: Any, policy: Any, *, policy_error: str | None = None,
                new_ids: Callable[[str], tuple[str, str]] | None = None,
                roles: Any = frozenset(A.ROLES), paused_by: str | None = None, deleting: str | None = None) -> Any:
        if paused_by is not None or deleting is not None:  # an operator's hold is not part of any recording
            raise RecordingError("a paused or deleting domain in a recorded scenario")
        return self.call(obs, policy, policy_error=policy_error, roles=roles)

    def call(self, obs: Any, policy: Any, *, policy_error: str | None = None, roles: Any = frozenset(A.ROLES)) -> Any:
        """One recorded ``plan_domain`` call (scenarios that build observations call this directly)."""
        if self.name is None:
            raise RecordingError("plan_domain called outside a scenario")
        seq = self.seq
        self.seq += 1
        self.calls[self.name] += 1
        before = _fingerprint(obs)
        plan = self.original(obs, policy, policy_error=policy_error, new_ids=golden_ids(seq), roles=roles)
        where = f"{self.name} #{seq} (t={obs.now!r})"
        if _fingerprint(obs) != before:
            raise RecordingError(f"{where}: plan_domain changed its observation")
        if not (plan.launches or plan.terminations or plan.forget or plan.events or seq % self.every == 0):
            return plan
        pol = None
        if policy is not None:
            pol = {"name": obs.spec.policy.name, "params": plain(obs.spec.policy.params)}
            rebuilt = A.load_policy(pol["name"], pol["params"])
            if rebuilt != policy:
                raise RecordingError(f"{where}: the policy is not the one its spec names: {policy!r} != {rebuilt!r}")
        obs_data = observation_to_data(obs)
        obs_text = dumps(obs_data)
        entry = {"scenario": self.name, "seq": seq, "now": plain(obs.now), "policy": pol,
                 "policy_error": policy_error, "roles": sorted(roles), "observation": obs_data,
                 "plan": plan_to_data(plan)}
        if dumps(observation_to_data(observation_from_data(json.loads(obs_text)))) != obs_text:
            raise RecordingError(f"{where}: the observation does not read back from its JSON")
        stored = json.loads(dumps(entry))  # exactly what the file will hold
        if dumps(replay(stored)) != dumps(stored["plan"]):
            raise RecordingError(f"{where}: replaying the stored observation gives another plan")
        self.entries.append(entry)
        self.kept[self.name] += 1
        return plan


def _fingerprint(obs: Any) -> Any:
    """Enough of an observation to see whether the planner changed it (the records are mutable)."""
    return (repr(obs.state), tuple((id(n), n.state, len(n.history), n.provider_id, n.drain_deadline, n.drain_sent)
                                   for n in obs.nodes), len(obs.heartbeats), repr(obs.readings))


def _reset_counters() -> None:
    """Per-process counters the simulator and the fleet name their queues with: from 1 in each scenario."""
    for module, attr in A.QUEUE_COUNTERS:
        if hasattr(module, attr):
            setattr(module, attr, itertools.count(1))


# ---------------------------------------------------------------------------
# Scenarios 1: the trace-driven simulator
# ---------------------------------------------------------------------------

#: Small traces of every bundled family (each family has its own fixed trace seed).
SIM_TRACES: dict[str, str] = {
    "burst": "burst:n=20",
    "poisson": "poisson:n=60,rate=0.1",
    "heavy": "heavy:n=30,rate=0.05",
    "periodic": "periodic:n=45,bursts=3,period=600,width=20",
    "diurnal": "diurnal:n=60,period=1200,cycles=1",
    "spiky": "spiky:n=50,duration=1200,spikes=3",
}
SIM_POLICIES = ["queue_depth", "lookahead", "fixed:size=5", "keda_hpa", "drain_time"]
#: Other policies, each on one family, and other clouds and domains.
SIM_EXTRA: list[tuple[str, str, str, dict[str, Any]]] = [
    # (trace family, policy, site profile, keyword arguments of Simulation)
    ("burst", "ray", "ec2", {}),
    ("poisson", "spark_da", "ec2", {}),
    ("spiky", "aws_target_tracking", "ec2", {}),
    ("periodic", "threshold", "ec2", {}),
    ("diurnal", "queue_depth:tasks_per_worker=3", "ec2", {"scaling": {"stabilization": 0, "idle_timeout": 20}}),
    ("periodic", "queue_depth", "ec2:never_boot=0.15,preemption_rate=6,capacity=12", {}),
    ("heavy", "lookahead:patience=3", "ec2:preemption_rate=4", {"base": {"celery": {"concurrency": 2}}}),
    ("spiky", "queue_depth", "local", {"scaling": {"activation": 2, "scale_up_limit": 4, "max_in_flight": 6},
                                       "horizon": 2400}),
    ("poisson", "queue_depth", "ec2", {"base": {"min": 2, "max": 6, "timeouts": {"drain": 30, "boot": 60}}}),
]


def simulator_scenarios(rec: Recorder, seed: int = 1) -> None:
    for family, trace in SIM_TRACES.items():
        tasks = A.load_trace(trace)
        for policy in SIM_POLICIES:
            with rec.scenario(f"sim/{family}/{policy}/seed={seed}"):
                A.Simulation(tasks, A.parse_policy(policy), profile="ec2", seed=seed).run()
    for family, policy, profile, kwargs in SIM_EXTRA:
        tasks = A.load_trace(SIM_TRACES[family])
        extra = ",".join(f"{k}={json.dumps(v, sort_keys=True, separators=(',', ':'))}" for k, v in kwargs.items())
        with rec.scenario(f"sim/{family}/{policy}/{profile}/seed={seed}" + (f"/{extra}" if extra else "")):
            A.Simulation(tasks, A.parse_policy(policy), profile=A.parse_profile(profile), seed=seed, **kwargs).run()


# ---------------------------------------------------------------------------
# Scenarios 2: the simulated fleet (the live manager over simulated sites)
# ---------------------------------------------------------------------------


class DrivenFleet(A.Fleet):
    """A :class:`Fleet` with a queue (``depth(t)``), busy workers and held warm shutdowns.

    ``depth(t)`` gives ``(ready, running)`` (or raises: a failing sensor); ``busy(t)`` how many
    booted workers (oldest first) report a running task; a busy worker asked to stop keeps its
    task (its warm shutdown is held) until the site kills it at the end of its grace.
    """

    def __init__(self, spec: Mapping[str, Any], *, depth: Callable[[float], tuple[int, int]] | None = None,
                 busy: Callable[[float], int] | None = None, **kwargs: Any) -> None:
        self._depth = depth
        self._busy = busy
        self.busy_now: set[str] = set()
        self.held: set[str] = set()  # busy workers asked to stop: still running their task
        self.stopped: set[str] = set()  # workers whose warm shutdown completed
        super().__init__(spec, **kwargs)
        for driver in self.sites.values():
            driver.ex_shutdown_requests = self._holding(driver.ex_shutdown_requests)  # type: ignore[method-assign]

    def depth(self) -> tuple[int, int]:
        return (0, 0) if self._depth is None else self._depth(self.now)

    def _holding(self, requests: Callable[[], list[Any]]) -> Callable[[], list[Any]]:
        def filtered() -> list[Any]:
            out = []
            for request in requests():
                node_id = (request.node.extra.get("tags") or {}).get(NODE_TAG, request.node.name)
                if node_id in self.busy_now:
                    self.held.add(node_id)
                else:
                    self.stopped.add(node_id)
                    out.append(request)
            return out
        return filtered

    def step(self) -> None:
        t = self.now
        super().step()
        if self._busy is None:
            return
        held = self.held & set(self.booted)  # a held worker the site killed left ``booted``
        free = [n for n in self.booted if n not in self.stopped and n not in held]
        want = set(free[: max(0, self._busy(t))]) | (held & self.busy_now)
        for node_id in self.booted:
            if node_id in want and node_id not in self.busy_now:
                self.store.beat(self.spec.name, node_id, time=t, active=1, idle_since="")
            elif node_id not in want and node_id in self.busy_now:
                self.store.beat(self.spec.name, node_id, time=t, active=0, idle_since=t)
        self.busy_now = want


def fleet_domain(size: int | None = None, *, sites: list[dict[str, Any]], policy: dict[str, Any] | None = None,
                 **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": "fleet", "deployable_type": "celery-worker", "celery": {"app": "tasks"}, "min": size or 0,
            "max": 200, "policy": policy or {"name": "fixed", "size": size}, "sites": sites,
            "sensor": {"name": "sim_queue", "queue": "none"},
            "timeouts": {"heartbeat_interval": 5, "heartbeat_timeout": 30, "boot": 120, "terminate_grace": 5,
                         "drain": 60}}
    for key, value in extra.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) and isinstance(spec.get(key), dict) else value
    return spec


def run_fleet(fleet: A.Fleet, until: float, actions: Mapping[float, Callable[[A.Fleet], None]] | None = None) -> None:
    """Step to ``until`` (simulated seconds), doing each action before the first tick at or after its time."""
    pending = sorted((actions or {}).items())
    while fleet.now <= until:
        while pending and pending[0][0] <= fleet.now:
            pending.pop(0)[1](fleet)
        fleet.step()


def _nodes(fleet: A.Fleet, *states: str, site: str | None = None) -> list[Any]:
    return [n for n in fleet.store.nodes(fleet.spec.name)
            if n.state.value in states and (site is None or n.site == site)]


def _override(size: int | None) -> Callable[[A.Fleet], None]:
    return lambda f: f.store.set_override(f.spec.name, size)


def _notice(index: int) -> Callable[[A.Fleet], None]:
    """A preemption notice to the ``index``-th joined worker (its agent's heartbeat says so)."""
    def act(f: A.Fleet) -> None:
        joined = _nodes(f, "JOINED")
        if len(joined) > index:
            f.store.beat(f.spec.name, joined[index].node_id, time=f.now, preempt_notice=f.now)
    return act


def _preempt(index: int) -> Callable[[A.Fleet], None]:
    """The site reclaims the ``index``-th joined worker's machine at once."""
    def act(f: A.Fleet) -> None:
        joined = _nodes(f, "JOINED")
        if len(joined) > index:
            rec = joined[index]
            driver = f.sites[rec.site]
            node = next(n for n in driver.list_nodes() if n.id == rec.provider_id)
            driver.ex_preempt(node)
    return act


def _silence(index: int) -> Callable[[A.Fleet], None]:
    """The ``index``-th joined worker stops beating (its machine stays up)."""
    def act(f: A.Fleet) -> None:
        joined = _nodes(f, "JOINED")
        if len(joined) > index:
            f.booted.pop(joined[index].node_id, None)
    return act


def _workload_dies(index: int) -> Callable[[A.Fleet], None]:
    def act(f: A.Fleet) -> None:
        joined = _nodes(f, "JOINED")
        if len(joined) > index:
            f.store.beat(f.spec.name, joined[index].node_id, time=f.now, workload_alive=False)
    return act


def _zombie(site: str, name: str) -> Callable[[A.Fleet], None]:
    """A machine tagged as the domain's that no record knows (e.g. launched by a deposed leader)."""
    def act(f: A.Fleet) -> None:
        f.sites[site].create_node(name, ex_tags={DOMAIN_TAG: f.spec.name, NODE_TAG: name})
    return act


def _listing_fails(site: str, start: float, end: float) -> Callable[[A.Fleet], None]:
    """The site's DescribeInstances fails from ``start`` to ``end`` (simulated seconds)."""
    def act(f: A.Fleet) -> None:
        driver = f.sites[site]
        listing = driver.list_nodes

        def failing(*args: Any, **kwargs: Any) -> Any:
            if start <= f.now < end:
                raise ConnectionError("simulated DescribeInstances outage")
            return listing(*args, **kwargs)

        driver.list_nodes = failing  # type: ignore[method-assign]
    return act


def _queue(steps: list[tuple[float, int]], *, fail: tuple[float, float] | None = None
           ) -> Callable[[float], tuple[int, int]]:
    """A queue whose backlog is ``steps``' last value at or before ``t``; raises during ``fail``."""
    def depth(t: float) -> tuple[int, int]:
        if fail is not None and fail[0] <= t < fail[1]:
            raise RuntimeError("simulated broker outage")
        value = 0
        for at, v in steps:
            if t >= at:
                value = v
        return value, 0
    return depth


def fleet_scenarios(rec: Recorder) -> None:
    local = "local"
    with rec.scenario("fleet/overflow-caps-then-override", every=FLEET_EVERY):
        fleet = A.Fleet(fleet_domain(7, sites=[{"name": "home", "max": 4}, {"name": "cloud", "rank": 1}]),
                        profiles={"home": local, "cloud": local}, seed=1)
        run_fleet(fleet, 200, {60: _override(5), 120: _override(9), 160: _override(None)})
    with rec.scenario("fleet/spread-weights", every=FLEET_EVERY):
        fleet = A.Fleet(fleet_domain(9, placement="spread", sites=[{"name": "x", "weight": 2}, {"name": "y"}]),
                        profiles={"x": local, "y": local}, seed=2)
        run_fleet(fleet, 120, {60: _override(4)})
    with rec.scenario("fleet/spot-first-with-preemptions", every=FLEET_EVERY):
        fleet = A.Fleet(fleet_domain(5, placement="spot_first", sites=[
            {"name": "od", "price": 0.10}, {"name": "spot", "spot": True, "price": 0.03, "max": 3}]),
            profiles={"od": local, "spot": A.parse_profile("local:preemption_rate=30")}, seed=3)
        run_fleet(fleet, 400, {100: _preempt(0), 150: _notice(1), 250: _notice(0)})
    with rec.scenario("fleet/cheapest", every=FLEET_EVERY):
        fleet = A.Fleet(fleet_domain(6, placement="cheapest", sites=[
            {"name": "a", "price": 0.2}, {"name": "b", "price": 0.1, "max": 4}]),
            profiles={"a": local, "b": local}, seed=4)
        run_fleet(fleet, 80)
    with rec.scenario("fleet/out-of-capacity-overflows", every=FLEET_EVERY):
        fleet = A.Fleet(fleet_domain(6, sites=[{"name": "a"}, {"name": "b", "rank": 1}], capacity_ttl=60),
                        profiles={"a": A.parse_profile("local:capacity=2"), "b": local}, seed=5)
        run_fleet(fleet, 150, {90: _override(1)})
    with rec.scenario("fleet/broken-site", every=FLEET_EVERY):
        fleet = A.Fleet(fleet_domain(4, sites=[{"name": "bad", "provider": "ec2", "key": "env:EP_GOLDEN_UNSET_KEY",
                                                 "secret": "env:EP_GOLDEN_UNSET_SECRET"},
                                                {"name": "good", "rank": 1}]),
                        profiles={"good": local}, seed=6)
        fleet.provisioner.config = A.OperatorConfig()
        run_fleet(fleet, 60)
    with rec.scenario("fleet/overprovision-never-boot", every=FLEET_EVERY):
        fleet = A.Fleet(fleet_domain(20, sites=[{"name": "s"}], overprovision=25,
                                     timeouts={"boot": 60, "boot_replace": 30}),
                        profiles={"s": A.parse_profile("local:never_boot=0.2")}, seed=3)
        run_fleet(fleet, 200, {120: _override(8)})
    with rec.scenario("fleet/ec2-throttled-overprovision", every=FLEET_EVERY):
        fleet = A.Fleet(fleet_domain(30, sites=[{"name": "ec2", "rate": 2, "burst": 5, "batch": 10}],
                                     overprovision=12, timeouts={"boot": 90, "boot_replace": 65,
                                                                 "heartbeat_interval": 30, "heartbeat_timeout": 120}),
                        profiles={"ec2": A.parse_profile("ec2:never_boot=0.1")}, seed=4)
        run_fleet(fleet, 200)
    with rec.scenario("fleet/ec2-unpaced-throttled-two-sites", every=FLEET_EVERY):
        fleet = A.Fleet(fleet_domain(25, sites=[{"name": "ec2"}, {"name": "backup", "rank": 1, "max": 10}]),
                        profiles={"ec2": A.parse_profile("ec2:run_requests=2,run_requests_refill=0.5"),
                                  "backup": local}, seed=7)
        run_fleet(fleet, 120)
    with rec.scenario("fleet/doctor-failures-and-zombie", every=FLEET_EVERY):
        fleet = A.Fleet(fleet_domain(5, sites=[{"name": "s"}]), profiles={"s": A.parse_profile("local:lag=1")},
                        seed=8)
        run_fleet(fleet, 260, {40: _silence(0), 50: _workload_dies(1), 60: _preempt(2), 70: _zombie("s", "zombie-1"),
                               100: _listing_fails("s", 100, 130), 200: _override(2)})
    with rec.scenario("fleet/scale-in-busy-idle-drain", every=FLEET_EVERY):
        fleet = DrivenFleet(
            fleet_domain(sites=[{"name": "s"}], policy={"name": "queue_depth"},
                         scaling={"stabilization": 10, "idle_timeout": 15}),
            profiles={"s": A.parse_profile("local:lag=2")}, seed=9,
            depth=_queue([(5, 10), (100, 3), (200, 0)]),
            busy=lambda t: 10 if t < 100 else 3 if t < 230 else 0)
        run_fleet(fleet, 340)
    with rec.scenario("fleet/sensor-error-hold", every=FLEET_EVERY):
        fleet = DrivenFleet(
            fleet_domain(sites=[{"name": "s"}], policy={"name": "queue_depth", "tasks_per_worker": 2},
                         scaling={"stabilization": 0}),
            profiles={"s": local}, seed=10,
            depth=_queue([(0, 8), (90, 2)], fail=(40, 120)), busy=lambda t: 2)
        run_fleet(fleet, 160)
    with rec.scenario("fleet/sensor-error-fallback-fixed", every=FLEET_EVERY):
        fleet = DrivenFleet(
            fleet_domain(sites=[{"name": "s"}], policy={"name": "queue_depth"},
                         scaling={"stabilization": 0, "fallback": "fixed", "fallback_size": 3}),
            profiles={"s": local}, seed=11,
            depth=_queue([(0, 6), (100, 1)], fail=(30, 80)))
        run_fleet(fleet, 130)
    with rec.scenario("fleet/composite-handles-errors", every=FLEET_EVERY):
        fleet = DrivenFleet(
            fleet_domain(sites=[{"name": "s"}], policy={"name": "composite", "formula": "sim_queue / 2",
                                                        "fallback": {"sim_queue": 4}},
                         scaling={"stabilization": 0}),
            profiles={"s": local}, seed=12,
            depth=_queue([(0, 10), (70, 0)], fail=(30, 60)))
        run_fleet(fleet, 110)
    with rec.scenario("fleet/policy-params-error-holds", every=FLEET_EVERY):
        fleet = A.Fleet(fleet_domain(sites=[{"name": "s"}], policy={"name": "fixed", "size": 3, "colour": "blue"},
                                     min=2), profiles={"s": local}, seed=13)
        run_fleet(fleet, 40, {20: _override(4), 30: _override(None)})
    with rec.scenario("fleet/provisioner-paced", every=FLEET_EVERY):
        fleet = A.Fleet(fleet_domain(12, sites=[{"name": "s", "rate": 2, "burst": 3}]), profiles={"s": local},
                        seed=14, provisioners=1, api_latency=0.5)
        run_fleet(fleet, 60, {8: _override(2)})


# ---------------------------------------------------------------------------
# Scenarios 3: observations built by hand (the planner's corner cases)
# ---------------------------------------------------------------------------


def _spec(**kw: Any) -> Any:
    base: dict[str, Any] = {"name": "d", "max": 10, "celery": {"app": "tasks"},
                            "policy": {"name": "queue_depth", "tasks_per_worker": 1},
                            "scaling": {"stabilization": 0},
                            "timeouts": {"heartbeat_interval": 1, "heartbeat_timeout": 3, "boot": 60, "drain": 100}}
    base.update(kw)
    return A.parse_domain_spec(base)


def _rec(node_id: str, *path: tuple[str, float], site: str = "local", provider: bool = True,
         drain_deadline: float | None = None, drain_sent: bool = False, notes: tuple[str, ...] = ()) -> Any:
    """A record through ``path`` (state, time) pairs after REQUESTED at the first pair's time."""
    created = path[0][1] if path else 0.0
    rec = A.NodeRecord.new(node_id=node_id, domain="d", launch_id=f"L-{node_id}", site=site,
                           deployable_type="celery-worker", now=created)
    for state, when in path:
        if state == "REQUESTED":
            continue
        rec.set_state(A.NodeState(state), when, f"to {state.lower()}")
    for note in notes:
        rec.history.append((rec.state.value, rec.since + 1.0, note))
    if provider and any(s != "REQUESTED" for s, _ in path):
        rec.provider_id = f"i-{node_id}"
    rec.drain_deadline = drain_deadline
    rec.drain_sent = drain_sent
    return rec


def _joined(node_id: str, t: float = 0.0, **kw: Any) -> Any:
    return _rec(node_id, ("PENDING", t), ("STARTED", t), ("JOINED", t), **kw)


def _obs(nodes: list[Any], hbs: Mapping[str, Any], value: float | None, now: float, *, spec: Any = None,
         state: Any = None, error: str | None = None, listing: Any = True, **kw: Any) -> Any:
    """An observation of ``nodes``; ``listing`` True: the site lists every node that has a machine, alive."""
    if listing is True:
        listing = {n.node_id: A.SiteNode(n.node_id, n.provider_id or n.node_id, True,
                                         {DOMAIN_TAG: "d", NODE_TAG: n.node_id}, site=n.site)
                   for n in nodes if n.state.value not in ("TERMINATED", "REQUESTED")}
    return A.Observation(spec=spec or _spec(), state=state or A.DomainState(intended=len(nodes)), nodes=tuple(nodes),
                         heartbeats=dict(hbs), site_nodes=listing, site_available=kw.pop("site_available", True),
                         readings={"celery": A.Reading("celery", value, now, error=error,
                                                       detail={"ready": value or 0.0})},
                         now=now, **kw)


def _hb(t: float, **kw: Any) -> Any:
    return A.Heartbeat(time=t, ready=True, **kw)


def _policy(spec: Any) -> Any:
    return A.load_policy(spec.policy.name, spec.policy.params)


def direct_scenarios(rec: Recorder) -> None:  # noqa: C901  (a list of cases)
    def plan(obs: Any, *, policy: Any = "spec", policy_error: str | None = None, roles: Any = None) -> Any:
        pol = _policy(obs.spec) if policy == "spec" else policy
        return rec.call(obs, pol, policy_error=policy_error, roles=frozenset(A.ROLES if roles is None else roles))

    with rec.scenario("direct/doctor", every=1):
        now = 100.0
        a, b = _joined("a"), _joined("b")
        plan(_obs([a, b], {"a": _hb(now - 0.5, active=1), "b": _hb(now - 10, active=1)}, 2, now))  # silent: replaced
        plan(_obs([a], {"a": _hb(99.9, workload_alive=False)}, 1, now))  # workload died
        plan(_obs([a], {"a": _hb(99.9)}, 1, now, listing={}))  # machine gone from the listing
        slow = _rec("slow", ("PENDING", 0.0))
        plan(_obs([slow], {}, 1, 61.0))  # boot timeout
        young = _rec("young", ("PENDING", 80.0))
        plan(_obs([young], {}, 1, now, listing={}))  # missing from a lagging listing: kept (grace)
        plan(_obs([_rec("n", ("PENDING", 0.0))], {"n": _hb(4.0)}, 1, 5.0))  # heartbeat: PENDING -> JOINED
        plan(_obs([_rec("n", ("PENDING", 0.0))], {"n": A.Heartbeat(time=4.0)}, 1, 5.0))  # agent up, not ready
        listed = _rec("p", ("PENDING", 0.0))
        plan(_obs([listed], {}, 1, 5.0, listed_at=4.0))  # the site reports it running
        plan(_obs([listed], {}, 1, 5.0, listed_at=-1.0))  # launched after the listing: not judged
        pending = {"p": A.SiteNode("p", "i-p", False, {DOMAIN_TAG: "d", NODE_TAG: "p"}, site="local")}
        plan(_obs([listed], {}, 1, 5.0, listing=pending))  # listed, not yet running
        plan(_obs([a, b], {"a": _hb(90.0), "b": _hb(99.0)}, 2, now, store_back_at=98.0))  # store was away
        plan(_obs([a], {"a": _hb(99.0)}, 1, now, listing={}, unlisted=frozenset({"local"})))  # listing failed
        plan(_obs([a], {"a": _hb(99.0)}, 1, now, listing=None))  # no listing this tick
        draining = _joined("dr", 0.0)
        draining.set_state(A.NodeState.DRAINING, 10.0, "scale-in")
        draining.drain_deadline, draining.drain_sent = 50.0, True
        plan(_obs([draining, a], {"dr": _hb(99.0, active=1), "a": _hb(99.0)}, 1, now))  # drain deadline passed
        old = _rec("old", ("PENDING", 0.0), ("STARTED", 1.0), ("JOINED", 2.0), ("TERMINATING", 3.0),
                   ("TERMINATED", 4.0))
        plan(_obs([old, a], {"a": _hb(99.0)}, 1, 700.0))  # forgotten after the retention
        plan(_obs([old, a], {"a": _hb(99.0)}, 1, 700.0), roles={"doctor", "decider"})  # not the provisioner's to forget

    with rec.scenario("direct/ending-retries-and-zombies", every=1):
        now = 1000.0
        ending = _rec("e", ("PENDING", 0.0), ("STARTED", 1.0), ("JOINED", 2.0), ("TERMINATING", 900.0))
        plan(_obs([ending], {}, 0, now, state=A.DomainState(intended=0)))  # still listed alive: kill again
        plan(_obs([ending], {}, 0, now, listing=None, state=A.DomainState(intended=0)))  # not listed: retry
        many = _rec("m", ("PENDING", 0.0), ("UNHEALTHY", 1.0),
                    notes=tuple(f"terminate retry {i}" for i in range(1, 6)))
        plan(_obs([many], {}, 0, now, listing=None, state=A.DomainState(intended=0)))  # retired after 5 retries
        refused = _rec("r", ("FAILED", 10.0), provider=False)
        refused.history[-1] = ("FAILED", 10.0, "launch failed: InvalidAMIID")
        plan(_obs([refused], {}, 0, 50.0, listing=None, state=A.DomainState(intended=0)))  # launch refused: retired
        mismatch = _rec("x", ("FAILED", 10.0), provider=False)
        mismatch.history[-1] = ("FAILED", 10.0, "launch failed: IdempotentParameterMismatch")
        plan(_obs([mismatch], {}, 0, 50.0, listing=None, state=A.DomainState(intended=0)))
        zombie = A.SiteNode("z", "i-z", True, {DOMAIN_TAG: "d", NODE_TAG: "z"}, site="local")
        other = A.SiteNode("o", "i-o", True, {DOMAIN_TAG: "other", NODE_TAG: "o"}, site="local")
        a = _joined("a")
        withdrawn = _rec("w", ("TERMINATED", 5.0), provider=False)
        listing = {"z": zombie, "o": other, "a": A.SiteNode("a", "i-a", True, {DOMAIN_TAG: "d"}, site="local"),
                   "w": A.SiteNode("w", "i-w", True, {DOMAIN_TAG: "d"}, site="local")}
        plan(_obs([a, withdrawn], {"a": _hb(99.0)}, 1, 100.0, listing=listing))  # zombies, in listing order
        plan(_obs([a, withdrawn], {"a": _hb(99.0)}, 1, 100.0, listing=dict(reversed(list(listing.items())))))

    with rec.scenario("direct/decide", every=1):
        now = 100.0
        nodes = [_joined("a"), _joined("b")]
        hbs = {"a": _hb(99.0), "b": _hb(99.0)}
        plan(_obs(nodes, hbs, 5, now, state=A.DomainState(intended=2, override=1)))  # operator override
        plan(_obs(nodes, hbs, 5, now, state=A.DomainState(intended=2, override=50)))  # override above max
        plan(_obs(nodes, hbs, None, now, error="broker down"))  # sensor failed: hold
        fixed = _spec(scaling={"stabilization": 0, "fallback": "fixed", "fallback_size": 4})
        plan(_obs(nodes, hbs, None, now, spec=fixed, error="broker down"))  # sensor failed: fallback size
        plan(_obs(nodes, hbs, None, now, spec=fixed))  # no value, no error
        plan(_obs(nodes, hbs, math.nan, now))  # a NaN backlog
        plan(_obs(nodes, hbs, math.inf, now))  # the policy raises (ceil of inf): hold, error event
        err = A.DomainState(intended=2, last_decision={"time": 99.0, "target": 2, "actual": 2,
                                                        "reason": "hold: policy fixed: bad"})
        plan(_obs(nodes, hbs, 5, now, state=err), policy=None, policy_error="policy fixed: bad")  # same error again
        plan(_obs(nodes, hbs, 5, now), policy=None, policy_error="policy fixed: bad")
        plan(_obs(nodes, hbs, 5, now), roles={"doctor", "provisioner"})  # not the decider: held
        plan(_obs(nodes, hbs, 5, now), roles={"decider"})
        plan(_obs(nodes, hbs, 5, now), roles={"doctor"})
        plan(_obs(nodes, hbs, 5, now), roles=set())
        shaped = _spec(scaling={"stabilization": 30, "scale_up_limit": 2, "max_in_flight": 3, "activation": 2})
        recent = [(80.0, 6), (90.0, 4)]
        plan(_obs(nodes, hbs, 1, now, spec=shaped, state=A.DomainState(intended=2, recent=recent)))  # stabilized
        plan(_obs(nodes, hbs, 9, now, spec=shaped, state=A.DomainState(intended=2, recent=recent)))  # limited
        plan(_obs([], {}, 1, now, spec=shaped, state=A.DomainState()))  # below activation
        plan(_obs([], {}, 3, now, spec=shaped, state=A.DomainState()))  # above activation
        memory = _spec(policy={"name": "keda_hpa"})
        plan(_obs(nodes, hbs, 12, now, spec=memory,
                  state=A.DomainState(intended=2, policy_memory={"last_poll": 50.0, "target": 2})))

    with rec.scenario("direct/scale-in", every=1):
        now = 50.0
        nodes = [_joined(n, float(i)) for i, n in enumerate("abcd")]
        hbs = {"a": _hb(now, active=1), "b": _hb(now, active=0, idle_since=40.0),
               "c": _hb(now, active=1), "d": _hb(now, active=0, idle_since=30.0)}
        plan(_obs(nodes, hbs, 1, now))  # idle go, busy stay
        busy = {n.node_id: _hb(now, active=1) for n in nodes}
        plan(_obs(nodes, busy, 1, now))  # no idle: busy ones drain with a deadline
        timeout = _spec(scaling={"stabilization": 0, "idle_timeout": 15})
        plan(_obs(nodes, hbs, 1, now, spec=timeout))  # young idle protect the busy
        booting = _rec("boot", ("PENDING", 45.0))
        requested = _rec("req", ("REQUESTED", 48.0), provider=False)
        plan(_obs([*nodes, booting, requested], {**hbs, "boot": A.Heartbeat(time=49.0)}, 2, now))  # unjoined first
        plan(_obs([*nodes, booting, requested], hbs, 0, now))  # all go; requested withdrawn without a call
        preempted = _joined("pre", 0.0)
        hbp = {"pre": _hb(now, preempt_notice=now - 1), "a": _hb(now)}
        plan(_obs([preempted, nodes[0]], hbp, 2, now))  # notice: drained later, replaced now
        waiting = _joined("w", 0.0)
        waiting.set_state(A.NodeState.DRAINING, 10.0, "preemption notice")
        waiting.drain_deadline = 110.0
        plan(_obs([waiting, nodes[0], nodes[1]], {"w": _hb(now), "a": _hb(now), "b": _hb(now)}, 2, now,
                  state=A.DomainState(intended=2)))  # replacement joined: drain now
        plan(_obs([waiting, nodes[0]], {"w": _hb(70.0), "a": _hb(70.0)}, 2, 70.0,
                  state=A.DomainState(intended=2)))  # half the window passed

    with rec.scenario("direct/placement", every=1):
        now = 100.0
        sites = [{"name": "a", "max": 2}, {"name": "b", "rank": 1, "max": 3}, {"name": "c", "rank": 2}]
        for strategy in ("overflow", "spread", "cheapest", "spot_first"):
            spec = _spec(site="a", sites=[{**s, "price": 0.1 * (3 - i), "spot": i == 1} for i, s in enumerate(sites)],
                         placement=strategy)
            plan(_obs([], {}, 7, now, spec=spec, state=A.DomainState()))
            plan(_obs([], {}, 7, now, spec=spec, state=A.DomainState(), site_available={"a": True, "b": False}))
        spec = _spec(site="a", sites=sites)
        stuck = [_rec(f"s{i}", ("REQUESTED", 90.0), site="a", provider=False) for i in range(2)]
        plan(_obs(stuck, {}, 2, now, spec=spec, state=A.DomainState(intended=2),
                  site_available={"a": False, "b": True, "c": True}))  # withdrawn, placed elsewhere
        plan(_obs([], {}, 4, now, spec=spec, state=A.DomainState(), site_available=False))  # deferred
        on_a = [_joined(f"a{i}", site="a") for i in range(2)] + [_joined(f"b{i}", site="b") for i in range(2)]
        hbs = {n.node_id: _hb(99.0) for n in on_a}
        for strategy in ("overflow", "spread"):
            plan(_obs(on_a, hbs, 1, now, spec=_spec(site="a", sites=sites, placement=strategy)))  # victims by site

    with rec.scenario("direct/overprovision", every=1):
        spec = _spec(overprovision=20, timeouts={"heartbeat_interval": 1, "heartbeat_timeout": 3, "boot": 60,
                                                  "boot_replace": 30, "drain": 100})
        plan(_obs([], {}, 10, 0.0, spec=spec, state=A.DomainState()))  # the margin
        booting = [_rec(f"b{i}", ("PENDING", 0.0)) for i in range(8)]
        joined = [_joined(f"j{i}") for i in range(4)]
        beats = {n.node_id: _hb(39.0) for n in joined}
        plan(_obs([*booting, *joined], beats, 10, 40.0, spec=spec))  # silent past boot_replace: replaced, kept
        plan(_obs([*booting, *joined], beats, 3, 40.0, spec=spec))  # target joined: surplus goes
        plan(_obs([*booting, *joined], beats, 6, 20.0, spec=spec))  # dropped target, margin kept booting
        plan(_obs([*booting, *joined], beats, 6, 20.0, spec=spec, state=A.DomainState(intended=12, override=6)))


# ---------------------------------------------------------------------------
# pool simulate reports
# ---------------------------------------------------------------------------

#: One small trace per bundled family, sized for the test's time budget.
REPORT_TRACES: dict[str, str] = {
    "burst": "burst:n=120",
    "poisson": "poisson:n=150",
    "heavy": "heavy:n=80,rate=0.5",
    "periodic": "periodic:n=150,bursts=3,period=600",
    "diurnal": "diurnal:n=200,period=900,cycles=1",
    "spiky": "spiky:n=200,duration=900,spikes=3",
}
#: The comparison of docs/simulator.md's example (``pool simulate ... --policy queue_depth
#: --policy keda_hpa --policy fixed:size=50``).
REPORT_POLICIES = ["queue_depth", "keda_hpa", "fixed:size=50"]
REPORT_SEEDS = [0, 1]
REPORT_PROFILE = "ec2"


def report_numbers(trace: str, seed: int) -> dict[str, Any]:
    """The report ``pool simulate`` writes, by the API it uses, less wall times; timelines as a digest."""
    tasks = A.load_trace(trace)
    report = A.simulate_many(tasks, [A.parse_policy(p) for p in REPORT_POLICIES], source=trace,
                             profile=REPORT_PROFILE, seed=seed)
    out = {key: plain(value) for key, value in report.items() if key not in ("runtime", "timelines")}
    timelines = plain(report["timelines"])
    out["timelines"] = {
        "sha256": hashlib.sha256(dumps(timelines).encode()).hexdigest(),
        "points": {label: len(tl["t"]) for label, tl in timelines.items()},
    }
    return out


def report_cases() -> list[tuple[str, str, int]]:
    return [(family, trace, seed) for family, trace in REPORT_TRACES.items() for seed in REPORT_SEEDS]


def record_simulate(out: Path) -> dict[str, Any]:
    cases = {f"{family}/seed={seed}": {"trace": trace, "seed": seed, "report": report_numbers(trace, seed)}
             for family, trace, seed in report_cases()}
    data = {"format": FORMAT, "policies": REPORT_POLICIES, "profile": REPORT_PROFILE, "cases": cases}
    (out / SIMULATE).write_text(json.dumps(data, sort_keys=True, indent=1, allow_nan=True) + "\n")
    return data


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def record_plans(out: Path) -> Recorder:
    rec = Recorder()
    simulator_scenarios(rec)
    fleet_scenarios(rec)
    direct_scenarios(rec)
    path = out / PLANS
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as fh:
        for entry in rec.entries:
            fh.write(dumps(entry).encode() + b"\n")
    return rec


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.golden.record", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="directory for the data (default: %(default)s)")
    parser.add_argument("--only", choices=("plans", "simulate"), default=None)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"recording the code in {Path(A.PLANNER_HOST.__file__).resolve().parent.parent}", file=sys.stderr)
    if args.only in (None, "plans"):
        rec = record_plans(args.out)
        width = max(len(name) for name in rec.calls)
        for name, calls in rec.calls.items():
            print(f"{name:<{width}}  {calls:6d} calls  {rec.kept[name]:5d} stored")
        size = (args.out / PLANS).stat().st_size
        print(f"{sum(rec.calls.values())} calls, {len(rec.entries)} pairs stored, {PLANS}: {size / 1e6:.2f} MB")
    if args.only in (None, "simulate"):
        data = record_simulate(args.out)
        print(f"{len(data['cases'])} simulate reports, {SIMULATE}: {(args.out / SIMULATE).stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
