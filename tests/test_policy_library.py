"""The policy library and the baselines: injected clock, memory threaded between ticks."""

from __future__ import annotations

import calendar
import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import pytest

from policies import Policy, load_policy, registry
from policies.baselines import AwsTargetTracking, KedaHpa, Ray, SparkDynamicAllocation
from policies.composite import Composite, Formula
from policies.lookahead import Lookahead
from pool.control.manager import Observation, plan_domain
from pool.core.model import (
    Decision,
    DomainState,
    DomainView,
    PluginParamError,
    Reading,
    ScalingSpec,
    parse_domain_spec,
)

NEW = ["threshold", "drain_time", "schedule", "composite", "lookahead", "keda_hpa", "ray", "spark_da",
       "aws_target_tracking"]


def depth(value: float | None, t: float = 0.0, *, error: str | None = None,
          detail: Mapping[str, float] | None = None, name: str = "celery") -> dict[str, Reading]:
    return {name: Reading(name, value, t, error=error, detail=dict(detail or {}))}


class Run:
    """Drives one policy tick by tick the way the manager does: memory goes out and comes back
    (through JSON, as the store keeps it), the target becomes the next intended size and, unless
    told otherwise, the actual size follows at once."""

    def __init__(self, policy: Policy, *, actual: int = 0, lo: int = 0, hi: int = 100) -> None:
        self.policy, self.lo, self.hi = policy, lo, hi
        self.memory: dict[str, Any] = {}
        self.intended = self.actual = actual

    def tick(self, now: float, readings: Mapping[str, Reading] | float | None, *,
             actual: int | None = None, busy: int = 0, booting: int = 0, idle: int | None = None,
             lo: int | None = None, follow: bool = True) -> Decision:
        if actual is not None:
            self.actual = actual
        if lo is not None:
            self.lo = lo
        if not isinstance(readings, Mapping):
            readings = depth(readings, now)
        joined = self.actual - booting
        view = DomainView(name="d", min_size=self.lo, max_size=self.hi, actual=self.actual,
                          joined=joined, booting=booting, busy=busy,
                          idle=joined - busy if idle is None else idle, draining=0,
                          intended=self.intended, memory=self.memory)
        decision = self.policy.decide(view, readings, now)
        assert isinstance(decision.target, int)
        if decision.memory is not None:
            self.memory = json.loads(json.dumps(decision.memory))
        self.intended = max(self.lo, min(self.hi, decision.target))
        if follow:
            self.actual = self.intended
        return decision


# -- registry -------------------------------------------------------------------------------


def test_registry_lists_every_new_policy() -> None:
    assert set(NEW) <= set(registry.names())
    for name in NEW:
        params = {"formula": "celery"} if name == "composite" else {}
        assert isinstance(load_policy(name, params), Policy)


@pytest.mark.parametrize("name", NEW)
def test_unknown_parameter_is_named_with_the_allowed_ones(name: str) -> None:
    with pytest.raises(PluginParamError) as err:
        load_policy(name, {"bogus": 1})
    message = str(err.value)
    assert "'bogus'" in message and "allowed:" in message
    allowed = message.split("allowed:")[1]
    for field in dataclasses.fields(registry.resolve(name)):
        assert (f" {field.name}" in allowed) == field.init, field.name  # internal ones stay hidden


@pytest.mark.parametrize("name, params, words", [
    ("threshold", {"sample_function": "Median"}, ["sample_function", "Average, Sum, Max"]),
    ("threshold", {"window": 0}, ["window", "> 0"]),
    ("threshold", {"scale_up_threshold": 1, "scale_down_threshold": 2}, ["scale_down_threshold"]),
    ("threshold", {"scale_up_n": -1}, ["scale_up_n", "whole number"]),
    ("drain_time", {"target_duration": 0}, ["target_duration", "> 0"]),
    ("drain_time", {"smoothing": 1.5}, ["smoothing", "<= 1"]),
    ("lookahead", {"boot_time": 0}, ["boot_time", "> 0"]),
    ("schedule", {"windows": [{"days": "mon-fry", "start": "08:00", "end": "18:00", "min": 1}]},
     ["windows[0]", "days"]),
    ("schedule", {"windows": [{"days": "mon", "start": "8am", "end": "18:00", "min": 1}]},
     ["windows[0]", "HH:MM"]),
    ("schedule", {"windows": [{"days": "mon", "start": "08:00", "end": "18:00"}]}, ["min"]),
    ("schedule", {"utc_offset_hours": 20}, ["utc_offset_hours"]),
    ("composite", {"formula": "celery", "target": 0}, ["target", "> 0"]),
    ("composite", {"formula": "celery", "fallback": {"celery": "x"}}, ["fallback['celery']"]),
    ("keda_hpa", {"metric_type": "Utilization"}, ["metric_type", "AverageValue or Value"]),
    ("keda_hpa", {"tolerance": -0.1}, ["tolerance", ">= 0"]),
    ("ray", {"max_concurrent_launches": 0}, ["max_concurrent_launches", ">= 1"]),
    ("spark_da", {"executor_allocation_ratio": 2}, ["executor_allocation_ratio", "<= 1"]),
    ("aws_target_tracking", {"scale_in_datapoints": 0}, ["scale_in_datapoints"]),
])
def test_bad_parameter_values_are_refused_with_a_clear_message(
        name: str, params: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(PluginParamError) as err:
        load_policy(name, params)
    message = str(err.value)
    assert message.startswith(f"policy {name}: ") and "\n" not in message
    for word in words:
        assert word in message


# -- threshold ------------------------------------------------------------------------------


def test_threshold_steps_on_the_window_average_and_cools_down() -> None:
    run = Run(load_policy("threshold", {"window": 30, "cooldown": 60, "scale_up_threshold": 2,
                                        "scale_down_threshold": 0.5}), actual=2)
    assert run.tick(0, 3).target == 3          # Average 3 > 2: +1
    assert run.tick(10, 3).target == 3         # still above, but in cooldown
    assert run.tick(50, 1).target == 3         # window (20, 50]: Average(3, 1) = 2: inside the band
    assert run.tick(60, 3).target == 3         # Average(1, 3) = 2: inside the band
    assert run.tick(70, 5).target == 4         # Average(1, 3, 5) = 3 > 2 and cooldown over: +1
    assert run.memory["last_action"] == 70
    assert [t for t, _ in run.memory["samples"]] == [50, 60, 70]  # older samples left the window
    for t in (80, 90, 100, 110):               # nothing waits
        run.tick(t, 0)
    assert run.intended == 4                   # cooldown (70 + 60) still holds the scale-down
    assert run.tick(130, 0).target == 3        # Average 0 < 0.5: -1


def test_threshold_cooldown_blocks_neither_bounds_nor_replacement() -> None:
    run = Run(load_policy("threshold", {"cooldown": 300}), actual=2, lo=1, hi=10)
    assert run.tick(0, 10).target == 3
    # two workers die during the cooldown: the intended size stays, the manager replaces them
    decision = run.tick(10, 10, actual=1, follow=False)
    assert decision.target == 3
    # the operator raises min during the cooldown: enforced at once
    assert run.tick(20, 10, lo=5).target == 5
    assert run.memory["last_action"] == 0      # neither was a threshold-triggered change


def test_threshold_sample_functions_and_per_worker() -> None:
    for function, expected in (("Sum", 4), ("Max", 4), ("Average", 3)):
        params = {"sample_function": function, "cooldown": 0, "scale_up_threshold": 1.5,
                  "scale_down_threshold": 0.5}
        run = Run(load_policy("threshold", params), actual=3)
        run.tick(0, 1.0, follow=False)         # Sum 1, Max 1, Average 1: inside [0.5, 1.5]
        assert run.tick(1, 2.0).target == expected  # Sum 3 > 1.5, Max 2 > 1.5, Average 1.5 not
    per_worker = Run(load_policy("threshold", {"per_worker": True, "cooldown": 0}), actual=4)
    assert per_worker.tick(0, 8).target == 4   # 8 / 4 workers = 2: not above 2
    assert per_worker.tick(100, 12).target == 5  # 12 / 4 = 3 > 2: +1


def test_threshold_named_metric_and_missing_samples_hold() -> None:
    run = Run(load_policy("threshold", {"metric": "load"}), actual=2)
    readings = {**depth(100, 0), "load": Reading("load", 0.1, 0)}
    assert run.tick(0, readings).target == 1   # uses "load", not the first reading
    assert run.tick(200, {}).target == 1       # no sample in the window: hold


# -- drain_time -----------------------------------------------------------------------------


def test_drain_time_uses_the_prior_then_a_measured_service_time() -> None:
    policy = load_policy("drain_time", {"target_duration": 5, "initial_service_time": 0.5})
    assert Run(policy).tick(0, 100).target == 10  # 100 x 0.5 s / 5 s
    detail = depth(100, 0, detail={"service_time": 2.0})
    assert Run(policy).tick(0, detail).target == 40  # 100 x 2 s / 5 s
    two_slots = load_policy("drain_time", {"slots_per_worker": 2})
    assert Run(two_slots).tick(0, detail).target == 20  # two tasks at once: 1 worker-second each
    by_sensor = load_policy("drain_time", {"service_time_sensor": "runtime"})
    readings = {**detail, "runtime": Reading("runtime", 4.0, 0)}
    assert Run(by_sensor).tick(0, readings).target == 80  # the named sensor wins over the detail


def test_drain_time_estimates_service_time_from_the_backlog_falling() -> None:
    run = Run(load_policy("drain_time", {"target_duration": 5, "initial_service_time": 0.5,
                                         "smoothing": 0.5}), actual=4)
    assert run.tick(0, 100, actual=4, busy=4, follow=False).target == 10
    # 20 tasks done in 10 s by 4 busy workers: 40 worker-seconds / 20 = 2 s per task
    decision = run.tick(10, 80, actual=4, busy=4, follow=False)
    assert run.memory["service_time"] == pytest.approx(1.25)  # 0.5 x 2 + 0.5 x 0.5
    assert decision.target == 20               # ceil(80 x 1.25 / 5)
    run.tick(20, 90, actual=4, busy=0, follow=False)  # arrivals: no sample
    assert run.memory["service_time"] == pytest.approx(1.25) and run.memory["samples"] == 1
    # nobody reported busy: the joined workers are taken as the ones that worked
    run.tick(30, 70, actual=4, busy=0, follow=False)
    assert run.memory["samples"] == 2
    assert run.memory["service_time"] == pytest.approx(0.5 * 4 * 10 / 20 + 0.5 * 1.25)


def test_drain_time_holds_without_a_backlog_reading() -> None:
    run = Run(load_policy("drain_time", {}), actual=3)
    assert run.tick(0, depth(None, 0, error="down")).target == 3


# -- schedule -------------------------------------------------------------------------------

MONDAY = calendar.timegm((2024, 1, 1, 0, 0, 0))  # 2024-01-01 was a Monday


def at(day: int, hour: int, minute: int = 0) -> float:
    return float(MONDAY + day * 86400 + hour * 3600 + minute * 60)


def test_schedule_floor_inside_windows_and_queue_depth_on_top() -> None:
    policy = load_policy("schedule", {"windows": [
        {"days": "mon-fri", "start": "08:00", "end": "18:00", "min": 4},
        {"days": "fri", "start": "22:00", "end": "06:00", "min": 2},
    ], "tasks_per_worker": 5})
    assert Run(policy).tick(at(0, 9), 1).target == 4        # Monday office hours
    assert Run(policy).tick(at(0, 9), 50).target == 10      # queue asks for more: 50 / 5
    assert Run(policy).tick(at(0, 7, 59), 1).target == 1    # before the window
    assert Run(policy).tick(at(0, 18), 0).target == 0       # end is exclusive
    assert Run(policy).tick(at(5, 9), 0).target == 0        # Saturday: no window
    assert Run(policy).tick(at(4, 23), 0).target == 2       # Friday night
    assert Run(policy).tick(at(5, 5, 30), 0).target == 2    # ... until Saturday 06:00
    assert Run(policy).tick(at(3, 23), 0).target == 0       # Thursday night: not in the window
    assert Run(policy).tick(at(4, 12), 0).target == 4       # overlapping days: Friday noon


def test_schedule_utc_offset_and_day_lists() -> None:
    policy = load_policy("schedule", {"windows": [
        {"days": ["sat", "sun"], "start": "00:00", "end": "24:00", "min": 3},
        {"days": "mon-fri", "start": "08:00", "end": "18:00", "min": 4},
    ], "utc_offset_hours": 2})
    assert Run(policy).tick(at(0, 6, 30), 0).target == 4    # 06:30 UTC is 08:30 local
    assert Run(policy).tick(at(4, 23), 0).target == 3       # Friday 23:00 UTC is Saturday local
    assert Run(policy).tick(at(0, 16, 30), 0).target == 0   # 18:30 local


def test_schedule_without_reading_keeps_the_larger_of_intended_and_floor() -> None:
    policy = load_policy("schedule", {"windows": [{"days": "*", "start": "00:00", "end": "24:00",
                                                   "min": 2}]})
    assert Run(policy, actual=5).tick(at(1, 1), depth(None, error="down")).target == 5
    assert Run(policy, actual=1).tick(at(1, 1), depth(None, error="down")).target == 2


# -- composite ------------------------------------------------------------------------------


def readings_of(**values: float | None) -> dict[str, Reading]:
    return {k: Reading(k, v, 0.0, error=None if v is not None else "unreachable")
            for k, v in values.items()}


def test_composite_formula_over_several_readings() -> None:
    policy = load_policy("composite", {"formula": "celery + 2 * spark", "target": 10})
    assert Run(policy).tick(0, readings_of(celery=5, spark=10)).target == 3  # 25 / 10
    fancy = Composite(formula="ceil(a / 3) + floor(b / 4) + min(a, b) + max(a, b, 1) + a // 2 - -1")
    assert fancy.parsed.evaluate({"a": 7, "b": 9}) == 3 + 2 + 7 + 9 + 3 + 1
    assert fancy.parsed.names == {"a", "b"}


def test_composite_fallback_per_sensor_and_hold_without_one() -> None:
    policy = load_policy("composite", {"formula": "celery + spark", "target": 1,
                                       "fallback": {"spark": 4}})
    assert Run(policy).tick(0, readings_of(celery=2, spark=None)).target == 6  # spark -> 4
    run = Run(policy, actual=3)
    decision = run.tick(0, readings_of(celery=None, spark=1))
    assert decision.target == 3 and "celery failed" in decision.reason
    assert Run(policy, actual=3).tick(0, readings_of(celery=2)).target == 6  # missing -> fallback


def test_composite_activation_and_arithmetic_errors_hold() -> None:
    policy = load_policy("composite", {"formula": "a / b", "target": 1, "activation_target": 2})
    assert Run(policy).tick(0, readings_of(a=2, b=1)).target == 0     # 2 <= activation at 0
    assert Run(policy, actual=1).tick(0, readings_of(a=2, b=1)).target == 2
    decision = Run(policy, actual=4).tick(0, readings_of(a=2, b=0))
    assert decision.target == 4 and "ZeroDivisionError" in decision.reason


@pytest.mark.parametrize("formula", [
    "__import__('os').system('true')",
    "celery.__class__",
    "open('/etc/passwd')",
    "celery[0]",
    "celery ** 2",
    "celery if spark else 1",
    "celery > 1",
    "lambda: 1",
    "'text'",
    "True",
    "_private + 1",
    "[celery]",
    "min(*celery)",
    "max(x=1)",
    "ceil(1, 2)",
    "min()",
    "celery; spark",
    "",
])
def test_composite_refuses_anything_but_plain_arithmetic(formula: str) -> None:
    with pytest.raises(ValueError) as err:
        Formula(formula)
    assert "formula" in str(err.value)
    with pytest.raises(PluginParamError):
        load_policy("composite", {"formula": formula})


def test_composite_handles_failing_readings_itself_in_the_manager() -> None:
    assert Composite.handles_errors is True
    sp = spec({"name": "composite", "formula": "celery + 1", "fallback": {"celery": 5}})
    now = 100.0
    obs = observation(sp, {"celery": Reading("celery", None, now, error="broker down")}, now)
    plan = plan_domain(obs, load_policy("composite", sp.policy.params))
    assert plan.decision.target == 6            # the fallback, not the domain's "hold 0"


# -- keda_hpa -------------------------------------------------------------------------------


def test_hpa_value_metric_4_replicas_150_vs_100_gives_6() -> None:
    policy = load_policy("keda_hpa", {"metric_type": "Value", "target": 100})
    assert Run(policy, actual=4).tick(0, 150).target == 6
    assert Run(policy, actual=4).tick(0, 105).target == 4   # |1.05 - 1| <= 0.1: unchanged
    assert Run(policy, actual=4).tick(0, 115).target == 5   # ceil(4 x 1.15)


def test_hpa_average_value_over_the_backlog() -> None:
    policy = load_policy("keda_hpa", {"target": 100})
    assert Run(policy, actual=4).tick(0, 600).target == 6   # 150 per replica vs 100
    assert Run(policy, actual=4).tick(0, 430).target == 4   # ratio 1.075: within tolerance
    assert Run(policy, actual=4).tick(0, 250).target == 3   # no earlier recommendation to hold
    assert Run(policy, actual=2).tick(0, 10_000).target == 6  # scale-up limit max(2 x 2, 2 + 4)
    assert Run(policy, actual=10).tick(0, 10_000).target == 20  # max(10 x 2, 10 + 4)


def test_hpa_stabilization_holds_a_scale_down_for_300_s() -> None:
    run = Run(load_policy("keda_hpa", {"target": 10}), actual=8)
    assert run.tick(0, 80).target == 8
    for t in range(30, 300, 30):
        assert run.tick(t, 20).target == 8, t  # recommendation 2, but 8 was seen in 300 s
    assert run.tick(300, 20).target == 2        # the 8 left the window


def test_hpa_polls_every_30_s_and_holds_between() -> None:
    run = Run(load_policy("keda_hpa", {"target": 10}), actual=2)
    assert run.tick(0, 20).target == 2
    assert run.tick(10, 1000).target == 2       # between polls
    assert run.tick(29, 1000).target == 2
    assert run.tick(30, 60).target == 6


def test_keda_activation_from_zero_and_cooldown_to_zero() -> None:
    policy = load_policy("keda_hpa", {"target": 10, "activation_target": 2})
    assert Run(policy).tick(0, 2).target == 0   # not above activation
    run = Run(policy)
    assert run.tick(0, 50).target == 1          # KEDA activates to 1 ...
    assert run.tick(30, 50).target == 5         # ... then the HPA takes over
    for t in range(60, 330, 30):                # nothing waits from t=60 on: at least 1 until
        assert run.tick(t, 0).target >= 1, t    # 300 s after the last activity (t=30)
    assert run.tick(330, 0).target == 0
    assert run.tick(360, 0).target == 0


# -- ray ------------------------------------------------------------------------------------


def test_ray_pending_launches_capped_by_upscaling_speed_and_launch_limit() -> None:
    policy = load_policy("ray", {})
    assert Run(policy).tick(0, 100).target == 5                # at least 5 pending from nothing
    assert Run(policy, actual=20).tick(0, 100).target == 30    # 20 pending allowed, 10 per round
    assert Run(policy, actual=35).tick(0, depth(100), booting=15).target == 40  # 20 - 15 room
    fast = load_policy("ray", {"upscaling_speed": 2, "max_concurrent_launches": 50})
    assert Run(fast, actual=20).tick(0, 100).target == 60      # 2 x 20 pending
    slots = load_policy("ray", {"slots_per_worker": 4})
    assert Run(slots, actual=2).tick(0, 30).target == 7        # ceil(30 / 4) = 8 needed, 5 launch


def test_ray_scales_down_only_idle_workers_after_the_idle_timeout() -> None:
    policy = load_policy("ray", {})
    assert Run(policy, actual=10).tick(0, depth(3), busy=3).target == 3   # 7 idle may go
    assert Run(policy, actual=10).tick(0, depth(2), busy=6).target == 6   # busy ones stay
    assert Run(policy, actual=10).tick(0, depth(0), busy=0, booting=4).target == 4
    assert Ray.scaling_defaults == {"idle_timeout": 300.0, "stabilization": 0.0}


@pytest.mark.parametrize("cls", [KedaHpa, Ray, SparkDynamicAllocation, AwsTargetTracking, Lookahead])
def test_baselines_scaling_defaults_are_valid_scaling_fields(cls: type) -> None:
    defaults = cls.scaling_defaults  # type: ignore[attr-defined]
    assert set(defaults) <= set(ScalingSpec.model_fields)
    assert ScalingSpec.model_validate(defaults).stabilization == defaults["stabilization"]


# -- spark_da -------------------------------------------------------------------------------


def test_spark_exponential_ramp_1_2_4_8_while_backlogged() -> None:
    run = Run(load_policy("spark_da", {}))
    backlog = depth(100, detail={"ready": 100})
    targets = [run.tick(t, backlog).target for t in range(6)]
    assert targets == [0, 1, 3, 7, 15, 31]      # adds 1, 2, 4, 8, 16 once per second
    assert run.memory["to_add"] == 32


def test_spark_ramp_capped_by_what_pending_tasks_need() -> None:
    run = Run(load_policy("spark_da", {"slots_per_worker": 2}))
    backlog = depth(20, detail={"ready": 20})
    assert [run.tick(t, backlog).target for t in range(6)] == [0, 1, 3, 7, 10, 10]
    assert run.memory["to_add"] == 1            # capped rounds reset the doubling
    ratio = Run(load_policy("spark_da", {"slots_per_worker": 4, "executor_allocation_ratio": 0.5}),
                actual=20)
    assert ratio.tick(0, depth(100, detail={"ready": 50})).target == 13  # ceil(100 x 0.5 / 4)


def test_spark_timeouts_and_backlog_drain() -> None:
    run = Run(load_policy("spark_da", {"scheduler_backlog_timeout": 5,
                                       "sustained_scheduler_backlog_timeout": 2}))
    backlog = depth(50, detail={"ready": 50})
    assert [run.tick(t, backlog).target for t in (0, 4, 5, 6, 7)] == [0, 0, 1, 1, 3]
    # every pending task started (only running ones left): no more rounds, the ramp resets
    running = depth(3, detail={"ready": 0})
    assert run.tick(8, running).target == 3
    assert run.tick(20, running).target == 3
    assert run.memory == {"policy": "spark_da", "target": 3, "to_add": 1, "add_time": None}
    assert run.tick(21, depth(1, detail={"ready": 0})).target == 1  # fewer needed: lower at once
    assert SparkDynamicAllocation.scaling_defaults["idle_timeout"] == 60.0


def test_spark_without_ready_detail_treats_the_backlog_as_pending() -> None:
    run = Run(load_policy("spark_da", {}))
    assert [run.tick(t, 4).target for t in range(4)] == [0, 1, 3, 4]


# -- aws_target_tracking --------------------------------------------------------------------


def test_aws_scale_out_after_3_datapoints_above_target() -> None:
    run = Run(load_policy("aws_target_tracking", {"target": 10}), actual=2)
    for t in range(0, 180, 10):                 # 30 per instance for three minutes
        assert run.tick(t, 60).target == 2, t
    decision = run.tick(180, 60)                # the third datapoint closes: ceil(2 x 30 / 10)
    assert decision.target == 6 and "scale out" in decision.reason
    assert run.memory["points"] == [30.0, 30.0, 30.0]


def test_aws_scale_in_after_15_datapoints_below_90_percent() -> None:
    run = Run(load_policy("aws_target_tracking", {"target": 10}), actual=6)
    for t in range(0, 900, 30):                 # 1 per instance for fifteen minutes
        assert run.tick(t, 6).target == 6, t
    assert run.tick(900, 6).target == 1         # ceil(6 x 1 / 10)
    near = Run(load_policy("aws_target_tracking", {"target": 10}), actual=6)
    for t in range(0, 1800, 60):                # 9.5 per instance: below target, not below 9
        assert near.tick(t, 57).target == 6


def test_aws_datapoints_must_be_consecutive() -> None:
    run = Run(load_policy("aws_target_tracking", {"target": 10}), actual=2)
    for t, backlog in ((0, 60), (60, 60), (120, 10), (180, 60), (240, 60)):
        assert run.tick(t, backlog).target == 2, t   # 30, 30, 5, 30: no three in a row
    gap = Run(load_policy("aws_target_tracking", {"target": 10}), actual=2)
    for t in (0, 60, 200, 260):                 # no data in (120, 180): the run restarts
        assert gap.tick(t, 60).target == 2, t
    assert gap.tick(320, 60).target == 6
    assert AwsTargetTracking.scaling_defaults == {"stabilization": 0.0}


# -- through the manager's pure plan --------------------------------------------------------


def spec(policy: dict[str, Any]) -> Any:
    return parse_domain_spec({"name": "d", "max": 10, "celery": {"app": "tasks"}, "policy": policy,
                              "scaling": {"stabilization": 0}})


def observation(sp: Any, readings: dict[str, Reading], now: float,
                state: DomainState | None = None, nodes: tuple[Any, ...] = ()) -> Observation:
    return Observation(spec=sp, state=state or DomainState(), nodes=nodes, heartbeats={},
                       site_nodes={}, site_available=True, readings=readings, now=now)


PLANS: list[tuple[dict[str, Any], tuple[int, int]]] = [
    ({"name": "threshold"}, (1, 1)),
    ({"name": "drain_time"}, (1, 1)),
    ({"name": "schedule", "windows": [{"days": "*", "start": "00:00", "end": "24:00", "min": 3}]},
     (8, 8)),
    ({"name": "composite", "formula": "celery / 2"}, (4, 4)),
    ({"name": "lookahead"}, (4, 4)),
    ({"name": "keda_hpa"}, (1, 1)),
    ({"name": "ray"}, (5, 5)),
    ({"name": "spark_da"}, (0, 1)),
    ({"name": "aws_target_tracking"}, (0, 0)),
]


@pytest.mark.parametrize("policy, expected", PLANS, ids=[p["name"] for p, _ in PLANS])
def test_each_policy_plugs_into_plan_domain(policy: dict[str, Any],
                                             expected: tuple[int, int]) -> None:
    assert {p["name"] for p, _ in PLANS} == set(NEW)
    sp = spec(policy)
    built = load_policy(sp.policy.name, sp.policy.params)
    state, targets = DomainState(), []
    nodes: tuple[Any, ...] = ()
    for now in (1000.0, 1001.0):
        readings = {"celery": Reading("celery", 8.0, now, detail={"ready": 6, "unacked": 2})}
        plan = plan_domain(observation(sp, readings, now, state, nodes), built)
        assert not [e for kind, e in plan.events if kind == "error"], plan.events
        targets.append(plan.decision.target)
        state = DomainState.from_json(plan.state.to_json())  # memory survives the store's JSON
        nodes = tuple(plan.launches)
    assert tuple(targets) == expected
    if sp.policy.name not in ("schedule", "composite", "ray"):
        assert state.policy_memory, "stateful policies keep their memory across ticks"


def test_memory_left_by_another_policy_is_ignored() -> None:
    run = Run(load_policy("drain_time", {}), actual=2)
    run.tick(0, 10)
    assert run.memory["policy"] == "drain_time" and isinstance(run.memory["samples"], int)
    run.policy = load_policy("threshold", {})  # the domain's policy: block changed
    assert run.tick(1, 10).target == run.intended
    assert run.memory["policy"] == "threshold" and run.memory["samples"] == [[1, 10.0]]


def test_every_policy_block_in_the_docs_builds() -> None:
    import re
    from pathlib import Path

    import yaml

    text = (Path(__file__).resolve().parent.parent / "docs" / "policies.md").read_text()
    found = re.findall(r"```yaml\n(policy:.*?)```", text, re.S)
    blocks = [yaml.safe_load(b)["policy"] for b in found]
    documented = {b["name"] for b in blocks}
    assert documented == set(NEW) | {"fixed", "queue_depth", "wait_target"}
    for block in blocks:
        sp = spec(block)
        assert isinstance(load_policy(sp.policy.name, sp.policy.params), Policy)
        for field in dataclasses.fields(registry.resolve(sp.policy.name)):
            if field.init:
                assert f"`{field.name}`" in text, f"{sp.policy.name}.{field.name} is undocumented"
