"""Incremental reads of records and heartbeats on the Redis store: every change is seen, as MemoryStore sees it."""

from __future__ import annotations

import random
from collections import Counter

import pytest

import pool.state.store as store_module
from pool.control.manager import Manager
from pool.core.model import Heartbeat, NodeRecord, NodeState, parse_domain_spec
from pool.sites.provisioner import Provisioner
from pool.sites.sim import SimNodeDriver
from pool.state.store import FencedWrite, MemoryStore, Store
from pool.workloads.celery_worker import BusyReporter

S = NodeState
D = "inc"


def other(store: Store) -> Store:
    """Another client on the same Redis and namespace: another manager, or an agent."""
    kw = store.r.connection_pool.connection_kwargs
    url = "redis://:{password}@{host}:{port}/{db}".format(**kw)
    return Store.from_url(url, namespace=store.ns)


def record(node_id: str, created: float, state: NodeState = S.REQUESTED) -> NodeRecord:
    rec = NodeRecord.new(node_id=node_id, domain=D, launch_id=f"l-{node_id}", site="sim",
                         deployable_type="celery-worker", now=created)
    if state is not S.REQUESTED:
        rec.set_state(S.PENDING, created + 1, "launched")
    return rec


def fresh_view(store: Store) -> tuple[list[NodeRecord], dict[str, Heartbeat]]:
    """What a reader that never read before sees (every record, every hash)."""
    new = other(store)
    nodes = new.nodes(D)
    ids = sorted({n.node_id for n in nodes} | set(new.r.zrange(new.heartbeat_times_key(D), 0, -1)))
    return nodes, new.heartbeats(D, ids)


# -- heartbeats ---------------------------------------------------------------------------------


def test_time_and_field_changes_written_by_another_client_are_seen(store: Store) -> None:
    writer, memory = other(store), MemoryStore()
    ids = ["a", "b", "c"]

    def both(node: str, **fields: object) -> None:
        writer.beat(D, node, **fields)
        memory.beat(D, node, **fields)

    def check() -> dict[str, Heartbeat]:
        seen = store.heartbeats(D, ids)
        assert seen == memory.heartbeats(D, ids)
        return seen

    assert check() == {}
    for node in ids:
        both(node, time=10.0, workload_alive=True, ready=False, active=0)
    assert {k: (v.time, v.ready) for k, v in check().items()} == {k: (10.0, False) for k in ids}
    both("a", time=11.5)  # time only: no change entry
    both("b", time=11.5, ready=True, active=2, idle_since="")  # fields
    seen = check()
    assert seen["a"].time == 11.5 and not seen["a"].ready
    assert seen["b"].ready and seen["b"].active == 2 and seen["b"].idle_since is None
    assert seen["c"].time == 10.0
    both("b", time=12.0, active=0, idle_since=12.0)
    both("c", time=12.0, workload_alive=False)
    both("a", time=12.0, preempt_notice=11.9, draining=True)
    seen = check()
    assert (seen["b"].active, seen["b"].idle_since, seen["b"].ready) == (0, 12.0, True)
    assert not seen["c"].workload_alive
    assert seen["a"].preempt_notice == 11.9 and seen["a"].draining
    # a subset of the nodes, then all of them again
    assert store.heartbeats(D, ["c"]) == {"c": seen["c"]}
    both("a", time=13.0, draining=False)
    assert check()["a"].draining is False


def test_a_silent_node_keeps_its_last_time_while_the_others_move_on(store: Store) -> None:
    writer = other(store)
    for t in range(0, 10):
        for node in ("live", "silent") if t < 3 else ("live",):
            writer.beat(D, node, time=float(t), workload_alive=True)
        seen = store.heartbeats(D, ["live", "silent"])
        assert seen["live"].time == t
        assert seen["silent"].time == min(t, 2)


def test_the_busy_reporter_writes_where_the_store_reads(store: Store, redis_url: str) -> None:
    store.beat(D, "w1", time=5.0, workload_alive=True, ready=False, active=0)
    assert not store.heartbeats(D, ["w1"])["w1"].ready
    reporter = BusyReporter(redis_url=redis_url, namespace=store.ns, domain=D, node_id="w1")
    assert (reporter.changes, reporter.node_id) == (store.heartbeat_changes_key(D), "w1")
    assert reporter.CHANGES_LENGTH == store_module.HEARTBEAT_CHANGES_LENGTH
    reporter.write({"ready": 1, "active": 0, "idle_since": "4.5"})
    hb = store.heartbeats(D, ["w1"])["w1"]
    assert hb.ready and hb.idle_since == 4.5 and hb.time == 5.0
    reporter.write({"active": 3, "idle_since": ""})
    hb = store.heartbeats(D, ["w1"])["w1"]
    assert hb.active == 3 and hb.idle_since is None


def test_an_agent_that_writes_only_the_hash_is_still_seen(store: Store) -> None:
    """A heartbeat hash without a beat time in the sorted set (as agents wrote them before)."""
    raw = store.r  # a plain HSET, no script
    raw.hset(store.heartbeat_key(D, "old"), mapping={"time": "7.25", "ready": "1", "active": "1"})
    store.beat(D, "new", time=7.0)
    seen = store.heartbeats(D, ["old", "new", "none"])
    assert set(seen) == {"old", "new"}
    assert seen["old"] == Heartbeat(time=7.25, ready=True, active=1)
    raw.hset(store.heartbeat_key(D, "old"), mapping={"time": "9.5", "active": "0"})
    assert store.heartbeats(D, ["old"])["old"] == Heartbeat(time=9.5, ready=True, active=0)


def test_a_forgotten_node_has_no_heartbeat_for_any_reader(store: Store) -> None:
    reader = other(store)
    store.put_nodes([record("x", 1.0), record("y", 2.0)])
    for node in ("x", "y"):
        store.beat(D, node, time=3.0, ready=True)
    assert set(reader.heartbeats(D, ["x", "y"])) == {"x", "y"}
    store.forget_nodes(D, ["x"])
    assert set(reader.heartbeats(D, ["x", "y"])) == {"y"}
    assert [n.node_id for n in reader.nodes(D)] == ["y"]
    store.beat(D, "x", time=4.0)  # a late beat of the forgotten node: a new hash, time only
    assert reader.heartbeats(D, ["x"]) == {"x": Heartbeat(time=4.0)}


def test_a_trimmed_heartbeat_position_falls_back_to_a_full_read(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = other(store)
    writer.beat(D, "p", time=1.0, active=0)
    writer.beat(D, "q", time=1.0, active=0)
    assert store.heartbeats(D, ["p", "q"])["p"].active == 0
    position = store._beats[D].position
    assert position is not None
    monkeypatch.setattr(store_module, "HEARTBEAT_CHANGES_LENGTH", 10)
    writer.beat(D, "p", time=2.0, active=5)  # its change entry is trimmed away below
    for i in range(400):
        writer.beat(D, "q", time=2.0, active=i % 3)
    first = writer.r.xrange(writer.heartbeat_changes_key(D), "-", "+", count=1)[0][0]
    assert tuple(map(int, first.split("-"))) > tuple(map(int, position.split("-")))  # the position is gone
    seen = store.heartbeats(D, ["p", "q"])
    assert seen["p"] == Heartbeat(time=2.0, active=5)
    assert seen["q"] == Heartbeat(time=2.0, active=399 % 3)
    assert seen == fresh_view(store)[1]


def test_more_waiting_changes_than_read_at_once_is_a_full_read(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "CHANGES_READ_AT_MOST", 4)
    writer = other(store)
    ids = [f"n{i}" for i in range(10)]
    for i in ids:
        writer.beat(D, i, time=1.0, active=0)
    assert len(store.heartbeats(D, ids)) == 10
    for k, i in enumerate(ids):
        writer.beat(D, i, time=2.0, active=k)
    assert [hb.active for hb in store.heartbeats(D, ids).values()] == list(range(10))


# -- records ------------------------------------------------------------------------------------


def test_records_written_by_another_manager_are_seen(store: Store) -> None:
    manager_b = other(store)
    store.put_nodes([record("r1", 1.0), record("r2", 2.0)])
    first = manager_b.nodes(D)
    assert [(n.node_id, n.state) for n in first] == [("r1", S.REQUESTED), ("r2", S.REQUESTED)]
    assert manager_b.nodes(D)[0] is first[0]  # unchanged: the same object, not parsed again

    def pend(rec: NodeRecord) -> bool:
        rec.set_state(S.PENDING, 5.0, "launched")
        return True

    store.update_node(D, "r1", pend)
    second = manager_b.nodes(D)
    assert [n.state for n in second] == [S.PENDING, S.REQUESTED]
    assert second[1] is first[1]
    store.put_nodes([record("r0", 0.5)])  # older than the others: sorted first
    assert [n.node_id for n in manager_b.nodes(D)] == ["r0", "r1", "r2"]
    store.forget_nodes(D, ["r2"])
    assert [n.node_id for n in manager_b.nodes(D)] == ["r0", "r1"]
    # a leader's fenced write is seen; a deposed leader's refused write leaves nothing to see
    token = int(store.r.incr(f"{store.ns}:fence:decider"))
    store.fenced("decider", token).put_nodes([record("r3", 3.0)])
    assert [n.node_id for n in manager_b.nodes(D)] == ["r0", "r1", "r3"]
    store.r.incr(f"{store.ns}:fence:decider")
    with pytest.raises(FencedWrite):
        store.fenced("decider", token).put_nodes([record("r4", 4.0)])
    assert [n.node_id for n in manager_b.nodes(D)] == ["r0", "r1", "r3"]
    assert manager_b.nodes(D) == fresh_view(store)[0]


def test_a_trimmed_record_position_falls_back_to_a_full_read(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    reader = other(store)
    store.put_nodes([record("x", 1.0), record("y", 2.0)])
    assert len(reader.nodes(D)) == 2
    position = reader._records[D].position
    assert position is not None
    monkeypatch.setattr(store_module, "RECORD_CHANGES_LENGTH", 10)
    store.put_nodes([record("x", 1.0, S.PENDING)])  # its change entry is trimmed away below
    for i in range(400):
        store.put_nodes([record("y", 2.0, S.PENDING if i % 2 else S.REQUESTED)])
    first = store.r.xrange(store.record_changes_key(D), "-", "+", count=1)[0][0]
    assert tuple(map(int, first.split("-"))) > tuple(map(int, position.split("-")))
    assert [(n.node_id, n.state) for n in reader.nodes(D)] == [("x", S.PENDING), ("y", S.PENDING)]


def test_deleted_domain_keys_are_noticed(store: Store) -> None:
    reader = other(store)
    store.put_nodes([record("k1", 1.0)])
    store.beat(D, "k1", time=1.0, ready=True)
    assert len(reader.nodes(D)) == 1 and len(reader.heartbeats(D, ["k1"])) == 1
    store.r.delete(*store.r.keys(f"{store.ns}:d:{D}:*"))
    assert reader.nodes(D) == [] and reader.heartbeats(D, ["k1"]) == {}
    store.put_nodes([record("k2", 2.0)])
    store.beat(D, "k2", time=2.0, active=1)
    assert [n.node_id for n in reader.nodes(D)] == ["k2"]
    assert reader.heartbeats(D, ["k1", "k2"]) == {"k2": Heartbeat(time=2.0, active=1)}


# -- the same answers as MemoryStore ---------------------------------------------------------------


def test_random_writes_read_the_same_from_both_stores(store: Store) -> None:
    rng = random.Random(7)
    writer, memory, reader = other(store), MemoryStore(), store
    ids = [f"m{i:02d}" for i in range(25)]
    records: dict[str, NodeRecord] = {}
    created = 0.0
    for step in range(300):
        t = 100.0 + step * 0.37
        node = rng.choice(ids)
        op = rng.random()
        if op < 0.45:
            writer.beat(D, node, time=t)
            memory.beat(D, node, time=t)
        elif op < 0.75:
            fields = rng.choice([{"active": rng.randint(0, 3)}, {"ready": rng.random() < 0.5},
                                 {"idle_since": rng.choice(["", t - 1.0])}, {"workload_alive": rng.random() < 0.8},
                                 {"draining": rng.random() < 0.3}, {"preempt_notice": t}])
            writer.beat(D, node, time=t, **fields)
            memory.beat(D, node, time=t, **fields)
        elif op < 0.9:
            if node not in records:
                created += 1.0
                records[node] = record(node, created)
            else:
                rec = records[node].copy()
                rec.history.append(("PENDING", t, f"step {step}"))
                records[node] = rec
            writer.put_nodes([records[node]])
            memory.put_nodes([records[node]])
        else:
            writer.forget_nodes(D, [node])
            memory.forget_nodes(D, [node])
            records.pop(node, None)
        if step % 3 == 0:
            asked = rng.sample(ids, rng.randint(1, len(ids)))
            assert reader.heartbeats(D, asked) == memory.heartbeats(D, asked), step
            assert reader.nodes(D) == memory.nodes(D), step
    assert reader.heartbeats(D, ids) == memory.heartbeats(D, ids) == fresh_view(store)[1]


def scenario(store: Store, writer: Store) -> tuple[list[list[tuple[str, int]]], dict[str, NodeState]]:
    """A real manager on a simulated clock: three workers join; one falls silent, one's workload dies
    (written by ``writer``, another client); the doctor condemns both and the decider replaces them."""
    clock = {"t": 0.0}
    driver = SimNodeDriver(ex_clock=lambda: clock["t"], ex_profile="local", ex_seed=0)
    manager = Manager(store=store, provisioner=Provisioner({"sim": driver}), redis_url="memory://",
                      clock=lambda: clock["t"], wakeups=False, list_interval=5.0, manager_id="inc")
    store.put_domain(parse_domain_spec({
        "name": D, "site": "sim", "deployable_type": "celery-worker", "min": 0, "max": 5,
        "policy": {"name": "fixed", "size": 3}, "sensor": {"name": "sim_queue", "queue": "none"},
        "scaling": {"fallback": "fixed", "fallback_size": 3}, "celery": {"app": "x"},
        "timeouts": {"heartbeat_interval": 1, "heartbeat_timeout": 4, "boot": 60, "terminate_grace": 2}}))
    silent: str | None = None
    dying: str | None = None
    counts = []
    for step in range(1, 45):
        clock["t"] = t = float(step)
        for node in driver.ex_booted(t):
            writer.beat(D, node.extra["tags"]["elastic-pool/node"], time=t, ready=True, active=0, workload_alive=True)
        for n in store.nodes(D):
            if n.state in (S.STARTED, S.JOINED) and n.node_id != silent:
                writer.beat(D, n.node_id, time=t)
        if step == 12:
            joined = sorted(n.node_id for n in store.nodes(D) if n.state is S.JOINED)
            assert len(joined) == 3
            silent, dying = joined[0], joined[1]
        if step == 14 and dying is not None:
            writer.beat(D, dying, time=t, workload_alive=False)
        manager.tick(t)
        counts.append(sorted(Counter(n.state.value for n in store.nodes(D)).items()))
    assert silent is not None and dying is not None
    states = {n.node_id: n.state for n in store.nodes(D)}
    return counts, {"silent": states.get(silent, S.TERMINATED), "dying": states.get(dying, S.TERMINATED),
                    **{k: v for k, v in states.items() if k not in (silent, dying)}}


def test_a_manager_on_either_store_condemns_and_replaces_the_same_nodes(store: Store) -> None:
    on_redis, redis_states = scenario(store, other(store))
    memory = MemoryStore(namespace=store.ns)
    on_memory, memory_states = scenario(memory, memory)
    assert on_redis == on_memory
    for states in (redis_states, memory_states):
        assert states["silent"] not in (S.JOINED, S.STARTED)
        assert states["dying"] not in (S.JOINED, S.STARTED)
        assert sum(1 for s in states.values() if s is S.JOINED) == 3  # both replaced
    assert any(dict(c).get("UNHEALTHY", 0) for c in on_redis)


def test_wanted_names_are_durable_kept_once_and_checked_when_read_back(store: Store) -> None:
    from pool.state.store import MemoryStore

    for st in (store, MemoryStore()):
        st.want("d", ["cloud1", "cloud2"], 10.0)
        st.want("d", ["cloud1"], 20.0)  # asked again: the first request's time stays
        assert st.wanted("d") == {"cloud1": 10.0, "cloud2": 10.0}
        st.unwant("d", ["cloud2", "never-asked"])
        assert st.wanted("d") == {"cloud1": 10.0}
    key = store._d("d", "wanted")
    store.r.hset(key, mapping={"../etc": "1.0", "cloud9": "nan", "cloud8": "soon", "cloud7": "3.5"})
    assert store.wanted("d") == {"cloud1": 10.0, "cloud7": 3.5}  # hostile entries are left out
