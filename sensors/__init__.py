"""Sensor registry: sensors read one number from the world and return typed readings."""

from __future__ import annotations

from typing import Any, Mapping, Protocol, runtime_checkable

from pool.core.model import Reading, Registry

ALIASES: dict[str, str] = {
    "celery": "sensors.celery:CeleryQueueSensor",
    "spark": "sensors.spark:SparkTasksSensor",
    "condor": "sensors.condor:CondorIdleSensor",
    "slurm": "sensors.slurm:SlurmQueueSensor",
    "sim_queue": "sensors.simqueue:SimQueueSensor",
}

registry = Registry("sensor", "elastic_pool.sensors", ALIASES)


@runtime_checkable
class Sensor(Protocol):
    """Reads the world; never decides. A failure is a reading with ``error`` set, not an exception."""

    name: str

    def read(self, now: float) -> Reading: ...

    def close(self) -> None: ...


class Throttled:
    """A read sooner than ``min_interval`` seconds after the last answers with the last reading, so
    that a fast decider does not load what the sensor queries. Subclasses give ``_read(now)`` and a
    ``_last: Reading | None`` field."""

    min_interval: float
    _last: Reading | None

    def read(self, now: float) -> Reading:
        last = self._last
        if last is not None and 0 <= now - last.time < self.min_interval:
            return last
        self._last = self._read(now)
        return self._last

    def _read(self, now: float) -> Reading:
        raise NotImplementedError


def load_sensor(name: str, params: Mapping[str, Any]) -> Sensor:
    sensor = registry.build(name, dict(params))
    assert isinstance(sensor, Sensor)
    return sensor


def error_text(exc: BaseException) -> str:
    """One line naming what failed, secrets masked and at most about 300 characters."""
    from pool.core.secrets import redact_text

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = redact_text(text)
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
