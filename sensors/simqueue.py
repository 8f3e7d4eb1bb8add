"""Simulated queue depth: ready plus running tasks of a queue that a simulation registered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Protocol

from pool.core.model import Reading
from sensors import Sensor, error_text, load_sensor


class SimulatedQueue(Protocol):
    """What a simulation's task queue shows a sensor."""

    def depth(self) -> tuple[int, int]:
        """``(ready, running)`` tasks now. A queue may also offer ``counters() -> (arrived, finished)``:
        tasks that entered and left it since it began (the sensor's ``arrivals`` / ``completions``)."""
        ...


@dataclass
class SimQueueSensor:
    """Backlog of a simulated queue: tasks waiting plus tasks running, like Celery's ready + unacked;
    ``arrivals`` and ``completions`` counters in the detail when the queue counts them.

    Parameters:
        queue: the name of the simulation's queue (the simulation attaches it: :func:`attach`).
    """

    #: not a spec parameter: the simulation that owns the queue attaches it (see :func:`attach`)
    OPERATOR_ONLY: ClassVar[frozenset[str]] = frozenset({"source"})

    queue: str = "default"
    name: str = "sim_queue"
    source: SimulatedQueue | None = None

    def read(self, now: float) -> Reading:
        if self.source is None:
            return Reading(self.name, None, now, error=f"no simulated queue attached for {self.queue!r}: sim_queue "
                           "reads only the queues of `pool simulate` and the simulated fleet")
        try:
            ready, running = self.source.depth()
            counters = getattr(self.source, "counters", None)
            counted = counters() if callable(counters) else None
        except Exception as exc:  # noqa: BLE001 (a sensor reports, never raises)
            return Reading(self.name, None, now, error=error_text(exc))
        detail: dict[str, float] = {"ready": ready, "unacked": running}
        if counted is not None:  # tasks arrived and finished since the queue began, when it counts them
            detail["arrivals"], detail["completions"] = float(counted[0]), float(counted[1])
        return Reading(self.name, float(ready + running), now, detail=detail)

    def close(self) -> None:
        pass


def attach(queues: Mapping[str, SimulatedQueue]) -> Callable[[str, Mapping[str, Any]], Sensor]:
    """A sensor factory for a simulation's manager: sensors are built as usual, and each ``sim_queue``
    sensor is attached to the simulation's queue of its ``queue`` name (injected, no module state)."""

    def build(name: str, params: Mapping[str, Any]) -> Sensor:
        sensor = load_sensor(name, params)
        if isinstance(sensor, SimQueueSensor):
            sensor.source = queues.get(sensor.queue)
        return sensor

    return build
