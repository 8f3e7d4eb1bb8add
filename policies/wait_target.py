"""Wait-target autoscaling: the fewest workers that keep task waits within a stated target.

Pure: imports only ``policies`` helpers and ``pool.core.model`` types; time is the ``now`` passed in.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from policies import primary
from policies.common import ceil_, check_number, recall, remember, split_backlog
from pool.core.model import Decision, DomainView, Reading

#: Weight, in finished tasks, of the ``service_time`` prior before completions refine it.
PRIOR_TASKS = 20.0
#: Half-life, seconds, of the completions the service-time estimate remembers.
FORGET = 600.0
#: Share of tasks a p95 target lets wait longer.
TAIL = 0.05
#: Share of tasks the stream's sizing lets wait longer than a p95 target: half the allowance, the
#: other half is left for start-ups and rises no rate foresees (boots the queue has to wait for).
STREAM_TAIL = TAIL / 2
#: Season lengths, seconds, by name (``season_period`` overrides).
SEASONS: dict[str, float] = {"daily": 86400.0, "weekly": 7 * 86400.0}
OWNER = "wait_target"
#: Seconds of arrivals the rate is taken to have seen at least (its start-up correction is capped).
EVIDENCE = 10.0
#: Erlangs below which the stream keeps no worker waiting for it (one idle worker would be busy < 5 %).
IDLE_LOAD = 0.05
#: Starts a new worker loses to the spread of task lengths: in ``w`` seconds after its first task
#: begins it starts about ``w / service - RENEWAL`` more (renewal counting, coefficient of variation ~0.7).
RENEWAL = 0.5
#: Share of a loose deadline the backlog is planned to start within (its tasks have waited already).
LOOSE_PLAN = 0.85
#: Standard errors of the measured arrival rate a tight target's stream is sized above it (its
#: one-sided 95 % bound: an EWMA that dipped with the arrivals' luck must not take the headroom away).
RATE_Z = 1.645
#: Seasons a slice of the learned profile averages over at most (older ones fade: a running mean).
SEASON_MEMORY = 8
#: Weights of a slice and its neighbours when the profile is read (the counts of one slice are noisy).
SEASON_KERNEL = ((-1, 1.0), (0, 2.0), (1, 1.0))
#: Seconds over which the arrivals are compared with the profile to scale it to this season's level.
LEVEL_WINDOW = 600.0
#: Tasks of evidence the level starts from (it is 1, the profile as learned, until arrivals say more).
LEVEL_PRIOR = 50.0
#: Seconds of arrivals that can overrule the level: outside their two-sigma band the season broke
#: (or surged), and the profile is scaled to what they show instead.
SHORT_WINDOW = 60.0
#: Seconds over which a mean target's realized wait is measured (Little's law) and corrected for.
CALIBRATION_WINDOW = 3600.0
#: Tasks that must have arrived in that window before the correction moves.
CALIBRATION_EVIDENCE = 30.0
#: Least and most the target the stream is sized for may be scaled by the correction.
CALIBRATION_RANGE = (0.25, 10.0)


def erlang_c(servers: int, load: float) -> float:
    """Probability that an arrival waits in an M/M/``servers`` queue offered ``load`` erlangs."""
    if load <= 0:
        return 0.0
    if servers <= load:
        return 1.0
    b = 1.0
    for k in range(1, servers + 1):
        b = load * b / (k + load * b)
    return servers * b / (servers - load * (1.0 - b))


def steady_slots(*, rate: float, service: float, target: float, kind: str, limit: int) -> int:
    """Fewest task slots that keep a stationary stream's waits within ``target`` (Erlang C):
    ``P(wait > target) <= 5 %`` for ``p95``, ``E[wait] <= target`` for ``mean``; at most ``limit``."""
    load = rate * service
    if load < IDLE_LOAD:
        return 0
    c = max(1, math.floor(load) + 1)
    while c < limit:
        pw, headroom = erlang_c(c, load), c / service - rate
        late = pw * math.exp(-headroom * target) if kind == "p95" else pw / headroom
        if late <= (STREAM_TAIL if kind == "p95" else target):
            return c
        c += 1
    return limit


def horizon_slots(*, rate: float, service: float, target: float, kind: str, boot: float, bias: float = 0.0) -> int:
    """Fewest task slots that start the arrivals of the next ``boot`` seconds (before workers launched
    for a queue could join) within the target, with ``bias`` more tasks arriving than ``rate`` says.

    Fluid picture with Poisson spreads: the pool keeps ``rate × service`` slots busy and ``h`` idle. In
    a boot window ``rate × boot`` tasks arrive and the busy slots free about as many (exponential
    task lengths: each count has variance ``rate × boot``), so the arrivals' excess ``X`` is about
    normal, mean ``bias``. ``p95``: the busy slots also free ``rate × p95_wait`` more within the
    target (variance ``rate × (2 × boot + p95_wait)`` in all); ``h`` covers ``X`` less those in all but
    2.5 % of boot windows. ``mean``: the tasks ``X`` leaves waiting, ``E[(X - h)+]``, stay within
    the ``rate × mean_wait`` that may wait at once (Little's law) at that mean wait."""
    load = rate * service
    if load < IDLE_LOAD:
        return 0
    if kind == "p95":
        spread = math.sqrt(rate * (2.0 * boot + target))
        excess = statistics.NormalDist().inv_cdf(1.0 - STREAM_TAIL) * spread + bias - rate * target
        return max(1, math.ceil(load + max(0.0, excess)))
    dist = statistics.NormalDist(bias, math.sqrt(2.0 * rate * boot))
    idle = 0
    while idle < 10_000 and _shortfall(dist, float(idle)) > rate * target:
        idle += 1
    return max(1, math.ceil(load + idle))


def _shortfall(dist: statistics.NormalDist, h: float) -> float:
    """``E[(X - h)+]`` for a normal ``X``."""
    if dist.stdev <= 0:
        return max(0.0, dist.mean - h)
    u = (h - dist.mean) / dist.stdev
    return dist.stdev * math.exp(-u * u / 2) / math.sqrt(2 * math.pi) - (h - dist.mean) * (1 - dist.cdf(h))


def stream_slots(*, rate: float, spread: float, service: float, target: float, kind: str, boot: float,
                 limit: int) -> int:
    """Task slots a tight target's stream keeps: the fewer of the stationary queue's
    (:func:`steady_slots` at the rate's one-sided 95 % bound, ``rate + RATE_Z × spread``) and the
    boot window's (:func:`horizon_slots`, the bound's extra arrivals over a boot as ``bias``): the
    first needs no reaction, the second counts on the launches a queue triggers joining a boot later."""
    stationary = steady_slots(rate=rate + RATE_Z * spread, service=service, target=target, kind=kind, limit=limit)
    window = horizon_slots(rate=rate, service=service, target=target, kind=kind, boot=boot,
                           bias=RATE_Z * spread * boot)
    return min(stationary, window)


def rate_error(rate: float, *, seen: float, window: float) -> float:
    """Standard error of a Poisson arrival rate measured by an EWMA over ``window`` seconds for ``seen``
    seconds (its variance is ``rate / (2 × window)``, more while it has seen less than that)."""
    return math.sqrt(max(0.0, rate) / min(2.0 * window, max(seen, EVIDENCE)))


def backlog_workers(*, ready: float, rate: float, service: float, deadline: float, boot: float,
                    joined: int, slots: float) -> int:
    """Workers that start the ``ready`` tasks and the arrivals of the next ``deadline`` seconds within it.

    Fluid picture: a joined worker starts ``slots × deadline / service`` tasks in the window; a new
    one, up after ``boot`` seconds, starts ``slots × (1 + (deadline - boot) / service)``. A deadline
    no new worker can meet (``deadline <= boot``) is stretched to ``boot + service / 2``."""
    if ready <= 0:
        return 0
    window = deadline if deadline > boot else boot + service / 2
    demand = ready + rate * window
    per_joined = slots * window / service
    if demand <= joined * per_joined:
        return ceil_(demand / per_joined)
    per_new = slots * (1.0 + max(0.0, (window - boot) / service - RENEWAL))
    return joined + ceil_((demand - joined * per_joined) / per_new)


@dataclass(frozen=True)
class WaitTarget:
    """Keep task waits within a target: ``p95_wait`` or ``mean_wait`` seconds (exactly one).

    Every tick the policy estimates the **arrival rate** (an EWMA over ``max(rate_window,
    target)`` seconds of the sensor's ``arrivals`` counter, else of the backlog's rise plus the
    estimated completions, corrected for having started at 0 as if it had seen at least 10 s), the **service time** per task (running task-seconds over finished
    tasks, from the ``completions`` counter or the backlog's falls, half-life 10 minutes; the
    prior ``service_time`` counts as 20 tasks and each running task as half a finished one, once the
    policy has watched for a service time) and the
    **boot time** (``view.boot_seconds``: the median time from the site accepting a launch to the
    node joining, over the domain's latest 20 joins; ``boot_time`` until one has joined).

    The backlog's **deadline** is ``p95_wait``, or for a mean ``max(mean_wait, 2 × mean_wait -
    boot)`` (a backlog drained evenly after a boot waits about half of it on average).

    - **Loose** target (deadline > boot + service: workers launched now would drain a queue in
      time): no idle headroom. With nothing waiting it keeps the busy workers; with tasks
      waiting, at least ``rate × service`` and enough that the waiting tasks start within 0.85 of
      the deadline (they have waited already).
    - **Tight** target: a queue that forms cannot wait for new workers, so the stream gets
      headroom, held for one boot time (a worker removed now could not be back sooner): the fewer
      of two sizings, each at the arrival rate's one-sided 95 % bound (``rate + 1.645 ×`` its
      standard error: the EWMA's Poisson error ``sqrt(rate / (2 × window))``, larger while it has
      seen less, so that a rate that dipped by the arrivals' luck, or a cold start's first
      arrivals, do not take the headroom away). The *stationary* one: the fewest workers whose
      M/M/c queue (Erlang C) meets the target (``P(wait > p95_wait) <= 2.5 %``: half the
      allowance, the rest left for start-ups and rises no rate foresees; or ``E[wait] <=
      mean_wait``), which needs no reaction. The *boot-window* one (:func:`horizon_slots`): idle
      slots enough for the arrivals' excess over one boot, the time until workers launched for a
      queue join (the bound's extra arrivals over that boot count in); cheaper where the target
      lets tasks wait for freed slots. And the waiting tasks plus the arrivals of the deadline
      must start within it (a deadline shorter than a boot is stretched to ``boot + service / 2``).

    Starts within a window come from a fluid picture: a joined worker starts ``window /
    service`` tasks per slot; a new one, up after a boot, ``1 + (window - boot) / service -
    0.5``. While tasks wait the backlog's need is held at its highest (launches under way are
    not cancelled). The target is the larger need, and never fewer than the busy workers (a busy
    worker asked to drain stops taking the queue's tasks and is paid for until its task ends
    anyway), so the pool scales in only to what still meets the target; idle workers then go at
    once (``scaling_defaults``).

    A **mean** target is corrected by what it achieves: the realized mean wait over the last hour
    (Little's law: the time-averaged waiting tasks over the tasks that arrived, once 30 have) is
    compared with the target, and the log of the factor the sizing's target is scaled by moves by
    ``log(target / realized) × dt / 3600`` (within 1/4 and 10): the queueing model holds for a
    stationary stream, a pool whose workers lag a changing one meets a mean with less headroom.

    **Seasonality** (``seasonality: daily`` or ``weekly``; off by default): the arrivals of each
    of ``season_bins`` slices of the season are learned as a running mean of the last 8 seasons
    (kept in memory, which the manager keeps in the store). Once every slice has been seen, the
    forecast stands in for the measured rate: the profile (each slice read with its neighbours,
    weights 1-2-1) at its highest over the next boot time, scaled by this season's level (arrived
    over expected tasks of the last 10 minutes, with 50 tasks of prior at 1; the arrivals of the
    last minute overrule it when they fall outside their two-sigma band: a season that broke, or
    surged, is followed within a minute or two). The stream is then sized by the stationary
    sizing alone (a forecast needs no reaction, its error is the level's), and the backlog
    launches only for tasks beyond those the target lets wait (``rate × wait`` by Little's law,
    plus two sigma). ``season_period`` (seconds) replaces the season's length.

    Memory: ``prev`` (time, backlog, ready, arrivals and completions counters), ``raw_rate``
    (the EWMA) and ``since`` (its first tick), ``work``, ``done``, ``peak`` (the backlog's held
    need), ``streams`` (recent [time, need] pairs), ``calibration`` (a mean target's decayed
    ``waited`` task-seconds and ``arrived`` tasks, and the factor's ``log``), ``season``
    (``rates`` and seasons seen ``n`` per slice, the current ``slice``, its ``count``, the
    level's ``long`` and ``short`` [arrived, expected] sums). :meth:`learned` is what outlasts a
    run: the profile and the correction.

    Parameters:
        p95_wait: seconds 95 % of tasks may wait at most (> 0).
        mean_wait: seconds tasks may wait on average (> 0); give this or ``p95_wait``.
        boot_time: seconds from a launch to a working worker while no node of the domain has
            joined yet (> 0; 40, EC2-like).
        service_time: prior seconds of work per task (> 0; 60).
        slots_per_worker: tasks one worker runs at once (> 0; 1).
        rate_window: seconds the arrival rate is averaged over, at least (> 0; 60).
        seasonality: ``daily``, ``weekly`` or none (default).
        season_period: the season's length in seconds, instead of a day or a week (> 0).
        season_bins: slices of a season (whole number 2-1000; 48).
        sensor: which reading is the backlog (default: the first); its ``ready`` detail is the
            waiting part (else backlog minus busy slots), its ``arrivals`` / ``completions``
            details are counters of tasks arrived / finished, when the sensor gives them.
    """

    scaling_defaults: ClassVar[dict[str, float]] = {"stabilization": 0.0, "idle_timeout": 0.0}
    #: the decider works out ``view.boot_seconds`` from the node records for this policy
    uses_boot_seconds: ClassVar[bool] = True

    p95_wait: float | None = None
    mean_wait: float | None = None
    boot_time: float = 40.0
    service_time: float = 60.0
    slots_per_worker: float = 1.0
    rate_window: float = 60.0
    seasonality: str | None = None
    season_period: float | None = None
    season_bins: int = 48
    sensor: str | None = None

    def __post_init__(self) -> None:
        if (self.p95_wait is None) == (self.mean_wait is None):
            raise ValueError("give exactly one of p95_wait or mean_wait (seconds), e.g. p95_wait: 30")
        name = "p95_wait" if self.p95_wait is not None else "mean_wait"
        check_number(name, getattr(self, name), above=0)
        for name in ("boot_time", "service_time", "slots_per_worker", "rate_window"):
            check_number(name, getattr(self, name), above=0)
        if self.seasonality is not None and self.seasonality not in SEASONS:
            raise ValueError(f"seasonality must be one of {', '.join(SEASONS)} or none, got {self.seasonality!r}")
        if self.season_period is not None:
            check_number("season_period", self.season_period, above=0)
        if isinstance(self.season_bins, bool) or not isinstance(self.season_bins, int) \
                or not 2 <= self.season_bins <= 1000:
            raise ValueError(f"season_bins must be a whole number from 2 to 1000, got {self.season_bins!r}")

    @staticmethod
    def learned(memory: Mapping[str, Any]) -> dict[str, Any]:
        """What of a domain's memory outlasts the run that learned it: the season's profile and a mean
        target's correction (the counters and rates of the moment start afresh). Memory for
        ``Simulation(memory=...)`` of a later day, as the store keeps it for a domain that runs on."""
        mem = recall(memory, OWNER)
        season, calibration = mem.get("season"), mem.get("calibration")
        out: dict[str, Any] = {}
        if isinstance(season, Mapping) and "rates" in season and "n" in season:
            out["season"] = {"rates": list(season["rates"]), "n": list(season["n"])}
        if isinstance(calibration, Mapping) and "log" in calibration:
            out["calibration"] = {"log": float(calibration["log"])}
        return remember(OWNER, out) if out else {}

    @property
    def wait(self) -> float:
        return float(self.p95_wait if self.p95_wait is not None else self.mean_wait)  # type: ignore[arg-type]

    @property
    def kind(self) -> str:
        return "p95" if self.p95_wait is not None else "mean"

    @property
    def period(self) -> float | None:
        if self.seasonality is None and self.season_period is None:
            return None
        return self.season_period or SEASONS[self.seasonality or "daily"]

    def decide(self, view: DomainView, readings: Mapping[str, Reading], now: float) -> Decision:
        reading = primary(readings, self.sensor)
        if reading is None or not reading.ok or reading.value is None:
            return Decision(view.intended, f"no backlog reading: hold {view.intended}")
        slots = self.slots_per_worker
        backlog, ready, running = split_backlog(view.busy, reading.value, reading.detail, slots)
        mem = recall(view.memory, OWNER)
        est = self._estimate(mem, reading.detail, backlog=backlog, ready=ready, running=running, now=now)
        boot = float(view.boot_seconds) if view.boot_seconds is not None else self.boot_time
        season, ahead, evidence = self._season(mem.get("season"), est["arrived"], now=now, boot=boot)
        trusted = evidence > 0  # a whole season learned: its forecast stands in for the measured rate
        rate, service = (ahead if trusted else est["rate"]), est["service"]
        spread = rate / math.sqrt(evidence) if trusted else \
            rate_error(rate, seen=now - est["since"], window=max(self.rate_window, self.wait))
        calibration = self._calibrate(mem.get("calibration"), ready=ready, arrived=est["arrived"], dt=est["dt"])
        wait = self.wait * calibration["factor"]
        stream, drain, loose = self._needs(view, ready=ready, running=running, rate=rate, service=service,
                                           boot=boot, spread=spread, wait=wait, trusted=trusted)
        peak = max(drain, int(mem.get("peak", 0))) if ready > 0 else 0  # launches under way are kept
        streams = [p for p in mem.get("streams") or [] if now - p[0] < boot and p[1] > stream] if not loose else []
        streams.append([now, stream])  # a rate-sized stream holds its need for a boot time (not the busy count)
        # never below the busy workers: one asked to drain would stop taking the queue's tasks, and it
        # is paid for until its task ends either way (an idle one still goes at once)
        target = max(peak, max(p[1] for p in streams), ceil_(running / slots))
        inputs: dict[str, Any] = {"ready": ready, "running": running, "arrival_rate": est["rate"],
                                  "service_time": service, "boot_time": boot, "rate_error": spread, "stream": stream,
                                  "drain": drain, "forecast_rate": ahead, "sized_wait": wait,
                                  "realized_wait": calibration.get("realized")}
        memory = remember(OWNER, {"prev": est["prev"], "raw_rate": est["raw_rate"], "since": est["since"],
                                  "work": est["work"], "done": est["done"], "peak": peak, "streams": streams,
                                  "calibration": calibration["memory"],
                                  **({"season": season} if season is not None else {})})
        source = f"{ahead:.3g}/s forecast" if trusted else f"{rate:.3g}/s arriving"
        why = (f"{ready:g} waiting, {running:g} running, {source}, service {service:.3g}s, boot {boot:.3g}s: "
               f"backlog needs {drain}, stream needs {stream} for {self.kind} wait {self.wait:g}s"
               + (f" (sized for {wait:.3g}s)" if wait != self.wait else ""))
        return Decision(target, f"{why} -> {target}", inputs, memory)

    def _needs(self, view: DomainView, *, ready: float, running: float, rate: float, service: float, boot: float,
               spread: float, wait: float, trusted: bool) -> tuple[int, int, bool]:
        """Workers the stream and the backlog need, and whether the target is loose (see the class doc)."""
        slots, limit = self.slots_per_worker, max(1, math.ceil(view.max_size * self.slots_per_worker))
        deadline = wait if self.kind == "p95" else max(wait, 2 * wait - boot)
        loose = deadline > boot + service
        if loose:
            stream = ceil_((rate * service if ready > 0 else running) / slots)
        elif trusted:  # a forecast needs no reaction: the stationary sizing only
            bound = rate + (RATE_Z * spread if self.kind == "p95" else 0.0)
            stream = ceil_(steady_slots(rate=bound, service=service, target=wait, kind=self.kind, limit=limit) / slots)
        else:
            stream = ceil_(stream_slots(rate=rate, spread=spread, service=service, target=wait, kind=self.kind,
                                        boot=boot, limit=limit) / slots)
        if trusted and not loose:  # only a backlog beyond what the target lets wait (Little's law) is late
            allowed = rate * wait
            ready = max(0.0, ready - allowed - 2.0 * math.sqrt(allowed))
        drain = backlog_workers(ready=ready, rate=0.0 if loose else rate, service=service,
                                deadline=deadline * LOOSE_PLAN if loose else deadline, boot=boot,
                                joined=view.joined, slots=slots)
        return stream, drain, loose

    def _calibrate(self, cal: Any, *, ready: float, arrived: float, dt: float) -> dict[str, Any]:
        """A mean target's correction: the realized mean wait over the last hour (Little's law: the
        time-averaged waiting tasks over the arrivals) against the target, integrated in the log of the
        factor the target is sized for, an hour's time constant, within :data:`CALIBRATION_RANGE`."""
        if self.kind != "mean":
            return {"factor": 1.0, "memory": {}}
        cal = cal if isinstance(cal, Mapping) else {}
        waited, came, log = (float(cal.get(k, 0.0)) for k in ("waited", "arrived", "log"))
        out: dict[str, Any] = {}
        if dt > 0:
            keep = math.exp(-dt / CALIBRATION_WINDOW)
            waited, came = waited * keep + ready * dt, came * keep + arrived
            if came >= CALIBRATION_EVIDENCE:
                out["realized"] = realized = waited / came
                step = dt / CALIBRATION_WINDOW * math.log(self.wait / max(realized, self.wait / 10))
                low, high = (math.log(x) for x in CALIBRATION_RANGE)
                log = min(high, max(low, log + step))
        out["factor"] = math.exp(log)
        out["memory"] = {"waited": waited, "arrived": came, "log": log}
        return out

    def _estimate(self, mem: Mapping[str, Any], detail: Mapping[str, float], *, backlog: float, ready: float,
                  running: float, now: float) -> dict[str, Any]:
        """Arrivals since the last tick, the arrival rate and the service time (see the class doc)."""
        counted = {k: float(detail[k]) for k in ("arrivals", "completions") if k in detail}
        t0, before, _, a0, c0 = (mem.get("prev") or [now, backlog, ready, None, None])
        work, done = float(mem.get("work", 0.0)), float(mem.get("done", 0.0))
        prior, since = PRIOR_TASKS * self.service_time, float(mem.get("since", now))
        # a running task has done about half its work once the policy has watched it that long
        running_done = running * min(0.5, (now - since) / (2 * self.service_time))
        service = (work + prior) / (done + PRIOR_TASKS + running_done)
        dt = now - float(t0)
        finished = arrived = 0.0
        if dt > 0:
            if "completions" in counted and c0 is not None:
                finished = max(0.0, counted["completions"] - float(c0))
            else:
                finished = min(running, running * dt / service) if backlog <= before else max(0.0, before - backlog)
            if "arrivals" in counted and a0 is not None:
                arrived = max(0.0, counted["arrivals"] - float(a0))
            else:
                arrived = max(0.0, backlog - float(before) + finished)
            keep = 0.5 ** (dt / FORGET)
            if "completions" in counted or backlog < before:
                work, done = work * keep + running * dt, done * keep + finished
                service = (work + prior) / (done + PRIOR_TASKS + running_done)
        raw, window = float(mem.get("raw_rate", 0.0)), max(self.rate_window, self.wait)
        if dt > 0:
            raw += (1.0 - math.exp(-dt / window)) * (arrived / dt - raw)
        # an EWMA started at 0 is low by this factor at first; a few seconds of arrivals are not a rate yet
        seen = 1.0 - math.exp(-max(now - since, EVIDENCE) / window)
        rate = raw / seen if seen > 0 else raw
        prev = [now, backlog, ready, counted.get("arrivals"), counted.get("completions")]
        return {"rate": rate, "raw_rate": raw, "since": since, "service": service, "work": work, "done": done,
                "arrived": arrived, "prev": prev, "dt": max(0.0, dt)}

    def _season(self, season: Any, arrived: float, *, now: float,
                boot: float) -> tuple[dict[str, Any] | None, float, float]:
        """The learned profile with this tick's arrivals added; its forecast (the highest rate over the
        next boot time, scaled to this season's level) and the tasks of evidence behind that level, or
        0 for both until every slice has been seen once."""
        period = self.period
        if period is None:
            return None, 0.0, 0.0
        season = self._learn(season, arrived, now=now, period=period)
        if min(season["n"]) < 1:
            return season, 0.0, 0.0
        width = period / self.season_bins
        level, evidence = self._level(season)
        steps = max(1, math.ceil(boot / (width / 2)))
        ahead = max(self._profile(season["rates"], now + k * boot / steps, period) for k in range(steps + 1))
        return season, ahead * level, evidence

    def _learn(self, season: Any, arrived: float, *, now: float, period: float) -> dict[str, Any]:
        """Add a tick's arrivals: a finished slice joins its running mean (at most :data:`SEASON_MEMORY`
        seasons); the level's long and short sums of arrived and expected tasks decay and grow."""
        bins = self.season_bins
        width = period / bins
        where = int(now % period // width)
        season = dict(season) if isinstance(season, Mapping) else {}
        rates, seen = list(season.get("rates") or []), list(season.get("n") or [])
        if len(rates) != bins or len(seen) != bins:
            rates, seen = [0.0] * bins, [0] * bins
        current, count = season.get("slice", where), float(season.get("count", 0.0))
        if current != where:
            if isinstance(current, int) and 0 <= current < bins:  # the slice is over: into its running mean
                seen[current] = min(SEASON_MEMORY, int(seen[current]) + 1)
                rates[current] += (count / width - float(rates[current])) / seen[current]
            count = 0.0
        dt = max(0.0, now - float(season.get("t", now)))
        learned = min(seen) >= 1  # the level compares arrivals with a whole profile only
        expected = self._profile(rates, now, period) * dt if learned else 0.0
        sums = {}
        for name, window in (("long", LEVEL_WINDOW), ("short", SHORT_WINDOW)):
            keep = math.exp(-dt / window)
            old = season.get(name) or [0.0, 0.0]
            sums[name] = [float(old[0]) * keep + (arrived if learned else 0.0), float(old[1]) * keep + expected]
        return {"rates": rates, "n": seen, "slice": where, "count": count + arrived, "t": now, **sums}

    def _profile(self, rates: list[float], t: float, period: float) -> float:
        """The learned rate at ``t``: its slice and the neighbours, weighted by :data:`SEASON_KERNEL`."""
        bins = len(rates)
        j = int(t % period // (period / bins))
        return sum(w * float(rates[(j + d) % bins]) for d, w in SEASON_KERNEL) / sum(w for _, w in SEASON_KERNEL)

    @staticmethod
    def _level(season: Mapping[str, Any]) -> tuple[float, float]:
        """This season against the profile: arrived over expected tasks of the last ``LEVEL_WINDOW``
        seconds (with :data:`LEVEL_PRIOR` tasks at 1), unless the last ``SHORT_WINDOW`` seconds fall
        outside their two-sigma band of it (the season broke or surged: their own ratio); and the tasks
        of evidence behind it."""
        (came, expected), (came_short, expected_short) = season["long"], season["short"]
        level = (came + LEVEL_PRIOR) / (expected + LEVEL_PRIOR)
        evidence = came + LEVEL_PRIOR
        if expected_short >= 5.0:  # fewer expected tasks say too little to overrule the level
            band = 2.0 * math.sqrt(came_short)
            if not (came_short - band) / expected_short <= level <= (came_short + band + 2.0) / expected_short:
                level, evidence = (came_short + 0.5) / expected_short, came_short + 0.5
        return level, evidence
