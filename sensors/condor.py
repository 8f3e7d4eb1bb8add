"""HTCondor idle jobs: the work a condor-startd domain's workers could run, in workers' worth.

Imports ``pool.core`` and ``sensors``; htcondor2 and classad2 when reading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pool.core.model import Reading
from sensors import Throttled, error_text

IDLE, RUNNING, HELD = 1, 2, 5
JOB_ATTRS = ["ClusterId", "ProcId", "JobStatus", "RequestCpus", "RequestMemory", "RequestDisk"]


def _number(ad: Any, attr: str, default: float) -> float:
    """An attribute evaluated in its own ad (RequestMemory is often an expression); ``default`` if not a number."""
    try:
        value = ad.eval(attr) if attr in ad else default
    except Exception:  # noqa: BLE001  (an expression that does not evaluate here)
        return default
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


@dataclass
class CondorIdleSensor(Throttled):
    """Idle jobs that fit this domain's worker, plus the jobs running on its startds.

    Per read: one query of the collector (the schedds, and this domain's claimed slots) and one
    query per schedd, projected to the attributes used, for idle and held jobs matching
    ``constraint``. An idle job counts as its share of a worker, ``max(RequestCpus / worker_cpus,
    RequestMemory / worker_memory, RequestDisk / worker_disk)`` summed per resource; a job that
    fits no worker and a held job are not counted, and ``notes`` say how many and why (the
    manager writes them to the domain's event log when they change). Running jobs count by the
    CPUs and memory of the claimed slots of the domain's startds. The value is the sum, in
    workers. A collector or schedd that does not answer gives a reading with ``error`` set. The
    detail's ``arrivals`` / ``completions`` are the schedds' ``JobsSubmitted`` / ``JobsCompleted``
    statistics summed (every job of those schedds since they started, not only this domain's),
    when every schedd's ad has them.

    Parameters:
        collector: the pool's collector (``host:port``); the domain's central manager service gives it.
        domain: the ``PoolDomain`` of this domain's startds.
        schedds: names of the schedds to read (default: every schedd the collector lists).
        constraint: a ClassAd expression an idle job must match to be this domain's.
        worker_cpus, worker_memory (MB), worker_disk (KiB): the size of one worker's slot.
        min_interval: a read sooner than this after the last answers with the last reading.
    """

    collector: str | None = None
    domain: str | None = None
    schedds: list[str] | tuple[str, ...] = ()
    constraint: str | None = None
    worker_cpus: int | str = 1
    worker_memory: int | str = 1024
    worker_disk: int | str = 10 * 1024 * 1024
    timeout: float = 2.0
    min_interval: float = 1.0
    name: str = "condor"
    _last: Reading | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        for attr in ("worker_cpus", "worker_memory", "worker_disk"):
            try:
                value = int(getattr(self, attr))
            except (TypeError, ValueError):
                raise ValueError(f"{attr} must be a whole number >= 1, got {getattr(self, attr)!r}") from None
            if value < 1:
                raise ValueError(f"{attr} must be a whole number >= 1, got {value!r}")
            setattr(self, attr, value)
        if isinstance(self.schedds, str):
            self.schedds = [self.schedds]
        if self.constraint is not None:
            import classad2

            try:
                classad2.ExprTree(self.constraint)
            except Exception as exc:  # noqa: BLE001
                raise ValueError(f"constraint {self.constraint!r} is not a ClassAd expression ({exc})") from None

    def _read(self, now: float) -> Reading:
        if not self.collector:
            return Reading(self.name, None, now, error="no HTCondor collector for this domain yet "
                                                       "(the manager starts its central manager: `pool up`)")
        import htcondor2

        try:
            coll = htcondor2.Collector(self.collector)
            schedd_ads = coll.query(htcondor2.AdTypes.Schedd)  # whole ads: the address and the statistics
            running = self._running(coll)
        except Exception as exc:  # noqa: BLE001  (the pool is unreachable: the fallback rule applies)
            return Reading(self.name, None, now, error=f"collector {self.collector}: {error_text(exc)}")
        wanted = set(self.schedds)
        if wanted:
            missing = sorted(wanted - {str(ad.get("Name")) for ad in schedd_ads})
            schedd_ads = [ad for ad in schedd_ads if str(ad.get("Name")) in wanted]
            if missing:
                return Reading(self.name, None, now, error=f"schedd {missing[0]} is not in collector {self.collector}")
        counts = _Counts()
        for ad in schedd_ads:
            try:
                jobs = htcondor2.Schedd(ad).query(constraint=self._job_constraint(), projection=JOB_ATTRS)
            except Exception as exc:  # noqa: BLE001
                return Reading(self.name, None, now, error=f"schedd {ad.get('Name')}: {error_text(exc)}")
            for job in jobs:
                counts.add(job, cpus=int(self.worker_cpus), memory=int(self.worker_memory), disk=int(self.worker_disk))
        idle_need = counts.need(int(self.worker_cpus), int(self.worker_memory), int(self.worker_disk))
        run_need = max(running["cpus"] / int(self.worker_cpus), running["memory"] / int(self.worker_memory))
        detail: dict[str, float] = {
                  "idle_jobs": counts.idle, "counted_jobs": counts.counted, "held_jobs": counts.held,
                  "too_big_jobs": counts.too_big, "running_jobs": running["jobs"], "startds": running["startds"],
                  "idle_workers_needed": round(idle_need, 3), "running_workers": round(run_need, 3),
                  "schedds": len(schedd_ads)}
        counters = [(_number(ad, "JobsSubmitted", -1.0), _number(ad, "JobsCompleted", -1.0)) for ad in schedd_ads]
        if counters and all(a >= 0 and c >= 0 for a, c in counters):  # the schedds' own statistics, when all give them
            detail["arrivals"], detail["completions"] = (sum(x) for x in zip(*counters))
        return Reading(self.name, round(idle_need + run_need, 6), now, detail=detail, notes=counts.notes(self),
                       nodes=running["nodes"])

    def _job_constraint(self) -> str:
        jobs = f"JobStatus == {IDLE} || JobStatus == {HELD}"
        return f"({jobs}) && ({self.constraint})" if self.constraint else jobs

    def _running(self, coll: Any) -> dict[str, Any]:
        """Claimed slots of this domain's startds (one collector query): what they hold, how many
        startds there are, and the jobs each node runs (busy and idle for the whole domain at once)."""
        import htcondor2

        ads = coll.query(htcondor2.AdTypes.Startd, constraint=f'PoolDomain == "{self.domain}"',
                         projection=["Name", "State", "DynamicSlot", "PartitionableSlot", "Cpus", "Memory", "PoolNode"])
        claimed = [ad for ad in ads if ad.get("State") == "Claimed"]
        nodes = {str(ad["PoolNode"]): 0 for ad in ads if ad.get("PartitionableSlot") and "PoolNode" in ad}
        for ad in claimed:
            node = str(ad.get("PoolNode"))
            nodes[node] = nodes.get(node, 0) + 1
        return {"jobs": float(len(claimed)), "cpus": float(sum(int(ad.get("Cpus", 1)) for ad in claimed)),
                "memory": float(sum(int(ad.get("Memory", 0)) for ad in claimed)),
                "startds": float(len(nodes)), "nodes": nodes}

    def close(self) -> None:
        self._last = None


@dataclass
class _Counts:
    """Idle and held jobs of one read, what they ask, and why some are not counted."""

    idle: int = 0
    counted: int = 0
    held: int = 0
    too_big: int = 0
    cpus: float = 0.0
    memory: float = 0.0
    disk: float = 0.0
    why: dict[str, tuple[int, float]] = field(default_factory=dict)

    def add(self, job: Any, *, cpus: int, memory: int, disk: int) -> None:
        status = int(_number(job, "JobStatus", 0))
        if status == HELD:
            self.held += 1
            return
        self.idle += 1
        asks = {"cpus": _number(job, "RequestCpus", 1), "memory": _number(job, "RequestMemory", 0),
                "disk": _number(job, "RequestDisk", 0)}
        limits = {"cpus": cpus, "memory": memory, "disk": disk}
        over = [name for name in ("memory", "cpus", "disk") if asks[name] > limits[name]]
        if over:
            self.too_big += 1
            count, largest = self.why.get(over[0], (0, 0.0))
            self.why[over[0]] = (count + 1, max(largest, asks[over[0]]))
            return
        self.counted += 1
        self.cpus += max(asks["cpus"], 1)
        self.memory += asks["memory"]
        self.disk += asks["disk"]

    def need(self, cpus: int, memory: int, disk: int) -> float:
        """Workers' worth of the counted idle jobs: the tightest resource decides."""
        return max(self.cpus / cpus, self.memory / memory, self.disk / disk, 0.0)

    def notes(self, sensor: CondorIdleSensor) -> tuple[str, ...]:
        units = {"cpus": ("CPUs", "", sensor.worker_cpus), "memory": ("memory", " MB", sensor.worker_memory),
                 "disk": ("disk", " KiB", sensor.worker_disk)}
        out = []
        for name, (count, largest) in sorted(self.why.items()):
            what, unit, limit = units[name]
            out.append(f"{count} idle job{'s' if count != 1 else ''} not counted: ask{'s' if count == 1 else ''} more "
                       f"{what} than a worker has ({_show(largest)}{unit} > {limit}{unit}); raise condor.worker_"
                       f"{name} or lower the jobs' request_{name}")
        if self.held:
            out.append(f"{self.held} held job{'s' if self.held != 1 else ''} not counted (condor_release to run "
                       f"{'them' if self.held != 1 else 'it'})")
        return tuple(out)


def _show(value: float) -> str:
    return str(int(value)) if math.isclose(value, round(value)) else f"{value:g}"


def slot_states(coll: Any, domain: str) -> dict[str, Any]:
    """The domain's startds from one collector query: job slots by state, and per node what runs."""
    import htcondor2

    ads = coll.query(htcondor2.AdTypes.Startd, constraint=f'PoolDomain == "{domain}"',
                     projection=["Name", "State", "Activity", "PartitionableSlot", "Cpus", "Memory", "PoolNode"])
    states: dict[str, int] = {}
    nodes: dict[str, str] = {}
    for ad in ads:
        node = str(ad.get("PoolNode", "?"))
        if ad.get("PartitionableSlot"):
            nodes.setdefault(node, "")
            free = f"{int(ad.get('Cpus', 0))} CPUs and {int(ad.get('Memory', 0))} MB free"
            nodes[node] = (free + (f", {nodes[node]}" if nodes[node] else ""))
            continue
        state = str(ad.get("State", "?"))
        states[state] = states.get(state, 0) + 1
        nodes[node] = (nodes.get(node, "") + f"{', ' if nodes.get(node) else ''}{str(ad.get('Name'))} "
                       f"{state.lower()}/{str(ad.get('Activity', '?')).lower()}")
    startds = sum(1 for ad in ads if ad.get("PartitionableSlot"))
    return {"startds": startds, "states": states, "nodes": nodes}
