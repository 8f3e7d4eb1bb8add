"""Slurm domains against real daemons: slurmctld in a network namespace of the harness's own calls
`pool slurm resume`; the pool launches workers running slurmd under the names it asked for."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pool.control.manager import Manager
from pool.core.model import NodeState, parse_domain_spec
from pool.sites.local import LocalNodeDriver
from pool.sites.provisioner import Provisioner
from pool.state.store import Store
from slurm.cli import write_programs
from slurm.service import SlurmService, files_dir
from tests.conftest import RunningManager

daemons = pytest.importorskip("slurm.daemons")
WHY = daemons.missing_requirements() if os.geteuid() == 0 else "Slurm's daemons need root (namespaces)"
if WHY:
    pytest.skip(WHY, allow_module_level=True)

S = NodeState
pytestmark = pytest.mark.slow


def _wrappers(directory: Path, programs: dict[str, Path]) -> dict[str, Path]:
    """slurmctld runs its programs in the controller's network namespace: these step back into this
    test's own (where the pool's Redis listens) and run the program `pool slurm config` wrote."""
    own_net = f"/proc/{os.getpid()}/ns/net"
    out = {}
    for kind, path in programs.items():
        wrapper = directory / f"{kind}.sh"
        wrapper.write_text(f"#!/bin/sh\nexec /usr/bin/nsenter --net={own_net} -- {path} \"$@\"\n")
        wrapper.chmod(0o700)
        out[kind] = wrapper
    return out


@contextlib.contextmanager
def slurm_pool(store: Store, redis_url: str, pool_home: Path, *, nodes: int = 2,
               suspend_time: int = 5) -> Iterator[tuple[Any, RunningManager, str]]:
    """A Slurm cluster whose power saving is the pool, and a manager running its slurm-node domain."""
    programs = write_programs("hpc", redis_url=redis_url, namespace=store.ns)
    wrappers = _wrappers(pool_home, programs)
    with daemons.SlurmCluster(nodes=nodes, resume_program=wrappers["resume"], suspend_program=wrappers["suspend"],
                              resume_fail_program=wrappers["resume-fail"], suspend_time=suspend_time,
                              resume_timeout=60) as cluster:
        files = files_dir("hpc")
        files.mkdir(parents=True, exist_ok=True)
        assert cluster.munge_dir is not None
        (files / "munge.key").write_bytes((cluster.munge_dir / "munge.key").read_bytes())
        (files / "munge.key").chmod(0o600)
        (files / "slurm.conf").write_text(cluster.conf_text())
        spec = {"name": "hpc", "deployable_type": "slurm-node", "max": nodes,
                "slurm": {"controller": daemons.CONTROLLER_ADDRESS, "bridge_netns": cluster._network.bridge_ns,
                          "suspend_time": suspend_time, "node_prefix": "cloud"},
                "sensor": {"name": "slurm", "netns": cluster.controller_ns, "conf": str(cluster.conf_path)},
                "timeouts": {"heartbeat_interval": 1, "heartbeat_timeout": 15, "boot": 60, "terminate_grace": 5}}
        store.put_domain(parse_domain_spec(spec))
        driver = LocalNodeDriver(ex_state_dir=str(pool_home / "sites" / "local"))
        manager = Manager(store=store, provisioner=Provisioner({"local": driver}), redis_url=redis_url,
                          services=[SlurmService()])
        rm = RunningManager(manager, driver)
        rm.thread.start()
        try:
            yield cluster, rm, "hpc"
        finally:
            rm.stop.set()
            manager.wake.set()
            rm.thread.join(15)
            manager.close()
            rm.kill_all()
            deadline = time.monotonic() + 15
            while driver.list_nodes() and time.monotonic() < deadline:
                time.sleep(0.1)


def test_sbatch_on_a_powered_down_partition_runs_on_a_pool_worker_then_it_goes(
        store: Store, redis_url: str, pool_home: Path, tmp_path: Path) -> None:
    with slurm_pool(store, redis_url, pool_home) as (cluster, rm, domain):
        out = cluster.directory / "out" / "job-%j.out"
        submitted = cluster.run("sbatch", "--parsable", "-N", "1", "-o", str(out), "--wrap", "sleep 1; echo node=$SLURM_JOB_NODELIST")
        job = submitted.stdout.strip().split(";")[0]
        done = cluster.directory / "out" / f"job-{job}.out"
        rm.wait(lambda: done.is_file() and done.read_text().strip() != "", 150, f"job {job} to run")
        named = [n for n in store.nodes(domain) if n.name]
        assert named and named[0].name in cluster.node_names and done.read_text().split() == [f"node={named[0].name}"]
        resumes = [e for e in store.events(domain, count=200, kind="slurm") if e["what"] == "resume"]
        assert resumes and named[0].name in resumes[-1]["nodes"]
        rm.wait(lambda: not rm.live(domain), 120, "the node to be powered down and its worker to go")
        suspends = [e for e in store.events(domain, count=200, kind="slurm") if e["what"] == "suspend"]
        assert suspends and store.wanted(domain) == {}
        key = (files_dir(domain) / "munge.key").read_bytes()
        import base64

        encoded = base64.b64encode(key).decode()
        assert encoded not in json.dumps(store.events(domain, count=1000))
        from click.testing import CliRunner

        from pool.cli.commands import main as cli

        env = {"REDIS_URL": redis_url, "POOL_NAMESPACE": store.ns}
        for args in (["show", domain], ["show", domain, "--json"]):
            shown = CliRunner().invoke(cli, args, env=env)
            assert shown.exit_code == 0 and encoded not in shown.output, shown.output
