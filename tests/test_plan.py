"""The pure planning step: doctor, decision, victims; no Redis, no processes."""

from __future__ import annotations

from typing import Any

from policies import load_policy
from pool.manager import Observation, choose_victims, plan_domain
from pool.model import DomainState, Heartbeat, NodeRecord, NodeState, Reading, parse_domain_spec
from pool.provisioner import SiteNode

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
    assert moved == {"d": S.TERMINATING, "b": S.TERMINATING}
    assert choose_victims(nodes, hbs, 2, now=now) == [nodes[3], nodes[1]]


def test_busy_workers_drain_when_no_idle_remains() -> None:
    nodes = [joined("a"), joined("b")]
    hbs = {n.node_id: Heartbeat(time=99.0, ready=True, active=1) for n in nodes}
    sp = spec(policy={"name": "queue_depth", "tasks_per_worker": 10})
    plan = plan_domain(observe(nodes, hbs, 2, 100.0, sp=sp), load_policy("queue_depth", {"tasks_per_worker": 10}),
                       new_ids=ids([0]))
    drained = [r for r in plan.changed if r.state == S.DRAINING]
    assert len(drained) == 1 and drained[0].drain_deadline == 200.0
    assert plan.terminations[0].grace == 100.0  # warm shutdown: SIGKILL only after the drain deadline


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
    from pool.model import Decision

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
    assert [(t.node_id, t.grace) for t in done.terminations] == [("a", 80.0)]
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
