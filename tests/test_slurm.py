"""Slurm domains against real daemons: slurmctld in a network namespace of the harness's own calls
`pool slurm resume`; the pool launches workers running slurmd under the names it asked for."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
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
def slurm_pool(store: Store, redis_url: str, pool_home: Path, *, nodes: int = 2, suspend_time: int = 5,
               extra_conf: str = "", boot: float = 60, slurm: dict[str, Any] | None = None,
               policy: dict[str, Any] | None = None) -> Iterator[tuple[Any, RunningManager, str]]:
    """A Slurm cluster whose power saving is the pool, and a manager running its slurm-node domain."""
    directory = Path(tempfile.mkdtemp(prefix="ep-slurmpool-"))  # (not ep-slurm-PID: the harness reaps those)
    programs = write_programs("hpc", redis_url=redis_url, namespace=store.ns, resume_timeout=60,
                              slurm_conf=str(directory / "etc" / "slurm.conf"))
    wrappers = _wrappers(pool_home, {k: v for k, v in programs.items() if k != "prolog"})
    extra_conf = f"{extra_conf}\nPrologSlurmctld={programs['prolog']}"  # the one `pool slurm config` prints
    with daemons.SlurmCluster(directory, nodes=nodes, resume_program=wrappers["resume"],
                              suspend_program=wrappers["suspend"],
                              resume_fail_program=wrappers["resume-fail"], suspend_time=suspend_time,
                              resume_timeout=60, extra_conf=extra_conf, fast_launch=False) as cluster:
        files = files_dir("hpc")
        files.mkdir(parents=True, exist_ok=True)
        assert cluster.munge_dir is not None
        (files / "munge.key").write_bytes((cluster.munge_dir / "munge.key").read_bytes())
        (files / "munge.key").chmod(0o600)
        (files / "slurm.conf").write_text(cluster.conf_text())
        spec = {"name": "hpc", "deployable_type": "slurm-node", "max": nodes,
                "slurm": {"controller": daemons.CONTROLLER_ADDRESS, "bridge_netns": cluster._network.bridge_ns,
                          "suspend_time": suspend_time, "node_prefix": "cloud",
                          "client_netns": cluster.controller_ns, **(slurm or {})},
                **({"policy": policy} if policy else {}),
                "timeouts": {"heartbeat_interval": 1, "heartbeat_timeout": 15, "boot": boot, "terminate_grace": 5}}
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
    shutil.rmtree(directory, ignore_errors=True)


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
        for args in (["show", domain, "--all"], ["show", domain, "--json", "--all"]):
            shown = CliRunner().invoke(cli, args, env=env)
            assert shown.exit_code == 0 and encoded not in shown.output, shown.output
            assert named[0].name in shown.output and named[0].node_id in shown.output  # both, side by side
        for path in pool_home.rglob("*"):  # logs and files: only the worker's private user-data holds it
            if path.is_file() and encoded in path.read_text(errors="replace"):
                assert path.name == "user-data" and not path.stat().st_mode & 0o077, path


def _job_field(cluster: Any, job: str, name: str) -> str:
    shown = cluster.run("scontrol", "-o", "show", "job", job, check=False).stdout
    return dict(w.split("=", 1) for w in shown.split() if "=" in w).get(name, "")


def test_a_sigkilled_worker_under_a_running_requeue_job_loses_no_job(store: Store, redis_url: str,
                                                                      pool_home: Path) -> None:
    with slurm_pool(store, redis_url, pool_home, extra_conf="SlurmdTimeout=5") as (cluster, rm, domain):
        out = cluster.directory / "out" / "job-%j.out"
        job = cluster.run("sbatch", "--parsable", "--requeue", "-N", "1", "-o", str(out), "--open-mode=append",
                          "--wrap", "echo start; sleep 8; echo done").stdout.strip()
        done = cluster.directory / "out" / f"job-{job}.out"
        rm.wait(lambda: done.is_file() and "start" in done.read_text(), 120, "the job to start")
        rm.wait(lambda: len(rm.live(domain, S.JOINED)) == 1, 30, "the worker to have joined")
        [worker] = rm.live(domain, S.JOINED)
        [machine] = [n for n in rm.driver.list_nodes() if n.id == worker.provider_id]
        rm.driver.ex_preempt(machine)  # SIGKILL: agent, munged, slurmd and the job with them
        rm.wait(lambda: "done" in done.read_text(), 240, "the job to run again and complete")
        assert done.read_text().count("start") >= 2 and _job_field(cluster, job, "Restarts") not in ("", "0")
        assert worker.node_id not in {n.node_id for n in rm.live(domain)}  # its machine was replaced


def test_the_spark_tutorial_batch_file_runs_end_to_end(store: Store, redis_url: str, pool_home: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    import sys

    pytest.importorskip("pyspark")
    from tests.conftest import ROOT as REPO

    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")  # spark-submit
    with slurm_pool(store, redis_url, pool_home) as (cluster, rm, domain):
        work = cluster.directory / "tutorial"
        shutil.copytree(REPO / "examples" / "slurm", work)
        job = cluster.run("sbatch", "--parsable", "--chdir", str(work), str(work / "spark-pi.sbatch"),
                          timeout=60).stdout.strip()
        out = work / f"spark-pi_{job}.out"
        rm.wait(lambda: out.is_file() and "pi is roughly 3.1" in out.read_text(), 240,
                "the Spark job to print its estimate")
        assert _job_field(cluster, job, "JobName") == "spark-pi"


def test_pool_slurm_config_prints_the_lines_and_writes_private_programs(store: Store, redis_url: str,
                                                                        pool_home: Path) -> None:
    from click.testing import CliRunner

    from pool.cli.commands import main as cli

    store.put_domain(parse_domain_spec({"name": "hpc", "deployable_type": "slurm-node", "max": 4,
                                        "slurm": {"controller": "ctl", "node_prefix": "cloud", "cpus": 2}}))
    env = {"REDIS_URL": redis_url, "POOL_NAMESPACE": store.ns}
    out = CliRunner().invoke(cli, ["slurm", "config", "hpc"], env=env)
    assert out.exit_code == 0, out.output
    assert "NodeName=cloud[1-4] CPUs=2 RealMemory=1024 State=CLOUD" in out.output
    assert "PartitionName=cloud Nodes=cloud[1-4]" in out.output and "ResumeTimeout=150" in out.output
    resume = files_dir("hpc") / "resume"
    assert f"ResumeProgram={resume}" in out.output and (resume.stat().st_mode & 0o777) == 0o700
    assert f"PrologSlurmctld={files_dir('hpc') / 'prolog'}" in out.output
    assert redis_url.split("@")[0].split(":")[-1] not in out.output  # the store's password stays in the file
    bad = CliRunner().invoke(cli, ["slurm", "resume", "cloud[1-", "--domain", "hpc"], env=env)
    assert bad.exit_code == 2 and "unbalanced brackets" in bad.output
    ok = CliRunner().invoke(cli, ["slurm", "resume", "cloud[1-2]", "--domain", "hpc"], env=env)
    assert ok.exit_code == 0 and set(store.wanted("hpc")) == {"cloud1", "cloud2"}


def test_a_worker_that_never_boots_sets_its_node_down_and_the_job_runs_on_another(
        store: Store, redis_url: str, pool_home: Path) -> None:
    import hashlib
    import subprocess

    with slurm_pool(store, redis_url, pool_home, boot=15) as (cluster, rm, domain):
        # cloud1's worker cannot make its network (its veth name is taken): it dies before it joins
        veth = "v" + hashlib.sha256(b"cloud1").hexdigest()[:12]
        subprocess.run(["ip", "-n", cluster._network.bridge_ns, "link", "add", veth, "type", "veth", "peer", "name",
                        "taken"], check=True)
        out = cluster.directory / "out" / "job-%j.out"
        job = cluster.run("sbatch", "--parsable", "-N", "1", "-o", str(out), "--wrap",
                          "echo node=$SLURM_JOB_NODELIST").stdout.strip()
        done = cluster.directory / "out" / f"job-{job}.out"
        rm.wait(lambda: bool(store.events(domain, count=500, kind="named_failed")), 60, "the pool to give cloud1 up")
        assert [e["name"] for e in store.events(domain, count=500, kind="named_failed")] == ["cloud1"]

        def node_state() -> str:
            shown = cluster.run("scontrol", "-o", "show", "node", "cloud1").stdout
            return dict(w.split("=", 1) for w in shown.split() if "=" in w).get("State", "") + " " + shown

        rm.wait(lambda: "POWERED_DOWN" in node_state(), 60, "cloud1 powered down, not stuck down~")
        assert "Reason=elastic-pool: " in node_state()  # said to Slurm, with the reason (gone, or boot timeout)
        assert _job_field(cluster, job, "Restarts") == "1" and _job_field(cluster, job, "JobState") == "PENDING"
        # the fault was the machine's: gone, and an impatient admin lets the requeued job start now
        subprocess.run(["ip", "-n", cluster._network.bridge_ns, "link", "delete", veth], check=True)
        cluster.run("scontrol", "update", f"jobid={job}", "StartTime=now")
        rm.wait(lambda: done.is_file() and "node=" in done.read_text(), 120, "the requeued job to run")
        assert done.read_text().strip() == "node=cloud2"  # another node: slurmctld does not pick the failed one


def test_prewarm_powers_a_node_up_for_a_job_that_waits_for_its_begin_time(
        store: Store, redis_url: str, pool_home: Path) -> None:
    """`slurm.prewarm`: the sensor sees a job waiting for its begin time (slurmctld powers nothing up for it
    yet); the policy wants a node; the pool asks slurmctld to power one up; the job starts on that node."""
    with slurm_pool(store, redis_url, pool_home, suspend_time=300, slurm={"prewarm": True},
                    policy={"name": "queue_depth", "tasks_per_worker": 1}) as (cluster, rm, domain):
        out = cluster.directory / "out" / "job-%j.out"
        job = cluster.run("sbatch", "--parsable", "-N", "1", "--begin=now+25", "-o", str(out), "--wrap",
                          "echo node=$SLURMD_NODENAME").stdout.strip()
        rm.wait(lambda: bool(store.events(domain, count=200, kind="prewarm")), 30, "the pool to ask for a node")
        asked = store.events(domain, count=200, kind="prewarm")[-1]
        assert asked["names"] == ["cloud1"] and asked["target"] == 1
        rm.wait(lambda: any(n.state is S.JOINED for n in store.nodes(domain)), 60, "the pre-warmed node to join")
        assert _job_field(cluster, job, "JobState") == "PENDING"  # it was up before its job could start
        done = cluster.directory / "out" / f"job-{job}.out"
        rm.wait(lambda: done.is_file() and "node=" in done.read_text(), 90, "the job to run")
        assert done.read_text().strip() == "node=cloud1"
        assert {n.name for n in store.nodes(domain)} == {"cloud1"}  # no second node for the same job
        assert len(store.events(domain, count=500, kind="prewarm")) == 1
