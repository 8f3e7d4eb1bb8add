"""A real Celery domain: real Redis, real worker processes, the manager ticking in a thread."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis

from pool.core.model import NodeState, parse_domain_spec
from tests.conftest import RunningManager, celery_spec, demo_producer

pytestmark = pytest.mark.slow
S = NodeState


def done_counts(broker: str) -> dict[int, int]:
    r = redis.Redis.from_url(broker)
    return {int(k): int(v) for k, v in r.hgetall("demo:done").items()}


def enqueue(broker: str, queue: str, n: int, seconds: float, start: int = 0) -> None:
    with demo_producer(broker) as tasks:
        for i in range(start, start + n):
            tasks.work.apply_async((i, seconds), queue=queue)  # type: ignore[attr-defined]


def test_burst_grows_from_zero_completes_and_shrinks_back(running_manager: RunningManager, demo_app_env: str) -> None:
    rm = running_manager
    spec = parse_domain_spec(celery_spec("burst", max_size=3, policy={"name": "queue_depth", "tasks_per_worker": 5}))
    rm.store.put_domain(spec)
    time.sleep(1.0)
    assert rm.live("burst") == []  # nothing waits: nothing runs
    enqueue(demo_app_env, "q-burst", 40, 0.2)
    rm.wait(lambda: len(rm.live("burst", S.JOINED)) >= 2, 60, "workers to join")
    rm.wait(lambda: len(done_counts(demo_app_env)) == 40, 90, "all 40 tasks to complete")
    rm.wait(lambda: rm.live("burst") == [] and all(n.state == S.TERMINATED for n in rm.store.nodes("burst")),
            60, "the domain to shrink back to 0")
    counts = done_counts(demo_app_env)
    assert sorted(counts) == list(range(40))
    peak = max(e["target"] for e in rm.store.events("burst", 200, kind="decision"))
    assert peak == 3  # 40 / 5 = 8, bounded by max 3
    assert rm.driver.list_nodes() == []


def test_sigkill_of_a_busy_worker_loses_nothing(running_manager: RunningManager, demo_app_env: str) -> None:
    rm = running_manager
    spec = parse_domain_spec(celery_spec("kill", max_size=3, policy={"name": "queue_depth", "tasks_per_worker": 4}))
    rm.store.put_domain(spec)
    enqueue(demo_app_env, "q-kill", 30, 0.5)
    rm.wait(lambda: any(hb.active > 0 for hb in rm.store.heartbeats(
        "kill", [n.node_id for n in rm.live("kill", S.JOINED)]).values()), 60, "a busy worker")
    joined = rm.live("kill", S.JOINED)
    hbs = rm.store.heartbeats("kill", [n.node_id for n in joined])
    victim = next(n for n in joined if hbs[n.node_id].active > 0)
    node = next(n for n in rm.driver.list_nodes() if n.id == victim.node_id)
    assert rm.driver.ex_preempt(node)  # SIGKILL to the whole process group, mid-task
    rm.wait(lambda: next(n for n in rm.store.nodes("kill") if n.node_id == victim.node_id).state == S.TERMINATED,
            20, "the killed node to be noticed")
    rm.wait(lambda: len(done_counts(demo_app_env)) == 30, 120, "every task to complete at least once")
    assert sorted(done_counts(demo_app_env)) == list(range(30))
    history = [h[0] for h in next(n for n in rm.store.nodes("kill") if n.node_id == victim.node_id).history]
    assert history[-2:] == ["UNHEALTHY", "TERMINATED"]


def test_scale_in_keeps_the_busy_worker(running_manager: RunningManager, demo_app_env: str) -> None:
    rm = running_manager
    spec = parse_domain_spec(celery_spec("keep", max_size=2, scaling={"stabilization": 0}))
    rm.store.put_domain(spec)
    rm.store.set_override("keep", 2)
    rm.wait(lambda: len(rm.live("keep", S.JOINED)) == 2, 60, "two joined workers")
    enqueue(demo_app_env, "q-keep", 1, 8.0)  # one long task: one worker busy, one idle
    rm.wait(lambda: sum(hb.active for hb in rm.store.heartbeats("keep", [n.node_id for n in rm.live("keep")]).values()) == 1,
            20, "one busy worker")
    hbs = rm.store.heartbeats("keep", [n.node_id for n in rm.live("keep")])
    busy = next(k for k, hb in hbs.items() if hb.active)
    idle = next(k for k, hb in hbs.items() if not hb.active)
    rm.store.set_override("keep", None)  # back to queue_depth: backlog 1 -> 1 worker
    rm.wait(lambda: [n.node_id for n in rm.live("keep")] == [busy], 10, "the idle worker to be chosen")
    states = {n.node_id: n.state for n in rm.store.nodes("keep")}
    assert states[busy] == S.JOINED and states[idle] in (S.DRAINING, S.TERMINATING, S.TERMINATED)
    # the idle one leaves by handshake: it reports drained, then its machine ends (no kill)
    rm.wait(lambda: {n.node_id: n.state for n in rm.store.nodes("keep")}.get(idle) in (S.TERMINATED, None), 30,
            "the idle worker to drain and end")
    ended = next((n for n in rm.store.nodes("keep") if n.node_id == idle), None)
    if ended is not None:
        assert any(detail == "drained: holds no work" for _, _, detail in ended.history), ended.history
    rm.wait(lambda: done_counts(demo_app_env) == {0: 1}, 20, "the long task to finish on the busy worker")


def test_a_worker_whose_heartbeats_stop_is_replaced(running_manager: RunningManager, demo_app_env: str) -> None:
    rm = running_manager
    spec = parse_domain_spec(celery_spec("hb", max_size=2, policy={"name": "fixed", "size": 1}, min=1))
    rm.store.put_domain(spec)
    rm.wait(lambda: len(rm.live("hb", S.JOINED)) == 1, 60, "one joined worker")
    first = rm.live("hb", S.JOINED)[0]
    pid = next(n for n in rm.driver.list_nodes() if n.id == first.node_id).extra["pid"]
    os.kill(pid, signal.SIGSTOP)  # the agent freezes: no more heartbeats
    rm.wait(lambda: any(n.node_id != first.node_id for n in rm.live("hb", S.JOINED)), 60, "a replacement to join")
    old = next(n for n in rm.store.nodes("hb") if n.node_id == first.node_id)
    assert "UNHEALTHY" in [h[0] for h in old.history]
    assert "no heartbeat" in next(h[2] for h in old.history if h[0] == "UNHEALTHY")
    rm.wait(lambda: first.node_id not in [n.id for n in rm.driver.list_nodes()], 30, "the frozen node to be killed")
