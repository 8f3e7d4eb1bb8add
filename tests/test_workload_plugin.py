"""A workload added without touching the pool's packages: registered through the registries, run by
the real manager on the local site, its workers joining, working and leaving."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator

import pytest
import redis

from pool.control.manager import Manager
from pool.core.model import NodeState, parse_domain_spec
from pool.sites.local import LocalNodeDriver
from pool.sites.provisioner import Provisioner
from pool.state.redisserver import broker_url_for
from pool.state.store import Store
from pool.workloads import base
from pool.workloads.images import deployable_type
from sensors import registry as sensors
from tests.conftest import RunningManager, run_manager

ROOT = Path(__file__).resolve().parent.parent
S = NodeState


@pytest.fixture
def shell_registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(base.registry.aliases, "shell", "tests.shell_workload:Shell")
    monkeypatch.setitem(sensors.aliases, "shell_list", "tests.shell_workload:ListLength")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # workers import the test workload from the repository
    yield
    base._by_name.pop("shell", None)
    base._by_type.pop("shell-worker", None)


@pytest.fixture
def shell_manager(store: Store, redis_url: str, pool_home: Path, shell_registered: None) -> Iterator[RunningManager]:
    driver = LocalNodeDriver(ex_state_dir=str(pool_home / "sites" / "local"), ex_worker_env=("PYTHONPATH",))
    with run_manager(Manager(store=store, provisioner=Provisioner({"local": driver}), redis_url=redis_url),
                     driver) as rm:
        yield rm


def test_a_workload_from_the_registry_runs_end_to_end(shell_manager: RunningManager, redis_url: str,
                                                      tmp_path: Path) -> None:
    rm = shell_manager
    broker = broker_url_for(redis_url)
    jobs = redis.Redis.from_url(broker, decode_responses=True)
    spec = parse_domain_spec({
        "name": "sh", "deployable_type": "shell-worker", "min": 0, "max": 2, "broker": broker,
        "policy": {"name": "queue_depth", "tasks_per_worker": 1}, "sensor": {"name": "shell_list"},
        "scaling": {"stabilization": 1}, "shell": {"list": "jobs"},
        "timeouts": {"heartbeat_interval": 0.5, "heartbeat_timeout": 3, "boot": 60, "drain": 60,
                     "terminate_grace": 5}})
    assert deployable_type("shell-worker").name == "shell-worker"  # found through the registry
    rm.store.put_domain(spec)
    time.sleep(1.0)
    assert rm.live("sh") == []  # nothing waits: nothing runs
    out = tmp_path / "out.txt"
    for i in range(4):
        jobs.lpush("jobs", f"echo {i} >> {out}; sleep 1")
    rm.wait(lambda: len(rm.live("sh", S.JOINED)) >= 1, 60, "a shell worker to join")
    rm.wait(lambda: jobs.llen("jobs:done") == 4, 60, "the four commands to run")
    assert sorted(out.read_text().split()) == ["0", "1", "2", "3"]
    rm.wait(lambda: rm.live("sh") == [], 60, "the domain to shrink to zero")
    # the manager named the workload's own import path in the user-data: the agent ran it from there
    node_dirs = list(Path(os.environ["POOL_HOME"], "sites", "local").glob("sh-*/user-data"))
    assert node_dirs and "POOL_WORKLOAD=tests.shell_workload:Shell" in node_dirs[0].read_text()


def test_an_unknown_deployable_type_lists_the_valid_ones() -> None:
    from pool.core.model import UnknownPlugin

    with pytest.raises(UnknownPlugin, match="unknown deployable type 'gpu-worker'; valid: celery-worker, condor-startd, slurm-node, spark-worker"):
        deployable_type("gpu-worker")


def test_a_workload_owns_its_spec_block(shell_registered: None) -> None:
    """The shell workload's `shell:` block is validated by its own model, kept through the store's
    JSON and refused on a domain of another workload; the core spec knows nothing of it."""
    from pool.core.model import DomainSpec, SpecError

    base = {"name": "sh", "deployable_type": "shell-worker", "max": 2, "sensor": {"name": "shell_list"}}
    spec = parse_domain_spec({**base, "shell": {"list": "work"}})
    assert spec.block is not None and spec.block.list == "work"  # type: ignore[attr-defined]
    assert DomainSpec.model_validate_json(spec.model_dump_json()) == spec
    assert '"shell":{"list":"work"}' in spec.model_dump_json()
    with pytest.raises(SpecError, match=r"shell\.list: String should match pattern"):
        parse_domain_spec({**base, "shell": {"list": "Bad List"}})
    with pytest.raises(SpecError, match=r"shell\.lsit: unknown field \(allowed: list\)"):
        parse_domain_spec({**base, "shell": {"lsit": "work"}})
    with pytest.raises(SpecError, match="shell: belongs to deployable_type shell-worker; this domain's is "
                       "'celery-worker'"):
        parse_domain_spec({"name": "c", "max": 2, "celery": {"app": "tasks"}, "shell": {"list": "work"}})
    with pytest.raises(SpecError, match="attributes.shell_list: 'shell_list' is reserved"):
        parse_domain_spec({**base, "attributes": {"shell_list": "x"}})
