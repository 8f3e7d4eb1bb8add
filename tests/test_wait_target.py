"""The wait_target policy: its documented sizing on an injected clock, the boot time the decider learns
from node records, the simulator's wait-target report and the sim_queue counters. No real workers."""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import pytest

from policies import load_policy
from policies.wait_target import (
    CALIBRATION_RANGE,
    RATE_Z,
    SEASON_MEMORY,
    SHORT_WINDOW,
    WaitTarget,
    backlog_workers,
    erlang_c,
    horizon_slots,
    rate_error,
    steady_slots,
    stream_slots,
)
from pool.control.decider import boot_seconds
from pool.control.manager import Observation, plan_domain
from pool.core.model import DomainState, DomainView, Heartbeat, NodeRecord, NodeState, Reading, parse_domain_spec
from pool.sim.simulate import (
    DOMAIN,
    PolicyChoice,
    Simulation,
    SimulationError,
    check_targets,
    parse_target,
    simulate_many,
)
from pool.sim.traces import Task, burst, poisson
from pool.sites.provisioner import SiteNode
from sensors import simqueue

S = NodeState


def view(*, joined: int = 0, busy: int = 0, booting: int = 0, boot: float | None = None, memory: Any = None,
         max_size: int = 1000) -> DomainView:
    return DomainView(name="d", min_size=0, max_size=max_size, actual=joined + booting, joined=joined,
                      booting=booting, busy=busy, idle=joined - busy, draining=0, intended=joined + booting,
                      memory=memory or {}, boot_seconds=boot)


def queue(ready: float, running: float, t: float, arrivals: float | None = None,
          completions: float | None = None) -> dict[str, Reading]:
    detail: dict[str, float] = {"ready": ready, "unacked": running}
    if arrivals is not None and completions is not None:
        detail.update(arrivals=arrivals, completions=completions)
    return {"q": Reading("q", ready + running, t, detail=detail)}


# ---------------------------------------------------------------------------
# parameters and the queueing formulas
# ---------------------------------------------------------------------------


def test_exactly_one_wait_target_and_checked_parameters() -> None:
    assert load_policy("wait_target", {"p95_wait": 30}).decide is not None
    for bad, word in (({}, "exactly one"), ({"p95_wait": 30, "mean_wait": 5}, "exactly one"),
                      ({"p95_wait": -1}, "p95_wait"), ({"mean_wait": True}, "mean_wait"),
                      ({"p95_wait": 30, "seasonality": "hourly"}, "seasonality"),
                      ({"p95_wait": 30, "season_bins": 1}, "season_bins"),
                      ({"p95_wait": 30, "boot_time": 0}, "boot_time")):
        with pytest.raises(ValueError, match=word):
            load_policy("wait_target", bad)


def test_erlang_c_matches_hand_computed_queues() -> None:
    assert erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: an arrival waits with probability rho
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)  # (a^2/2 * 2) / (1 + a + a^2/2 * 2)
    assert erlang_c(3, 3.0) == 1.0 and erlang_c(3, 0.0) == 0.0
    # M/M/1 at rho 0.5, service 10 s: mean wait = C / (mu - lambda) = 0.5 / 0.05 = 10 s: one slot meets
    # a 10 s mean, a 9 s mean needs two
    assert steady_slots(rate=0.05, service=10.0, target=10.0, kind="mean", limit=100) == 1
    assert steady_slots(rate=0.05, service=10.0, target=9.0, kind="mean", limit=100) == 2
    assert steady_slots(rate=0.0, service=10.0, target=9.0, kind="p95", limit=100) == 0


def test_backlog_workers_follow_the_fluid_picture() -> None:
    # 100 waiting, nobody joined, deadline 90 s, boot 40, service 60: a new worker starts
    # 1 + (50/60 - 0.5) = 4/3 tasks in time -> 75 workers
    assert backlog_workers(ready=100, rate=0, service=60, deadline=90, boot=40, joined=0, slots=1) == 75
    # 30 joined start 30 * 90/60 = 45 of them; 55 left for new workers -> 30 + 42
    assert backlog_workers(ready=100, rate=0, service=60, deadline=90, boot=40, joined=30, slots=1) == 72
    # a deadline shorter than a boot is stretched to boot + service/2 = 70 s: one task per new worker
    assert backlog_workers(ready=100, rate=0, service=60, deadline=30, boot=40, joined=0, slots=1) == 100
    assert backlog_workers(ready=0, rate=5, service=60, deadline=30, boot=40, joined=0, slots=1) == 0


# ---------------------------------------------------------------------------
# the policy on an injected clock
# ---------------------------------------------------------------------------


def test_a_burst_gets_the_hand_computed_workers_and_keeps_them_while_tasks_wait() -> None:
    # loose: 120 > boot 40 + service 60: start the 100 within 0.85 x 120 = 102 s; a new worker starts
    # 1 + (102 - 40) / 60 - 0.5 = 1.533 of them in time -> 66 workers
    policy = WaitTarget(p95_wait=120)
    first = policy.decide(view(boot=40.0), queue(100, 0, 1000.0), 1000.0)
    assert first.target == 66 and first.inputs["drain"] == 66
    # ten seconds later 30 have joined and run, 70 wait: the need falls, the launches under way stay
    second = policy.decide(view(joined=30, busy=30, booting=45, boot=40.0, memory=first.memory),
                           queue(70, 30, 1010.0, ), 1010.0)
    assert second.inputs["drain"] == backlog_workers(ready=70, rate=0, service=second.inputs["service_time"],
                                                     deadline=102, boot=40, joined=30, slots=1) < 66
    assert second.target == 66
    # the queue is empty: only the busy workers stay (idle ones go at once)
    third = policy.decide(view(joined=75, busy=40, boot=40.0, memory=second.memory), queue(0, 40, 1100.0), 1100.0)
    assert third.target == 40


def test_the_learned_boot_time_changes_the_plan_and_the_default_applies_without_one() -> None:
    slow = WaitTarget(p95_wait=120).decide(view(boot=200.0), queue(100, 0, 0.0), 0.0)
    assert slow.inputs["boot_time"] == 200.0 and slow.target == 100  # tight now: one task per new worker
    default = WaitTarget(p95_wait=120, boot_time=40.0).decide(view(boot=None), queue(100, 0, 0.0), 0.0)
    assert default.inputs["boot_time"] == 40.0 and default.target == 66


def steady(policy: WaitTarget, *, joined: int, rate: float, service: float, seconds: int,
           memory: Any = None) -> tuple[Any, Any]:
    """Feed a steady stream (counters, nothing waiting) for ``seconds``; the last decision."""
    decision = None
    running = round(rate * service)
    for t in range(seconds + 1):
        decision = policy.decide(view(joined=joined, busy=running, boot=40.0, memory=memory),
                                 queue(0, running, float(t), arrivals=rate * t, completions=max(0.0, rate * (t - service))),
                                 float(t))
        memory = decision.memory
    assert decision is not None
    return decision, memory


def test_the_boot_window_sizing_matches_hand_computed_headroom() -> None:
    # p95: 1 task/s of 60 s tasks, boot 40 s, target 10 s: the excess over a boot window has spread
    # sqrt(1 x (2 x 40 + 10)) = 9.49; at z = 1.96 that is 18.59 tasks, less the 10 a 10 s wait lets
    # queue for freed slots: 60 busy + 8.59 idle -> 69 slots
    assert horizon_slots(rate=1.0, service=60.0, target=10.0, kind="p95", boot=40.0) == 69
    # 30 s: 1.96 x sqrt(110) = 20.56 < 30: the busy slots free enough in time, no idle slot
    assert horizon_slots(rate=1.0, service=60.0, target=30.0, kind="p95", boot=40.0) == 60
    # 6 more arrivals than the rate says over the boot (its error): 68.59 + 6 -> 75
    assert horizon_slots(rate=1.0, service=60.0, target=10.0, kind="p95", boot=40.0, bias=6.0) == 75
    assert horizon_slots(rate=0.0, service=60.0, target=10.0, kind="p95", boot=40.0) == 0
    # mean: the fewest idle slots h with E[(X - h)+] <= rate x mean_wait, X ~ N(0, 2 x rate x boot)
    dist = NormalDist(0.0, math.sqrt(2 * 1.0 * 40.0))

    def shortfall(h: float) -> float:  # E[(X - h)+] by summing the density on a fine grid
        step = 0.01
        return sum((x - h) * dist.pdf(x) * step for x in (h + step * (k + 0.5) for k in range(6000)))

    slots = horizon_slots(rate=1.0, service=60.0, target=2.0, kind="mean", boot=40.0)
    idle = slots - 60
    assert idle > 0 and shortfall(idle) <= 2.0 < shortfall(idle - 1)


def test_the_rate_error_is_the_ewmas_poisson_error_and_widens_the_stream() -> None:
    # an EWMA over 60 s of 0.5 tasks/s: variance 0.5 / 120; less evidence (20 s seen): 0.5 / 20
    assert rate_error(0.5, seen=3600.0, window=60.0) == pytest.approx(math.sqrt(0.5 / 120))
    assert rate_error(0.5, seen=20.0, window=60.0) == pytest.approx(math.sqrt(0.5 / 20))
    assert rate_error(0.5, seen=1.0, window=60.0) == pytest.approx(math.sqrt(0.5 / 10))  # 10 s at least
    spread = rate_error(1.0, seen=3600.0, window=60.0)
    kw: dict[str, Any] = {"service": 60.0, "target": 10.0, "kind": "p95", "boot": 40.0, "limit": 1000}
    sized = stream_slots(rate=1.0, spread=spread, **kw)
    assert sized == min(steady_slots(rate=1.0 + RATE_Z * spread, service=60.0, target=10.0, kind="p95", limit=1000),
                        horizon_slots(rate=1.0, service=60.0, target=10.0, kind="p95", boot=40.0,
                                      bias=RATE_Z * spread * 40.0))
    assert sized > stream_slots(rate=1.0, spread=0.0, **kw)


def test_a_tight_target_never_scales_in_below_the_stream_need() -> None:
    policy = WaitTarget(p95_wait=10, service_time=60.0)
    decision, memory = steady(policy, joined=80, rate=0.5, service=60.0, seconds=1800)
    rate, service = decision.inputs["arrival_rate"], decision.inputs["service_time"]
    assert rate == pytest.approx(0.5, rel=0.02) and service == pytest.approx(60.0, rel=0.1)
    spread = decision.inputs["rate_error"]
    assert spread == pytest.approx(rate_error(rate, seen=1800.0, window=60.0))
    need = stream_slots(rate=rate, spread=spread, service=service, target=10.0, kind="p95", boot=40.0, limit=1000)
    held = max(p[1] for p in decision.memory["streams"])  # the highest need of the last boot time
    assert decision.target == held and need <= held <= need + 1 and 30 < need < 80  # not 80, never below the need
    # at that size the boot window's excess (rate's error included) fits the idle slots, one fewer it does not
    z = NormalDist().inv_cdf(0.975)
    excess = z * math.sqrt(rate * (2 * 40.0 + 10.0)) + RATE_Z * spread * 40.0 - rate * 10.0
    assert need - rate * service >= excess > need - 1 - rate * service
    # the rate falls to nothing: the need is held one boot time (40 s), then released
    quiet = policy.decide(view(joined=need, busy=0, boot=40.0, memory=memory), queue(0, 0, 1820.0, 900.0, 900.0),
                          1820.0)
    assert quiet.target == need
    later = policy.decide(view(joined=need, busy=0, boot=40.0, memory=quiet.memory),
                          queue(0, 0, 1900.0, 900.0, 900.0), 1900.0)
    assert later.target < need


def test_without_counters_the_rate_comes_from_the_backlog() -> None:
    policy, memory = WaitTarget(p95_wait=30), None
    for t in range(0, 301):  # 2 tasks a second pile up, nothing runs
        decision = policy.decide(view(memory=memory), queue(2.0 * t, 0, float(t)), float(t))
        memory = decision.memory
    assert decision.inputs["arrival_rate"] == pytest.approx(2.0, rel=0.05)


def test_seasonality_launches_ahead_of_a_learned_rise() -> None:
    period, bins = 600.0, 12  # slices of 50 s; the arrivals rise from 0.1/s to 1/s at 300 s of each period

    def rate_at(t: float) -> float:
        return 1.0 if t % period >= 300 else 0.1

    def run(policy: WaitTarget) -> list[Any]:
        memory, arrived, out = None, 0.0, []
        for t in range(0, int(3 * period)):
            arrived += rate_at(t)
            d = policy.decide(view(joined=20, busy=5, boot=40.0, memory=memory),
                              queue(0, 5, float(t), arrivals=arrived, completions=arrived), float(t))
            memory = d.memory
            out.append(d)
        return out

    seasonal = run(WaitTarget(p95_wait=10, season_period=period, season_bins=bins))
    plain = run(WaitTarget(p95_wait=10))
    before_rise = int(2 * period + 280)  # 20 s before the third period's rise, within a boot of it
    assert seasonal[before_rise].inputs["forecast_rate"] > 0.5
    assert seasonal[before_rise].target > 2 * plain[before_rise].target
    assert plain[before_rise].inputs["forecast_rate"] == 0.0
    assert len(seasonal[-1].memory["season"]["rates"]) == bins


def test_the_busy_workers_are_a_floor_a_falling_rate_does_not_drain_them() -> None:
    # 40 workers busy, the arrivals stopped long ago: the stream needs nothing, yet a worker asked to
    # drain would stop taking the queue's tasks; the busy ones stay until they are idle
    policy = WaitTarget(p95_wait=10)
    decision, memory = steady(policy, joined=40, rate=0.01, service=60.0, seconds=600)
    later = policy.decide(view(joined=40, busy=40, boot=40.0, memory=memory), queue(3, 40, 700.0, 6.0, 6.0), 700.0)
    assert later.inputs["stream"] < 40 and later.target >= 40


def calibrated(policy: WaitTarget, *, ready: float, seconds: int) -> Any:
    """A mean-target policy fed 1 task/s with ``ready`` tasks always waiting, one tick a second."""
    decision, memory = None, None
    for t in range(seconds + 1):
        decision = policy.decide(view(joined=70, busy=60, boot=40.0, memory=memory),
                                 queue(ready, 60, float(t), arrivals=float(t), completions=float(t)), float(t))
        memory = decision.memory
    return decision


def test_a_mean_target_is_corrected_by_the_realized_wait_within_bounds() -> None:
    # nothing ever waits: the realized mean (Little's law: waiting tasks over arrivals) is 0, below the
    # 5 s target, so the stream is sized for a longer wait, by at most CALIBRATION_RANGE[1]
    hour = calibrated(WaitTarget(mean_wait=5), ready=0, seconds=3600)
    assert hour.inputs["realized_wait"] == 0.0 and hour.inputs["sized_wait"] > 5.0
    day = calibrated(WaitTarget(mean_wait=5), ready=0, seconds=8 * 3600)
    assert day.inputs["sized_wait"] == pytest.approx(5.0 * CALIBRATION_RANGE[1])
    # 20 tasks always wait at 1 task/s: 20 s realized against 5 s: sized for less, at least the low bound
    slow = calibrated(WaitTarget(mean_wait=5), ready=20, seconds=3 * 3600)
    assert slow.inputs["realized_wait"] == pytest.approx(20.0, rel=0.01)
    assert 5.0 * CALIBRATION_RANGE[0] <= slow.inputs["sized_wait"] < 5.0
    # fewer than 30 arrivals say nothing yet; a p95 target is never corrected
    early = calibrated(WaitTarget(mean_wait=5), ready=0, seconds=20)
    assert early.inputs["sized_wait"] == 5.0 and early.inputs["realized_wait"] is None
    assert calibrated(WaitTarget(p95_wait=5), ready=0, seconds=3600).inputs["sized_wait"] == 5.0


def seasons(policy: WaitTarget, rate_at: Any, *, start: int, seconds: int, memory: Any = None,
            arrived: float = 0.0) -> tuple[list[Any], Any, float]:
    """Feed arrivals at ``rate_at(t)`` per second from ``start`` for ``seconds``, one tick a second."""
    out = []
    for t in range(start, start + seconds):
        arrived += rate_at(t)
        d = policy.decide(view(joined=30, busy=5, boot=40.0, memory=memory),
                          queue(0, 5, float(t), arrivals=arrived, completions=arrived), float(t))
        memory = d.memory
        out.append(d)
    return out, memory, arrived


def test_the_profile_is_a_running_mean_of_the_seasons_and_forecasts_once_each_slice_is_seen() -> None:
    period, bins = 400.0, 4  # slices of 100 s
    policy = WaitTarget(p95_wait=10, season_period=period, season_bins=bins)
    out, memory, n = seasons(policy, lambda t: 1.0, start=0, seconds=390)
    assert all(d.inputs["forecast_rate"] == 0.0 for d in out)  # the last slice is not over: no forecast yet
    half = lambda t: 1.0 if t < period else 0.5  # noqa: E731  the second season at half the rate
    out, memory, n = seasons(policy, half, start=390, seconds=11, memory=memory, arrived=n)
    assert out[-1].memory["season"]["n"] == [1, 1, 1, 1] and out[-1].inputs["forecast_rate"] > 0
    # each slice's running mean of the two seasons is 0.75
    out, memory, n = seasons(policy, half, start=401, seconds=400, memory=memory, arrived=n)
    rates, seen = out[-1].memory["season"]["rates"], out[-1].memory["season"]["n"]
    assert seen == [2, 2, 2, 2] and rates == pytest.approx([0.75] * 4, rel=0.02)
    # the mean runs over SEASON_MEMORY seasons at most: old ones fade
    out, memory, n = seasons(policy, lambda t: 0.5, start=801, seconds=int(period) * (SEASON_MEMORY + 2),
                             memory=memory, arrived=n)
    assert max(out[-1].memory["season"]["n"]) == SEASON_MEMORY
    # twelve seasons: the mean of the first SEASON_MEMORY (one at 1.0, the rest 0.5), then each later one
    # weighs 1 / SEASON_MEMORY
    faded = 0.5 + 0.5 / SEASON_MEMORY * (1 - 1 / SEASON_MEMORY) ** (12 - SEASON_MEMORY)
    assert out[-1].memory["season"]["rates"] == pytest.approx([faded] * 4, rel=0.01)


def test_a_season_that_breaks_forecasts_what_arrives_within_a_short_window() -> None:
    period, bins = 400.0, 8
    policy = WaitTarget(p95_wait=10, season_period=period, season_bins=bins)
    out, memory, n = seasons(policy, lambda t: 1.0, start=0, seconds=3 * int(period))
    assert out[-1].inputs["forecast_rate"] == pytest.approx(1.0, rel=0.1)
    # the arrivals stop: the forecast follows the short window's decaying count down (e^-1 of the
    # profile a window later, under 5 % after four), not the ten-minute level, and the target with it
    quiet, memory, n = seasons(policy, lambda t: 0.0, start=1200, seconds=4 * int(SHORT_WINDOW), memory=memory,
                               arrived=n)
    assert quiet[int(SHORT_WINDOW)].inputs["forecast_rate"] < 0.45
    assert quiet[-1].inputs["forecast_rate"] < 0.05 and quiet[-1].target < out[-1].target
    # they surge to four times the profile: the forecast follows them up as fast
    surge, memory, n = seasons(policy, lambda t: 4.0, start=1440, seconds=2 * int(SHORT_WINDOW), memory=memory,
                               arrived=n)
    assert surge[-1].inputs["forecast_rate"] > 3.0


def test_a_forecast_launches_only_for_a_backlog_beyond_what_the_target_lets_wait() -> None:
    period, bins = 400.0, 4
    policy = WaitTarget(mean_wait=10, season_period=period, season_bins=bins)
    out, memory, n = seasons(policy, lambda t: 1.0, start=0, seconds=3 * int(period))
    t = 3 * period
    # 1 task/s and a 10 s mean: about 10 may wait at any time; 12 waiting is no reason to launch
    small = policy.decide(view(joined=30, busy=30, boot=40.0, memory=memory),
                          queue(12, 30, t, arrivals=n + 1, completions=n), t)
    assert small.inputs["drain"] == 0
    large = policy.decide(view(joined=30, busy=30, boot=40.0, memory=memory),
                          queue(120, 30, t, arrivals=n + 1, completions=n), t)
    assert large.inputs["drain"] > 0


def test_what_a_day_learned_carries_to_the_next_through_the_simulator() -> None:
    params = {"mean_wait": 10, "season_period": 600.0, "season_bins": 6}
    day = poisson(n=1300, rate=1.0, seed=7)  # 1300 s: two seasons of 600 s
    first = Simulation(day, PolicyChoice("wt", "wait_target", params), profile="ec2", seed=1)
    first.run()
    learned = WaitTarget.learned(first.store.get_state(DOMAIN).policy_memory)
    assert set(learned) == {"policy", "season", "calibration"} and set(learned["season"]) == {"rates", "n"}
    assert min(learned["season"]["n"]) >= 1
    assert WaitTarget.learned({"policy": "queue_depth", "season": learned["season"]}) == {}  # not its memory
    second = Simulation(day, PolicyChoice("wt", "wait_target", params), profile="ec2", seed=1, memory=learned)
    second.run()
    forecasts = [e["inputs"]["forecast_rate"] for e in second.store.events(DOMAIN, count=5000, kind="decision")]
    cold = [e["inputs"]["forecast_rate"] for e in first.store.events(DOMAIN, count=5000, kind="decision")]
    assert forecasts and cold
    # the events come newest first: the second day forecasts from its first decision, the first could not
    assert forecasts[-1] > 0.5 and cold[-1] == 0.0


# ---------------------------------------------------------------------------
# the boot time from node records, through the decider
# ---------------------------------------------------------------------------


def record(node_id: str, created: float, pending: float, joined: float | None) -> NodeRecord:
    rec = NodeRecord.new(node_id=node_id, domain="d", launch_id=f"L-{node_id}", site="local",
                         deployable_type="celery-worker", now=created)
    rec.set_state(S.PENDING, pending)
    if joined is not None:
        rec.set_state(S.STARTED, joined - 1)
        rec.set_state(S.JOINED, joined)
    return rec


def test_boot_seconds_is_the_median_of_the_latest_joins_from_the_site_accepting_the_launch() -> None:
    assert boot_seconds([]) is None
    assert boot_seconds([record("x", 0, 1, None)]) is None  # never joined
    # queued 100 s behind the API, then 30 s to join: the site's boot is 30 s
    assert boot_seconds([record("a", 0, 100, 130)]) == 30
    recs = [record(f"n{i}", 0, 0, 10 * i + 20) for i in range(30)]  # boots 20, 30, ... 310
    assert boot_seconds(recs, recent=3) == 300  # the three that joined last: 290, 300, 310
    assert boot_seconds(recs[:4]) == 35  # 20, 30, 40, 50: the middle two averaged
    gone = record("g", 0, 0, 1000)
    gone.set_state(S.DRAINING, 1001)
    assert boot_seconds([gone, *recs[:4]]) == 35  # a node no longer joined is not counted


def test_the_decider_hands_the_policy_the_boot_time_of_the_domain_records() -> None:
    spec = parse_domain_spec({"name": "d", "max": 10, "celery": {"app": "tasks"}, "scaling": {"stabilization": 0},
                              "policy": {"name": "wait_target", "p95_wait": 120}})
    nodes = [record("a", 0, 5, 47), record("b", 10, 12, 62), record("c", 20, 21, 100)]  # 42, 50, 79
    hbs = {n.node_id: Heartbeat(time=100.0, ready=True, active=1) for n in nodes}
    obs = Observation(spec=spec, state=DomainState(intended=3), nodes=tuple(nodes), heartbeats=hbs,
                      site_nodes={n.node_id: SiteNode(n.node_id, n.node_id, True, {}) for n in nodes},
                      site_available=True, now=100.0,
                      readings={"celery": Reading("celery", 3.0, 100.0, detail={"ready": 0.0})})
    counter = iter(range(100))
    plan = plan_domain(obs, load_policy("wait_target", {"p95_wait": 120}),
                       new_ids=lambda d: (f"{d}-{next(counter)}", f"l{next(counter)}"))
    assert plan.view.boot_seconds == 50
    assert plan.decision.inputs["boot_time"] == 50


# ---------------------------------------------------------------------------
# the simulator: targets met, a learned boot time, deterministic reports
# ---------------------------------------------------------------------------


def test_a_burst_meets_its_p95_target_in_the_simulator_with_the_site_boot_time_learned() -> None:
    tasks = burst(n=60, service=60.0, cv=0.0, seed=1)
    sim = Simulation(tasks, PolicyChoice("wt", "wait_target", {"p95_wait": 150}), profile="ec2", seed=1)
    result = sim.run()
    assert result["unfinished"] == 0 and result["p95_wait"] <= 150
    boots = [e["inputs"]["boot_time"] for e in sim.store.events(DOMAIN, count=1000, kind="decision")]
    learned = [b for b in boots if b != 40.0]  # 40: the default, before any node joined
    assert 40.0 in boots and learned and all(20 < b < 80 for b in learned)  # the ec2 profile: median 40 s
    # the need: 60 tasks, 150 s: one worker starts 1 + (112.5 - 40)/60 - 0.5 tasks; no worker per task
    assert result["peak_workers"] < 60


def test_wait_target_reports_are_deterministic_and_say_what_was_met() -> None:
    tasks = poisson(n=150, rate=0.5, seed=3)
    choices = [PolicyChoice("wt", "wait_target", {"p95_wait": 60}), PolicyChoice("qd", "queue_depth", {})]

    def report() -> dict[str, Any]:
        r = simulate_many(tasks, choices, seed=2, targets=[("p95", 30.0), ("mean", 5.0)])
        r.pop("runtime")
        return r

    one, two = report(), report()
    assert one == two
    by = {r["policy"]: r for r in one["results"]}
    assert set(by["wt"]["targets"]) == {"p95_30", "mean_5", "p95_60"}  # its own target is checked too
    assert set(by["qd"]["targets"]) == {"p95_30", "mean_5"}
    for r in one["results"]:
        for key, t in r["targets"].items():
            kind, seconds = key.split("_")
            assert t["met"] == (r[f"{kind}_wait"] <= float(seconds)) and t["worker_hours"] == r["worker_hours"]
    assert by["oracle"]["targets"]["p95_30"]["met"]


def test_check_targets_counts_unfinished_work_as_missed_and_targets_parse() -> None:
    assert check_targets({"p95_wait": 1.0, "unfinished": 2, "worker_hours": 1.0}, [("p95", 5.0)])["p95_5"]["met"] \
        is False
    assert parse_target("p95=30") == ("p95", 30.0) and parse_target("mean_wait=2.5") == ("mean", 2.5)
    for bad in ("p95", "p99=3", "mean=-1", "p95=nan"):
        with pytest.raises(SimulationError, match="p95=SECONDS"):
            parse_target(bad)


def test_sim_queue_gives_arrival_and_completion_counters_when_the_queue_counts() -> None:
    class Counted:
        def depth(self) -> tuple[int, int]:
            return 3, 2

        def counters(self) -> tuple[int, int]:
            return 10, 5

    class Plain:
        def depth(self) -> tuple[int, int]:
            return 3, 2

    counted = simqueue.attach({"a": Counted(), "b": Plain()})
    r = counted("sim_queue", {"queue": "a"}).read(1.0)
    assert r.value == 5 and r.detail == {"ready": 3, "unacked": 2, "arrivals": 10.0, "completions": 5.0}
    assert counted("sim_queue", {"queue": "b"}).read(1.0).detail == {"ready": 3, "unacked": 2}
    tasks = [Task(arrival=float(i), service=5.0) for i in range(5)]
    sim = Simulation(tasks, PolicyChoice("qd", "queue_depth", {}), profile="local", seed=0)
    sim.run()
    assert sim.counters() == (5, 5)
