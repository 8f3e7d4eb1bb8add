"""A launch refused for good on a site whose listing fails: the record is retired, calls stay bounded.

The sites are libcloud ``NodeDriver`` test doubles that count their calls; the manager is the real
one (the tick making its own calls, and queue mode with the work done by ``execute``), on a real
Redis, with an injected clock. ``pool down --timeout`` is run as a user runs it.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest
from libcloud.common.types import InvalidCredsError
from libcloud.compute.base import Node, NodeDriver, NodeImage, NodeSize
from libcloud.compute.types import NodeState as CloudState

from pool.control.manager import END_RETRIES, END_RETRY_CAP, Manager, Observation, plan_domain
from pool.core.model import DomainState, NodeRecord, NodeState, parse_domain_spec
from pool.sites import adapters
from pool.sites.provisioner import Provisioner
from pool.state.store import Store

S = NodeState
ROOT = Path(__file__).resolve().parent.parent
T0 = 1_000_000.0


class CountingDriver(NodeDriver):
    """A site in memory that counts every call; ``refuse``: every launch is refused for good;
    ``list_fails``: every listing raises (as an API that is down does)."""

    type = "counting-test-double"
    name = "counting test double"

    def __init__(self, *, refuse: bool = False, list_fails: bool = False) -> None:  # no credentials
        self.refuse, self.list_fails = refuse, list_fails
        self.calls: Counter[str] = Counter()
        self.list_times: list[float] = []
        self.clock = lambda: 0.0
        self.nodes: dict[str, Node] = {}
        self.tokens: dict[str, str] = {}

    def list_images(self, location: Any = None) -> list[NodeImage]:
        return [NodeImage("img", "img", self)]

    def list_sizes(self, location: Any = None) -> list[NodeSize]:
        return [NodeSize("small", "small", 1, 1, 1, 0.0, self)]

    def create_node(self, name: str, size: Any = None, image: Any = None, ex_userdata: str = "",
                    ex_client_token: str = "", ex_tags: dict | None = None, **kwargs: Any) -> Node:
        self.calls["create"] += 1
        if self.refuse:
            raise InvalidCredsError("AuthFailure: this account may not launch here")
        if ex_client_token in self.tokens:
            return self.nodes[self.tokens[ex_client_token]]
        node_id = f"m-{len(self.nodes) + 1}"
        self.nodes[node_id] = Node(node_id, name, CloudState.RUNNING, [], [], self, extra={"tags": dict(ex_tags or {})})
        self.tokens[ex_client_token] = node_id
        return self.nodes[node_id]

    def list_nodes(self, **kwargs: Any) -> list[Node]:
        self.calls["list"] += 1
        self.list_times.append(self.clock())
        if self.list_fails:
            raise OSError("connection reset by the site's API")
        return list(self.nodes.values())

    def destroy_node(self, node: Node, ex_grace: float = 0.0) -> bool:
        self.calls["destroy"] += 1
        return self.nodes.pop(node.id, None) is not None


adapters.register(CountingDriver, adapters.ElasticAdapter(batch=False))  # client tokens: no listing before a launch


def domain(name: str, site: str, size: int) -> Any:
    return parse_domain_spec({
        "name": name, "site": site, "deployable_type": "celery-worker", "celery": {"app": "tasks"},
        "min": size, "max": size, "policy": {"name": "fixed", "size": size},
        "sensor": {"name": "sim_queue", "queue": "none"},
        "timeouts": {"heartbeat_interval": 5, "heartbeat_timeout": 30, "boot": 3600, "terminate_grace": 5},
    })


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def run_ticks(manager: Manager, clock: Clock, seconds: int) -> None:
    """One tick a simulated second; in queue mode the queued work is done right after each tick."""
    for _ in range(seconds):
        manager.tick(clock.now)
        if manager.queue is not None:
            while True:
                items = manager.queue.take("test-worker", block=0)
                if not items:
                    break
                for item in items:
                    if manager.execute(item, clock.now) is None:
                        manager.queue.done([item])
        clock.now += 1.0


@pytest.fixture
def sites() -> Iterator[tuple[CountingDriver, CountingDriver, Clock]]:
    clock = Clock()
    bad, good = CountingDriver(refuse=True, list_fails=True), CountingDriver()
    bad.clock = good.clock = clock
    yield bad, good, clock


@pytest.mark.parametrize("workers", [0, 1], ids=["tick-calls", "queue-mode"])
def test_a_refused_launch_is_retired_and_the_site_is_not_hammered(
        store: Store, redis_url: str, sites: tuple[CountingDriver, CountingDriver, Clock], workers: int) -> None:
    bad, good, clock = sites
    store.put_domain(domain("bad", "bad", 1))
    store.put_domain(domain("good", "good", 2))
    manager = Manager(store=store, provisioner=Provisioner({"bad": bad, "good": good}), redis_url=redis_url,
                      clock=clock, wakeups=False, workers=workers)
    try:
        run_ticks(manager, clock, 60)
        records = store.nodes("bad")
        assert len(records) == 1 and records[0].state is S.TERMINATED, [(r.state, r.history) for r in records]
        assert records[0].provider_id is None and records[0].history[-1][2].startswith("retired")
        assert bad.calls["create"] == 1  # refused for good: the site is marked broken, nothing retried
        assert bad.calls["destroy"] == 0  # no machine to end: no terminate call at all
        assert bad.calls["list"] <= 1 + math.log2(60), bad.calls
        moves = [e for e in store.events("bad", 200, kind="node") if e.get("to") == "TERMINATED"]
        assert moves and "refused" in moves[0]["detail"]
        # the healthy domain in the same manager carries on: launched once each, listed every tick
        assert [r.state for r in store.nodes("good")] == [S.STARTED, S.STARTED]
        assert good.calls["create"] == 2 and good.calls["destroy"] == 0 and good.calls["list"] >= 55
        # after the retention the ended record is forgotten like any other
        run_ticks(manager, clock, 1)
        clock.now += 601
        run_ticks(manager, clock, 2)
        assert store.nodes("bad") == []
        assert bad.calls["destroy"] == 0 and bad.calls["create"] == 1
    finally:
        manager.close()


def test_listing_failures_back_off_per_site_and_reset_on_success(
        store: Store, redis_url: str, sites: tuple[CountingDriver, CountingDriver, Clock]) -> None:
    """A site that launches but cannot be listed: its listing backs off (exponential, jittered,
    capped) and is not called meanwhile; another site is listed every tick; success resets it."""
    _, good, clock = sites
    flaky = CountingDriver(list_fails=True)
    flaky.clock = clock
    store.put_domain(domain("flaky", "flaky", 2))
    store.put_domain(domain("good", "good", 1))
    manager = Manager(store=store, provisioner=Provisioner({"flaky": flaky, "good": good}), redis_url=redis_url,
                      clock=clock, wakeups=False)
    try:
        run_ticks(manager, clock, 60)
        calls = flaky.calls["list"]
        assert 3 <= calls <= 2 + math.log2(60), flaky.list_times  # logarithmic in the time, not one a tick
        gaps = [b - a for a, b in zip(flaky.list_times, flaky.list_times[1:])]
        assert all(gap >= 0.5 * 2 ** i - 1 for i, gap in enumerate(gaps)), gaps  # each wait at least half of 2^n
        assert good.calls["list"] >= 59  # the healthy site is not held back by the other one
        assert all(r.state is S.PENDING for r in store.nodes("flaky"))  # not judged by a listing it never got
        run_ticks(manager, clock, 600)  # capped: still bounded over ten more minutes
        assert flaky.calls["list"] - calls <= 600 / 30 + 1
        flaky.list_fails = False
        run_ticks(manager, clock, 61)  # the next try (within the cap) works, and the backoff is reset
        healed = flaky.calls["list"]
        run_ticks(manager, clock, 10)
        assert flaky.calls["list"] - healed == 10
        assert all(r.state is S.STARTED for r in store.nodes("flaky"))  # judged again: the site lists them running
    finally:
        manager.close()


def plan_ticks(rec: NodeRecord, *, seconds: int, listed: Any = None) -> tuple[NodeRecord, list[float], list]:
    """Drive plan_domain over one ending record (the records carried from plan to plan), a tick a second."""
    spec = domain("d", "bad", 0)
    state, now, times, events = DomainState(), T0, [], []
    for _ in range(seconds):
        obs = Observation(spec=spec, state=state, nodes=(rec,), heartbeats={}, site_nodes=listed,
                          site_available=False, readings={}, now=now)
        plan = plan_domain(obs, None, policy_error="none")
        for twin in plan.changed:
            rec = twin
        times += [now for t in plan.terminations if t.node_id == rec.node_id]
        events += [e for e in plan.events if e[0] == "retired"]
        state = plan.state
        now += 1.0
        if rec.state is S.TERMINATED:
            break
    return rec, times, events


def failed_record(detail: str, provider_id: str | None = None) -> NodeRecord:
    rec = NodeRecord.new(node_id="d-1", domain="d", launch_id="l1", site="bad", deployable_type="celery-worker",
                         now=T0 - 1)
    rec.provider_id = provider_id
    rec.set_state(S.FAILED, T0 - 1, detail)
    return rec


@pytest.mark.parametrize("detail,provider_id", [
    ("not launched: site bad unavailable; placed elsewhere", None),  # an earlier try may have reached the site
    ("site bad is broken: credentials refused", None),
    ("not joined within boot timeout 120s of launch", "i-0abc"),  # a machine that is there, or was
])
def test_a_failed_record_that_may_have_a_machine_is_retried_with_backoff_then_retired(
        detail: str, provider_id: str | None) -> None:
    rec, times, events = plan_ticks(failed_record(detail, provider_id), seconds=6 * 3600)
    assert rec.state is S.TERMINATED and rec.history[-1][2].startswith("retired after")
    assert len(times) == END_RETRIES  # bounded
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(b >= 2 * a - 1 or b >= END_RETRY_CAP for a, b in zip(gaps, gaps[1:])), gaps  # exponential
    assert events and events[0][1]["retries"] == END_RETRIES and events[0][1]["provider_id"] == provider_id


def test_a_refused_record_is_retired_at_once_without_a_call() -> None:
    rec, times, _ = plan_ticks(failed_record("launch failed: credentials refused: AuthFailure"), seconds=5)
    assert rec.state is S.TERMINATED and times == []
    mismatch = failed_record("launch failed: launch l1: IdempotentParameterMismatch")  # a machine may exist
    rec, times, _ = plan_ticks(mismatch, seconds=5)
    assert rec.state is S.FAILED


def test_a_machine_the_site_lists_alive_is_not_retired() -> None:
    from pool.sites.provisioner import SiteNode

    listed = {"d-1": SiteNode("d-1", "i-0abc", True, {"elastic-pool/domain": "d"}, True, "bad")}
    rec, times, events = plan_ticks(failed_record("not joined within boot timeout", "i-0abc"),
                                    seconds=4 * 3600, listed=listed)
    assert rec.state is S.FAILED and not events  # it is there: kept, and asked to end at a capped pace
    assert END_RETRIES < len(times) <= END_RETRIES + 4 * 3600 / END_RETRY_CAP + 1


# -- pool down --timeout, as a user runs it -------------------------------------------------------------


def pool_down(env: dict[str, str], timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pool.cli", "down", "--timeout", f"{timeout:g}"], env=env,
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    return proc, time.monotonic() - started


@pytest.fixture
def down_env(store: Store, redis_url: str, pool_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "POOL_NAMESPACE")}
    env.update(REDIS_URL=redis_url, POOL_HOME=str(pool_home), POOL_NAMESPACE=store.ns, COLUMNS="200")
    return env


def stuck(store: Store, detail: str) -> NodeRecord:
    store.put_domain(domain("bad", "bad", 0))
    rec = NodeRecord.new(node_id=f"bad-{uuid.uuid4().hex[:8]}", domain="bad", launch_id=uuid.uuid4().hex,
                         site="bad", deployable_type="celery-worker", now=time.time() - 5)
    rec.set_state(S.FAILED, time.time() - 5, detail)
    store.put_nodes([rec])
    return rec


def test_pool_down_gives_up_in_time_when_a_manager_does_not_stop(store: Store, down_env: dict[str, str]) -> None:
    rec = stuck(store, "not launched: site bad unavailable; placed elsewhere")
    # a manager that never answers (registered as this process: alive, but it runs no `pool up`)
    store.register_manager("stuck-manager", {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
    proc, took = pool_down(down_env, 3)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and took < 10, (took, out)
    assert "Traceback" not in out and "internal error" not in out
    assert f"remaining: bad {rec.node_id} FAILED" in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "did not stop within 3s" in errors[0] and "1 node(s) remain" in errors[0]


def test_pool_down_without_a_manager_gives_up_in_time_or_retires_refused_launches(
        store: Store, down_env: dict[str, str]) -> None:
    rec = stuck(store, "not launched: site bad unavailable; placed elsewhere")  # may have a machine: retried
    proc, took = pool_down(down_env, 3)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and took < 10, (took, out)
    assert "Traceback" not in out and "Exception in thread" not in out and "internal error" not in out
    assert f"remaining: bad {rec.node_id} FAILED" in proc.stdout and "1 node(s) remain" in proc.stderr
    # a launch refused for good has no machine: retired at once, and the drain is done
    store.forget_nodes("bad", [rec.node_id])
    refused = stuck(store, "launch failed: credentials refused: AuthFailure")
    proc, took = pool_down(down_env, 3)
    assert proc.returncode == 0 and took < 10, (took, proc.stdout + proc.stderr)
    assert "workers terminated" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr
    assert [r.state for r in store.nodes("bad") if r.node_id == refused.node_id] == [S.TERMINATED]
