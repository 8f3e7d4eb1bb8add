"""Workload traces for the simulator: CSV/JSON files, synthetic families and the Standard Workload Format."""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any


@dataclass(frozen=True, slots=True)
class Task:
    """One unit of work: when it enters the queue and how long one worker slot takes to run it."""

    arrival: float  # seconds from the start of the trace
    service: float  # seconds of work
    queue: str = "default"


class TraceError(ValueError):
    """A trace that cannot be read; the message is one line naming the file, line and field."""


def _sorted(tasks: list[Task]) -> list[Task]:
    tasks.sort(key=lambda t: t.arrival)
    return tasks


def _number(value: Any, *, field: str, where: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TraceError(f"{where}: {field} must be a number of seconds, got {value!r}") from None
    if math.isnan(x) or math.isinf(x) or x < 0:
        raise TraceError(f"{where}: {field} must be a finite number of seconds >= 0, got {value!r}")
    return x


# ---------------------------------------------------------------------------
# CSV and JSON
# ---------------------------------------------------------------------------


def read_csv(path: str | Path) -> list[Task]:
    """CSV with a header naming ``arrival`` and ``service`` (seconds) and optionally ``queue``.

    Blank lines and lines starting with ``#`` are skipped; other columns are ignored.
    """
    path = Path(path)
    with _open_text(path) as fh:
        lines = [line for line in fh if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.DictReader(lines)
    fields = [f.strip() for f in reader.fieldnames or []]
    reader.fieldnames = fields
    missing = [f for f in ("arrival", "service") if f not in fields]
    if missing:
        raise TraceError(f"{path}: CSV header must name arrival and service (seconds) and may name queue; "
                         f"missing {', '.join(missing)} (header: {', '.join(fields) or 'none'})")
    tasks = []
    for i, row in enumerate(reader, start=2):
        where = f"{path} row {i}"
        tasks.append(Task(_number(row["arrival"], field="arrival", where=where),
                          _number(row["service"], field="service", where=where),
                          (row.get("queue") or "default").strip() or "default"))
    return _sorted(tasks)


def read_json(path: str | Path) -> list[Task]:
    """JSON: a list of ``{"arrival": s, "service": s, "queue": name?}``, or ``{"tasks": [...]}``."""
    path = Path(path)
    try:
        with _open_text(path) as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise TraceError(f"{path}: not valid JSON at line {exc.lineno}: {exc.msg}") from None
    if isinstance(data, Mapping):
        data = data.get("tasks")
    if not isinstance(data, list):
        raise TraceError(f"{path}: expected a list of tasks or an object with a 'tasks' list")
    tasks = []
    for i, item in enumerate(data):
        where = f"{path} task {i}"
        if not isinstance(item, Mapping) or "arrival" not in item or "service" not in item:
            raise TraceError(f"{where}: each task must be an object with 'arrival' and 'service' (seconds)")
        tasks.append(Task(_number(item["arrival"], field="arrival", where=where),
                          _number(item["service"], field="service", where=where),
                          str(item.get("queue") or "default")))
    return _sorted(tasks)


def write_csv(tasks: Iterable[Task], path: str | Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["arrival", "service", "queue"])
        for t in tasks:
            writer.writerow([repr(t.arrival), repr(t.service), t.queue])


def write_json(tasks: Iterable[Task], path: str | Path) -> None:
    with open(path, "w") as fh:
        json.dump({"tasks": [{"arrival": t.arrival, "service": t.service, "queue": t.queue} for t in tasks]}, fh)


def _open_text(path: Path) -> IO[str]:
    try:
        if path.suffix == ".gz":
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
        return open(path, encoding="utf-8", errors="replace")
    except OSError as exc:
        raise TraceError(f"cannot read trace {path}: {exc.strerror}") from None


# ---------------------------------------------------------------------------
# Standard Workload Format (Parallel Workloads Archive)
# ---------------------------------------------------------------------------

#: The 18 SWF fields, in order.
SWF_FIELDS = (
    "job", "submit", "wait", "run", "processors", "cpu_time", "memory", "requested_processors",
    "requested_time", "requested_memory", "status", "user", "group", "executable", "queue",
    "partition", "preceding_job", "think_time",
)


def read_swf(path: str | Path, *, processors_per_task: int | None = 1, rebase: bool = True,
             max_tasks: int | None = None) -> list[Task]:
    """Read an SWF log (plain or ``.gz``).

    Mapping: submit time -> arrival; run time -> service time; queue number -> queue. A job on
    P processors (allocated, else requested, else 1) becomes ``ceil(P / processors_per_task)``
    tasks that arrive together, each taking the job's run time (``processors_per_task=None``:
    one task per job). Jobs without a run time (-1) or with run time 0 are left out. Lines
    starting with ``;`` are header comments. With ``rebase`` the first arrival is time 0.
    """
    path = Path(path)
    if processors_per_task is not None and processors_per_task < 1:
        raise TraceError(f"processors_per_task must be >= 1 or None (one task per job), got {processors_per_task!r}")
    tasks: list[Task] = []
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.strip()
            if not text or text.startswith(";"):
                continue
            parts = text.split()
            if len(parts) < 5:
                raise TraceError(f"{path} line {lineno}: an SWF job line has 18 fields "
                                 f"(job, submit, wait, run, processors, ...), got {len(parts)}")
            try:
                values = [float(p) for p in parts[:18]]
            except ValueError:
                raise TraceError(f"{path} line {lineno}: SWF fields must be numbers, got {text[:60]!r}") from None
            row = dict(zip(SWF_FIELDS, values))
            submit, run = row["submit"], row["run"]
            if run <= 0 or submit < 0:
                continue
            procs = row["processors"]
            if procs <= 0:
                procs = row.get("requested_processors", -1.0)
            procs = max(1, int(procs)) if procs > 0 else 1
            count = 1 if processors_per_task is None else math.ceil(procs / processors_per_task)
            q = row.get("queue", -1.0)
            queue = str(int(q)) if q >= 0 else "default"
            tasks.extend(Task(submit, run, queue) for _ in range(count))
            if max_tasks is not None and len(tasks) >= max_tasks:
                del tasks[max_tasks:]
                break
    tasks.sort(key=lambda t: t.arrival)
    if rebase and tasks:
        first = tasks[0].arrival
        tasks = [Task(t.arrival - first, t.service, t.queue) for t in tasks]
    return tasks


def write_swf(jobs: Iterable[Mapping[str, float]], path: str | Path, *, header: str = "") -> None:
    """Write jobs (mappings of SWF field names; missing fields are -1) as an SWF file."""
    with open(path, "w") as fh:
        fh.writelines(f"; {line}\n" for line in header.splitlines())
        fh.writelines(" ".join(_swf_value(job.get(f, -1)) for f in SWF_FIELDS) + "\n" for job in jobs)


def _swf_value(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# ---------------------------------------------------------------------------
# Synthetic families
# ---------------------------------------------------------------------------


def _service(rng: random.Random, mean: float, cv: float) -> float:
    """A service time with this mean and coefficient of variation (log-normal; cv 0: constant)."""
    if cv <= 0:
        return mean
    sigma2 = math.log(1.0 + cv * cv)
    return rng.lognormvariate(math.log(mean) - sigma2 / 2.0, math.sqrt(sigma2))


def burst(*, n: int = 1000, at: float = 0.0, spread: float = 0.0, service: float = 60.0, cv: float = 0.5,
          seed: int = 1) -> list[Task]:
    """All ``n`` tasks arrive at ``at`` (uniformly over ``spread`` seconds if > 0)."""
    rng = random.Random(seed)
    return sorted((Task(at + (rng.uniform(0, spread) if spread > 0 else 0.0), _service(rng, service, cv))
                   for _ in range(n)), key=lambda t: t.arrival)


def periodic(*, n: int = 2000, bursts: int = 5, period: float = 900.0, width: float = 30.0,
             service: float = 60.0, cv: float = 0.5, seed: int = 2) -> list[Task]:
    """``bursts`` equal bursts, one every ``period`` seconds, each spread over ``width`` seconds."""
    rng = random.Random(seed)
    tasks = []
    for i in range(n):
        k = i * bursts // max(1, n)
        tasks.append(Task(k * period + rng.uniform(0, width), _service(rng, service, cv)))
    return sorted(tasks, key=lambda t: t.arrival)


def _from_density(rng: random.Random, n: int, duration: float, density: Callable[[float], float],
                  peak: float) -> list[float]:
    """``n`` arrival times drawn from ``density`` on [0, duration] (rejection sampling), sorted."""
    out: list[float] = []
    while len(out) < n:
        t = rng.uniform(0, duration)
        if rng.uniform(0, peak) <= density(t):
            out.append(t)
    return sorted(out)


def diurnal(*, n: int = 5000, period: float = 3600.0, cycles: float = 2.0, amplitude: float = 0.8,
            service: float = 60.0, cv: float = 0.5, seed: int = 3) -> list[Task]:
    """Arrival rate ``∝ 1 + amplitude·sin(2πt/period)`` over ``cycles`` periods (a compressed day)."""
    if not 0 <= amplitude <= 1:
        raise TraceError(f"diurnal: amplitude must be in [0, 1], got {amplitude!r}")
    rng = random.Random(seed)
    times = _from_density(rng, n, period * cycles,
                          lambda t: 1.0 + amplitude * math.sin(2 * math.pi * t / period), 1.0 + amplitude)
    return [Task(t, _service(rng, service, cv)) for t in times]


def poisson(*, n: int = 2000, rate: float = 1.0, service: float = 60.0, cv: float = 0.5,
            seed: int = 4) -> list[Task]:
    """A Poisson process of ``rate`` arrivals per second."""
    if rate <= 0:
        raise TraceError(f"poisson: rate must be > 0 arrivals per second, got {rate!r}")
    rng = random.Random(seed)
    t = 0.0
    tasks = []
    for _ in range(n):
        t += rng.expovariate(rate)
        tasks.append(Task(t, _service(rng, service, cv)))
    return tasks


def heavy(*, n: int = 2000, rate: float = 1.0, service: float = 60.0, alpha: float = 1.5,
          cap: float = 7200.0, seed: int = 5) -> list[Task]:
    """Poisson arrivals with Pareto service times (shape ``alpha`` > 1, mean ``service``, capped)."""
    if alpha <= 1:
        raise TraceError(f"heavy: alpha must be > 1 (a finite mean), got {alpha!r}")
    if rate <= 0:
        raise TraceError(f"heavy: rate must be > 0 arrivals per second, got {rate!r}")
    rng = random.Random(seed)
    xm = service * (alpha - 1) / alpha
    t = 0.0
    tasks = []
    for _ in range(n):
        t += rng.expovariate(rate)
        tasks.append(Task(t, min(cap, xm * rng.paretovariate(alpha))))
    return tasks


def spiky(*, n: int = 3000, duration: float = 3600.0, spikes: int = 6, share: float = 0.7, width: float = 10.0,
          service: float = 60.0, cv: float = 0.5, seed: int = 6) -> list[Task]:
    """A steady Poisson trickle plus ``spikes`` sudden spikes at random times carrying ``share`` of the tasks."""
    if not 0 <= share <= 1:
        raise TraceError(f"spiky: share must be in [0, 1], got {share!r}")
    rng = random.Random(seed)
    centres = sorted(rng.uniform(0, duration) for _ in range(max(1, spikes)))
    in_spikes = round(n * share)
    times = [rng.choice(centres) + rng.uniform(0, width) for _ in range(in_spikes)]
    times += [rng.uniform(0, duration) for _ in range(n - in_spikes)]
    times.sort()
    return [Task(t, _service(rng, service, cv)) for t in times]


#: Synthetic trace families by name; each takes keyword parameters and has a fixed default seed.
FAMILIES: dict[str, Callable[..., list[Task]]] = {
    "burst": burst,
    "periodic": periodic,
    "diurnal": diurnal,
    "poisson": poisson,
    "heavy": heavy,
    "spiky": spiky,
}

FORMATS = (".csv", ".json", ".swf")


def _family_params(fn: Callable[..., list[Task]]) -> dict[str, Any]:
    import inspect

    return {name: p.default for name, p in inspect.signature(fn).parameters.items()}


def synthetic(text: str) -> list[Task]:
    """``family`` or ``family:key=value,key=value`` -> tasks, e.g. ``burst:n=2000,service=30``."""
    name, _, rest = text.partition(":")
    fn = FAMILIES.get(name.strip())
    if fn is None:
        raise TraceError(f"unknown trace family {name!r}; valid: {', '.join(FAMILIES)} "
                         f"(or a file ending in {', '.join(FORMATS)})")
    defaults = _family_params(fn)
    params: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in defaults:
            raise TraceError(f"trace family {name}: {item!r} is not key=value with a known key "
                             f"(allowed: {', '.join(defaults)})")
        kind = type(defaults[key])
        try:
            params[key] = int(value) if kind is int else float(value)
        except ValueError:
            raise TraceError(f"trace family {name}: {key} must be {'a whole number' if kind is int else 'a number'}, "
                             f"got {value!r}") from None
    if "n" in params and params["n"] < 1:
        raise TraceError(f"trace family {name}: n must be >= 1, got {params['n']}")
    return fn(**params)


def load_trace(text: str, *, processors_per_task: int | None = 1, max_tasks: int | None = None) -> list[Task]:
    """A trace from a file (``.csv``, ``.json``, ``.swf``, optionally ``.gz``) or a family spec."""
    path = Path(text)
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    kind = suffixes[-1] if suffixes else ""
    if os.path.exists(text):
        if kind == ".csv":
            tasks = read_csv(path)
        elif kind == ".json":
            tasks = read_json(path)
        elif kind == ".swf":
            tasks = read_swf(path, processors_per_task=processors_per_task, max_tasks=max_tasks)
        else:
            raise TraceError(f"{text}: unknown trace format {kind or '(no extension)'!r}; "
                             f"expected a file ending in {', '.join(FORMATS)}")
    elif kind in FORMATS:
        raise TraceError(f"trace file {text} does not exist")
    else:
        tasks = synthetic(text)
    if max_tasks is not None:
        tasks = tasks[:max_tasks]
    if not tasks:
        raise TraceError(f"trace {text} has no tasks")
    return tasks
