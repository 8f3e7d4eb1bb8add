"""Trace-driven simulator: replays a workload through the real Manager and policies on a simulated clock."""

from __future__ import annotations

import bisect
import copy
import heapq
import itertools
import json
import math
import platform
import time as walltime
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from libcloud.compute.base import Node

from policies import registry as policy_registry
from pool.control.manager import Manager
from pool.core.keys import TAG_NODE
from pool.core.model import DomainSpec, NodeState, PluginParamError, SpecError, UnknownPlugin, parse_domain_spec
from pool.sim.traces import Task
from pool.sites.provisioner import Provisioner
from pool.sites.sim import ShutdownRequest, SimCloudProfile, SimNodeDriver, parse_profile
from pool.state.store import MemoryStore
from sensors import simqueue

SITE = "sim"
DOMAIN = "sim"
NODE_TAG = TAG_NODE
INF = math.inf

#: The simulated domain before the user's spec, the policy's scaling defaults and overrides.
DEFAULT_DOMAIN: dict[str, Any] = {
    "name": DOMAIN,
    "site": SITE,
    "deployable_type": "celery-worker",
    "min": 0,
    "max": 1000,
    "celery": {"app": "simulated", "concurrency": 1},
}
#: Fields the simulator sets itself; a user's base spec cannot change them.
FIXED_FIELDS = ("name", "site", "policy", "sensor", "deployable_type", "broker")


class SimulationError(ValueError):
    """Bad simulation input; the message is one line naming what is wrong and what would be right."""


# ---------------------------------------------------------------------------
# Policies and the simulated domain
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyChoice:
    """One policy to simulate: its label in reports, registered name and parameters."""

    label: str
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)


def parse_value(text: str) -> Any:
    """A parameter value: JSON (numbers, true/false), none/null, else the text itself."""
    text = text.strip()
    if text.lower() in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_policy(text: str) -> PolicyChoice:
    """``NAME`` or ``NAME:key=value,key=value`` -> a checked policy choice."""
    name, _, rest = text.strip().partition(":")
    name = name.strip()
    valid = policy_registry.names()
    if name not in valid:
        raise SimulationError(f"unknown policy {name!r}; valid: {', '.join(valid)}")
    params: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise SimulationError(f"policy {name}: {item!r} is not key=value (e.g. {name}:tasks_per_worker=2)")
        params[key.strip()] = parse_value(value)
    try:
        policy_registry.build(name, params)
    except (UnknownPlugin, PluginParamError) as exc:
        raise SimulationError(str(exc)) from None
    return PolicyChoice(label=text.strip(), name=name, params=params)


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def scaling_defaults(name: str) -> dict[str, Any]:
    """The policy class's ``scaling_defaults`` (ScalingSpec fields it recommends), if it has any."""
    cls = policy_registry.resolve(name)
    defaults = getattr(cls, "scaling_defaults", None)
    return dict(defaults) if isinstance(defaults, Mapping) else {}


def domain_spec(choice: PolicyChoice, *, queue: str, base: Mapping[str, Any] | None = None,
                scaling: Mapping[str, Any] | None = None) -> DomainSpec:
    """The simulated domain: defaults < ``base`` (a user's spec) < the policy; scaling is
    ScalingSpec defaults < the policy's ``scaling_defaults`` < ``base["scaling"]`` < ``scaling``."""
    base = dict(base or {})
    fixed = [k for k in FIXED_FIELDS if k in base]
    if fixed:
        raise SimulationError(f"the simulated domain's {', '.join(fixed)} are set by the simulator; "
                              f"leave them out of the spec (allowed: min, max, celery, scaling, timeouts)")
    data = _merge(DEFAULT_DOMAIN, base)
    data["scaling"] = {**scaling_defaults(choice.name), **dict(base.get("scaling") or {}), **dict(scaling or {})}
    data["policy"] = {"name": choice.name, **dict(choice.params)}
    data["sensor"] = {"name": "sim_queue", "queue": queue}
    try:
        return parse_domain_spec(data)
    except SpecError as exc:
        raise SimulationError(str(exc)) from None


# ---------------------------------------------------------------------------
# One simulation: one policy over one trace
# ---------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Worker:
    node_id: str
    machine_id: str
    running: list[int]
    idle_since: float | None
    last_beat: float
    stopping: bool = False
    gone: bool = False
    asked: bool = False  # asked to drain through its record (the handshake), not by the site
    drained: bool = False  # reported drained: holds no work, waits for its machine to end


_queue_names = itertools.count(1)


class Simulation:
    """Replays ``tasks`` through a real :class:`Manager` on a ``sim`` site, all on simulated time.

    The queue is FIFO. A machine that finished booting (per the sim driver) becomes a worker:
    it heartbeats ``ready`` into the :class:`MemoryStore` every heartbeat interval, pulls tasks
    one at a time into ``celery.concurrency`` slots and reports ``active``/``idle_since``. Asked
    to terminate, it stops pulling, finishes what it runs (a warm shutdown) and ends; if the
    site kills it first (grace over, preemption), its running tasks go back to the queue front.
    """

    def __init__(self, tasks: Sequence[Task], choice: PolicyChoice, *, profile: SimCloudProfile | str = "ec2",
                 seed: int = 0, tick: float = 1.0, tail: float = 900.0, horizon: float | None = None,
                 base: Mapping[str, Any] | None = None, scaling: Mapping[str, Any] | None = None,
                 memory: Mapping[str, Any] | None = None) -> None:
        """``memory``: the policy memory the domain starts with, as the store would hold it after
        earlier runs (a learned season, say); none by default."""
        if not tasks:
            raise SimulationError("the trace has no tasks")
        if tick <= 0:
            raise SimulationError(f"tick must be > 0 seconds, got {tick!r}")
        ordered = sorted(tasks, key=lambda t: t.arrival)
        self.arrival = [t.arrival for t in ordered]
        self.service = [t.service for t in ordered]
        self.n = len(ordered)
        self.choice = choice
        self.queue_name = f"sim-{next(_queue_names)}"
        self.spec = domain_spec(choice, queue=self.queue_name, base=base, scaling=scaling)
        self.slots = int(getattr(self.spec.block, "concurrency", 1))  # task slots of one worker
        self.tick_interval = float(tick)
        self.tail = float(tail)
        last_arrival = self.arrival[-1]
        self.horizon = float(horizon) if horizon is not None else last_arrival + 6 * 3600.0 + self.tail
        self.now = 0.0
        self.events: Counter[str] = Counter()
        self.policy_errors: list[str] = []
        self.store = MemoryStore(on_record=self._on_record)
        self.driver = SimNodeDriver(ex_clock=self.clock, ex_profile=profile, ex_seed=seed)
        self.provisioner = Provisioner({SITE: self.driver})
        self.provisioner.seed(seed)  # jitter is part of the seeded run
        self.manager = Manager(store=self.store, provisioner=self.provisioner, redis_url="memory://simulation",
                               clock=self.clock, manager_id=f"simulator-{self.queue_name}",
                               sensor_factory=simqueue.attach({self.queue_name: self}))
        self.store.put_domain(self.spec)
        if memory:
            state = self.store.get_state(DOMAIN)
            state.policy_memory = dict(memory)
            self.store.put_state(DOMAIN, state)
        # task and worker state
        self.start = [math.nan] * self.n
        self.end = [math.nan] * self.n
        self.attempts = [0] * self.n
        self.ready: deque[int] = deque()
        self.free: deque[_Worker] = deque()  # one entry per free slot, oldest first
        self.workers: dict[str, _Worker] = {}  # machine id -> booted, not yet ended
        self.by_node: dict[str, _Worker] = {}  # node id -> the same workers
        self.completions: list[tuple[float, int, int, int, _Worker]] = []
        self._seq = itertools.count()
        self.running = 0
        self.completed = 0
        self.arrived = 0
        self.requeued = 0
        self.last_completion = math.nan
        self.peak_workers = 0
        self.ticks = 0
        self.timeline: dict[str, list[float]] = {"t": [], "queue": [], "running": [], "workers": [], "booted": []}

    # -- hooks -----------------------------------------------------------------------------
    def clock(self) -> float:
        return self.now

    def depth(self) -> tuple[int, int]:
        """``(ready, running)``: what the ``sim_queue`` sensor reads."""
        return len(self.ready), self.running

    def counters(self) -> tuple[int, int]:
        """``(arrived, completed)`` tasks so far: the ``sim_queue`` sensor's arrival and completion counters."""
        return self.arrived, self.completed

    def _on_record(self, domain: str, event: dict[str, Any]) -> None:
        kind = event["kind"]
        self.events[kind] += 1
        if kind == "error" and len(self.policy_errors) < 5:
            self.policy_errors.append(str(event.get("error")))

    def _beat(self, w: _Worker, t: float, **fields: Any) -> None:
        self.store.beat(DOMAIN, w.node_id, time=t, **fields)
        w.last_beat = t

    # -- workers ---------------------------------------------------------------------------
    def _boot(self, node: Node, t: float) -> None:
        tags = node.extra.get("tags") or {}
        w = _Worker(node_id=tags.get(NODE_TAG, node.name), machine_id=str(node.id), running=[], idle_since=t,
                    last_beat=t)
        self.workers[w.machine_id] = w
        self.by_node[w.node_id] = w
        self._beat(w, t, ready=True, active=0, idle_since=t, workload_alive=True, draining=False)
        self.free.extend([w] * self.slots)

    def _start(self, w: _Worker, k: int, t: float) -> None:
        w.running.append(k)
        self.start[k] = t
        self.attempts[k] += 1
        self.running += 1
        heapq.heappush(self.completions, (t + self.service[k], next(self._seq), k, self.attempts[k], w))
        if w.idle_since is not None:
            w.idle_since = None
        self._beat(w, t, active=len(w.running), idle_since="")

    def _dispatch(self, t: float) -> None:
        ready, free = self.ready, self.free
        while ready and free:
            w = free.popleft()
            if w.gone or w.stopping:
                continue
            self._start(w, ready.popleft(), t)

    def _next_completion(self) -> float:
        heap, attempts = self.completions, self.attempts
        while heap:
            when, _, k, attempt, w = heap[0]
            if w.gone or attempts[k] != attempt:
                heapq.heappop(heap)
                continue
            return when
        return INF

    def _complete(self, t: float) -> None:
        heap, attempts = self.completions, self.attempts
        while heap and heap[0][0] <= t:
            _, _, k, attempt, w = heapq.heappop(heap)
            if w.gone or attempts[k] != attempt:
                continue
            w.running.remove(k)
            self.running -= 1
            self.completed += 1
            self.end[k] = t
            self.last_completion = t
            if w.stopping:
                if not w.running:
                    self._finish_shutdown(w, t)
                else:
                    self._beat(w, t, active=len(w.running))
            elif self.ready:
                self._start(w, self.ready.popleft(), t)
            else:
                self.free.append(w)
                if not w.running:
                    w.idle_since = t
                    self._beat(w, t, active=0, idle_since=t)
                else:
                    self._beat(w, t, active=len(w.running))

    def _shutdown(self, request: ShutdownRequest, t: float) -> None:
        w = self.workers.get(str(request.node.id))
        if w is None or (w.stopping and not w.drained):
            return
        if w.drained:  # the handshake is over: the machine ends
            self._end(w, t)
            return
        w.stopping = True
        self._beat(w, t, draining=True)
        if not w.running:
            self._finish_shutdown(w, t)

    def _drain_requests(self, t: float) -> None:
        """The agents' side of the scale-in handshake: a worker whose record the tick marked DRAINING
        (with the drain sent) stops taking tasks, finishes what it runs, then reports drained."""
        plan = self.manager.last_plans.get(DOMAIN)
        for kind, data in plan.events if plan is not None else ():
            w = self.by_node.get(str(data.get("node"))) if kind == "drain" else None
            if w is None or w.gone or w.stopping:
                continue
            rec = self.store.node(DOMAIN, w.node_id)
            if rec is None or rec.state is not NodeState.DRAINING or not rec.drain_sent:
                continue
            w.stopping = w.asked = True
            self._beat(w, t, draining=True)
            if not w.running:
                self._finish_shutdown(w, t)

    def _finish_shutdown(self, w: _Worker, t: float) -> None:
        """The agent's warm shutdown is over: asked through its record, it reports drained and waits for
        its machine to end; asked by the site, its last heartbeat, then the machine ends."""
        if w.asked:
            w.drained = True
            self._beat(w, t, workload_alive=False, draining=True, drained=True, active=0)
            return
        self._beat(w, t, workload_alive=False, draining=True, active=0)
        self._end(w, t)

    def _end(self, w: _Worker, t: float) -> None:
        w.gone = True
        self.workers.pop(w.machine_id, None)
        self.by_node.pop(w.node_id, None)
        self.driver.ex_shutdown_complete(w.machine_id, t)

    def _killed(self, node: Node, t: float) -> None:
        """The site ended the machine under the worker: its running tasks return to the queue front."""
        w = self.workers.pop(str(node.id), None)
        if w is None:
            return
        self.by_node.pop(w.node_id, None)
        w.gone = True
        for k in reversed(w.running):
            self.ready.appendleft(k)
        self.running -= len(w.running)
        self.requeued += len(w.running)
        w.running = []

    def _machine_events(self, t: float) -> None:
        for node in self.driver.ex_booted(t):
            self._boot(node, t)
        for node in self.driver.ex_ended(t):
            self._killed(node, t)
        self._dispatch(t)

    # -- the manager's tick ----------------------------------------------------------------
    def _tick(self, t: float) -> None:
        interval = self.spec.timeouts.heartbeat_interval
        for w in self.workers.values():
            if t - w.last_beat >= interval:
                self.store.beat(DOMAIN, w.node_id, time=t)
                w.last_beat = t
        self.manager.tick(t)
        self.ticks += 1
        self._drain_requests(t)
        for request in self.driver.ex_shutdown_requests():
            self._shutdown(request, t)
        self._machine_events(t)  # machines the tick ended without grace
        alive = self.driver.ex_alive()
        self.peak_workers = max(self.peak_workers, alive)
        tl = self.timeline
        tl["t"].append(t)
        tl["queue"].append(len(self.ready))
        tl["running"].append(self.running)
        tl["workers"].append(alive)
        tl["booted"].append(len(self.workers))

    # -- run -------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Simulate until every task is done and the domain is back at its minimum (or ``tail``
        seconds after the last task ended, or the horizon). Returns this policy's results."""
        return self._results(self._loop())

    def _loop(self) -> float:
        arrival, n, driver = self.arrival, self.n, self.driver
        i = 0
        ticks = 0
        next_tick = 0.0
        minimum = self.spec.min
        while True:
            ta = arrival[i] if i < n else INF
            tc = self._next_completion()
            td = driver.ex_next_event_time()
            td = INF if td is None else td
            t = min(ta, tc, td, next_tick)
            if t > self.horizon:
                self.now = self.horizon
                return self.horizon
            self.now = t
            if td <= t:
                self._machine_events(t)
            elif tc <= t:
                self._complete(t)
            elif ta <= t:
                while i < n and arrival[i] <= t:
                    self.ready.append(i)
                    i += 1
                self.arrived = i
                self._dispatch(t)
            else:
                self._tick(t)
                ticks += 1
                next_tick = ticks * self.tick_interval  # no drift from repeated additions
                if self.completed == n and (driver.ex_alive() <= minimum or t >= self.last_completion + self.tail):
                    return t

    def _results(self, end: float) -> dict[str, Any]:
        done = [k for k in range(self.n) if not math.isnan(self.end[k])]
        waits = sorted(self.start[k] - self.arrival[k] for k in done)
        machines = list(self.driver.machines.values())
        return {
            "policy": self.choice.label,
            "worker_hours": self.driver.ex_billed_seconds(end) / 3600.0,
            "mean_wait": sum(waits) / len(waits) if waits else None,
            "p95_wait": percentile(waits, 95.0),
            "max_wait": waits[-1] if waits else None,
            "makespan": (self.last_completion - self.arrival[0]) if len(done) == self.n else None,
            "peak_workers": self.peak_workers,
            "launches": len(machines),
            "tasks": self.n,
            "completed": len(done),
            "unfinished": self.n - len(done),
            "requeued": self.requeued,
            "preempted": sum(1 for m in machines if m.end_reason == "preempted"),
            "never_booted": sum(1 for m in machines if m.boot_at is None),
            "killed_after_grace": sum(1 for m in machines if m.end_reason.startswith("killed")),
            "policy_errors": self.policy_errors,
            "events": dict(sorted(self.events.items())),
            "api": self.driver.ex_request_rates(),
            "sim_end": end,
            "ticks": self.ticks,
            "scaling": self.spec.scaling.model_dump(),
        }


#: Wait targets a report checks: ``(kind, seconds)``, kind ``p95`` or ``mean`` (task wait).
WaitTargets = Sequence[tuple[str, float]]
TARGET_KINDS = ("p95", "mean")


def parse_target(text: str) -> tuple[str, float]:
    """``p95=30`` or ``mean=5`` -> ``("p95", 30.0)``: a wait target in seconds."""
    kind, eq, value = text.strip().partition("=")
    kind = kind.strip().removesuffix("_wait")
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not eq or kind not in TARGET_KINDS or not math.isfinite(seconds) or seconds <= 0:
        raise SimulationError(f"wait target {text!r}: expected p95=SECONDS or mean=SECONDS, e.g. p95=30")
    return kind, seconds


def own_targets(choice: PolicyChoice) -> list[tuple[str, float]]:
    """The wait targets a policy states itself (``p95_wait`` / ``mean_wait`` parameters)."""
    return [(kind, float(choice.params[f"{kind}_wait"])) for kind in TARGET_KINDS
            if isinstance(choice.params.get(f"{kind}_wait"), (int, float))]


def check_targets(result: Mapping[str, Any], targets: WaitTargets) -> dict[str, dict[str, Any]]:
    """Per target ``KIND_SECONDS`` (e.g. ``p95_30``): the wait measured, whether it met the target
    (every task finished and the wait at most the target) and the cost in worker-hours."""
    out: dict[str, dict[str, Any]] = {}
    for kind, seconds in targets:
        wait = result.get(f"{kind}_wait")
        met = wait is not None and not result.get("unfinished") and wait <= seconds
        out[f"{kind}_{seconds:g}"] = {"wait_s": wait, "met": bool(met), "worker_hours": result["worker_hours"]}
    return out


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values (None for none)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


# ---------------------------------------------------------------------------
# The oracle: an infinite pool with zero boot time
# ---------------------------------------------------------------------------


def oracle(tasks: Sequence[Task], *, concurrency: int = 1) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """The lower bound: every task starts at arrival on a worker that exists exactly while busy."""
    arrivals = sorted(t.arrival for t in tasks)
    ends = sorted(t.arrival + t.service for t in tasks)
    busy = peak = 0
    for _, delta in sorted([(a, 1) for a in arrivals] + [(e, -1) for e in ends], key=lambda x: (x[0], x[1])):
        busy += delta
        peak = max(peak, busy)
    total = sum(t.service for t in tasks)
    result = {
        "policy": "oracle",
        "worker_hours": total / concurrency / 3600.0,
        "mean_wait": 0.0,
        "p95_wait": 0.0,
        "max_wait": 0.0,
        "makespan": ends[-1] - arrivals[0],
        "peak_workers": math.ceil(peak / concurrency),
        "launches": None,
        "tasks": len(tasks),
        "completed": len(tasks),
        "unfinished": 0,
    }
    grid = [ends[-1] * i / 999 for i in range(1000)]
    running = [bisect.bisect_right(arrivals, g) - bisect.bisect_right(ends, g) for g in grid]
    timeline = {"t": grid, "queue": [0.0] * len(grid), "running": [float(r) for r in running],
                "workers": [float(math.ceil(r / concurrency)) for r in running]}
    return result, timeline


# ---------------------------------------------------------------------------
# Many policies over one trace: the report
# ---------------------------------------------------------------------------


def downsample(timeline: Mapping[str, Sequence[float]], points: int = 1000) -> dict[str, list[float]]:
    """At most ``points`` samples; each keeps the highest value of its bucket (peaks survive)."""
    t = list(timeline["t"])
    if len(t) <= points:
        return {k: list(v) for k, v in timeline.items()}
    step = len(t) / points
    out: dict[str, list[float]] = {k: [] for k in timeline}
    for b in range(points):
        lo, hi = int(b * step), max(int(b * step) + 1, int((b + 1) * step))
        for key, values in timeline.items():
            out[key].append(values[lo] if key == "t" else max(values[lo:hi]))
    return out


def trace_summary(tasks: Sequence[Task], source: str) -> dict[str, Any]:
    arrivals = [t.arrival for t in tasks]
    return {
        "source": source,
        "tasks": len(tasks),
        "first_arrival": min(arrivals),
        "last_arrival": max(arrivals),
        "total_service_hours": sum(t.service for t in tasks) / 3600.0,
        "mean_service": sum(t.service for t in tasks) / len(tasks),
    }


def simulate_many(tasks: Sequence[Task], choices: Sequence[PolicyChoice], *, source: str = "",
                  profile: SimCloudProfile | str = "ec2", seed: int = 0, tick: float = 1.0, tail: float = 900.0,
                  horizon: float | None = None, base: Mapping[str, Any] | None = None,
                  scaling: Mapping[str, Any] | None = None, points: int = 1000,
                  targets: WaitTargets = ()) -> dict[str, Any]:
    """Simulate every policy on the same trace, cloud profile and seed; the report as a dict.

    Each result's ``targets`` says, for every wait target in ``targets`` and the policy's own
    (``p95_wait`` / ``mean_wait``), whether it was met and at what cost (:func:`check_targets`).
    ``runtime`` (wall seconds per policy) is the only part that differs between identical runs.
    """
    if not choices:
        raise SimulationError("name at least one policy")
    labels = [c.label for c in choices]
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise SimulationError(f"policy {duplicates[0]!r} is named twice; give each --policy once")
    prof = parse_profile(profile) if isinstance(profile, str) else profile
    results: list[dict[str, Any]] = []
    timelines: dict[str, dict[str, list[float]]] = {}
    runtime: dict[str, float] = {}
    concurrency = 1
    for choice in choices:
        sim = Simulation(tasks, choice, profile=prof, seed=seed, tick=tick, tail=tail, horizon=horizon,
                         base=base, scaling=scaling)
        concurrency = sim.slots
        started = walltime.perf_counter()
        result = sim.run()
        runtime[choice.label] = walltime.perf_counter() - started
        checked = check_targets(result, list(dict.fromkeys([*targets, *own_targets(choice)])))
        if checked:
            result["targets"] = checked
        results.append(result)
        timelines[choice.label] = downsample(sim.timeline, points)
    best, best_timeline = oracle(tasks, concurrency=concurrency)
    if targets:
        best["targets"] = check_targets(best, targets)
    timelines["oracle"] = best_timeline
    return {
        "trace": trace_summary(tasks, source),
        "site_profile": asdict(prof),
        "seed": seed,
        "tick": tick,
        "tail": tail,
        "results": [best, *results],
        "timelines": timelines,
        "runtime": {"seconds": runtime, "python": platform.python_version(), "machine": platform.machine()},
    }


def write_report(report: Mapping[str, Any], out: str | Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.png`` into ``out``; returns their paths."""
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "report.json"
    json_path.write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    png_path = directory / "report.png"
    plot(report, png_path)
    return json_path, png_path


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isinf(value):
        return None
    return str(value)


def plot(report: Mapping[str, Any], path: str | Path) -> None:
    """Queue depth (top) and workers alive (bottom) over time, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timelines: Mapping[str, Mapping[str, Sequence[float]]] = report["timelines"]
    span = max((tl["t"][-1] for tl in timelines.values() if tl["t"]), default=0.0)
    unit, scale = ("h", 3600.0) if span > 3 * 3600 else ("min", 60.0) if span > 180 else ("s", 1.0)
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(11, 7), constrained_layout=True)
    for label, tl in timelines.items():
        x = [v / scale for v in tl["t"]]
        if label == "oracle":
            bottom.plot(x, tl["workers"], color="black", linestyle="--", linewidth=1.2,
                        label="oracle (busy workers, zero boot time)")
            continue
        (line,) = top.plot(x, tl["queue"], linewidth=1.2, label=label)
        bottom.plot(x, tl["workers"], linewidth=1.2, color=line.get_color(), label=label)
    trace = report.get("trace", {})
    top.set_title(f"{trace.get('source', 'trace')}: {trace.get('tasks', '?')} tasks, "
                  f"site profile {report.get('site_profile', {}).get('name', '?')}, seed {report.get('seed')}")
    top.set_ylabel("queue depth (waiting tasks)")
    bottom.set_ylabel("workers (instances alive)")
    bottom.set_xlabel(f"simulated time ({unit})")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right", fontsize="small")
    fig.savefig(path, dpi=110)
    plt.close(fig)
