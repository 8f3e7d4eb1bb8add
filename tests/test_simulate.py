"""The trace-driven simulator: traces, the in-memory store, the real manager on simulated time, the CLI."""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

import policies
from pool.cli.commands import main
from pool.core.model import Decision, DomainState, DomainView, NodeRecord, NodeState, Reading
from pool.sim.simulate import (
    PolicyChoice,
    Simulation,
    SimulationError,
    domain_spec,
    oracle,
    parse_policy,
    percentile,
    simulate_many,
)
from pool.sim.traces import (
    FAMILIES,
    Task,
    TraceError,
    load_trace,
    read_csv,
    read_json,
    read_swf,
    synthetic,
    write_csv,
    write_json,
    write_swf,
)
from pool.state.store import MemoryStore
from sensors import load_sensor, simqueue

# ---------------------------------------------------------------------------
# test policies, registered by alias for the tests that use them
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """``size`` workers until ``until`` seconds, then ``after``."""

    size: int = 1
    until: float = 20.0
    after: int = 0

    def decide(self, view: DomainView, readings: Mapping[str, Reading], now: float) -> Decision:
        target = self.size if now < self.until else self.after
        return Decision(target, f"step {target}")


@dataclass(frozen=True)
class Flaky:
    """``size`` workers until ``after`` seconds, then every decision raises."""

    size: int = 5
    after: float = 30.0

    def decide(self, view: DomainView, readings: Mapping[str, Reading], now: float) -> Decision:
        if now >= self.after:
            raise RuntimeError("boom")
        return Decision(self.size, f"flaky {self.size}")


@dataclass(frozen=True)
class Tuned:
    """A policy that recommends its own shaping."""

    scaling_defaults: ClassVar[dict[str, float]] = {"idle_timeout": 45.0, "stabilization": 5.0}

    def decide(self, view: DomainView, readings: Mapping[str, Reading], now: float) -> Decision:
        return Decision(0, "none")


@pytest.fixture
def test_policies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, cls in (("test_step", "Step"), ("test_flaky", "Flaky"), ("test_tuned", "Tuned")):
        monkeypatch.setitem(policies.registry.aliases, name, f"{__name__}:{cls}")


FAST = {"timeouts": {"heartbeat_interval": 2, "heartbeat_timeout": 6, "boot": 60, "drain": 600,
                     "terminate_grace": 5}}


# ---------------------------------------------------------------------------
# traces
# ---------------------------------------------------------------------------


def test_swf_reader_maps_submit_run_and_processors(tmp_path: Path) -> None:
    jobs = [
        {"job": 1, "submit": 100, "wait": 5, "run": 60, "processors": 2, "status": 1, "queue": 1},
        {"job": 2, "submit": 130, "wait": 0, "run": -1, "processors": 4, "status": 5},  # no run time: left out
        {"job": 3, "submit": 160, "wait": 9, "run": 30, "processors": -1, "requested_processors": 3, "status": 1},
        {"job": 4, "submit": 110, "wait": 1, "run": 12.5, "processors": 1, "status": 1},
        {"job": 5, "submit": 170, "wait": 0, "run": 0, "processors": 1, "status": 0},  # run time 0: left out
    ]
    path = tmp_path / "tiny.swf"
    write_swf(jobs, path, header="Version: 2.2\nComputer: test cluster\nUnixStartTime: 0")
    text = path.read_text()
    assert text.startswith("; Version: 2.2") and len(text.splitlines()) == 8

    tasks = read_swf(path)
    assert [(t.arrival, t.service) for t in tasks] == [
        (0.0, 60.0), (0.0, 60.0),  # job 1 on 2 processors: two tasks, rebased to 0
        (10.0, 12.5),  # job 4 (submitted before job 3)
        (60.0, 30.0), (60.0, 30.0), (60.0, 30.0),  # job 3: requested processors when allocated is -1
    ]
    assert tasks[0].queue == "1" and tasks[2].queue == "default"
    assert [t.arrival for t in read_swf(path, rebase=False)][:1] == [100.0]
    assert len(read_swf(path, processors_per_task=2)) == 1 + 1 + 2
    assert len(read_swf(path, processors_per_task=None)) == 3
    assert len(read_swf(path, max_tasks=4)) == 4

    gz = tmp_path / "tiny.swf.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert load_trace(str(gz)) == tasks

    bad = tmp_path / "bad.swf"
    bad.write_text("; header\n1 2 x 4 5\n")
    with pytest.raises(TraceError, match="line 2: SWF fields must be numbers"):
        read_swf(bad)


def test_csv_and_json_traces_round_trip_and_name_bad_input(tmp_path: Path) -> None:
    tasks = [Task(5.0, 2.0, "a"), Task(0.0, 1.5), Task(5.0, 3.0)]
    write_csv(tasks, tmp_path / "t.csv")
    write_json(tasks, tmp_path / "t.json")
    expected = sorted(tasks, key=lambda t: t.arrival)
    assert read_csv(tmp_path / "t.csv") == expected
    assert read_json(tmp_path / "t.json") == expected
    assert load_trace(str(tmp_path / "t.csv")) == expected

    (tmp_path / "h.csv").write_text("# a comment\nstart,service\n1,2\n")
    with pytest.raises(TraceError, match="missing arrival"):
        read_csv(tmp_path / "h.csv")
    (tmp_path / "n.csv").write_text("arrival,service\n1,-2\n")
    with pytest.raises(TraceError, match="row 2: service must be a finite number"):
        read_csv(tmp_path / "n.csv")
    (tmp_path / "l.json").write_text('[{"arrival": 1}]')
    with pytest.raises(TraceError, match="task 0"):
        read_json(tmp_path / "l.json")
    with pytest.raises(TraceError, match="does not exist"):
        load_trace(str(tmp_path / "missing.csv"))


def test_synthetic_families_are_seeded_and_checked() -> None:
    for name in FAMILIES:
        first = synthetic(f"{name}:n=50")
        assert len(first) == 50 and first == synthetic(f"{name}:n=50")
        assert all(t.service > 0 and t.arrival >= 0 for t in first)
        assert [t.arrival for t in first] == sorted(t.arrival for t in first)
    assert synthetic("poisson:n=50,seed=1") != synthetic("poisson:n=50,seed=2")
    assert {t.arrival for t in synthetic("burst:n=20,at=7")} == {7.0}
    assert all(t.service == 30.0 for t in synthetic("burst:n=5,service=30,cv=0"))
    with pytest.raises(TraceError, match="valid: burst, periodic"):
        synthetic("nope")
    with pytest.raises(TraceError, match="allowed: n, at"):
        synthetic("burst:size=3")
    with pytest.raises(TraceError, match="whole number"):
        synthetic("burst:n=many")


# ---------------------------------------------------------------------------
# the in-memory store
# ---------------------------------------------------------------------------


def test_memory_store_keeps_the_store_contract() -> None:
    seen: list[str] = []
    store = MemoryStore(event_log_length=3, on_record=lambda domain, event: seen.append(event["kind"]))
    spec = domain_spec(PolicyChoice("fixed", "fixed"), queue="q")
    assert store.put_domain(spec) is True and store.put_domain(spec) is False
    assert [s.name for s in store.domains()] == ["sim"] and store.get_domain("sim") == spec

    store.put_state("sim", DomainState(intended=4))
    store.set_override("sim", 2)
    assert (store.get_state("sim").intended, store.get_state("sim").override) == (4, 2)
    store.set_override("sim", None)
    assert store.get_state("sim").override is None

    late = NodeRecord.new(node_id="b", domain="sim", launch_id="l2", site="sim", deployable_type="x", now=5.0)
    early = NodeRecord.new(node_id="a", domain="sim", launch_id="l1", site="sim", deployable_type="x", now=1.0)
    store.put_nodes([late, early])
    assert [n.node_id for n in store.nodes("sim")] == ["a", "b"]  # by creation time

    with pytest.raises(ValueError, match="needs time="):
        store.beat("sim", "a", ready=True)
    store.beat("sim", "a", time=10.0, ready=True, active=0, idle_since=10.0)
    store.beat("sim", "a", time=11.0, active=1, idle_since="")
    store.beat("sim", "a", time=13.0)
    hb = store.heartbeats("sim", ["a", "b"])
    assert list(hb) == ["a"]
    assert (hb["a"].time, hb["a"].ready, hb["a"].active, hb["a"].idle_since) == (13.0, True, 1, None)
    store.beat("sim", "b", time="14.5", ready="1", workload_alive="0")
    assert store.heartbeats("sim", ["b"])["b"].workload_alive is False

    for i in range(5):
        store.record("sim", "decision" if i % 2 else "node", float(i), n=i)
    assert [e["n"] for e in store.events("sim", 10)] == [4, 3, 2]  # bounded, newest first
    assert [e["n"] for e in store.events("sim", 10, kind="decision")] == [3]
    assert len(seen) == 5

    store.forget_nodes("sim", ["a"])
    assert [n.node_id for n in store.nodes("sim")] == ["b"] and store.heartbeats("sim", ["a"]) == {}
    store.register_manager("m1", {"pid": 1})
    assert store.managers() == {"m1": {"pid": 1}}
    store.request_shutdown()
    assert store.shutdown_requested()
    store.clear_shutdown()
    assert not store.shutdown_requested()
    store.delete_domain("sim")
    assert store.domains() == [] and store.nodes("sim") == []


def test_sim_queue_sensor_reads_ready_plus_running() -> None:
    class Queue:
        def depth(self) -> tuple[int, int]:
            return 7, 3

    sensor = load_sensor("sim_queue", {"queue": "t-sensor"})
    assert not sensor.read(1.0).ok  # no simulation attached a queue
    attached = simqueue.attach({"t-sensor": Queue()})("sim_queue", {"queue": "t-sensor"})
    reading = attached.read(2.0)
    assert (reading.value, reading.detail["ready"], reading.detail["unacked"]) == (10.0, 7, 3)
    other = simqueue.attach({"t-sensor": Queue()})("sim_queue", {"queue": "another"})
    assert not other.read(3.0).ok and "no simulated queue attached" in str(other.read(3.0).error)


# ---------------------------------------------------------------------------
# simulations through the real manager
# ---------------------------------------------------------------------------


def test_burst_through_the_real_manager_grows_completes_and_shrinks_to_min() -> None:
    tasks = synthetic("burst:n=60,at=30,service=40,cv=0.3")
    sim = Simulation(tasks, parse_policy("queue_depth"), profile="local", seed=1,
                     base={"min": 2, "max": 40, **FAST}, scaling={"stabilization": 10})
    result = sim.run()
    assert result["completed"] == 60 and result["unfinished"] == 0
    assert result["peak_workers"] == 40  # grew to max for the burst
    assert max(sim.timeline["workers"][:25]) == 2  # min before the burst
    assert sim.driver.ex_alive() == 2  # and back to min after it
    live = [n for n in sim.store.nodes("sim") if n.state in (NodeState.JOINED, NodeState.PENDING)]
    assert len(live) == 2
    assert result["requeued"] == 0 and result["p95_wait"] is not None
    assert result["makespan"] >= max(t.service for t in tasks)
    assert 0 < result["mean_wait"] <= result["p95_wait"] <= result["max_wait"]
    assert result["worker_hours"] > sum(t.service for t in tasks) / 3600.0


def test_ec2_throttling_holds_request_rates_within_the_buckets() -> None:
    sim = Simulation(synthetic("burst:n=40,service=30"), parse_policy("queue_depth"), profile="ec2", seed=2,
                     base=FAST)
    result = sim.run()
    run = result["api"]["RunInstances"]
    assert result["completed"] == 40
    assert run["throttled"] > 0 and result["events"]["launch_error"] > 0  # 40 launches, bucket of 5
    for api in result["api"].values():
        assert api["max_per_second"] <= api["bound_per_second"]


def test_a_policy_that_raises_holds_the_size_with_an_error_event(test_policies: None) -> None:
    tasks = [Task(float(t), 20.0) for t in range(0, 120, 2)]
    sim = Simulation(tasks, parse_policy("test_flaky:size=5,after=30"), profile="local", tail=60.0, base=FAST)
    result = sim.run()
    assert result["policy_errors"] and "RuntimeError: boom" in result["policy_errors"][0]
    assert result["events"]["error"] >= 1
    errors = sim.store.events("sim", 100, kind="error")
    assert errors and errors[-1]["time"] >= 30.0 and errors[-1]["what"] == "policy"
    after = [w for t, w in zip(sim.timeline["t"], sim.timeline["workers"]) if t >= 30.0]
    assert after and set(after) == {5}  # held, not shrunk to 0 nor grown
    assert sim.store.get_state("sim").intended == 5
    assert result["completed"] == len(tasks)


def test_a_drained_worker_finishes_its_task_and_a_killed_one_returns_it(test_policies: None) -> None:
    tasks = [Task(0.0, 100.0), Task(1.0, 100.0)]
    drained = Simulation(tasks, parse_policy("test_step:size=1,until=20"), profile="local", base=FAST,
                         scaling={"stabilization": 0}, horizon=400.0)
    result = drained.run()
    assert result["completed"] == 1 and result["requeued"] == 0  # the first task ran to its end
    (machine,) = drained.driver.machines.values()
    # the handshake: it reported drained when its task ended; the next tick ended its machine
    assert machine.end_reason == "shut down" and 0 <= machine.ended - drained.end[0] <= drained.tick_interval
    (rec,) = drained.store.nodes("sim")
    assert "drained: holds no work" in [detail for _, _, detail in rec.history]
    assert list(drained.ready) == [1]  # nobody left to run the second

    killed = Simulation(tasks, parse_policy("test_step:size=1,until=20"), profile="local",
                        base={"timeouts": {**FAST["timeouts"], "drain": 10}}, scaling={"stabilization": 0},
                        horizon=400.0)
    result = killed.run()
    assert result["completed"] == 0 and result["requeued"] == 1
    (machine,) = killed.driver.machines.values()
    assert machine.end_reason == "terminated without grace"  # the drain deadline: the only path to a kill
    assert killed.events["drain_deadline"] == 1  # and it is said
    assert list(killed.ready) == [0, 1]  # the killed task went back to the front
    assert killed.attempts[0] == 1 and math.isnan(killed.end[0])


def test_policy_scaling_defaults_apply_unless_the_user_overrides(test_policies: None) -> None:
    tuned = parse_policy("test_tuned")
    spec = domain_spec(tuned, queue="q")
    assert (spec.scaling.idle_timeout, spec.scaling.stabilization) == (45.0, 5.0)
    spec = domain_spec(tuned, queue="q", base={"scaling": {"stabilization": 90}}, scaling={"idle_timeout": 1})
    assert (spec.scaling.idle_timeout, spec.scaling.stabilization) == (1.0, 90.0)
    assert domain_spec(parse_policy("queue_depth"), queue="q").scaling.idle_timeout == 0.0
    with pytest.raises(SimulationError, match="set by the simulator"):
        domain_spec(tuned, queue="q", base={"policy": {"name": "fixed"}})


def test_same_seed_gives_an_identical_report_and_another_seed_another() -> None:
    tasks = synthetic("spiky:n=40,duration=120,spikes=2")
    choices = [parse_policy("queue_depth"), parse_policy("queue_depth:tasks_per_worker=3")]

    def run(seed: int) -> dict[str, Any]:
        report = simulate_many(tasks, choices, profile="ec2:never_boot=0.1", seed=seed, base=FAST)
        report.pop("runtime")
        return json.loads(json.dumps(report))

    first = run(5)
    assert first == run(5)
    assert first["results"] != run(6)["results"]
    assert [r["policy"] for r in first["results"]] == ["oracle", "queue_depth", "queue_depth:tasks_per_worker=3"]


def test_oracle_is_the_infinite_pool_with_zero_boot_time() -> None:
    tasks = [Task(0.0, 10.0), Task(5.0, 10.0), Task(30.0, 20.0)]
    result, timeline = oracle(tasks)
    assert result["worker_hours"] == pytest.approx(40.0 / 3600.0)
    assert (result["mean_wait"], result["p95_wait"], result["makespan"], result["peak_workers"]) == (0.0, 0.0, 50.0, 2)
    assert max(timeline["workers"]) == 2 and set(timeline["queue"]) == {0.0}
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == 4.0 and percentile([], 95) is None


def test_bad_policy_names_and_parameters_are_one_line_errors() -> None:
    with pytest.raises(SimulationError) as info:
        parse_policy("nope")
    assert "valid:" in str(info.value) and "queue_depth" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(SimulationError, match="unknown parameter 'bogus'"):
        parse_policy("queue_depth:bogus=1")
    choice = parse_policy("queue_depth:tasks_per_worker=2.5")
    assert choice.params == {"tasks_per_worker": 2.5} and choice.label == "queue_depth:tasks_per_worker=2.5"


# ---------------------------------------------------------------------------
# the CLI
# ---------------------------------------------------------------------------


def test_cli_simulates_a_tiny_trace_and_writes_json_and_png(tmp_path: Path) -> None:
    trace = tmp_path / "tiny.csv"
    write_csv([Task(float(i), 15.0) for i in range(12)], trace)
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["simulate", "--trace", str(trace), "--policy", "queue_depth",
                                       "--policy", "fixed:size=2", "--site-profile", "local", "--seed", "3",
                                       "--out", str(out), "--tail", "60"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert [r["policy"] for r in report["results"]] == ["oracle", "queue_depth", "fixed:size=2"]
    assert all(r["completed"] == 12 for r in report["results"])
    assert set(report["timelines"]) == {"oracle", "queue_depth", "fixed:size=2"}
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "queue_depth" in result.output and "report.json" in result.output


def test_cli_unknown_policy_is_one_line_listing_the_valid_ones(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["simulate", "--trace", "burst:n=5", "--policy", "nope",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown policy 'nope'" in lines[0] and "queue_depth" in lines[0]
    assert not (tmp_path / "report.json").exists()
