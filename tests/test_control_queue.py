"""The durable work queue, actor roles held by different managers, time to repair and preemption notices."""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from pool.control.manager import Manager
from pool.control.metrics import Metrics
from pool.core.model import NodeState, parse_domain_spec
from pool.sites.local import LocalNodeDriver
from pool.sites.provisioner import Provisioner
from pool.state.leases import ROLES, Leases
from pool.state.store import FencedWrite, Store
from pool.state.workqueue import WorkQueue
from tests.conftest import celery_spec, wait

S = NodeState


def sleeper_spec(name: str, size: int) -> dict:
    """A fixed-size domain of the demo app's Celery workers."""
    return celery_spec(name, max_size=10, min=size, policy={"name": "fixed", "size": size})


def queue_manager(store: Store, redis_url: str, home: Path, name: str, *, workers: int = 1,
                  reclaim_after: float = 30.0, leases: bool = False, ttl: float = 5.0,
                  metrics: Metrics | None = None) -> Manager:
    driver = LocalNodeDriver(ex_state_dir=str(home / "sites" / "local"))
    return Manager(store=store, provisioner=Provisioner({"local": driver}), redis_url=redis_url, manager_id=name,
                   wakeups=False, workers=workers, reclaim_after=reclaim_after, metrics=metrics,
                   leases=Leases(store.r, namespace=store.ns, holder=name, ttl=ttl) if leases else None)


def machines(home: Path) -> list:
    return LocalNodeDriver(ex_state_dir=str(home / "sites" / "local")).list_nodes()


@pytest.fixture
def cleanup(pool_home: Path) -> Iterator[list[Manager]]:
    managers: list[Manager] = []
    yield managers
    for m in managers:
        m.close()
    for node in machines(pool_home):
        LocalNodeDriver(ex_state_dir=str(pool_home / "sites" / "local")).ex_preempt(node)


def test_launch_work_survives_a_dead_worker(store: Store, redis_url: str, pool_home: Path, demo_app_env: str,
                                            cleanup: list[Manager]) -> None:
    """The decider queues launches with their records; a worker takes them and dies; another takes over."""
    store.put_domain(parse_domain_spec(sleeper_spec("q", 3)))
    a = queue_manager(store, redis_url, pool_home, "A", reclaim_after=0.5)
    cleanup.append(a)
    a.tick()
    recs = store.nodes("q")
    assert [r.state for r in recs] == [S.REQUESTED] * 3
    assert machines(pool_home) == []  # nothing launched by the tick itself
    queue = WorkQueue(store.r, namespace=store.ns, reclaim_after=0.5)
    taken = queue.take("A-w0", block=0.1)
    assert sorted(i.node_id for i in taken) == sorted(r.node_id for r in recs)
    # the worker that took them dies before doing anything: nothing acknowledged
    b = queue_manager(store, redis_url, pool_home, "B", reclaim_after=0.5)
    cleanup.append(b)
    b.start_workers()
    wait(lambda: all(r.state == S.PENDING for r in store.nodes("q")), 20, "launches taken over")
    launched = machines(pool_home)
    assert len(launched) == 3
    assert {n.extra["tags"]["elastic-pool/launch"] for n in launched} == {r.launch_id for r in recs}
    assert queue.depth() == {"queued": 0, "in_progress": 0}
    # the same launch done again (a duplicate delivery) makes no second machine
    for rec in store.nodes("q"):
        rec_requested = rec.copy()
        rec_requested.state = S.REQUESTED
        store.put_nodes([rec_requested])
    from pool.state.workqueue import WorkItem

    queue.put([WorkItem("launch", "q", r.node_id, launch_id=r.launch_id, site="local") for r in recs])
    wait(lambda: queue.depth()["queued"] == 0, 20, "duplicates done")
    assert len(machines(pool_home)) == 3


def test_scale_in_before_launch_cancels_it(store: Store, redis_url: str, pool_home: Path, demo_app_env: str,
                                           cleanup: list[Manager]) -> None:
    store.put_domain(parse_domain_spec(sleeper_spec("c", 2)))
    m = queue_manager(store, redis_url, pool_home, "M")
    cleanup.append(m)
    m.tick()
    assert len([r for r in store.nodes("c") if r.state == S.REQUESTED]) == 2
    store.set_override("c", 0)
    m.tick()  # scale-in picks the requested-not-launched nodes: retired, no terminate call
    assert all(r.state == S.TERMINATED for r in store.nodes("c"))
    m.start_workers()
    queue = WorkQueue(store.r, namespace=store.ns)
    wait(lambda: queue.depth() == {"queued": 0, "in_progress": 0}, 20, "work done")
    assert machines(pool_home) == []


def test_roles_held_by_different_managers(store: Store, redis_url: str, pool_home: Path, demo_app_env: str,
                                          cleanup: list[Manager]) -> None:
    """One manager decides, another is doctor and provisioner; each writes under its own tokens."""
    store.put_domain(parse_domain_spec(sleeper_spec("r", 2)))
    decider = queue_manager(store, redis_url, pool_home, "D", leases=True)
    doctor = queue_manager(store, redis_url, pool_home, "H", leases=True)
    cleanup += [decider, doctor]
    assert decider.leases is not None
    assert decider.leases.acquire("decider") is not None  # D takes the decider role first
    doctor.tick()  # H takes what is free: doctor and provisioner
    assert set(doctor.held) == {"doctor", "provisioner"}
    assert store.nodes("r") == []  # the doctor does not decide
    decider.tick()
    assert set(decider.held) == {"decider"}
    assert len(store.nodes("r")) == 2
    holders = Leases(store.r, namespace=store.ns, holder="-").holders()
    assert {role: h["holder"] for role, h in holders.items()} == {"decider": "D", "doctor": "H", "provisioner": "H"}
    doctor.start_workers()
    wait(lambda: all(r.state == S.PENDING for r in store.nodes("r")), 20, "launched")
    wait(lambda: (doctor.tick() or True) and all(r.state == S.STARTED for r in store.nodes("r")), 30,
         "the doctor sees heartbeats")
    victim = store.nodes("r")[0]
    machine = next(n for n in machines(pool_home) if n.name == victim.node_id)
    os.killpg(int(machine.extra["pid"]), signal.SIGKILL)
    wait(lambda: (doctor.tick() or True) and store.node("r", victim.node_id).state  # type: ignore[union-attr]
         in (S.UNHEALTHY, S.TERMINATED), 20, "the doctor condemns the dead node")
    decider.tick()  # the decider replaces it
    live = [r for r in store.nodes("r") if r.state in (S.REQUESTED, S.PENDING, S.STARTED, S.JOINED)]
    assert len(live) == 2 and victim.node_id not in {r.node_id for r in live}
    # a deposed doctor's late writes are refused (its token is stale once another manager takes the role)
    old = doctor.held["doctor"]
    store.r.delete(f"{store.ns}:lease:doctor")
    assert decider.leases.acquire("doctor") is not None
    with pytest.raises(FencedWrite):
        store.fenced_roles({"doctor": old.token}).put_nodes(live)
    assert set(ROLES) == {"decider", "doctor", "provisioner"}


def test_time_to_repair_is_exported(store: Store, redis_url: str, pool_home: Path, demo_app_env: str,
                                    cleanup: list[Manager]) -> None:
    """kill -9 a worker: the replacement is requested and joins; both stages reach /metrics and the event log.

    (The local site's listing shows the dead process group at once, so this is found before the
    heartbeat timeout; the heartbeat path is covered by the chaos suite.)"""
    store.put_domain(parse_domain_spec(sleeper_spec("t", 1)))
    metrics = Metrics()
    m = queue_manager(store, redis_url, pool_home, "T", metrics=metrics)
    cleanup.append(m)
    port = metrics.serve(0)
    m.start_workers()
    stop = threading.Event()
    thread = threading.Thread(target=m.run, kwargs={"interval": 0.2, "stop": stop}, daemon=True)
    thread.start()
    try:
        wait(lambda: [r.state for r in store.nodes("t")] == [S.JOINED], 30, "one joined node")
        first = store.nodes("t")[0]
        machine = next(n for n in machines(pool_home) if n.name == first.node_id)
        os.killpg(int(machine.extra["pid"]), signal.SIGKILL)
        try:
            wait(lambda: any(e.get("stage") == "joined" for e in store.events("t", 50, kind="repair")), 40,
                 "the replacement joined")
        except AssertionError:
            for e in reversed(store.events("t", 60)):
                print(e)
            raise
    finally:
        stop.set()
        thread.join(10)
    stages = {e["stage"]: e for e in store.events("t", 50, kind="repair")}
    assert stages["requested"]["node"] == first.node_id
    assert stages["requested"]["replacement"] == stages["joined"]["replacement"]
    assert stages["joined"]["seconds"] >= stages["requested"]["seconds"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'elastic_pool_time_to_repair_seconds_count{domain="t",stage="requested"} 1.0' in text
    assert 'elastic_pool_time_to_repair_seconds_count{domain="t",stage="joined"} 1.0' in text
    assert 'elastic_pool_intended_size{domain="t"} 1.0' in text


def test_preemption_notice_replaces_before_the_loss(store: Store, redis_url: str, pool_home: Path,
                                                    demo_app_env: str, cleanup: list[Manager]) -> None:
    """A spot notice to a Celery worker: its replacement starts at once; joined capacity never dips."""
    spec = celery_spec("p", max_size=4, min=2, policy={"name": "fixed", "size": 2})
    store.put_domain(parse_domain_spec(spec))
    m = queue_manager(store, redis_url, pool_home, "P")
    cleanup.append(m)
    m.start_workers()
    stop = threading.Event()
    thread = threading.Thread(target=m.run, kwargs={"interval": 0.2, "stop": stop}, daemon=True)
    thread.start()
    try:
        wait(lambda: [r.state for r in store.nodes("p")].count(S.JOINED) == 2, 60, "two joined workers")
        target = store.nodes("p")[0]
        machine = next(n for n in machines(pool_home) if n.name == target.node_id)
        driver = LocalNodeDriver(ex_state_dir=str(pool_home / "sites" / "local"))
        assert driver.ex_preempt_notice(machine)
        low = 2
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            recs = store.nodes("p")
            serving = [r for r in recs if r.state in (S.JOINED, S.DRAINING)]
            low = min(low, len(serving))
            joined = [r for r in recs if r.state == S.JOINED and r.node_id != target.node_id]
            if len(joined) == 2:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the replacement did not join")
        wait(lambda: store.node("p", target.node_id).state == S.TERMINATED, 60,  # type: ignore[union-attr]
             "the noticed worker drained and ended once its replacement joined")
    finally:
        stop.set()
        thread.join(10)
    noticed = store.node("p", target.node_id)
    assert noticed is not None and any("preemption notice" in h[2] for h in noticed.history)
    assert low >= 2  # the noticed worker kept serving (draining) until its replacement joined
