"""HTCondor domains without daemons: the `condor:` block, the sensor's errors, `pool apply`'s refusals."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pool.control.manager import Manager
from pool.core.model import SpecError, parse_domain_spec
from pool.sites.local import LocalNodeDriver
from pool.sites.provisioner import Provisioner
from pool.state.redisserver import free_port
from pool.state.store import Store

pytest.importorskip("htcondor2")


def spec(**condor: object) -> dict:
    return {"name": "htc", "deployable_type": "condor-startd", "max": 2, "condor": dict(condor)}


def test_condor_block_defaults_and_errors() -> None:
    parsed = parse_domain_spec(spec())
    assert parsed.sensor.name == "condor" and parsed.policy.name == "queue_depth"
    assert parsed.scaling.idle_timeout == 30.0
    with pytest.raises(SpecError, match=r"condor.worker_memroy: unknown field"):
        parse_domain_spec(spec(worker_memroy=512))
    with pytest.raises(SpecError, match=r"is not a collector address; expected host:port"):
        parse_domain_spec(spec(collector="http://cm.example.org"))
    with pytest.raises(SpecError, match=r"condor.worker_cpus"):
        parse_domain_spec(spec(worker_cpus=0))
    with pytest.raises(SpecError, match=r"condor"):
        parse_domain_spec({"name": "htc", "deployable_type": "condor-startd", "max": 2})  # the block is required
    with pytest.raises(SpecError, match=r"condor"):
        parse_domain_spec({"name": "cel", "max": 2, "celery": {"app": "tasks"}, "condor": {}})
    with pytest.raises(SpecError, match=r"pool_password"):
        parse_domain_spec({**spec(), "attributes": {"pool_password": "mine"}})  # the pool sets it


def test_apply_refuses_a_bad_constraint_and_max_zero() -> None:
    from pool.workloads.base import load_workload

    workload = load_workload("condor")
    with pytest.raises(ValueError, match=r"condor.constraint: .* is not a ClassAd expression"):
        workload.check(parse_domain_spec(spec(constraint='Owner == "ana')))
    with pytest.raises(ValueError, match=r"max: 0 would keep a central manager"):
        workload.check(parse_domain_spec({**spec(), "max": 0}))
    workload.check(parse_domain_spec(spec(constraint='Owner == "ana"')))


def test_an_unreachable_pool_gives_an_error_reading_and_the_fallback(store: Store, redis_url: str,
                                                                     pool_home: Path) -> None:
    from condor.central import CondorCentralService, central_dir
    from sensors.condor import CondorIdleSensor

    dead = f"127.0.0.1:{free_port()}"
    reading = CondorIdleSensor(collector=dead, domain="htc", timeout=0.5).read(10.0)
    assert reading.value is None and reading.error is not None and reading.error.startswith(f"collector {dead}: ")
    assert CondorIdleSensor(domain="htc").read(1.0).error.startswith("no HTCondor collector for this domain yet")
    store.put_domain(parse_domain_spec(spec(collector=dead)))
    manager = Manager(store=store, provisioner=Provisioner({"local": LocalNodeDriver(
        ex_state_dir=str(pool_home / "sites"))}), redis_url=redis_url, services=[CondorCentralService()])
    plan = manager.tick()[0]  # an adopted pool with no password given: said, and nothing launched
    assert plan.decision.target == 0
    errors = store.events("htc", kind="error")
    assert any("put that pool's password in" in e["error"] for e in errors), errors
    password = central_dir("htc") / "pool_password"
    password.write_text("s3cret-pool-password")
    os.chmod(password, 0o600)
    plan = manager.tick()[0]
    assert plan.decision.reason.startswith(f"sensor failed (condor: collector {dead}: ")
    assert plan.decision.reason.endswith(": hold 0")  # the domain's fallback rule
    assert "s3cret-pool-password" not in str(store.events("htc", count=100))
    manager.close()


def test_a_domain_wide_reading_of_busy_nodes_overrides_the_heartbeats(store: Store, redis_url: str,
                                                                      pool_home: Path) -> None:
    from pool.core.model import Heartbeat, Reading

    manager = Manager(store=store, provisioner=Provisioner({"local": LocalNodeDriver(
        ex_state_dir=str(pool_home / "sites"))}), redis_url=redis_url)
    beats = {"a": Heartbeat(1.0), "b": Heartbeat(1.0, active=3), "c": Heartbeat(1.0, active=2)}
    out = manager._busy_from_readings("d", {"condor": Reading("condor", 1.0, 10.0, nodes={"a": 1, "b": 0})}, beats, 10.0)
    assert (out["a"].active, out["a"].idle_since) == (1, None)
    assert (out["b"].active, out["b"].idle_since) == (0, 10.0)  # idle from the first tick that sees it idle
    assert out["c"] is beats["c"]  # a node the reading does not list: its heartbeat says
    later = manager._busy_from_readings("d", {"condor": Reading("condor", 0.0, 20.0, nodes={"a": 0, "b": 0})},
                                        beats, 20.0)
    assert later["b"].idle_since == 10.0 and later["a"].idle_since == 20.0
    failed = {"condor": Reading("condor", None, 30.0, error="collector down", nodes={"a": 5})}
    assert manager._busy_from_readings("d", failed, beats, 30.0) == beats  # a failed read is not believed
    manager.close()
