"""Drain-time targeting: enough workers to clear the backlog within a target duration."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from policies import primary
from policies.common import ceil_, check_number, recall, remember
from pool.core.model import Decision, DomainView, Reading


@dataclass(frozen=True)
class DrainTime:
    """``target = ceil(backlog × service_time / target_duration)``.

    The idea of Dask's adaptive deployments (``Adaptive(target_duration=...)``): ask for as many
    workers as would finish the known work in ``target_duration`` seconds. ``service_time`` is
    **worker-seconds per task**: how long one worker is occupied per task on average (a task's
    run time divided by how many tasks one worker runs at once). It comes from, in order:

    1. the reading named ``service_time_sensor``, if set and read without error (its value is a
       task's run time in seconds, divided by ``slots_per_worker``);
    2. the detail key ``service_time_key`` of the backlog reading, if the sensor reports it
       (same meaning, same division);
    3. an online estimate kept in memory: between two ticks in which the backlog *fell*,
       ``sample = worker-seconds / tasks completed`` where tasks completed is the fall of the
       backlog (the Celery sensor counts ready plus unacknowledged messages, so a task leaves
       the backlog when it is acknowledged, i.e. done) and worker-seconds is the mean of the
       busy workers at both ticks (or of the joined workers, if none was reported busy) times
       the seconds between the ticks. Samples are blended into an EWMA with weight
       ``smoothing`` (Dask averages task durations with weight 0.5). Ticks where the backlog
       rose or stayed put are skipped: arrivals hide completions, so only falls are counted;
       overlapping arrivals make the estimate too high, never too low (more workers, not fewer).
       Before the first sample the prior ``initial_service_time`` is used (0.5 s: Dask's
       ``distributed.scheduler.unknown-task-duration``).

    Memory: ``service_time`` (the EWMA), ``samples`` (how many went in) and ``prev``
    (time, backlog, busy and joined workers of the previous tick).

    Parameters:
        target_duration: seconds in which the backlog should be drained (> 0; Dask's default 5).
        initial_service_time: prior worker-seconds per task before any estimate (> 0; 0.5).
        smoothing: EWMA weight of the newest sample, in (0, 1] (default 0.5).
        slots_per_worker: tasks one worker runs at once; divides measured run times (> 0; 1).
        sensor: which reading is the backlog (default: the first).
        service_time_sensor: a reading whose value is the measured task run time, if any.
        service_time_key: detail key of the backlog reading holding the task run time.
    """

    target_duration: float = 5.0
    initial_service_time: float = 0.5
    smoothing: float = 0.5
    slots_per_worker: float = 1.0
    sensor: str | None = None
    service_time_sensor: str | None = None
    service_time_key: str = "service_time"

    def __post_init__(self) -> None:
        check_number("target_duration", self.target_duration, above=0)
        check_number("initial_service_time", self.initial_service_time, above=0)
        check_number("slots_per_worker", self.slots_per_worker, above=0)
        check_number("smoothing", self.smoothing, above=0, at_most=1)

    def decide(self, view: DomainView, readings: Mapping[str, Reading], now: float) -> Decision:
        reading = primary(readings, self.sensor)
        if reading is None or not reading.ok or reading.value is None:
            return Decision(view.intended, f"no backlog reading: hold {view.intended}")
        backlog = max(0.0, reading.value)
        mem = recall(view.memory, "drain_time")
        estimate = float(mem.get("service_time", self.initial_service_time))
        samples = int(mem.get("samples", 0))
        prev = mem.get("prev")
        if prev and now > prev["time"] and prev["backlog"] > backlog:
            workers = (prev["busy"] + view.busy) / 2 or (prev["joined"] + view.joined) / 2
            if workers > 0:
                sample = workers * (now - prev["time"]) / (prev["backlog"] - backlog)
                estimate = self.smoothing * sample + (1 - self.smoothing) * estimate
                samples += 1

        measured = readings.get(self.service_time_sensor) if self.service_time_sensor else None
        if (
            measured is not None
            and measured.ok
            and measured.value is not None
            and measured.value > 0
        ):
            service, source = (
                measured.value / self.slots_per_worker,
                f"sensor {self.service_time_sensor}",
            )
        elif reading.detail.get(self.service_time_key, 0) > 0:
            service = reading.detail[self.service_time_key] / self.slots_per_worker
            source = f"detail {self.service_time_key}"
        else:
            service, source = estimate, (f"estimate of {samples} samples" if samples else "prior")

        target = ceil_(backlog * service / self.target_duration)
        memory = remember(
            "drain_time",
            {
                "service_time": estimate,
                "samples": samples,
                "prev": {"time": now, "backlog": backlog, "busy": view.busy, "joined": view.joined},
            },
        )
        return Decision(
            target,
            f"backlog {backlog:g} x {service:.3g} s/task ({source})"
            f" / {self.target_duration:g}s -> {target}",
            {"backlog": backlog, "service_time": service},
            memory,
        )
