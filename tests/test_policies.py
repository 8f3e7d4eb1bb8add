"""Built-in policies, the registry and the manager's shaping, with an injected clock."""

from __future__ import annotations

import pytest

from policies import load_policy, registry
from policies.shaping import shape
from pool.core.model import Decision, DomainView, PluginParamError, Reading, ScalingSpec, UnknownPlugin


def view(actual: int = 0, *, intended: int | None = None, booting: int = 0, lo: int = 0, hi: int = 10) -> DomainView:
    return DomainView(name="d", min_size=lo, max_size=hi, actual=actual, joined=actual - booting,
                      booting=booting, busy=0, idle=actual - booting, draining=0,
                      intended=actual if intended is None else intended)


def depth(value: float | None, t: float = 0.0, error: str | None = None) -> dict[str, Reading]:
    return {"celery": Reading("celery", value, t, error=error)}


def test_queue_depth_targets_ceil_of_backlog() -> None:
    policy = load_policy("queue_depth", {"tasks_per_worker": 10})
    assert policy.decide(view(), depth(0), 0).target == 0
    assert policy.decide(view(), depth(1), 0).target == 1
    assert policy.decide(view(), depth(10), 0).target == 1
    assert policy.decide(view(), depth(11), 0).target == 2
    assert policy.decide(view(), depth(300), 0).target == 30


def test_queue_depth_holds_without_reading() -> None:
    policy = load_policy("queue_depth", {})
    assert policy.decide(view(3, intended=3), depth(None, error="down"), 0).target == 3


def test_fixed_is_n_preserving() -> None:
    assert load_policy("fixed", {"size": 3}).decide(view(1), depth(100), 0).target == 3
    assert load_policy("fixed", {}).decide(view(0, lo=2), depth(0), 0).target == 2


def test_registry_errors_name_the_valid_choices() -> None:
    with pytest.raises(UnknownPlugin, match="unknown policy 'nope'; valid: .*fixed.*queue_depth"):
        load_policy("nope", {})
    with pytest.raises(PluginParamError, match=r"unknown parameter 'tasks' \(allowed: tasks_per_worker, sensor\)"):
        load_policy("queue_depth", {"tasks": 3})
    with pytest.raises(PluginParamError, match="tasks_per_worker must be a number > 0"):
        load_policy("queue_depth", {"tasks_per_worker": 0})
    assert {"fixed", "queue_depth"} <= set(registry.names())


def shaped(target: int, *, v: DomainView, scaling: ScalingSpec, value: float | None = 5.0,
           recent: list[tuple[float, int]] | None = None, now: float = 100.0) -> int:
    return shape(Decision(target, "raw"), view=v, scaling=scaling, value=value, recent=recent or [], now=now).target


def test_bounds() -> None:
    assert shaped(50, v=view(0, hi=6), scaling=ScalingSpec()) == 6
    assert shaped(0, v=view(3, lo=2), scaling=ScalingSpec(stabilization=0)) == 2


def test_activation_threshold_only_gates_zero_to_one() -> None:
    s = ScalingSpec(activation=5)
    assert shaped(1, v=view(0), scaling=s, value=5) == 0
    assert shaped(1, v=view(0), scaling=s, value=6) == 1
    assert shaped(2, v=view(1), scaling=s, value=3) == 2  # already running: activation does not apply


def test_activation_gates_only_a_target_read_from_the_queue() -> None:
    """`activation: 0` (the recommended value) on an empty queue: a fixed size, a scheduled minimum and
    a new Spark application's first worker are not queue readings, so they still launch."""
    gate = ScalingSpec(activation=0)
    fixed = load_policy("fixed", {"size": 2}).decide(view(0), depth(0), 0)
    assert shape(fixed, view=view(0), scaling=gate, value=0, recent=[], now=0).target == 2
    queue = load_policy("queue_depth", {}).decide(view(0), depth(0), 0)
    assert shape(queue, view=view(0), scaling=ScalingSpec(activation=3), value=2, recent=[], now=0).target == 0
    app = Reading("spark", 0.0, 0.0, detail={"pending": 0, "running": 0, "waiting_apps": 1, "waiting_app_age": 1})
    first = load_policy("spark_tasks", {}).decide(view(0), {"spark": app}, 0.0)
    assert first.target == 1 and not first.activation
    assert shape(first, view=view(0), scaling=gate, value=0, recent=[], now=0).target == 1


def test_scale_up_limit_and_in_flight() -> None:
    assert shaped(10, v=view(2), scaling=ScalingSpec(scale_up_limit=3)) == 5
    assert shaped(10, v=view(4, booting=3), scaling=ScalingSpec(max_in_flight=4)) == 5
    assert shaped(10, v=view(4, booting=4), scaling=ScalingSpec(max_in_flight=4)) == 4


def test_stabilization_window_holds_scale_down() -> None:
    s = ScalingSpec(stabilization=30)
    recent = [(75.0, 8), (80.0, 6), (95.0, 3)]
    # within the window the highest recent recommendation (6 at t=80) is held; 8 at t=75 fell out
    assert shaped(1, v=view(8), scaling=s, recent=recent, now=106.0) == 6
    # once every high recommendation is older than the window, the scale-down goes through
    assert shaped(1, v=view(8), scaling=s, recent=recent, now=126.0) == 1
    # stabilization never holds above the actual size
    assert shaped(1, v=view(2), scaling=s, recent=recent, now=100.0) == 2
