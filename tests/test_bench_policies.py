"""The policy benchmark's references and sweep analysis: episodes, fixed pools, boot-adjusted oracle, corners."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench import policies as bp
from pool.sim.traces import Task
from pool.sites.sim import SimCloudProfile

#: Every machine boots in exactly 10 s; 5 launches at once, then 2 a second (EC2's RunInstances).
STEADY = SimCloudProfile(name="steady", boot_median=10.0, boot_sigma=0.0)


def test_episodes_split_where_no_task_arrives_for_longer_than_the_gap() -> None:
    arrivals = [0.0, 1.0, 2.0, 2.0 + bp.EPISODE_GAP + 1, 2.0 + bp.EPISODE_GAP + 2, 5000.0]
    assert bp.episodes(arrivals) == [range(0, 3), range(3, 5), range(5, 6)]
    assert bp.episodes([0.0, bp.EPISODE_GAP]) == [range(0, 2)]  # exactly the gap: the same episode


def test_a_fixed_pool_boots_then_serves_fifo_and_bills_from_launch() -> None:
    tasks = [Task(0.0, 5.0), Task(0.0, 5.0)]
    # one machine: up at 10 s, runs the first task 10-15 and the second 15-20, billed 0-20 s
    assert bp.fixed_pool(tasks, 1, STEADY) == pytest.approx((20 / 3600, (10 + 15) / 2))
    # two machines launched together: each runs one task 10-15
    assert bp.fixed_pool(tasks, 2, STEADY) == pytest.approx((30 / 3600, 10.0))
    # the sixth machine waits for a token: launched at 1 s, so up at 11 s
    six = [Task(0.0, 100.0)] * 6
    assert bp.fixed_pool(six, 6, STEADY)[1] == pytest.approx((5 * 10 + 11) / 6)


def test_the_fewest_machines_for_a_wait_and_the_boot_adjusted_oracle() -> None:
    tasks = [Task(0.0, 5.0), Task(0.0, 5.0)]
    assert bp.fewest_machines(tasks, 12.5, STEADY) == 1
    assert bp.fewest_machines(tasks, 12.4, STEADY) == 2
    assert bp.fewest_machines(tasks, 9.9, STEADY) is None  # no pool waits less than a boot
    later = [Task(t.arrival + 2 * bp.EPISODE_GAP, t.service) for t in tasks]
    adjusted = bp.boot_adjusted([*tasks, *later], [12.5, 10.0], 1.0, STEADY)
    # the first episode needs one machine, the second two: three boots of 10 s on top of the oracle
    assert adjusted["episodes"] == 2 and adjusted["machines"] == 3 and adjusted["unreached_episodes"] == 0
    assert adjusted["worker_hours"] == pytest.approx(1.0 + 3 * 10 / 3600)
    faster = bp.boot_adjusted(tasks, [5.0], 0.0, STEADY)  # waited less than any such pool can
    assert faster["unreached_episodes"] == 1 and faster["machines"] == 2


def test_wait_of_a_fixed_pool_never_grows_with_its_size() -> None:
    tasks = sorted(bp.trace("heavy"), key=lambda t: t.arrival)[:300]
    profile = bp.parse_profile(bp.PROFILE)
    waits = [bp.fixed_pool(tasks, size, profile)[1] for size in range(5, 60, 5)]
    assert all(a >= b for a, b in zip(waits, waits[1:]))
    assert waits[0] > waits[-1]


def test_labels_and_same_configuration() -> None:
    assert bp.label_of("lookahead", {"patience": 3.0, "learn": False}, {"idle_timeout": 30.0}) == \
        "lookahead(patience=3,learn=false)[idle_timeout=30]"
    defaults: bp.Choice = ("a", "lookahead", {}, None)
    explicit: bp.Choice = ("b", "lookahead", {"patience": 2.0}, {"stabilization": 0.0, "idle_timeout": 0.0})
    assert bp.same_config(defaults, explicit)
    assert not bp.same_config(defaults, ("c", "lookahead", {"patience": 3.0}, None))
    assert not bp.same_config(defaults, ("d", "lookahead", {}, {"idle_timeout": 30.0}))
    labels = [c[0] for c in bp.sweep_choices()]
    assert len(labels) == len(set(labels))
    recommended: bp.Choice = ("r", bp.RECOMMENDED_POLICY["name"], bp.RECOMMENDED_POLICY["params"],
                              bp.RECOMMENDED_POLICY["scaling"])
    assert any(bp.same_config(c, recommended) for c in bp.sweep_choices())


def point(wh: float, wait: float) -> dict[str, Any]:
    return {"worker_hours": wh, "mean_wait_s": wait, "p95_wait_s": wait, "launches": 1}


def test_the_sweep_finds_the_corner_who_reaches_it_and_who_beats_whom() -> None:
    base = {"keda_hpa": point(20, 300), "ray": point(50, 10), "spark_da": point(30, 20),
            "aws_target_tracking": point(25, 400)}
    ours: list[bp.Choice] = [(x, "lookahead", {}, None) for x in ("cheap", "corner", "fast", "worse")]
    points = {
        "burst": {**base, "cheap": point(18, 100), "corner": point(20, 10), "fast": point(40, 5),
                  "worse": point(21, 11)},
        "poisson": {**base, "cheap": point(18, 100), "corner": point(22, 12), "fast": point(40, 5),
                    "worse": point(45, 200)},
    }
    result = bp.analyse_sweep(points, ours, {"burst": 15.0, "poisson": 15.0})
    burst, poisson = result["traces"]["burst"], result["traces"]["poisson"]
    assert burst["corner"] == {"worker_hours": 20, "cheapest": "keda_hpa", "mean_wait_s": 10, "fastest": "ray"}
    assert burst["feasible"] and burst["reached_by"] == ["corner"]
    assert not poisson["feasible"] and poisson["closest"]["label"] == "corner"
    assert poisson["closest"]["closeness"] == pytest.approx(max(22 / 20, 12 / 10))
    assert poisson["cheapest_as_fast"]["label"] == "fast" and poisson["fastest_as_cheap"]["label"] == "cheap"
    configs = result["configs"]
    assert configs["corner"]["pairs"] == 4 + 2  # all four on burst; on poisson not keda_hpa (22 > 20 wh) nor ray
    assert configs["worse"]["dominated_by"] == {"burst": ["corner"], "poisson": ["cheap", "corner", "fast"]}
    assert result["ranking"][0] == "corner"
    assert math.isclose(configs["cheap"]["mean_x_oracle"], 18 / 15)
