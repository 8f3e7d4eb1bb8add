"""The pure planning step: doctor, decision, victims; no Redis, no processes."""

from __future__ import annotations

from typing import Any

from policies import load_policy
from pool.control.manager import Observation, choose_victims, plan_domain
from pool.core.model import DomainState, Heartbeat, NodeRecord, NodeState, Reading, parse_domain_spec
from pool.sites.provisioner import SiteNode

S = NodeState


def spec(**kw: Any):
    base = {"name": "d", "max": 10, "celery": {"app": "tasks"},
            "policy": {"name": "queue_depth", "tasks_per_worker": 1},
            "scaling": {"stabilization": 0},
            "timeouts": {"heartbeat_interval": 1, "heartbeat_timeout": 3, "boot": 60, "drain": 100}}
    base.update(kw)
    return parse_domain_spec(base)


def joined(node_id: str, t: float = 0.0) -> NodeRecord:
    rec = NodeRecord.new(node_id=node_id, domain="d", launch_id=f"L-{node_id}", site="local",
                         deployable_type="celery-worker", now=t)
    for st in (S.PENDING, S.STARTED, S.JOINED):
        rec.set_state(st, t)
    return rec


def observe(nodes: list[NodeRecord], hbs: dict[str, Heartbeat], value: float | None, now: float,
            sp=None, state: DomainState | None = None, error: str | None = None) -> Observation:
    listing = {n.node_id: SiteNode(n.node_id, n.node_id, True, {}) for n in nodes
               if n.state not in (S.TERMINATED,)}
    return Observation(spec=sp or spec(), state=state or DomainState(intended=len(nodes)), nodes=tuple(nodes),
                       heartbeats=hbs, site_nodes=listing, site_available=True,
                       readings={"celery": Reading("celery", value, now, error=error)}, now=now)


def ids(counter: list[int]):
    def new(domain: str) -> tuple[str, str]:
        counter[0] += 1
        return f"{domain}-new{counter[0]}", f"launch{counter[0]}"
    return new


def test_burst_launches_from_zero_with_fresh_launch_ids() -> None:
    plan = plan_domain(observe([], {}, 3, 10.0, state=DomainState()), load_policy("queue_depth", {}),
                       new_ids=ids([0]))
    assert plan.decision.target == 3
    assert [r.state for r in plan.launches] == [S.REQUESTED] * 3
    assert len({r.launch_id for r in plan.launches}) == 3
    assert any(kind == "decision" for kind, _ in plan.events)


def test_dead_worker_is_replaced_in_the_same_tick() -> None:
    a, b = joined("a"), joined("b")
    now = 100.0
    hbs = {"a": Heartbeat(time=now - 0.5, ready=True, active=1), "b": Heartbeat(time=now - 10, ready=True, active=1)}
    plan = plan_domain(observe([a, b], hbs, 2, now), load_policy("queue_depth", {}), new_ids=ids([0]))
    states = {r.node_id: r.state for r in plan.changed}
    assert states["b"] == S.UNHEALTHY
    assert [t.node_id for t in plan.terminations] == ["b"] and plan.terminations[0].grace == 0
    assert len(plan.launches) == 1  # the replacement
    assert plan.view.actual == 1


def test_workload_death_reported_in_heartbeat_is_replaced() -> None:
    a = joined("a")
    plan = plan_domain(observe([a], {"a": Heartbeat(time=99.9, ready=True, workload_alive=False)}, 1, 100.0),
                       load_policy("queue_depth", {}), new_ids=ids([0]))
    assert plan.changed[0].state == S.UNHEALTHY and len(plan.launches) == 1


def test_vanished_machine_is_terminated_and_replaced() -> None:
    a = joined("a")
    obs = observe([a], {"a": Heartbeat(time=99.9, ready=True)}, 1, 100.0)
    obs = Observation(**{**obs.__dict__, "site_nodes": {}})
    plan = plan_domain(obs, load_policy("queue_depth", {}), new_ids=ids([0]))
    assert plan.changed[0].state == S.TERMINATED
    assert [h[0] for h in plan.changed[0].history][-2:] == ["UNHEALTHY", "TERMINATED"]
    assert len(plan.launches) == 1


def test_boot_timeout_marks_failed() -> None:
    rec = NodeRecord.new(node_id="slow", domain="d", launch_id="L", site="local",
                         deployable_type="celery-worker", now=0.0)
    rec.set_state(S.PENDING, 0.0)
    plan = plan_domain(observe([rec], {}, 1, 61.0), load_policy("queue_depth", {}), new_ids=ids([0]))
    assert plan.changed[0].state == S.FAILED
    assert len(plan.launches) == 1


def test_heartbeats_move_pending_to_joined() -> None:
    rec = NodeRecord.new(node_id="n", domain="d", launch_id="L", site="local", deployable_type="celery-worker", now=0.0)
    rec.set_state(S.PENDING, 0.0)
    plan = plan_domain(observe([rec], {"n": Heartbeat(time=4.0, ready=True)}, 1, 5.0),
                       load_policy("queue_depth", {}), new_ids=ids([0]))
    assert plan.changed[0].state == S.JOINED
    assert [h[0] for h in plan.changed[0].history] == ["REQUESTED", "PENDING", "STARTED", "JOINED"]


def test_scale_in_never_picks_busy_while_idle_exists() -> None:
    nodes = [joined(n, t=float(i)) for i, n in enumerate("abcd")]
    now = 50.0
    hbs = {
        "a": Heartbeat(time=now, ready=True, active=1),
        "b": Heartbeat(time=now, ready=True, active=0, idle_since=40.0),
        "c": Heartbeat(time=now, ready=True, active=1),
        "d": Heartbeat(time=now, ready=True, active=0, idle_since=30.0),
    }
    # backlog 1: target 1, so three must go, but only the two idle ones may: d (idle longest), then b
    plan = plan_domain(observe(nodes, hbs, 1, now), load_policy("queue_depth", {}), new_ids=ids([0]))
    moved = {r.node_id: r.state for r in plan.changed}
    assert moved == {"d": S.DRAINING, "b": S.DRAINING}  # idle ones too: removed by handshake
    assert not plan.terminations  # nothing is terminated before it says it is drained
    assert choose_victims(nodes, hbs, 2, now=now) == [nodes[3], nodes[1]]


def test_busy_workers_drain_when_no_idle_remains() -> None:
    nodes = [joined("a"), joined("b")]
    hbs = {n.node_id: Heartbeat(time=99.0, ready=True, active=1) for n in nodes}
    sp = spec(policy={"name": "queue_depth", "tasks_per_worker": 10})
    plan = plan_domain(observe(nodes, hbs, 2, 100.0, sp=sp), load_policy("queue_depth", {"tasks_per_worker": 10}),
                       new_ids=ids([0]))
    drained = [r for r in plan.changed if r.state == S.DRAINING]
    assert len(drained) == 1 and drained[0].drain_deadline == 200.0 and drained[0].drain_sent
    assert not plan.terminations  # asked through its record; no signal, no kill timer
    assert ("drain", {"node": drained[0].node_id, "deadline": 200.0,
                      "why": "scale-in: drain busy (1 running) joined worker (deadline 100s)"}) in plan.events


def test_unjoined_nodes_go_before_idle_ones() -> None:
    booting = NodeRecord.new(node_id="boot", domain="d", launch_id="L", site="local",
                             deployable_type="celery-worker", now=90.0)
    booting.set_state(S.PENDING, 90.0)
    idle = joined("idle")
    hbs = {"idle": Heartbeat(time=99.0, ready=True, active=0, idle_since=1.0)}
    assert choose_victims([idle, booting], hbs, 1, now=100.0) == [booting]


def test_idle_timeout_protects_young_idle_and_busy_workers() -> None:
    nodes = [joined("a"), joined("b")]
    hbs = {"a": Heartbeat(time=99.0, ready=True, active=0, idle_since=95.0),
           "b": Heartbeat(time=99.0, ready=True, active=1)}
    assert choose_victims(nodes, hbs, 2, now=100.0, idle_timeout=10.0) == []
    assert choose_victims(nodes, hbs, 1, now=106.0, idle_timeout=10.0) == [nodes[0]]


def test_drain_deadline_kills() -> None:
    rec = joined("a")
    rec.set_state(S.DRAINING, 10.0)
    rec.drain_deadline = 50.0
    plan = plan_domain(observe([rec], {"a": Heartbeat(time=59.0, active=1, ready=True)}, 0, 60.0,
                               state=DomainState(intended=0)),
                       load_policy("queue_depth", {}), new_ids=ids([0]))
    assert plan.changed[0].state == S.TERMINATING and plan.terminations[0].grace == 0


def test_sensor_failure_holds_or_uses_fallback() -> None:
    nodes = [joined("a"), joined("b")]
    hbs = {n.node_id: Heartbeat(time=99.0, ready=True) for n in nodes}
    plan = plan_domain(observe(nodes, hbs, None, 100.0, error="ConnectionError: refused"),
                       load_policy("queue_depth", {}), new_ids=ids([0]))
    assert plan.decision.target == 2 and "sensor failed" in plan.decision.reason and not plan.terminations
    sp = spec(scaling={"fallback": "fixed", "fallback_size": 4, "stabilization": 0})
    plan = plan_domain(observe(nodes, hbs, None, 100.0, sp=sp, error="down"), load_policy("queue_depth", {}),
                       new_ids=ids([0]))
    assert plan.decision.target == 4 and len(plan.launches) == 2


class Broken:
    def decide(self, view, readings, now):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")


def test_policy_that_raises_holds_size_with_error_event() -> None:
    nodes = [joined("a")]
    plan = plan_domain(observe(nodes, {"a": Heartbeat(time=99.0, ready=True)}, 50, 100.0), Broken(),
                       new_ids=ids([0]))
    assert plan.decision.target == 1 and not plan.launches
    assert ("error", {"what": "policy", "error": "RuntimeError: boom"}) in plan.events


def test_operator_override_wins() -> None:
    plan = plan_domain(observe([], {}, 100, 1.0, state=DomainState(override=2)), load_policy("queue_depth", {}),
                       new_ids=ids([0]))
    assert plan.decision.target == 2 and "operator override" in plan.decision.reason


def test_policy_memory_threads_through_ticks() -> None:
    from pool.core.model import Decision

    class Counter:
        def decide(self, view, readings, now):  # type: ignore[no-untyped-def]
            n = int(view.memory.get("n", 0)) + 1
            return Decision(0, f"tick {n}", memory={"n": n})

    state = DomainState()
    for _ in range(3):
        plan = plan_domain(observe([], {}, 0, 1.0, state=state), Counter(), new_ids=ids([0]))
        state = plan.state
    assert state.policy_memory == {"n": 3}


def test_zombie_machines_are_terminated() -> None:
    a = joined("a")
    obs = observe([a], {"a": Heartbeat(time=99.9, ready=True)}, 1, 100.0)
    listing = dict(obs.site_nodes or {})
    listing["ghost"] = SiteNode("ghost", "pid-77", True, {"elastic-pool/domain": "d"})
    listing["other"] = SiteNode("other", "pid-78", True, {"elastic-pool/domain": "another-domain"})
    obs = Observation(**{**obs.__dict__, "site_nodes": listing})
    plan = plan_domain(obs, load_policy("queue_depth", {}), new_ids=ids([0]))
    zombies = [t for t in plan.terminations if t.reason.startswith("zombie")]
    assert [(t.node_id, t.provider_id, t.grace) for t in zombies] == [("ghost", "pid-77", 0.0)]


def test_preemption_notice_replaces_at_once_and_drains_once_the_replacement_joined() -> None:
    a = joined("a")
    hbs = {"a": Heartbeat(time=99.9, ready=True, active=1, preempt_notice=99.5)}
    plan = plan_domain(observe([a], hbs, 1, 100.0), load_policy("queue_depth", {}), new_ids=ids([0]))
    noticed = plan.changed[0]
    assert noticed.state == S.DRAINING and not noticed.drain_sent
    assert len(plan.launches) == 1  # the replacement starts before the machine goes
    assert not plan.terminations  # it keeps serving while the replacement boots
    replacement = plan.launches[0]
    # a tick later the replacement is still booting: the noticed node still serves
    hbs["a"] = Heartbeat(time=109.9, ready=True, active=1, preempt_notice=99.5)
    later = plan_domain(observe([noticed, replacement], hbs, 1, 110.0, state=DomainState(intended=1)),
                        load_policy("queue_depth", {}), new_ids=ids([5]))
    assert not later.terminations and not later.fresh
    # the replacement joined: now the noticed node drains, with what is left of its window as grace
    booted = joined(replacement.node_id)
    hbs[booted.node_id] = Heartbeat(time=119.9, ready=True, active=0)
    hbs["a"] = Heartbeat(time=119.9, ready=True, active=1, preempt_notice=99.5)
    done = plan_domain(observe([noticed, booted], hbs, 1, 120.0, state=DomainState(intended=1)),
                       load_policy("queue_depth", {}), new_ids=ids([9]))
    assert not done.terminations  # asked to drain through its record: the agent reads it
    assert [r.drain_sent for r in done.changed if r.node_id == "a"] == [True]


def test_waiting_on_idle_timeout_records_no_event_every_tick() -> None:
    nodes = [joined("a"), joined("b")]
    hbs = {n.node_id: Heartbeat(time=99.0, ready=True, active=0, idle_since=95.0) for n in nodes}
    sp = spec(scaling={"stabilization": 0, "idle_timeout": 60})
    state = DomainState(intended=0)
    plan = plan_domain(observe(nodes, hbs, 0, 100.0, sp=sp, state=state), load_policy("queue_depth", {}),
                       new_ids=ids([0]))
    assert plan.decision.target == 0 and not plan.terminations  # both idle for 5 s < 60 s: kept
    assert not any(kind == "decision" for kind, _ in plan.events)


def test_the_site_listing_moves_pending_to_started_and_the_boot_timeout_guards_it() -> None:
    rec = NodeRecord.new(node_id="b", domain="d", launch_id="L-b", site="local", deployable_type="celery-worker",
                         now=0.0)
    rec.set_state(S.PENDING, 0.0)
    plan = plan_domain(observe([rec], {}, 1, 10.0, state=DomainState(intended=1)), load_policy("queue_depth", {}),
                       new_ids=ids([0]))
    started = [r for r in plan.changed if r.node_id == "b"]
    assert [r.state for r in started] == [S.STARTED] and started[0].history[-1][2] == "site reports it running"
    # no heartbeat yet, well past the heartbeat timeout (3 s) but within the boot timeout (60 s): kept
    later = plan_domain(observe(started, {}, 1, 40.0, state=DomainState(intended=1)), load_policy("queue_depth", {}),
                        new_ids=ids([5]))
    assert not later.terminations and not later.fresh
    # past the boot timeout: failed and replaced
    late = plan_domain(observe(started, {}, 1, 61.0, state=DomainState(intended=1)), load_policy("queue_depth", {}),
                       new_ids=ids([7]))
    assert [(t.node_id, t.reason.startswith("not joined")) for t in late.terminations] == [("b", True)]
    assert len(late.fresh) == 1


# -- overprovisioning: the margin, presumed-dead machines, trimming, withdrawn launch records ----------


def booting(node_id: str, t: float) -> NodeRecord:
    rec = NodeRecord.new(node_id=node_id, domain="d", launch_id=f"L-{node_id}", site="local",
                         deployable_type="celery-worker", now=t)
    rec.set_state(S.PENDING, t)
    rec.provider_id = f"i-{node_id}"
    return rec


def requested(node_id: str, t: float) -> NodeRecord:
    return NodeRecord.new(node_id=node_id, domain="d", launch_id=f"L-{node_id}", site="local",
                          deployable_type="celery-worker", now=t)


def over_spec(**timeouts: float) -> Any:
    return spec(max=40, overprovision=12,
                timeouts={"heartbeat_interval": 1, "heartbeat_timeout": 3, "boot": 60, "boot_replace": 30,
                          **timeouts})


def beating(nodes: list[NodeRecord], now: float) -> dict[str, Heartbeat]:
    return {n.node_id: Heartbeat(time=now, ready=True) for n in nodes if n.state is S.JOINED}


def test_the_margin_is_the_expected_losses_and_two_standard_deviations() -> None:
    from policies.placement import overprovision

    assert [overprovision(n, 12) for n in (0, 1, 2, 10, 100)] == [0, 1, 2, 4, 19]
    assert overprovision(100, 0) == 0 and overprovision(-3, 12) == 0
    assert overprovision(10_000, 12) == 1200 + 70  # 1,200 expected losses + 2 x sqrt(1,200) = 69.3
    margins = [overprovision(n, 12) for n in range(0, 2000, 7)]
    assert margins == sorted(margins)  # more to join, never a smaller margin


def test_no_booting_machine_is_scaled_in_while_the_target_has_not_joined() -> None:
    now = 20.0
    nodes = [joined(f"j{i}") for i in range(8)] + [booting(f"b{i}", 10.0) for i in range(6)]
    # 8 joined of 10, 6 booting: 4 more than the 2 still to join with their margin (2)
    plan = plan_domain(observe(nodes, beating(nodes, now), 10, now, sp=over_spec(),
                               state=DomainState(intended=10)), load_policy("queue_depth", {}), new_ids=ids([0]))
    assert plan.decision.target == 10
    assert not plan.terminations and not plan.fresh
    assert all(r.state is not S.TERMINATING for r in plan.changed)


def test_once_the_target_has_joined_the_surplus_goes_and_unlaunched_records_cost_no_call() -> None:
    now = 20.0
    nodes = ([joined(f"j{i}") for i in range(10)] + [booting(f"b{i}", 10.0) for i in range(4)]
             + [requested(f"r{i}", 19.0) for i in range(2)])
    plan = plan_domain(observe(nodes, beating(nodes, now), 10, now, sp=over_spec(),
                               state=DomainState(intended=10)), load_policy("queue_depth", {}), new_ids=ids([0]))
    assert sorted(t.node_id for t in plan.terminations) == [f"b{i}" for i in range(4)]  # booted: ended by a call
    retired = {r.node_id: r for r in plan.changed if r.node_id.startswith("r")}
    assert {r.state for r in retired.values()} == {S.TERMINATED}  # never reached a site: no call at all
    assert all(r.history[-1][2] == "scale-in: withdrawn before launch" for r in retired.values())
    assert not plan.launches and not plan.fresh


def test_a_dropped_target_withdraws_requests_first_and_keeps_the_whole_margin_booting() -> None:
    now = 20.0
    nodes = ([joined("j0")] + [booting(f"b{i}", 10.0 + i) for i in range(6)]
             + [requested(f"r{i}", 19.0) for i in range(3)])
    # target 2, one joined: 1 to join + margin 1 = 3 wanted of 10; the target with its whole margin is 4
    plan = plan_domain(observe(nodes, beating(nodes, now), 2, now, sp=over_spec(),
                               state=DomainState(intended=10)), load_policy("queue_depth", {}), new_ids=ids([0]))
    assert {r.node_id for r in plan.changed if r.state is S.TERMINATED} == {"r0", "r1", "r2"}
    ended = sorted(t.node_id for t in plan.terminations)
    assert len(ended) == 4 and all(n.startswith("b") for n in ended)  # 10 - 3 withdrawn - 4 ended = 3 left
    assert "j0" not in ended


def test_a_machine_silent_past_boot_replace_is_replaced_but_kept_until_the_boot_timeout() -> None:
    now = 40.0  # past boot_replace (30 s), within the boot timeout (60 s)
    nodes = [joined(f"j{i}") for i in range(8)] + [booting(f"b{i}", 0.0) for i in range(3)]
    hbs = {**beating(nodes, now), "b2": Heartbeat(time=39.0, ready=False)}  # b2's agent is up: it boots
    plan = plan_domain(observe(nodes, hbs, 10, now, sp=over_spec(), state=DomainState(intended=10)),
                       load_policy("queue_depth", {}), new_ids=ids([0]))
    # counted: 8 joined + b2; wanted: 10 + margin 2 -> 3 replacements; b0, b1 are kept
    assert len(plan.fresh) == 3
    assert not plan.terminations
    # without boot_replace the same machines count until the boot timeout: 11 of 12 wanted, one launch
    waited = plan_domain(observe(nodes, hbs, 10, now, sp=spec(max=40, overprovision=12),
                                 state=DomainState(intended=10)), load_policy("queue_depth", {}), new_ids=ids([0]))
    assert len(waited.fresh) == 1 and not waited.terminations
    # past the boot timeout all three, still not joined, fail and are terminated
    later = plan_domain(observe([*nodes, *plan.launches], {**beating(nodes, 61.0), "b2": Heartbeat(time=60.0)}, 10,
                                61.0, sp=over_spec(), state=DomainState(intended=10)),
                        load_policy("queue_depth", {}), new_ids=ids([5]))
    assert sorted(t.node_id for t in later.terminations) == ["b0", "b1", "b2"]
    assert len(later.fresh) == 1  # only b2 was still counted: the others' replacements are booting


def test_a_machine_that_shows_up_for_a_withdrawn_record_is_ended() -> None:
    gone = requested("w", 0.0)
    gone.set_state(S.TERMINATED, 1.0, "scale-in: withdrawn before launch")
    a = joined("a")
    obs = observe([a, gone], {"a": Heartbeat(time=99.9, ready=True)}, 1, 100.0, state=DomainState(intended=1))
    listing = {**(obs.site_nodes or {}), "w": SiteNode("w", "i-late", True, {"elastic-pool/domain": "d"})}
    plan = plan_domain(Observation(**{**obs.__dict__, "site_nodes": listing}), load_policy("queue_depth", {}),
                       new_ids=ids([0]))
    assert [(t.node_id, t.provider_id) for t in plan.terminations] == [("w", "i-late")]


# -- scale-in by handshake -----------------------------------------------------------------------

def _draining(node_id: str, *, deadline: float) -> NodeRecord:
    rec = joined(node_id)
    rec.set_state(S.DRAINING, 100.0, "scale-in")
    rec.drain_deadline, rec.drain_sent = deadline, True
    return rec


def test_a_draining_worker_is_terminated_only_once_it_reports_drained() -> None:
    rec = _draining("a", deadline=700.0)
    busy = {"a": Heartbeat(time=199.0, ready=True, active=1, draining=True)}
    plan = plan_domain(observe([rec], busy, 0, 200.0), load_policy("queue_depth", {}), new_ids=ids([0]))
    assert not plan.terminations and not plan.changed  # still holds work: left alone
    done = {"a": Heartbeat(time=299.0, ready=True, active=0, draining=True, workload_alive=False, drained=True)}
    plan = plan_domain(observe([rec], done, 0, 300.0), load_policy("queue_depth", {}), new_ids=ids([0]))
    assert [(r.node_id, r.state) for r in plan.changed] == [("a", S.TERMINATING)]
    assert plan.changed[0].history[-1][2] == "drained: holds no work"
    assert [t.node_id for t in plan.terminations] == ["a"]


def test_the_drain_deadline_is_the_only_path_to_a_kill_and_it_is_recorded() -> None:
    rec = _draining("a", deadline=700.0)
    busy = {"a": Heartbeat(time=700.5, ready=True, active=1, draining=True)}
    plan = plan_domain(observe([rec], busy, 0, 701.0), load_policy("queue_depth", {}), new_ids=ids([0]))
    assert [(t.node_id, t.grace) for t in plan.terminations] == [("a", 0.0)]
    assert ("drain_deadline", {"node": "a", "active": 1, "drain": 100.0}) in plan.events  # the test spec: drain 100 s


def test_a_started_worker_whose_agent_spoke_drains_too() -> None:
    rec = NodeRecord.new(node_id="s", domain="d", launch_id="L", site="local", deployable_type="celery-worker",
                         now=90.0)
    rec.set_state(S.PENDING, 90.0)
    rec.set_state(S.STARTED, 95.0)
    hbs = {"s": Heartbeat(time=99.0, ready=False, active=0)}
    plan = plan_domain(observe([rec], hbs, 0, 100.0, sp=spec(scaling={"stabilization": 0})),
                       load_policy("queue_depth", {}), new_ids=ids([0]))
    assert [(r.node_id, r.state, r.drain_sent) for r in plan.changed] == [("s", S.DRAINING, True)]
    assert not plan.terminations


def test_boot_failures_back_off_to_one_probe_at_a_time() -> None:
    from pool.control.backoff import BOOT_BACKOFF_BASE

    def crashed(node_id: str) -> NodeRecord:
        rec = NodeRecord.new(node_id=node_id, domain="d", launch_id=node_id, site="local",
                             deployable_type="celery-worker", now=90.0)
        rec.set_state(S.PENDING, 90.0)
        rec.set_state(S.STARTED, 91.0)
        return rec

    nodes = [crashed(n) for n in ("a", "b")]
    hbs = {n.node_id: Heartbeat(time=99.0, workload_alive=False) for n in nodes}
    sp = spec(scaling={"stabilization": 0})
    plan = plan_domain(observe(nodes, hbs, 5, 100.0, sp=sp), load_policy("queue_depth", {}), new_ids=ids([0]))
    assert {r.state for r in plan.changed} == {S.FAILED}
    assert plan.state.boot_failures == 2 and plan.state.boot_error.startswith("boot failure")
    assert not plan.launches  # degraded: no launch right away
    assert [d["failures"] for k, d in plan.events if k == "boot_failure"] == [1, 2]
    later = plan_domain(observe(list(plan.changed), {}, 5, 100.0 + 2 * BOOT_BACKOFF_BASE + 0.1, sp=sp,
                                state=plan.state), load_policy("queue_depth", {}), new_ids=ids([0]))
    assert len(later.launches) == 1  # one probe once the wait passed, although the backlog wants 5
    probe = later.launches[0]
    probe.set_state(S.PENDING, 111.0)
    still = plan_domain(observe([*later.changed, probe], {}, 5, 140.0, sp=sp, state=later.state),
                        load_policy("queue_depth", {}), new_ids=ids([0]))
    assert not still.fresh  # the probe boots: nothing more
    probe.set_state(S.STARTED, 141.0)
    ok = {probe.node_id: Heartbeat(time=142.0, ready=True)}
    healed = plan_domain(observe([probe], ok, 5, 142.5, sp=sp, state=still.state), load_policy("queue_depth", {}),
                         new_ids=ids([0]))
    assert healed.state.boot_failures == 0 and len(healed.fresh) == 4  # it joined: full speed again


def test_a_named_domain_launches_one_worker_per_wanted_name_and_ends_the_unwanted() -> None:
    obs = observe([], {}, 0, 100.0)
    obs = Observation(**{**obs.__dict__, "wanted": {"cloud2": 99.0, "cloud1": 99.5}})
    plan = plan_domain(obs, load_policy("queue_depth", {}), new_ids=ids([0]))
    assert [r.name for r in plan.launches] == ["cloud2", "cloud1"]  # in the order asked
    assert plan.decision.target == 2 and plan.decision.reason.startswith("2 node(s) wanted by name: cloud2, cloud1")
    assert '"name":"cloud2"' in plan.launches[0].to_json()
    assert NodeRecord.from_json(plan.launches[0].to_json()).name == "cloud2"
    a = joined("a")
    a.name = "cloud1"
    b = joined("b")
    b.name = "cloud3"
    obs = observe([a, b], {"a": Heartbeat(time=99.9, ready=True), "b": Heartbeat(time=99.9, ready=True)}, 0, 100.0)
    obs = Observation(**{**obs.__dict__, "wanted": {"cloud1": 90.0, "cloud2": 95.0}})
    plan = plan_domain(obs, load_policy("queue_depth", {}), new_ids=ids([0]))
    ended = {r.node_id: r for r in plan.changed}
    assert ended["b"].state == S.TERMINATING and "cloud3: no longer wanted" in ended["b"].history[-1][2]
    assert "a" not in ended and [r.name for r in plan.launches] == ["cloud2"]
    assert '"name"' not in joined("c").to_json()  # records of unnamed domains are stored as before


def test_a_named_node_no_site_has_room_for_is_given_up_at_once() -> None:
    obs = observe([], {}, 0, 100.0)
    obs = Observation(**{**obs.__dict__, "wanted": {"cloud1": 99.0}, "site_available": False})
    plan = plan_domain(obs, load_policy("queue_depth", {}), new_ids=ids([0]))
    assert plan.launches == ()
    assert [(k, e["name"], e["why"]) for k, e in plan.events if k == "named_failed"] == [
        ("named_failed", "cloud1", "no site has room for it now")]
    failed = NodeRecord.new(node_id="f", domain="d", launch_id="L", site="local", deployable_type="slurm-node",
                            now=99.5, name="cloud2")
    failed.set_state(S.FAILED, 99.6, "not joined within boot timeout")
    obs = observe([failed], {}, 0, 100.0)
    obs = Observation(**{**obs.__dict__, "wanted": {"cloud2": 99.0}})
    plan = plan_domain(obs, load_policy("queue_depth", {}), new_ids=ids([0]))
    assert plan.launches == () and [e["name"] for k, e in plan.events if k == "named_failed"] == ["cloud2"]


def test_a_named_domain_running_ahead_asks_for_the_policys_size_but_launches_only_wanted_names() -> None:
    obs = observe([], {}, 3, 100.0)  # three jobs wait; slurmctld asked for one node
    wanted = Observation(**{**obs.__dict__, "wanted": {"cloud1": 99.0}})
    ahead = Observation(**{**wanted.__dict__, "ahead": True})
    plain = plan_domain(wanted, load_policy("queue_depth", {"tasks_per_worker": 1}), new_ids=ids([0]))
    assert plain.warm is None and plain.decision.target == 1
    plan = plan_domain(ahead, load_policy("queue_depth", {"tasks_per_worker": 1}), new_ids=ids([0]))
    assert plan.warm == 3 and plan.decision.target == 1  # asked of the scheduler, not launched unnamed
    assert [r.name for r in plan.launches] == ["cloud1"]
    assert "policy ahead: 3" in plan.decision.reason and plan.decision.inputs["ahead"] == 3.0
    enough = Observation(**{**ahead.__dict__, "wanted": {"cloud1": 99.0, "cloud2": 99.0, "cloud3": 99.0}})
    assert plan_domain(enough, load_policy("queue_depth", {"tasks_per_worker": 1}), new_ids=ids([0])).warm is None
