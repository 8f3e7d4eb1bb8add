"""Usage: worker-seconds and cost per domain and site from node records and the sites' prices, with
hand-computed numbers; and usage that outlives the records, banked by a real manager in the commit
that forgets them (a real Redis)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pool.api.usage import usage
from pool.control.manager import Manager, bank_usage
from pool.core.model import NodeRecord, NodeState, parse_domain_spec
from pool.core.usage import SiteUsage, billed_span, node_usage, parse_totals, records_usage
from pool.sites.local import LocalNodeDriver
from pool.sites.provisioner import Provisioner
from pool.state.store import MemoryStore, Store

S = NodeState


def record(node_id: str, site: str, moves: list[tuple[NodeState, float]], *, domain: str = "web") -> NodeRecord:
    rec = NodeRecord.new(node_id=node_id, domain=domain, launch_id=f"l-{node_id}", site=site,
                         deployable_type="celery-worker", now=moves[0][1])
    for state, when in moves[1:]:
        rec.set_state(state, when)
    return rec


def spec(name: str = "web") -> object:
    return parse_domain_spec({
        "name": name, "max": 4, "sensor": {"name": "celery"}, "policy": {"name": "fixed", "size": 0},
        "sites": [{"name": "local", "price": 0.36}, {"name": "cheap", "price": 0.09, "provider": "dummy"}],
        "celery": {"app": "tasks"}})


#: launched at 100, the site took it at 110, joined 120, drained 400, ended 420: 310 s on `local`
ENDED = [(S.PENDING, 110.0), (S.STARTED, 115.0), (S.JOINED, 120.0), (S.DRAINING, 400.0), (S.TERMINATING, 410.0),
         (S.TERMINATED, 420.0)]


def test_a_node_is_billed_from_the_site_taking_it_to_its_end() -> None:
    ended = record("a", "local", [(S.REQUESTED, 100.0), *ENDED])
    assert billed_span(ended, now=5000.0) == (110.0, 420.0)
    use = node_usage(ended, price=0.36, now=5000.0)
    assert use.worker_seconds == pytest.approx(310.0)
    assert use.cost == pytest.approx(310 / 3600 * 0.36)  # 0.031
    live = record("b", "local", [(S.REQUESTED, 1000.0), (S.PENDING, 1000.5), (S.STARTED, 1010.0), (S.JOINED, 1012.0)])
    assert node_usage(live, price=0.36, now=1900.5).worker_seconds == pytest.approx(900.0)
    refused = record("c", "local", [(S.REQUESTED, 100.0), (S.FAILED, 101.0), (S.TERMINATED, 102.0)])
    assert billed_span(refused, now=5000.0) is None  # the site never took it: no machine, no cost
    booted_never_joined = record("d", "cheap", [(S.REQUESTED, 0.0), (S.PENDING, 10.0), (S.FAILED, 130.0),
                                                (S.TERMINATING, 131.0), (S.TERMINATED, 140.0)])
    assert node_usage(booted_never_joined, price=0.09, now=5000.0) == SiteUsage(130.0, 130 / 3600 * 0.09)


def test_usage_by_site_adds_the_records_of_each_site() -> None:
    records = [record("a", "local", [(S.REQUESTED, 100.0), *ENDED]),
               record("b", "local", [(S.REQUESTED, 0.0), (S.PENDING, 0.0), (S.TERMINATED, 3600.0)]),
               record("c", "cheap", [(S.REQUESTED, 0.0), (S.PENDING, 1800.0)])]
    prices = {"local": 0.36, "cheap": 0.09}
    out = records_usage(records, price=prices.__getitem__, now=5400.0)
    assert out["local"].worker_seconds == pytest.approx(3910.0)  # 310 + 3600
    assert out["local"].cost == pytest.approx(3910 / 3600 * 0.36)  # 0.391
    assert out["cheap"].worker_seconds == pytest.approx(3600.0)  # 5400 - 1800
    assert out["cheap"].cost == pytest.approx(0.09)


def test_banked_totals_read_back_are_validated() -> None:
    totals, since = parse_totals({"web|local|seconds": 10.0, "web|local|cost": 0.5, "since": 7.0,
                                  "Bad Name|local|seconds": 3.0, "web|local|bogus": 1.0, "web|../x|seconds": 1.0,
                                  "web|cheap|seconds": -4.0, "web|cheap|cost": math.nan, "just-junk": 1.0})
    assert totals == {"web": {"local": SiteUsage(10.0, 0.5)}}
    assert since == 7.0


@pytest.mark.parametrize("kind", ["redis", "fenced", "memory"])
def test_usage_survives_the_records_being_forgotten(kind: str, store: Store) -> None:
    st: Store = store if kind == "redis" else MemoryStore()
    if kind == "fenced":  # as a manager holding its roles writes: every command through the fencing script
        lease = store.leases(holder="m1").acquire("provisioner")
        assert lease is not None
        st = store.fenced("provisioner", lease.token)
    web = spec()
    st.put_domain(web)  # type: ignore[arg-type]
    ended = record("a", "local", [(S.REQUESTED, 100.0), *ENDED])
    cheap = record("b", "cheap", [(S.REQUESTED, 50.0), (S.PENDING, 60.0), (S.STARTED, 70.0), (S.JOINED, 80.0)])
    st.put_nodes([ended, cheap])
    before = usage(st, now=3660.0)
    expected_local = {"worker_seconds": 310.0, "cost": round(310 / 3600 * 0.36, 6)}
    expected_cheap = {"worker_seconds": 3600.0, "cost": 0.09}
    assert before == {"since": 60.0, "domains": {"web": {
        "worker_seconds": 3910.0, "cost": round(310 / 3600 * 0.36 + 0.09, 6),
        "sites": {"cheap": expected_cheap, "local": expected_local}}}}
    st.forget_nodes("web", ["a"], usage=bank_usage(web, [ended], 3660.0))  # type: ignore[arg-type]
    assert st.node("web", "a") is None
    assert usage(st, now=3660.0) == before  # the ended record's seconds moved to the running total
    st.delete_domain("web")
    after = usage(st, now=3660.0)
    assert after["domains"] == {"web": {"worker_seconds": 310.0, "cost": expected_local["cost"],
                                        "sites": {"local": expected_local}}}  # a deleted domain's usage stays
    assert after["since"] == 110.0


def test_a_real_manager_banks_usage_in_the_commit_that_forgets(store: Store, redis_url: str,
                                                               pool_home: Path) -> None:
    """A TERMINATED record older than the retention is forgotten by the manager's tick; its seconds and
    cost are in the running total afterwards, and the usage report is the same before and after."""
    web = spec()
    store.put_domain(web)  # type: ignore[arg-type]
    ended = record("a", "local", [(S.REQUESTED, 100.0), *ENDED])
    store.put_nodes([ended])
    driver = LocalNodeDriver(ex_state_dir=str(pool_home / "sites" / "local"))
    manager = Manager(store=store, provisioner=Provisioner({"local": driver}), redis_url=redis_url, wakeups=False)
    try:
        before = usage(store, now=5000.0)
        manager.tick(now=420.0 + 601.0)
        assert store.node("web", "a") is None  # forgotten: past the retention
        assert parse_totals(store.usage_totals())[0] == {
            "web": {"local": SiteUsage(pytest.approx(310.0), pytest.approx(310 / 3600 * 0.36))}}  # type: ignore[arg-type]
        assert usage(store, now=5000.0) == before
        assert before["domains"]["web"]["worker_seconds"] == 310.0  # type: ignore[index]
    finally:
        manager.close()
