"""Simulated queue depth: ready plus running tasks of a queue that a simulation registered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pool.core.model import Reading
from sensors import error_text


class SimulatedQueue(Protocol):
    """What a simulation's task queue shows a sensor."""

    def depth(self) -> tuple[int, int]:
        """``(ready, running)`` tasks now."""
        ...


#: Queues a simulation has registered, by name: the sensor's only window on the simulated world.
QUEUES: dict[str, SimulatedQueue] = {}


def register(name: str, queue: SimulatedQueue) -> None:
    """Make ``queue`` readable by ``sim_queue`` sensors whose ``queue`` parameter is ``name``."""
    QUEUES[name] = queue


def unregister(name: str) -> None:
    QUEUES.pop(name, None)


@dataclass
class SimQueueSensor:
    """Backlog of a simulated queue: tasks waiting plus tasks running, like Celery's ready + unacked.

    Parameters:
        queue: the name the simulation registered its queue under.
    """

    queue: str = "default"
    name: str = "sim_queue"

    def read(self, now: float) -> Reading:
        source = QUEUES.get(self.queue)
        if source is None:
            return Reading(self.name, None, now, error=f"no simulated queue named {self.queue!r}; "
                           f"registered: {', '.join(sorted(QUEUES)) or 'none'}")
        try:
            ready, running = source.depth()
        except Exception as exc:  # noqa: BLE001 (a sensor reports, never raises)
            return Reading(self.name, None, now, error=error_text(exc))
        return Reading(self.name, float(ready + running), now, detail={"ready": ready, "unacked": running})

    def close(self) -> None:
        pass
