"""Leader leases with fencing tokens, failover between managers, late writes refused."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from policies import load_policy
from pool.control.manager import Manager, Observation, plan_domain
from pool.core.model import DomainState, NodeRecord, NodeState, parse_domain_spec
from pool.sites.local import LocalNodeDriver
from pool.sites.provisioner import Provisioner
from pool.state.leases import LeaseLost, Leases
from pool.state.store import FencedWrite, Store
from tests.conftest import celery_spec


def test_lease_acquire_renew_expire_and_fence(store: Store) -> None:
    a = Leases(store.r, namespace=store.ns, holder="A", ttl=0.4)
    b = Leases(store.r, namespace=store.ns, holder="B", ttl=0.4)
    la = a.acquire("decider")
    assert la is not None and la.token == 1
    assert b.acquire("decider") is None
    assert a.acquire("decider").token == 1  # type: ignore[union-attr]  # renewal keeps the token
    time.sleep(0.5)  # A stops renewing: the lease lapses
    lb = b.acquire("decider")
    assert lb is not None and lb.token == 2
    with pytest.raises(LeaseLost):
        a.check(la)
    b.check(lb)
    assert a.acquire("decider") is None
    assert b.holders()["decider"]["holder"] == "B"

    old, new = store.fenced("decider", la.token), store.fenced("decider", lb.token)
    rec = NodeRecord.new(node_id="f-1", domain="f", launch_id="L", site="local", deployable_type="celery-worker", now=1)
    with pytest.raises(FencedWrite):
        old.put_nodes([rec])
    with pytest.raises(FencedWrite):
        old.put_state("f", DomainState(intended=3))
    with pytest.raises(FencedWrite):
        old.record("f", "decision", 1.0, target=3)
    assert store.nodes("f") == [] and store.events("f") == []
    new.put_nodes([rec])
    new.record("f", "decision", 1.0, target=1)
    assert [n.node_id for n in store.nodes("f")] == ["f-1"] and store.events("f")[0]["target"] == 1
    b.release("decider")
    assert b.holders()["decider"]["holder"] is None


def make_manager(store: Store, redis_url: str, home: Path, name: str, ttl: float) -> Manager:
    driver = LocalNodeDriver(ex_state_dir=str(home / "sites" / "local"))
    return Manager(store=store, provisioner=Provisioner({"local": driver}), redis_url=redis_url, manager_id=name,
                   leases=Leases(store.r, namespace=store.ns, holder=name, ttl=ttl), wakeups=False)


def test_a_deposed_decider_cannot_launch(store: Store, redis_url: str, pool_home: Path) -> None:
    """A manager that paused past its lease resumes with a plan in hand: its writes and launches are refused."""
    spec = parse_domain_spec(celery_spec("dep", policy={"name": "fixed", "size": 2}, max_size=3))
    store.put_domain(spec)
    a = make_manager(store, redis_url, pool_home, "A", ttl=0.5)
    b = make_manager(store, redis_url, pool_home, "B", ttl=5)
    a.tick()  # A takes the role (its first tick launches; those machines are removed below)
    a_lease = a.lease
    assert a_lease is not None
    for n in a.provisioner.drivers["local"].list_nodes():  # start from nothing launched
        a.provisioner.drivers["local"].ex_preempt(n)
    store.r.delete(*[k for k in store.r.keys(f"{store.ns}:d:dep:*")])
    # A computes a plan, then "pauses" past its lease; B takes over
    obs = Observation(spec=spec, state=DomainState(), nodes=(), heartbeats={}, site_nodes={}, site_available=True,
                      readings={}, now=time.time())
    plan = plan_domain(obs, load_policy("fixed", {"size": 2}))
    assert len(plan.launches) == 2
    time.sleep(0.6)
    b.tick()
    assert b.lease is not None and b.lease.token > a_lease.token
    before = {n.id for n in b.provisioner.drivers["local"].list_nodes()}
    with pytest.raises(FencedWrite):
        a.apply(plan, spec, store=store.fenced("decider", a_lease.token))
    after = {n.id for n in b.provisioner.drivers["local"].list_nodes()}
    assert not any(r.node_id in after for r in plan.launches)  # no machine for the late plan
    assert after == before
    assert all(r.node_id not in {n.node_id for n in store.nodes("dep")} for r in plan.launches)
    with pytest.raises(LeaseLost):
        a._still_leader()
    for m in (a, b):
        m.close()
    for n in b.provisioner.drivers["local"].list_nodes():
        b.provisioner.drivers["local"].ex_preempt(n)


@pytest.mark.slow
def test_failover_to_a_standby_manager(store: Store, redis_url: str, pool_home: Path, demo_app_env: str) -> None:
    spec = parse_domain_spec(celery_spec("fo", policy={"name": "fixed", "size": 1}, min=1, max_size=2))
    store.put_domain(spec)
    managers = [make_manager(store, redis_url, pool_home, name, ttl=1.5) for name in ("A", "B")]
    stops = [threading.Event(), threading.Event()]
    threads = [threading.Thread(target=m.run, kwargs={"interval": 0.25, "stop": s}, daemon=True)
               for m, s in zip(managers, stops)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(n.state == NodeState.JOINED for n in store.nodes("fo")):
            time.sleep(0.1)
        holders = Leases(store.r, namespace=store.ns, holder="-").holders()["decider"]
        leader = 0 if holders["holder"] == "A" else 1
        standby = 1 - leader
        assert managers[standby].lease is None
        first_token = holders["token"]
        stops[leader].set()  # the leader dies without handing over (no release)
        threads[leader].join(5)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and managers[standby].lease is None:
            time.sleep(0.05)
        assert managers[standby].lease is not None and managers[standby].lease.token > first_token
        # the new leader keeps the domain: kill its worker and see it replaced
        node = store.nodes("fo")[0]
        drv = managers[standby].provisioner.drivers["local"]
        drv.ex_preempt(next(n for n in drv.list_nodes() if n.id == node.node_id))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                n.state == NodeState.JOINED and n.node_id != node.node_id for n in store.nodes("fo")):
            time.sleep(0.1)
        assert any(n.state == NodeState.JOINED and n.node_id != node.node_id for n in store.nodes("fo"))
    finally:
        for s in stops:
            s.set()
        for t in threads:
            t.join(5)
        for m in managers:
            m.close()
        drv = managers[0].provisioner.drivers["local"]
        for n in drv.list_nodes():
            drv.ex_preempt(n)
