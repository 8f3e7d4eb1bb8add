"""Spark pending tasks: the backlog of the applications running on a standalone master."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pool.core.model import Reading
from sensors import Throttled
from spark.rest import Unreachable, app_api, driver_ui_of, master_state, memory_mb


@dataclass
class SparkTasksSensor(Throttled):
    """Tasks waiting for or holding an executor slot, over every application on one master.

    The master's ``/json/`` lists the applications (``activeapps``: RUNNING or WAITING for
    cores) and the cluster's ``cores`` / ``coresused``; each application's driver is found from
    the master's page of that application (its "Application Detail UI" link), never configured
    by hand. From each driver's monitoring REST API:

    - ``/api/v1/applications/<id>/stages?status=active``: per stage ``numTasks`` minus
      ``numActiveTasks`` minus ``numCompleteTasks`` is pending; ``numActiveTasks`` is running;
    - ``/api/v1/applications/<id>/executors``: live executors and their free task slots
      (``maxTasks - activeTasks``).

    The detail's ``completions`` counts the tasks the executors report finished (``completedTasks``
    plus ``failedTasks``, kept per application as the most seen, so executors and applications
    that leave keep theirs) since the sensor began, and ``arrivals`` is that plus pending and
    running tasks (tasks of stages not yet submitted are not known to the driver's API).

    The value is pending + running tasks; ``waiting_apps`` and ``waiting_app_age`` (seconds since
    the youngest of them started) tell of applications still waiting for their first executors.
    A master or driver UI that does not answer gives a reading with ``error`` set (one line),
    never an exception.

    Parameters:
        master_ui: the master's web UI (``http://127.0.0.1:PORT``); the domain's master service
            provides it.
        worker_cores: task slots of one worker (reported as ``slots_per_worker``).
        worker_memory: memory one worker offers (``512m``); an application asking more per
            executor can never run on this domain, which is reported as an error.
        timeout: seconds before one request gives up.
        min_interval: a read sooner than this many seconds after the last one answers with the
            last reading again, so that a fast decider does not load the drivers.
    """

    master_ui: str | None = None
    worker_cores: int | str = 1
    worker_memory: str | None = None
    timeout: float = 2.0
    min_interval: float = 1.0
    name: str = "spark"
    _drivers: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    #: tasks finished per application (the most its executors reported), and by applications that ended
    _finished: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _finished_before: int = field(default=0, init=False, repr=False)
    _last: Reading | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            self.worker_cores = int(self.worker_cores)
        except (TypeError, ValueError):
            raise ValueError(f"worker_cores must be a whole number >= 1, got {self.worker_cores!r}") from None
        if self.worker_cores < 1:
            raise ValueError(f"worker_cores must be a whole number >= 1, got {self.worker_cores!r}")
        if self.worker_memory is not None:
            memory_mb(self.worker_memory)  # raises with the expected form
        if self.master_ui is not None and not self.master_ui.startswith(("http://", "https://")):
            raise ValueError(f"master_ui {self.master_ui!r}: expected the master's web UI, http://host:port")

    def _read(self, now: float) -> Reading:
        if not self.master_ui:
            return Reading(self.name, None, now,
                           error="no Spark master for this domain yet (the manager starts it: `pool up`)")
        try:
            state = master_state(self.master_ui, timeout=self.timeout)
        except Unreachable as exc:
            return Reading(self.name, None, now, error=str(exc))
        apps = [a for a in state.get("activeapps", []) if a.get("state") in ("RUNNING", "WAITING")]
        waiting = [a for a in apps if a.get("state") == "WAITING"]
        detail: dict[str, float] = {
            "apps": len(apps),
            "waiting_apps": len(waiting),
            "workers": float(state.get("aliveworkers", len(state.get("workers", [])))),
            "cores": float(state.get("cores", 0)),
            "coresused": float(state.get("coresused", 0)),
            "slots_per_worker": float(self.worker_cores),
        }
        if waiting:  # seconds since the youngest application waiting for its first executors started
            detail["waiting_app_age"] = min(float(a.get("duration", 0)) for a in waiting) / 1000.0
        pending = running = executors = free = 0
        errors: list[str] = []
        for app in apps:
            try:
                counts = self._read_app(app)
            except Unreachable as exc:
                self._drivers.pop(str(app.get("id")), None)
                errors.append(str(exc))
                continue
            except (KeyError, TypeError, ValueError) as exc:
                errors.append(f"app {app.get('id')}: unexpected REST answer ({type(exc).__name__}: {exc})")
                continue
            pending, running = pending + counts[0], running + counts[1]
            executors, free = executors + counts[2], free + counts[3]
        for gone in set(self._drivers) - {str(a.get("id")) for a in apps}:
            del self._drivers[gone]
        for gone in set(self._finished) - {str(a.get("id")) for a in apps}:
            self._finished_before += self._finished.pop(gone)
        completions = self._finished_before + sum(self._finished.values())
        detail.update(pending=pending, running=running, executors=executors, free_slots=free,
                      completions=float(completions), arrivals=float(completions + pending + running))
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            return Reading(self.name, None, now, error=errors[0] + more, detail=detail)
        return Reading(self.name, float(pending + running), now, detail=detail)

    def _read_app(self, app: dict[str, Any]) -> tuple[int, int, int, int]:
        """(pending, running, executors, free slots) of one application."""
        app_id = str(app["id"])
        asked = app.get("memoryperexecutor")
        if self.worker_memory is not None and asked and int(asked) > memory_mb(self.worker_memory):
            raise Unreachable(
                f"app {app_id} asks {asked} MB per executor but workers offer {memory_mb(self.worker_memory)}"
                f" MB: it can never run here; set spark.executor.memory <= {self.worker_memory}"
            )
        driver = self._drivers.get(app_id)
        if driver is None:
            driver = driver_ui_of(self.master_ui or "", app_id, timeout=self.timeout)
            if driver is None:
                raise Unreachable(f"app {app_id}: the master shows no driver UI (spark.ui.enabled=false?)")
            self._drivers[app_id] = driver
        pending = running = 0
        for stage in app_api(driver, app_id, "stages?status=active", timeout=self.timeout):
            total, active = int(stage["numTasks"]), int(stage["numActiveTasks"])
            pending += max(0, total - active - int(stage["numCompleteTasks"]))
            running += active
        executors = free = finished = 0
        for ex in app_api(driver, app_id, "executors", timeout=self.timeout):
            if ex.get("id") == "driver":
                continue
            finished += int(ex.get("completedTasks", 0)) + int(ex.get("failedTasks", 0))
            if not ex.get("isActive", True):
                continue
            executors += 1
            free += max(0, int(ex.get("maxTasks", 0)) - int(ex.get("activeTasks", 0)))
        self._finished[app_id] = max(finished, self._finished.get(app_id, 0))  # executors that left keep theirs
        return pending, running, executors, free

    def close(self) -> None:
        self._drivers.clear()
        self._last = None
