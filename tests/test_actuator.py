"""One launch/terminate path: the tick queues its work, the actuator takes it from the work queue and
carries it out (launches batched per domain, site and deployable type; paced sites hold their items),
in the tick (``workers=0``) or in provisioner worker threads; the in-memory store has a work queue too."""

from __future__ import annotations

import time
from typing import Any

import pytest

from pool.control.actuator import Actuator
from pool.control.manager import Manager
from pool.core.keys import TAG_DOMAIN, TAG_NODE
from pool.core.model import NodeRecord, NodeState, parse_domain_spec
from pool.sites.provisioner import Provisioner
from pool.sites.sim import SimNodeDriver, parse_profile
from pool.state.memqueue import MemoryWorkQueue
from pool.state.store import MemoryStore
from pool.state.workqueue import WorkItem, entry_order
from tests.conftest import wait

S = NodeState


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def spec(size: int, **site: Any) -> Any:
    return parse_domain_spec({
        "name": "act", "deployable_type": "celery-worker", "celery": {"app": "tasks"}, "min": size,
        "max": 10_000, "policy": {"name": "fixed", "size": size}, "sensor": {"name": "sim_queue", "queue": "none"},
        "sites": [{"name": "s", **site}],
        "timeouts": {"heartbeat_interval": 5, "heartbeat_timeout": 30, "boot": 600, "terminate_grace": 5},
    })


def setup(size: int, *, profile: str = "local", workers: int = 0, **site: Any) -> tuple[Manager, SimNodeDriver, Clock]:
    clock = Clock()
    store = MemoryStore()
    driver = SimNodeDriver(ex_clock=clock, ex_profile=parse_profile(profile), ex_seed=1)
    manager = Manager(store=store, provisioner=Provisioner({"s": driver}), redis_url="memory://", clock=clock,
                      wakeups=False, workers=workers)
    store.put_domain(spec(size, **site))
    return manager, driver, clock


def tick(manager: Manager, clock: Clock, t: float) -> None:
    clock.now = t
    manager.tick(t)


def launches(driver: SimNodeDriver) -> list[tuple[float, bool, int]]:
    return [(c.time, c.accepted, c.instances) for c in driver.ex_events() if c.api == "RunInstances"]


# -- the in-memory work queue --------------------------------------------------------------------
def item(node: str, op: str = "launch") -> WorkItem:
    return WorkItem(op, "d", node, launch_id="l" + node, site="s")


def test_memory_queue_takes_in_order_acknowledges_and_gives_back() -> None:
    q = MemoryWorkQueue()
    q.put([item("a"), item("b"), item("c")])
    assert q.depth() == {"queued": 3, "in_progress": 0}
    taken = q.take("w", count=2, block=0)
    assert [i.node_id for i in taken] == ["a", "b"] and sorted(taken, key=entry_order) == taken
    assert q.depth() == {"queued": 3, "in_progress": 2}
    q.done(taken[:1])
    q.give_back(taken[1:])  # queued again, after c
    assert [i.node_id for i in q.take("w", count=10, block=0)] == ["c", "b"]
    assert q.take("w", block=0) == []


def test_memory_queue_reclaims_what_a_dead_consumer_left_and_touch_keeps_it() -> None:
    q = MemoryWorkQueue(reclaim_after=0.2)
    q.put([item("a"), item("b")])
    first = q.take("dead", count=1, block=0)
    kept = q.take("alive", count=1, block=0)
    time.sleep(0.25)
    q.touch("alive", kept)
    again = q.take("other", block=0)
    assert [i.node_id for i in again] == ["a"] and again[0].deliveries == 2 and first[0].deliveries == 1


def test_memory_queue_take_waits_for_an_item() -> None:
    q = MemoryWorkQueue()
    started = time.monotonic()
    assert q.take("w", block=0.1) == [] and time.monotonic() - started >= 0.09


def test_memory_store_queues_work_with_its_records() -> None:
    store = MemoryStore()
    rec = NodeRecord.new(node_id="d-1", domain="d", launch_id="l1", site="s", deployable_type="celery-worker", now=0)
    store.put_nodes([rec], work=[WorkItem("launch", "d", "d-1", launch_id="l1", site="s")])
    assert store.node("d", "d-1") is rec
    assert [i.node_id for i in store.work_queue().take("w", block=0)] == ["d-1"]
    changed = store.update_node("d", "d-1", lambda r: bool(r.set_state(S.FAILED, 1.0, "x") or True))
    assert changed is not None and changed is not rec and rec.state is S.REQUESTED  # a changed copy is stored
    assert store.node("d", "d-1") is changed and changed.state is S.FAILED
    assert store.update_node("d", "nope", lambda r: True) is None


# -- the tick's own pass (workers=0) -------------------------------------------------------------
def test_the_tick_queues_then_launches_in_batches_of_the_sites_size() -> None:
    manager, driver, clock = setup(12, batch=5)
    tick(manager, clock, 0.0)
    assert launches(driver) == [(0.0, True, 5), (0.0, True, 5), (0.0, True, 2)]  # one request per batch
    records = manager.store.nodes("act")
    assert len(records) == 12 and all(r.state is S.PENDING and r.provider_id for r in records)
    moved = [e for e in manager.store.events("act", 100, kind="node") if e.get("to") == "PENDING"]
    assert len(moved) == 12 and all(e["detail"] == "s" and e["from"] == "REQUESTED" for e in moved)
    assert manager.queue.depth() == {"queued": 0, "in_progress": 0}


def test_a_paced_site_holds_its_items_until_it_takes_requests_again() -> None:
    """Two requests a second, a burst of 2: four single launches go two now, two a second later."""
    manager, driver, clock = setup(4, rate=2, burst=2)
    tick(manager, clock, 0.0)
    assert launches(driver) == [(0.0, True, 1), (0.0, True, 1)]
    assert manager.queue.depth() == {"queued": 2, "in_progress": 2}  # held by the tick's pass
    tick(manager, clock, 0.2)  # not due yet: no request, nothing asked of the site
    assert len(launches(driver)) == 2
    tick(manager, clock, 1.0)
    assert launches(driver)[2:] == [(1.0, True, 1), (1.0, True, 1)]
    assert all(r.provider_id and r.state in (S.PENDING, S.STARTED) for r in manager.store.nodes("act"))
    assert manager.queue.depth() == {"queued": 0, "in_progress": 0}


def test_a_throttled_batch_is_one_launch_error_and_retried() -> None:
    """EC2's request bucket (5) spent by earlier calls: the batch is refused as one request and tried again."""
    manager, driver, clock = setup(3, profile="ec2:run_requests=1,run_requests_refill=0.5,boot_median=1000",
                                   batch=3)
    tick(manager, clock, 0.0)
    assert launches(driver) == [(0.0, True, 3)]
    manager.store.set_override("act", 6)
    tick(manager, clock, 1.0)  # the bucket is empty: throttled
    errors = manager.store.events("act", 10, kind="launch_error")
    assert len(errors) == 1 and errors[0]["batch"] == 3 and errors[0]["retry_in"] >= 0
    t = 2.0
    while t < 60 and len([r for r in manager.store.nodes("act") if r.provider_id]) < 6:
        tick(manager, clock, t)
        t += 1.0
    assert len([r for r in manager.store.nodes("act") if r.provider_id]) == 6
    assert sum(n for _, ok, n in launches(driver) if ok) == 6


def test_scale_in_before_the_held_launch_withdraws_it() -> None:
    manager, driver, clock = setup(4, rate=1, burst=1)
    tick(manager, clock, 0.0)
    assert len(launches(driver)) == 1
    manager.store.set_override("act", 1)
    tick(manager, clock, 0.5)  # the three not launched are withdrawn; their held items come to nothing
    tick(manager, clock, 5.0)
    assert len(launches(driver)) == 1
    assert manager.queue.depth() == {"queued": 0, "in_progress": 0}
    states = sorted(r.state.value for r in manager.store.nodes("act"))
    assert states == ["STARTED", "TERMINATED", "TERMINATED", "TERMINATED"]


def test_a_launch_accepted_after_scale_in_ends_its_machine() -> None:
    manager, driver, clock = setup(1)
    store = manager.store
    create = driver.create_node

    def scaled_in_meanwhile(*args: Any, **kwargs: Any) -> Any:  # the decider withdrew it during the call
        rec = store.node("act", kwargs.get("name") or args[0])
        assert rec is not None
        store.update_node("act", rec.node_id, lambda r: bool(r.set_state(S.TERMINATED, 0.0, "withdrawn") or True))
        return create(*args, **kwargs)

    driver.create_node = scaled_in_meanwhile  # type: ignore[method-assign]
    tick(manager, clock, 0.0)
    calls = [c.api for c in driver.ex_events()]
    assert calls.count("RunInstances") == 1 and calls.count("TerminateInstances") == 1  # launched after scale-in
    assert driver.ex_alive() == 0


def test_a_zombie_is_ended_only_if_the_site_lists_it_as_the_domains() -> None:
    manager, driver, clock = setup(0)
    actuator: Actuator = manager.actuator
    machine = driver.create_node("act-x", ex_tags={TAG_DOMAIN: "act", TAG_NODE: "act-x"})
    stranger = driver.create_node("other", ex_tags={TAG_DOMAIN: "other", TAG_NODE: "other"})
    assert actuator.execute(WorkItem("terminate", "act", "act-x", provider_id=str(machine.id), site="s"), 0.0) is None
    assert actuator.execute(WorkItem("terminate", "act", "other", provider_id=str(stranger.id), site="s"), 0.0) is None
    ended = {m.id for m in driver.machines.values() if m.ended is not None}
    assert ended == {str(machine.id)}


# -- worker threads (workers > 0) on the in-memory store ------------------------------------------
def test_worker_threads_take_the_work_and_batch_it() -> None:
    manager, driver, clock = setup(30, workers=2, batch=10)
    try:
        tick(manager, clock, 0.0)
        assert launches(driver) == [] and manager.queue.depth()["queued"] == 30  # the tick only queues
        manager.start_workers()
        wait(lambda: all(r.state is S.PENDING for r in manager.store.nodes("act")), 10, "launched")
        assert sum(n for _, ok, n in launches(driver) if ok) == 30
        assert max(n for _, _, n in launches(driver)) > 1  # batched
        wait(lambda: manager.queue.depth() == {"queued": 0, "in_progress": 0}, 5, "acknowledged")
    finally:
        manager.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_terminations_go_through_the_same_queue(workers: int) -> None:
    manager, driver, clock = setup(3, workers=workers)
    try:
        manager.start_workers()
        tick(manager, clock, 0.0)
        wait(lambda: driver.ex_alive() == 3, 5, "launched")
        manager.store.set_override("act", 0)
        tick(manager, clock, 1.0)
        wait(lambda: len([c for c in driver.ex_events() if c.api == "TerminateInstances"]) == 3, 5, "terminated")
    finally:
        manager.close()


def test_each_domain_s_work_is_done_in_its_own_pass_and_leftovers_in_the_sweep() -> None:
    manager, driver, clock = setup(2)
    store = manager.store
    other = spec(3).model_copy(update={"name": "two"})
    store.put_domain(other)
    tick(manager, clock, 0.0)
    assert len([r for r in store.nodes("act") if r.provider_id]) == 2
    assert len([r for r in store.nodes("two") if r.provider_id]) == 3
    # work another process queued for a domain that is gone: done by the tick's sweep (dropped)
    store.put_nodes([], work=[WorkItem("launch", "gone", "gone-1", launch_id="x", site="s"),
                              WorkItem("terminate", "gone", "gone-2", site="s")])
    store.set_override("act", 0)
    store.set_override("two", 1)
    tick(manager, clock, 1.0)
    ends = [c for c in driver.ex_events() if c.api == "TerminateInstances"]
    assert len(ends) == 4 and manager.queue.depth() == {"queued": 0, "in_progress": 0}
    assert not manager.actuator.holding()
