"""The lookahead policy on an injected clock: drain horizon, held launches, idle release, learned service time."""

from __future__ import annotations

import math

import pytest

from policies import load_policy
from policies.lookahead import Lookahead
from pool.core.model import PluginParamError, Reading
from pool.sim.simulate import PolicyChoice, Simulation
from pool.sim.traces import burst
from tests.test_policy_library import Run, depth


def queue(ready: float, running: float, t: float = 0.0) -> dict[str, Reading]:
    return depth(ready + running, t, detail={"ready": ready, "unacked": running})


def horizon(boot: float = 40.0, service: float = 60.0, patience: float = 2.0) -> float:
    return boot + math.sqrt(2 * patience * service * boot)


def test_a_burst_gets_the_workers_that_drain_it_within_the_horizon() -> None:
    run = Run(load_policy("lookahead", {"learn": False}))
    decision = run.tick(0, queue(300, 0))
    # 300 tasks x 60 s of work, drained in H = 40 + sqrt(2 x 2 x 60 x 40) ~ 138 s: 131 workers, not 300
    assert decision.target == math.ceil(300 * 60 / horizon()) == 131
    assert decision.inputs["horizon"] == pytest.approx(horizon())
    cheaper = Run(load_policy("lookahead", {"learn": False, "patience": 8}))
    assert cheaper.tick(0, queue(300, 0)).target < 131  # waiting is worth less: fewer boots


def test_work_the_pool_finishes_before_a_boot_launches_nothing() -> None:
    run = Run(load_policy("lookahead", {"learn": False}), actual=10)
    # 5 waiting behind 10 busy workers: (5 + 10 / 2) x 60 s / 138 s is under 5 workers
    assert run.tick(0, queue(5, 10), busy=10).target == 10
    # a short boot makes the same queue worth a launch: H = 1 + sqrt(240) ~ 16.5 s
    quick = Run(load_policy("lookahead", {"learn": False, "boot_time": 1}), actual=10)
    assert quick.tick(0, queue(5, 10), busy=10).target == math.ceil(10 * 60 / horizon(boot=1))


def test_launches_for_a_queue_are_held_until_it_is_empty_then_idle_workers_go() -> None:
    run = Run(load_policy("lookahead", {"learn": False}))
    assert run.tick(0, queue(300, 0)).target == 131
    # 40 joined and busy, 91 still booting: the smaller need of this tick does not cancel them
    assert run.tick(10, queue(250, 40), actual=131, booting=91, busy=40).target == 131
    assert run.memory["peak"] == 131
    # the queue is empty: only the busy workers are wanted, the peak is forgotten
    assert run.tick(200, queue(0, 30), actual=131, busy=30).target == 30
    assert run.memory["peak"] == 0
    # a new, small queue is sized on its own, never below the joined workers
    assert run.tick(201, queue(3, 30), actual=30, busy=30).target == 30


def test_service_time_is_learned_from_clean_drains_only() -> None:
    run = Run(load_policy("lookahead", {"boot_time": 10, "service_time": 100}), actual=10)
    backlog = 200.0
    for t in range(0, 100):  # 10 busy workers finish one task a second: 10 s of work per task
        run.tick(t, queue(backlog - 10, 10, t), busy=10, follow=False)
        backlog -= 1
    learned = run.memory["work"] / run.memory["done"]
    assert learned == pytest.approx(10.0)
    service = run.tick(100, queue(backlog - 10, 10, 100), busy=10, follow=False).inputs["service_time"]
    assert 10.0 < service < 20.0  # the prior of 100 s counts as 5 tasks against ~90 measured
    done = run.memory["done"]
    run.tick(101, queue(backlog - 5, 10, 101), busy=10, follow=False)  # tasks arrived: not clean
    for t in range(102, 111):  # falls within boot_time of the arrival are not counted
        backlog -= 1
        run.tick(t, queue(backlog - 10, 10, t), busy=10, follow=False)
    assert run.memory["done"] == done
    frozen = Run(load_policy("lookahead", {"boot_time": 10, "service_time": 100, "learn": False}))
    for t in range(0, 50):
        decision = frozen.tick(t, queue(150 - t, 10, t), busy=10, follow=False)
    assert decision.inputs["service_time"] == 100


def test_slots_per_worker_missing_detail_and_missing_reading() -> None:
    two = Run(load_policy("lookahead", {"learn": False, "slots_per_worker": 2}))
    assert two.tick(0, queue(300, 0)).target == math.ceil(300 * 60 / horizon() / 2)
    assert two.tick(1, queue(0, 9)).target == 5  # 9 tasks running need 5 two-slot workers
    plain = Run(load_policy("lookahead", {"learn": False}), actual=4)
    # no "ready" detail: the backlog minus the busy workers' tasks is what waits
    assert plain.tick(0, depth(4), busy=4).target == 4
    assert plain.tick(1, depth(300), busy=4).inputs["ready"] == 296
    held = Run(load_policy("lookahead", {}), actual=7)
    assert held.tick(0, depth(None, error="broker down")).target == 7
    assert held.tick(1, {}).target == 7


@pytest.mark.parametrize("params, words", [
    ({"boot_time": 0}, ["boot_time", "> 0"]),
    ({"patience": -1}, ["patience", "> 0"]),
    ({"service_time": "a minute"}, ["service_time"]),
    ({"learn": "yes"}, ["learn", "true or false"]),
])
def test_bad_parameters_are_refused(params: dict[str, object], words: list[str]) -> None:
    with pytest.raises(PluginParamError) as err:
        load_policy("lookahead", params)
    for word in words:
        assert word in str(err.value)


def test_scaling_defaults_release_idle_workers_at_once() -> None:
    assert Lookahead.scaling_defaults == {"stabilization": 0.0, "idle_timeout": 0.0}


def test_in_the_simulator_a_burst_is_served_by_fewer_machines_than_tasks() -> None:
    tasks = burst(n=200, service=30.0, seed=3)
    result = Simulation(tasks, PolicyChoice("lookahead", "lookahead", {}), profile="ec2", seed=2).run()
    assert result["completed"] == 200 and result["unfinished"] == 0
    assert result["scaling"]["idle_timeout"] == 0 and result["scaling"]["stabilization"] == 0
    assert 0 < result["launches"] < 200
    assert result["sim_end"] < 3600  # back to zero workers well before the tail runs out
