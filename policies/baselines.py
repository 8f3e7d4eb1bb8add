"""Re-implementations of well-known autoscalers' sizing rules, as baselines to compare against.

Each class reproduces its anchor's published arithmetic and defaults on this project's inputs
(a backlog reading and a :class:`~pool.core.model.DomainView`); what is simplified is said in its
docstring. ``scaling_defaults`` names the :class:`~pool.core.model.ScalingSpec` fields the anchor
implies (its idle timeout, and ``stabilization: 0`` where the anchor has no window of that
kind or keeps its own in memory); a simulator comparing policies applies them to every field
the domain's ``scaling:`` block does not set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from policies import primary
from policies.common import ceil_, check_count, check_number, recall, remember
from pool.core.model import Decision, DomainView, Reading


def backlog_of(readings: Mapping[str, Reading], sensor: str | None) -> Reading | None:
    """The backlog reading if it was read without error, else ``None``."""
    reading = primary(readings, sensor)
    return reading if reading is not None and reading.ok and reading.value is not None else None


@dataclass(frozen=True)
class KedaHpa:
    """Kubernetes HPA fed by a KEDA external metric, with KEDA's scale to and from zero.

    Sources: Kubernetes docs "Horizontal Pod Autoscaling" (algorithm details, tolerance,
    stabilization window, default scaling behavior) and the HPA replica calculator; KEDA docs
    "Scaling Deployments" and "ScaledObject specification" (pollingInterval 30 s,
    cooldownPeriod 300 s, activation, metricType). Every ``polling_interval`` seconds:

    - at 0 workers: 1 if the metric is above ``activation_target`` (KEDA activates the
      workload, the HPA takes over from 1), else 0;
    - otherwise the HPA recommendation with ``current = view.actual``. ``AverageValue`` (KEDA's
      default for queue scalers; the reading is the total backlog): ratio =
      ``metric / (current × target)``, recommendation = ``ceil(metric / target)``. ``Value``:
      ratio = ``metric / target``, recommendation = ``ceil(current × ratio)``. When
      ``|ratio − 1| <= tolerance`` the recommendation is ``current``. It is at least 1 (the
      HPA's minReplicas under KEDA).
    - scale-down stabilization: below ``current`` the result is the highest recommendation of
      the last ``stabilization_window`` seconds (kept in memory), never above ``current``;
    - scale-up rate, the HPA default behavior: at most
      ``max(ceil(current × (1 + scale_up_percent/100)), current + scale_up_pods)``;
    - scale to zero, KEDA's: when the metric has not been above ``activation_target`` for
      ``cooldown_period`` seconds (the first poll counts as active), 0.

    Between polls the last target is held. Simplified: the HPA's own 15 s sync and the
    metric's 30 s poll are one loop of ``polling_interval``; the rate limit applies per poll
    rather than per 15 s period; readiness of pods and missing-metric handling are left out.

    Memory: ``polled``, ``target``, ``last_active`` and ``recommendations`` (``[time, n]``).

    Parameters:
        target: metric value per worker (> 0; 5, like KEDA's Redis list ``listLength``).
        activation_target: activate from zero above this (>= 0; KEDA's default 0).
        metric_type: ``AverageValue`` (default) or ``Value``.
        tolerance: relative band with no change (>= 0; 0.1).
        stabilization_window: scale-down stabilization seconds (>= 0; 300).
        polling_interval: seconds between decisions (>= 0; 30).
        cooldown_period: seconds without activity before scaling to zero (>= 0; 300).
        scale_up_percent: HPA default scale-up policy, percent per period (>= 0; 100).
        scale_up_pods: HPA default scale-up policy, pods per period (>= 0; 4).
        sensor: which reading is the metric (default: the first).
    """

    scaling_defaults: ClassVar[dict[str, float]] = {"stabilization": 0.0}

    target: float = 5.0
    activation_target: float = 0.0
    metric_type: Literal["AverageValue", "Value"] = "AverageValue"
    tolerance: float = 0.1
    stabilization_window: float = 300.0
    polling_interval: float = 30.0
    cooldown_period: float = 300.0
    scale_up_percent: float = 100.0
    scale_up_pods: int = 4
    sensor: str | None = None

    def __post_init__(self) -> None:
        check_number("target", self.target, above=0)
        for name in (
            "activation_target",
            "tolerance",
            "stabilization_window",
            "polling_interval",
            "cooldown_period",
            "scale_up_percent",
        ):
            check_number(name, getattr(self, name), at_least=0)
        check_count("scale_up_pods", self.scale_up_pods)
        if self.metric_type not in ("AverageValue", "Value"):
            raise ValueError(f"metric_type must be AverageValue or Value, got {self.metric_type!r}")

    def decide(self, view: DomainView, readings: Mapping[str, Reading], now: float) -> Decision:
        mem = recall(view.memory, "keda_hpa")
        if mem.get("polled") is not None and now - mem["polled"] < self.polling_interval:
            left = self.polling_interval - (now - mem["polled"])
            return Decision(int(mem["target"]), f"next poll in {left:.0f}s: hold {mem['target']}")
        reading = backlog_of(readings, self.sensor)
        if reading is None:
            return Decision(view.intended, f"no metric: hold {view.intended}")
        metric, current = max(0.0, float(reading.value or 0.0)), view.actual
        active = metric > self.activation_target
        last_active = now if active else float(mem.get("last_active", now))
        recs = [
            [t, n] for t, n in mem.get("recommendations", []) if now - t < self.stabilization_window
        ]
        inputs: dict[str, Any] = {"metric": metric, "current": current}
        if current == 0:
            target = 1 if active else 0
            sign = ">" if active else "<="
            why = f"at 0: metric {metric:g} {sign} activation {self.activation_target:g}"
        else:
            if self.metric_type == "AverageValue":
                ratio, raw = metric / (current * self.target), math.ceil(metric / self.target)
            else:
                ratio = metric / self.target
                raw = math.ceil(current * ratio)
            rec = max(1, current if abs(ratio - 1) <= self.tolerance else raw)
            recs.append([now, rec])
            target, why = rec, f"ratio {ratio:.3g} (tolerance {self.tolerance:g}): recommend {rec}"
            if rec < current:
                target = min(current, max(n for _, n in recs))
                if target != rec:
                    why += f"; stabilization {self.stabilization_window:g}s holds {target}"
            limit = max(
                math.ceil(current * (1 + self.scale_up_percent / 100)), current + self.scale_up_pods
            )
            if target > limit:
                target, why = limit, why + f"; scale-up limit {limit}"
            if not active and now - last_active >= self.cooldown_period:
                target, why = 0, why + f"; inactive for {now - last_active:.0f}s >= cooldown: to 0"
        memory = remember(
            "keda_hpa",
            {
                "polled": now,
                "target": target,
                "last_active": last_active,
                "recommendations": recs,
            },
        )
        return Decision(target, f"{why} -> {target}", inputs, memory)


@dataclass(frozen=True)
class Ray:
    """Ray cluster autoscaler (v1 ``StandardAutoscaler`` / v2 ``ResourceDemandScheduler``).

    Sources: Ray docs "Configuring Autoscaling" and "Cluster YAML Configuration Options"
    (``upscaling_speed`` default 1.0, at least 5 pending launches whatever the speed;
    ``idle_timeout_minutes`` default 5) and the autoscaler's constants
    (``AUTOSCALER_MAX_CONCURRENT_LAUNCHES`` 10, ``UPSCALING_INITIAL_NUM_NODES`` 5).

    Demand is the backlog (tasks waiting or running); ``needed = ceil(backlog / slots_per_worker)``
    nodes. When more are needed than exist, new launches are capped by the pending-node rule
    ``max_pending = max(5, int(upscaling_speed × max(running, 1)))`` with running = joined
    workers and pending = booting ones: at most ``max_pending − booting`` more, and at most
    ``max_concurrent_launches`` per decision. Ray never removes a node for low demand, only
    nodes idle for ``idle_timeout_minutes``: so when demand fits, the target keeps every busy
    and booting worker (``max(needed, actual − idle)``) and idle ones are removed by the
    manager once idle for ``scaling.idle_timeout`` — ``scaling_defaults`` sets it to 300 s.

    Simplified: one node type and one resource (task slots) instead of bin-packing resource
    shapes; which idle or booting worker goes is the manager's choice.

    Parameters:
        slots_per_worker: tasks one node runs at once (its CPUs / CPUs per task; > 0; 1).
        upscaling_speed: pending nodes allowed as a multiple of running ones (>= 0; 1.0).
        max_concurrent_launches: most launches per decision (>= 1; 10).
        sensor: which reading is the backlog (default: the first).
    """

    scaling_defaults: ClassVar[dict[str, float]] = {"idle_timeout": 300.0, "stabilization": 0.0}
    MIN_PENDING: ClassVar[int] = 5

    slots_per_worker: float = 1.0
    upscaling_speed: float = 1.0
    max_concurrent_launches: int = 10
    sensor: str | None = None

    def __post_init__(self) -> None:
        check_number("slots_per_worker", self.slots_per_worker, above=0)
        check_number("upscaling_speed", self.upscaling_speed, at_least=0)
        check_count("max_concurrent_launches", self.max_concurrent_launches, at_least=1)

    def decide(self, view: DomainView, readings: Mapping[str, Reading], now: float) -> Decision:
        reading = backlog_of(readings, self.sensor)
        if reading is None:
            return Decision(view.intended, f"no demand reading: hold {view.intended}")
        backlog = max(0.0, float(reading.value or 0.0))
        needed = ceil_(backlog / self.slots_per_worker)
        inputs = {"backlog": backlog, "needed": needed}
        if needed <= view.actual:
            target = max(needed, view.actual - view.idle)
            return Decision(
                target,
                f"demand {needed} nodes fits; idle nodes go after the idle timeout -> {target}",
                inputs,
            )
        max_pending = max(self.MIN_PENDING, int(self.upscaling_speed * max(view.joined, 1)))
        room = max(0, max_pending - view.booting)
        launches = min(needed - view.actual, room, self.max_concurrent_launches)
        target = view.actual + launches
        return Decision(
            target,
            f"demand {needed} nodes; pending {view.booting}/{max_pending}, "
            f"launch {launches} -> {target}",
            inputs,
        )


@dataclass(frozen=True)
class SparkDynamicAllocation:
    """Spark dynamic allocation (``ExecutorAllocationManager``).

    Sources: Spark docs "Job Scheduling: Dynamic Resource Allocation" and "Configuration"
    (``spark.dynamicAllocation.schedulerBacklogTimeout`` 1 s,
    ``sustainedSchedulerBacklogTimeout`` = the former, ``executorIdleTimeout`` 60 s,
    ``executorAllocationRatio`` 1) and ``ExecutorAllocationManager.scala``. Arithmetic:

    - ``maxNeeded = ceil((pending + running) × ratio / slots_per_worker)``; the backlog reading
      is pending + running, pending is its ``pending_key`` detail (Celery: ``ready``) or, if
      absent, the whole backlog;
    - if ``maxNeeded < target``: target = ``max(maxNeeded, min)`` and the next round adds 1;
    - else once tasks have been pending for ``scheduler_backlog_timeout`` seconds, and then
      every ``sustained_scheduler_backlog_timeout`` seconds while they stay pending, a round:
      ``target = clamp(min(max(target, joined) + toAdd, maxNeeded))``; ``toAdd`` doubles when
      the round added exactly ``toAdd`` (1, 2, 4, 8 …) and resets to 1 otherwise, at max,
      or when nothing is pending.

    Executors are removed only when idle for ``executorIdleTimeout``: lowering the target
    cancels not-yet-joined workers first and the manager removes idle ones after
    ``scaling.idle_timeout``, which ``scaling_defaults`` sets to 60 s. Simplified: backlog
    start and drain are inferred from the pending count each tick (Spark gets listener
    events), and the initial-executors phase is left out.

    Memory: ``target`` (numExecutorsTarget), ``to_add`` (numExecutorsToAdd), ``add_time``.

    Parameters:
        slots_per_worker: tasks per executor (executor cores / task cpus; >= 1; 1).
        scheduler_backlog_timeout: seconds of backlog before the first round (> 0; 1).
        sustained_scheduler_backlog_timeout: seconds between later rounds (> 0; default: the
            former).
        executor_allocation_ratio: fraction of full parallelism to aim for (in (0, 1]; 1).
        pending_key: detail key of the reading with the not-yet-started tasks (``ready``).
        sensor: which reading is the backlog (default: the first).
    """

    scaling_defaults: ClassVar[dict[str, float]] = {"idle_timeout": 60.0, "stabilization": 0.0}

    slots_per_worker: int = 1
    scheduler_backlog_timeout: float = 1.0
    sustained_scheduler_backlog_timeout: float | None = None
    executor_allocation_ratio: float = 1.0
    pending_key: str = "ready"
    sensor: str | None = None

    def __post_init__(self) -> None:
        check_count("slots_per_worker", self.slots_per_worker, at_least=1)
        check_number("scheduler_backlog_timeout", self.scheduler_backlog_timeout, above=0)
        if self.sustained_scheduler_backlog_timeout is not None:
            check_number(
                "sustained_scheduler_backlog_timeout",
                self.sustained_scheduler_backlog_timeout,
                above=0,
            )
        check_number(
            "executor_allocation_ratio", self.executor_allocation_ratio, above=0, at_most=1
        )

    def decide(self, view: DomainView, readings: Mapping[str, Reading], now: float) -> Decision:
        reading = backlog_of(readings, self.sensor)
        if reading is None:
            return Decision(view.intended, f"no backlog reading: hold {view.intended}")
        total = max(0.0, float(reading.value or 0.0))
        pending = float(reading.detail.get(self.pending_key, total))
        max_needed = ceil_(total * self.executor_allocation_ratio / self.slots_per_worker)
        mem = recall(view.memory, "spark_da")
        target = int(mem.get("target", view.intended))
        to_add = int(mem.get("to_add", 1))
        add_time: float | None = mem.get("add_time")
        sustained = self.sustained_scheduler_backlog_timeout or self.scheduler_backlog_timeout
        if pending <= 0:
            add_time, to_add = None, 1
        elif add_time is None:
            add_time = now + self.scheduler_backlog_timeout
        why = f"maxNeeded {max_needed}, target {target}"
        if max_needed < target:
            target, to_add = max(max_needed, view.min_size), 1
            why += f": lower to {target}"
        elif add_time is not None and now >= add_time:
            if target >= view.max_size:
                to_add, why = 1, why + ": at max"
            else:
                old = target
                target = min(max(target, view.joined) + to_add, max_needed)
                target = max(min(target, view.max_size), view.min_size)
                delta = target - old
                why += f": backlogged, add {delta}"
                to_add = to_add * 2 if delta == to_add else 1
            add_time = now + sustained
        elif add_time is not None:
            why += f": backlogged, next round in {add_time - now:.1f}s"
        memory = remember("spark_da", {"target": target, "to_add": to_add, "add_time": add_time})
        return Decision(
            target, f"{why} -> {target}", {"backlog": total, "pending": pending}, memory
        )


@dataclass(frozen=True)
class AwsTargetTracking:
    """EC2 Auto Scaling target tracking on backlog per instance.

    Sources: AWS docs "Target tracking scaling policies for Amazon EC2 Auto Scaling" and
    "Scaling policy based on Amazon SQS" (backlog per instance = messages / running
    instances). The policy's CloudWatch alarms: scale-out needs ``scale_out_datapoints`` (3)
    consecutive ``period`` (60 s) datapoints above the target; scale-in needs
    ``scale_in_datapoints`` (15) consecutive datapoints below ``target × scale_in_ratio``
    (AWS says scale-in happens when the metric is "usually more than 10% lower" than the
    target: 0.9; the alarms AWS creates for CPU targets have been seen at 0.7). While an alarm
    is in ALARM, each new datapoint sets ``desired = ceil(current × metric / target)``
    (scale-out never lowers, scale-in never raises the desired capacity); otherwise the
    desired capacity holds, and dead instances are replaced to it.

    Each datapoint is the Average of backlog / ``max(view.actual, 1)`` over the ticks of one
    period (from zero instances the whole backlog counts per instance); a period with no tick
    breaks the run of consecutive datapoints. Simplified: instance warm-up and cooldowns are
    left out.

    Memory: ``bucket`` (start of the open period), ``sum`` and ``n`` of its samples, ``points``.

    Parameters:
        target: backlog per instance to hold (> 0; 10).
        period: seconds per datapoint (> 0; 60).
        scale_out_datapoints: consecutive datapoints above target to scale out (>= 1; 3).
        scale_in_datapoints: consecutive datapoints below the scale-in threshold (>= 1; 15).
        scale_in_ratio: scale-in threshold as a fraction of the target (in (0, 1]; 0.9).
        sensor: which reading is the backlog (default: the first).
    """

    scaling_defaults: ClassVar[dict[str, float]] = {"stabilization": 0.0}

    target: float = 10.0
    period: float = 60.0
    scale_out_datapoints: int = 3
    scale_in_datapoints: int = 15
    scale_in_ratio: float = 0.9
    sensor: str | None = None

    def __post_init__(self) -> None:
        check_number("target", self.target, above=0)
        check_number("period", self.period, above=0)
        check_count("scale_out_datapoints", self.scale_out_datapoints, at_least=1)
        check_count("scale_in_datapoints", self.scale_in_datapoints, at_least=1)
        check_number("scale_in_ratio", self.scale_in_ratio, above=0, at_most=1)

    def decide(self, view: DomainView, readings: Mapping[str, Reading], now: float) -> Decision:
        reading = backlog_of(readings, self.sensor)
        if reading is None:
            return Decision(view.intended, f"no backlog reading: hold {view.intended}")
        per_instance = max(0.0, float(reading.value or 0.0)) / max(view.actual, 1)
        mem = recall(view.memory, "aws_target_tracking")
        bucket = float(mem.get("bucket", now))
        total, n, points = (
            float(mem.get("sum", 0.0)),
            int(mem.get("n", 0)),
            list(mem.get("points", [])),
        )
        closed: float | None = None
        if now - bucket >= self.period:
            if now - bucket >= 2 * self.period:
                points = []  # a period without data breaks the run
            if n:
                closed = total / n
                points = (points + [closed])[
                    -max(self.scale_out_datapoints, self.scale_in_datapoints) :
                ]
            bucket += self.period * math.floor((now - bucket) / self.period)
            total, n = 0.0, 0
        memory = remember(
            "aws_target_tracking",
            {"bucket": bucket, "sum": total + per_instance, "n": n + 1, "points": points},
        )
        desired, why = (
            view.intended,
            f"{len(points)} datapoints, none alarming: hold {view.intended}",
        )
        if closed is not None:
            proposal = math.ceil(max(view.actual, 1) * closed / self.target)
            high, low = points[-self.scale_out_datapoints :], points[-self.scale_in_datapoints :]
            if len(high) == self.scale_out_datapoints and all(p > self.target for p in high):
                desired = max(view.intended, proposal)
                why = f"{len(high)} datapoints > {self.target:g} (last {closed:.3g}): scale out"
            elif len(low) == self.scale_in_datapoints and all(
                p < self.target * self.scale_in_ratio for p in low
            ):
                desired = min(view.intended, proposal)
                floor = self.target * self.scale_in_ratio
                why = f"{len(low)} datapoints < {floor:g} (last {closed:.3g}): scale in"
        return Decision(desired, f"{why} -> {desired}", {"per_instance": per_instance}, memory)
