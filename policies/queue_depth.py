"""Target tracking on queue depth: one worker per ``tasks_per_worker`` waiting or running tasks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from policies import primary
from pool.core.model import Decision, DomainView, Reading


@dataclass(frozen=True)
class QueueDepth:
    """``target = ceil(backlog / tasks_per_worker)``.

    The backlog is the sensor value: for Celery, ready plus in-flight (unacked) messages, so a
    worker busy with the last task is not counted as spare. Clamping to min/max, the 0 -> 1
    activation threshold, the scale-up limit per tick and the scale-down stabilization window
    are applied by the manager (``scaling:`` in the domain spec) for every policy.

    Parameters:
        tasks_per_worker: backlog one worker is meant to absorb (> 0).
        sensor: which reading to use when the domain has several (default: the first).
    """

    tasks_per_worker: float = 1.0
    sensor: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.tasks_per_worker, (int, float)) or self.tasks_per_worker <= 0:
            raise ValueError(f"tasks_per_worker must be a number > 0, got {self.tasks_per_worker!r}")

    def decide(self, view: DomainView, readings: Mapping[str, Reading], now: float) -> Decision:
        reading = primary(readings, self.sensor)
        if reading is None or reading.value is None:
            return Decision(view.intended, "no reading: hold", {})
        backlog = max(0.0, reading.value)
        target = math.ceil(backlog / self.tasks_per_worker)
        return Decision(
            target,
            f"backlog {backlog:g} / {self.tasks_per_worker:g} per worker -> {target}",
            {"backlog": backlog},
        )
