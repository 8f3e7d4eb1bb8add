"""Boot-aware queue draining: launch only the workers worth their boot, given what the pool will finish anyway."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from policies import primary
from policies.common import ceil_, check_number, recall, remember, split_backlog
from pool.core.model import Decision, DomainView, Reading

#: Weight, in finished tasks, of the ``service_time`` prior before drains refine it.
PRIOR_TASKS = 5.0
#: Half-life, seconds, of the drains the service-time estimate remembers.
FORGET = 600.0


@dataclass(frozen=True)
class Lookahead:
    """Size the pool so queued work drains within a horizon worth a boot; shrink as workers go idle.

    A new worker costs about ``boot_time`` worker-seconds before it does anything (billed from the
    launch request); its work would be done by someone anyway. Launching it when the queue would
    take ``T`` seconds to drain saves, in a fluid picture, about ``(T - boot_time)² / (2 × service)``
    task-seconds of waiting. With ``patience`` = task-seconds of waiting one worker-second is worth,
    a launch pays off only if ``T`` exceeds the horizon
    ``H = boot_time + sqrt(2 × patience × service × boot_time)``. So, while tasks wait:

    ``target = max(joined, ceil((ready + running / 2) × service / H / slots_per_worker))``

    (a running task has on average half its run left), held at its highest value until the queue
    is empty, so launches already under way for this queue are not cancelled. With no task
    waiting, ``target`` is the workers that are busy: idle ones go at once (set the domain's
    ``scaling.idle_timeout`` / ``stabilization`` to 0, as ``scaling_defaults`` does). Work that
    current workers finish before a new one could boot launches nothing; a steady stream settles
    with a standing queue (at most about ``H - service / 2`` seconds of wait) and every worker busy.

    ``service`` (seconds of work per task) starts at ``service_time`` and is refined from clean
    drains: ticks where tasks wait, the backlog falls and nothing arrived for ``boot_time``
    seconds, so every fall is a finished task (running task-seconds / tasks finished, ratio of
    sums, half-life 10 minutes, the prior counting as 5 tasks).

    Memory: ``prev`` (time, backlog, ready), ``last_rise``, ``work``, ``done``, ``peak``.

    Parameters:
        boot_time: seconds from a launch request to a worker pulling work (> 0; 40, EC2-like).
        service_time: prior seconds of work per task (> 0; 60).
        patience: task-seconds of waiting one worker-second is worth (> 0; 2). Lower: faster, costlier.
        slots_per_worker: tasks one worker runs at once (> 0; 1).
        learn: refine the service time from drains (default true).
        sensor: which reading is the backlog (default: the first); its ``ready`` detail is the
            waiting part (else backlog minus busy slots).
    """

    scaling_defaults: ClassVar[dict[str, float]] = {"stabilization": 0.0, "idle_timeout": 0.0}

    boot_time: float = 40.0
    service_time: float = 60.0
    patience: float = 2.0
    slots_per_worker: float = 1.0
    learn: bool = True
    sensor: str | None = None

    def __post_init__(self) -> None:
        for name in ("boot_time", "service_time", "patience", "slots_per_worker"):
            check_number(name, getattr(self, name), above=0)
        if not isinstance(self.learn, bool):
            raise ValueError(f"learn must be true or false, got {self.learn!r}")

    def decide(self, view: DomainView, readings: Mapping[str, Reading], now: float) -> Decision:
        reading = primary(readings, self.sensor)
        if reading is None or not reading.ok or reading.value is None:
            return Decision(view.intended, f"no backlog reading: hold {view.intended}")
        slots = self.slots_per_worker
        backlog, ready, running = split_backlog(view.busy, reading.value, reading.detail, slots)
        mem = recall(view.memory, "lookahead")
        t0, before, ready_before = mem.get("prev") or (now, backlog, ready)
        rose = backlog > before
        last_rise = now if rose or "last_rise" not in mem else float(mem["last_rise"])
        work, done = float(mem.get("work", 0.0)), float(mem.get("done", 0.0))
        dt = now - t0
        clean = ready > 0 and ready_before > 0 and backlog < before and now - last_rise >= self.boot_time
        if self.learn and dt > 0 and clean:
            keep = 0.5 ** (dt / FORGET)
            work, done = work * keep + running * dt, done * keep + before - backlog
        service = (work + PRIOR_TASKS * self.service_time) / (done + PRIOR_TASKS)
        horizon = self.boot_time + math.sqrt(2 * self.patience * service * self.boot_time)
        if ready > 0:
            peak = max(int(mem.get("peak", 0)), ceil_((ready + running / 2) * service / horizon / slots))
            target = max(view.joined, peak)
            why = f"{ready:g} waiting, {running:g} running: drain in {horizon:.0f}s needs {peak}"
        else:
            peak, target = 0, ceil_(running / slots)
            why = f"nothing waiting: keep the {target} busy"
        inputs: dict[str, Any] = {"ready": ready, "running": running, "service_time": service,
                                  "horizon": horizon}
        memory = remember("lookahead", {"prev": [now, backlog, ready], "last_rise": last_rise,
                                        "work": work, "done": done, "peak": peak})
        return Decision(target, f"{why} (service {service:.3g}s) -> {target}", inputs, memory)
