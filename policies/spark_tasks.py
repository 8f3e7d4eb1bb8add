"""Spark task backlog: one worker per task slot needed, ramped up exponentially as Spark does."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from policies import primary
from pool.core.model import Decision, DomainView, Reading


@dataclass(frozen=True)
class SparkTasks:
    """``target = ceil(allocation_ratio × (pending + running) / slots_per_worker)``.

    Pending and running tasks come from the ``spark`` sensor (its value is pending + running; its
    ``pending``, ``running`` and ``slots_per_worker`` details are used when present). An
    application that has just started and waits for its first executors gets
    ``initial_workers`` at once, before it submits a task (Spark's initialExecutors), so its
    executors boot while its driver prepares the first stage. Growth is
    ramped like Spark's dynamic allocation: at most ``step`` workers are added per round, rounds are
    ``ramp_interval`` seconds apart, and ``step`` doubles (1, 2, 4, ...) while each round adds its
    full step; it resets to 1 once the backlog is covered. Shrinking follows the backlog at once:
    the manager keeps idle workers for ``scaling.idle_timeout`` (Spark's executorIdleTimeout, which
    a spark-worker domain takes from ``spark.idle_timeout``, default 60 s) and drains busy ones.

    Recommended ``scaling:`` for a Spark domain: ``idle_timeout: 60`` (or the short one of a batch
    domain), ``stabilization: 10``, ``scale_up_limit: 0`` and ``max_in_flight: 0`` (this policy
    ramps itself), ``activation: 0``, ``fallback: hold``.

    Memory: ``step`` (the next round's step) and ``at`` (when the last round added workers).

    Parameters:
        slots_per_worker: tasks one worker runs at once (its cores / spark.task.cpus); default:
            the sensor's ``slots_per_worker`` detail, else 1.
        allocation_ratio: fraction of full parallelism to aim for, in (0, 1] (Spark's
            executorAllocationRatio).
        exponential_ramp: ramp up as above; False jumps straight to the target (the manager's
            ``scaling.scale_up_limit`` still applies).
        ramp_interval: seconds between two ramp rounds (Spark's sustainedSchedulerBacklogTimeout).
        initial_workers: workers for each application waiting for its first executors (>= 0).
        initial_window: only applications younger than this many seconds count as just started
            (an idle notebook that lost its workers long ago does not bring one back by itself).
        sensor: which reading to use when the domain has several (default: the first).
    """

    slots_per_worker: int | None = None
    allocation_ratio: float = 1.0
    exponential_ramp: bool = True
    ramp_interval: float = 1.0
    initial_workers: int = 1
    initial_window: float = 60.0
    sensor: str | None = None

    def __post_init__(self) -> None:
        if self.slots_per_worker is not None and (
            isinstance(self.slots_per_worker, bool) or not isinstance(self.slots_per_worker, int)
            or self.slots_per_worker < 1
        ):
            raise ValueError(f"slots_per_worker must be a whole number >= 1, got {self.slots_per_worker!r}")
        ratio = self.allocation_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
            raise ValueError(f"allocation_ratio must be a number in (0, 1], got {ratio!r}")
        for name in ("ramp_interval", "initial_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
        initial = self.initial_workers
        if isinstance(initial, bool) or not isinstance(initial, int) or initial < 0:
            raise ValueError(f"initial_workers must be a whole number >= 0, got {initial!r}")

    def decide(self, view: DomainView, readings: Mapping[str, Reading], now: float) -> Decision:
        reading = primary(readings, self.sensor)
        if reading is None or reading.value is None:
            return Decision(view.intended, "no reading: hold", {})
        detail = reading.detail
        backlog = max(0.0, float(reading.value))
        running = max(0.0, float(detail.get("running", 0.0)))
        pending = max(0.0, float(detail.get("pending", backlog - running)))
        slots = self.slots_per_worker or max(1, int(detail.get("slots_per_worker", 1)))
        needed = math.ceil(self.allocation_ratio * (pending + running) / slots - 1e-9)
        inputs = {"pending": pending, "running": running, "slots_per_worker": slots, "needed": needed}
        head = f"{pending:g} pending + {running:g} running tasks / {slots} slots per worker -> {needed}"
        waiting = int(detail.get("waiting_apps", 0))
        for_new_apps = False  # the first workers of a new application are not gated by the task count
        if waiting and float(detail.get("waiting_app_age", math.inf)) <= self.initial_window:
            initial = waiting * self.initial_workers
            if initial > needed:
                needed, for_new_apps = initial, True
                head += f"; {waiting} new application(s) waiting for executors -> {needed}"
            inputs["needed"] = needed
        if needed <= view.actual or not self.exponential_ramp:
            return Decision(needed, head, inputs, memory={"step": 1, "at": None}, activation=not for_new_apps)
        step = max(1, int(view.memory.get("step", 1)))
        last = view.memory.get("at")
        if last is not None and now - float(last) < self.ramp_interval:
            target = min(needed, max(view.intended, view.actual))
            return Decision(target, f"{head}; ramp: next round in {self.ramp_interval - (now - float(last)):.1f}s",
                            inputs, memory=dict(view.memory), activation=not for_new_apps)
        add = min(step, needed - view.actual)
        target = view.actual + add
        nxt = step * 2 if add == step and target < needed else 1
        return Decision(target, f"{head}; ramp +{add} (next round +{nxt})", inputs,
                        memory={"step": nxt, "at": now}, activation=not for_new_apps)
