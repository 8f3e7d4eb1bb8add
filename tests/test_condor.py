"""HTCondor domains against real daemons: a central manager and startds from minicondor in the
machine's chroot (``make condor-root``), jobs submitted with the PyPI bindings as a user would."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from condor.central import CondorCentralService, read_central
from condor.cli import client_env
from condor.install import CondorNotInstalled, home, require
from pool.control.manager import Manager
from pool.core.model import NodeState, parse_domain_spec
from pool.sites.local import LocalNodeDriver
from pool.sites.provisioner import Provisioner
from pool.state.store import Store
from tests.conftest import RunningManager, with_overrides

htcondor2 = pytest.importorskip("htcondor2")
try:
    ROOT = require()
except CondorNotInstalled as exc:  # `make test` builds it; elsewhere the tests say why they skip
    pytest.skip(str(exc), allow_module_level=True)

S = NodeState
pytestmark = pytest.mark.slow


def condor_spec(name: str, *, max_size: int = 3, **overrides: Any) -> dict[str, Any]:
    """A condor-startd domain for this 2-core machine: 1 CPU and 256 MB per worker."""
    spec: dict[str, Any] = {
        "name": name, "deployable_type": "condor-startd", "min": 0, "max": max_size,
        "scaling": {"stabilization": 2, "idle_timeout": 3},
        "condor": {"worker_cpus": 1, "worker_memory": 256, "job_lease": 8},
        "timeouts": {"heartbeat_interval": 1, "heartbeat_timeout": 15, "boot": 90, "drain": 120,
                     "terminate_grace": 10},
    }
    return with_overrides(spec, overrides)


class CondorPool(RunningManager):
    """A running manager whose condor domains get a central manager; jobs submitted as a user would."""

    def __init__(self, manager: Manager, driver: LocalNodeDriver, service: CondorCentralService, jobs: Path) -> None:
        super().__init__(manager, driver)
        self.service = service
        self.jobs = jobs

    def apply(self, spec: dict[str, Any]) -> str:
        parsed = parse_domain_spec(spec)
        self.store.put_domain(parsed)
        self.wait(lambda: (read_central(parsed.name) or {}).get("state") == "up", 90, "the central manager")
        return parsed.name

    def schedd(self, domain: str) -> Any:
        os.environ.update(client_env(read_central(domain) or {}))
        htcondor2.reload_config()
        coll = htcondor2.Collector(str((read_central(domain) or {})["collector"]))
        return htcondor2.Schedd(coll.locate(htcondor2.DaemonType.Schedd))

    def submit(self, domain: str, count: int, *, seconds: float | str = 1, **extra: str) -> tuple[int, Path]:
        """``count`` jobs that sleep and then write their own id; returns the cluster and its directory."""
        run = self.jobs / uuid.uuid4().hex[:8]
        run.mkdir(parents=True)
        (run / "job.sh").write_text('#!/bin/sh\nsleep "$1"\necho "done $2"\n')
        (run / "job.sh").chmod(0o755)
        os.chown(run, 2001, 2001)
        description = {"executable": str(run / "job.sh"), "arguments": f"{seconds} $(ProcId)",
                       "initialdir": str(run), "output": "out.$(ProcId)", "error": "err.$(ProcId)",
                       "log": "job.log", "request_cpus": "1", "request_memory": "64", "request_disk": "1024",
                       "should_transfer_files": "NO", **extra}
        result = self.schedd(domain).submit(htcondor2.Submit(description), count=count)
        return result.cluster(), run

    def done(self, run: Path, count: int) -> int:
        return sum(1 for i in range(count) if (run / f"out.{i}").is_file()
                   and (run / f"out.{i}").read_text().strip() == f"done {i}")

    def queue(self, domain: str, cluster: int) -> list[Any]:
        return list(self.schedd(domain).query(constraint=f"ClusterId == {cluster}",
                                              projection=["ProcId", "JobStatus", "NumJobStarts"]))

    def busy(self, domain: str) -> list[str]:
        """Nodes running jobs, as the domain's sensor reads them (one collector query a tick)."""
        nodes = (self.store.get_state(domain).readings.get("condor") or {}).get("nodes") or {}
        live = {n.node_id for n in self.live(domain, S.JOINED)}
        return sorted(nid for nid, jobs in nodes.items() if jobs > 0 and nid in live)


@pytest.fixture
def condor_pool(store: Store, redis_url: str, pool_home: Path) -> Iterator[CondorPool]:
    driver = LocalNodeDriver(ex_state_dir=str(pool_home / "sites" / "local"))
    service = CondorCentralService()
    manager = Manager(store=store, provisioner=Provisioner({"local": driver}), redis_url=redis_url,
                      services=[service])
    jobs = home(ROOT) / "jobs" / uuid.uuid4().hex[:8]
    jobs.mkdir(parents=True)
    pool = CondorPool(manager, driver, service, jobs)
    pool.thread.start()
    try:
        yield pool
    finally:
        pool.stop.set()
        manager.wake.set()
        pool.thread.join(15)
        pool.kill_all()
        for spec in store.domains():
            service.stop(spec)
        deadline = time.monotonic() + 15
        while driver.list_nodes() and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(jobs, ignore_errors=True)


def events(store: Store, domain: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [e for e in store.events(domain) if kind is None or e.get("kind") == kind]


def test_a_burst_takes_the_domain_to_max_and_back_to_zero(condor_pool: CondorPool) -> None:
    pool = condor_pool
    name = pool.apply(condor_spec("burst", max_size=3))
    cluster, run = pool.submit(name, 50, seconds=1)
    peak = 0

    def finished() -> bool:
        nonlocal peak
        peak = max(peak, len(pool.live(name, S.JOINED)))
        return pool.done(run, 50) == 50

    pool.wait(finished, 300, "50 jobs to complete")
    assert peak == 3

    def counters() -> tuple[float, float]:  # the schedd's own statistics, read by the sensor (wait_target's rates)
        reading = next(iter(pool.store.get_state(name).readings.values()), {})
        return float(reading.get("arrivals", -1)), float(reading.get("completions", -1))

    pool.wait(lambda: counters()[1] >= 50, 90, "the schedd's JobsCompleted to count the 50 jobs")
    assert counters()[0] >= counters()[1]
    pool.wait(lambda: not pool.live(name), 90, "the domain back to 0")
    assert pool.queue(name, cluster) == []


def password_of(domain: str) -> str:
    from condor.central import inside_dir

    return (ROOT / inside_dir(domain).lstrip("/") / "passwords.d" / "POOL").read_text().strip()


def started(run: Path) -> int:
    """How many times the job of ``run`` began executing (its user log says each start)."""
    log = run / "job.log"
    return log.read_text().count("Job executing on host") if log.exists() else 0


def test_jobs_that_fit_no_worker_are_not_counted_and_the_event_log_says_why(condor_pool: CondorPool) -> None:
    from click.testing import CliRunner

    from pool.cli.commands import main as cli

    pool = condor_pool
    name = pool.apply(condor_spec("fit", max_size=2))
    pool.submit(name, 2, request_memory="4096")
    pool.submit(name, 1, hold="True")
    pool.wait(lambda: (pool.store.get_state(name).readings.get("condor") or {}).get("too_big_jobs") == 2
              and (pool.store.get_state(name).readings.get("condor") or {}).get("held_jobs") == 1,
              30, "the sensor to see the jobs")
    reading = pool.store.get_state(name).readings["condor"]
    assert reading["value"] == 0 and reading["counted_jobs"] == 0
    from sensors.condor import CondorIdleSensor

    collector = str((read_central(name) or {})["collector"])
    missing = CondorIdleSensor(collector=collector, domain=name, schedds=["nosuch@elastic-pool"]).read(time.time())
    assert missing.error == f"schedd nosuch@elastic-pool is not in collector {collector}"
    notes = [n for e in pool.store.events(name, count=200, kind="sensor") for n in e["notes"]]
    assert "2 idle jobs not counted: ask more memory than a worker has (4096 MB > 256 MB); raise " \
           "condor.worker_memory or lower the jobs' request_memory" in notes
    assert "1 held job not counted (condor_release to run it)" in notes
    time.sleep(3)
    assert pool.live(name) == []  # nothing launched for work no worker could run
    shown = CliRunner().invoke(cli, ["show", name], env={"REDIS_URL": pool.manager.redis_url,
                                                         "POOL_NAMESPACE": pool.store.ns})
    assert "  condor: 1 held job not counted (condor_release to run it)" in shown.output, shown.output
    out = CliRunner().invoke(cli, ["condor", "status", name])
    assert out.exit_code == 0, out.output
    assert "idle jobs: 2, counted 0" in out.output and "not counted: 2 idle jobs" in out.output
    # a job that fits is counted, and a worker comes for it
    _, run = pool.submit(name, 1, seconds=1)
    pool.wait(lambda: pool.done(run, 1) == 1, 120, "the job that fits to run")


def test_a_sigkilled_busy_startd_loses_no_job(condor_pool: CondorPool) -> None:
    pool = condor_pool
    name = pool.apply(condor_spec("kill", max_size=1))
    _, run = pool.submit(name, 1, seconds=8)
    pool.wait(lambda: bool(pool.busy(name)), 120, "the job to start")
    [victim] = pool.live(name, S.JOINED)
    secret = password_of(name)
    for pid in _pids_with(b"CONDOR_CONFIG=/var/lib/elastic-pool/startd/"):  # the daemons never see it
        assert secret.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
    [node] = [n for n in pool.driver.list_nodes() if n.id == victim.provider_id]
    pool.driver.ex_preempt(node)  # SIGKILL: agent, condor_master, startd, starter and the job
    pool.wait(lambda: pool.done(run, 1) == 1, 180, "the job to run again elsewhere and complete")
    assert started(run) >= 2
    assert victim.node_id not in {n.node_id for n in pool.live(name)}


def _pids_with(needle: bytes) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in Path(entry.path, "environ").read_bytes():
                    found.append(int(entry.name))
    return found


def test_scale_in_takes_the_unclaimed_startd_and_never_evicts_a_running_job(condor_pool: CondorPool) -> None:
    pool = condor_pool
    name = pool.apply(condor_spec("keep", max_size=2))
    _, long_run = pool.submit(name, 1, seconds=25)
    _, short_run = pool.submit(name, 1, seconds=1)
    pool.wait(lambda: len(pool.live(name, S.JOINED)) == 2, 120, "two startds")
    pool.wait(lambda: pool.done(short_run, 1) == 1, 120, "the short job")

    pool.wait(lambda: len(pool.busy(name)) == 1, 60, "the long job running")
    running_on = pool.busy(name)
    pool.wait(lambda: len(pool.live(name)) == 1, 60, "the unclaimed startd to go")
    assert [n.node_id for n in pool.live(name)] == running_on  # the busy one stays
    pool.wait(lambda: pool.done(long_run, 1) == 1, 120, "the long job")
    assert started(long_run) == 1 and "evicted" not in (long_run / "job.log").read_text()
    pool.wait(lambda: not pool.live(name), 90, "the domain back to 0")
    drained = [e for e in pool.store.events(name, count=500, kind="node") if "drain" in str(e.get("detail", ""))]
    assert drained and not any("deadline passed" in str(e.get("detail")) for e in drained)
    assert not pool.store.events(name, count=500, kind="drain_deadline")


def test_the_password_stays_out_of_show_events_logs_and_files(condor_pool: CondorPool, pool_home: Path) -> None:
    from click.testing import CliRunner

    from pool.cli.commands import main as cli

    pool = condor_pool
    name = pool.apply(condor_spec("quiet", max_size=1))
    _, run = pool.submit(name, 1, seconds=1)
    pool.wait(lambda: pool.done(run, 1) == 1, 120, "the job")
    secret = password_of(name)
    env = {"REDIS_URL": pool.manager.redis_url, "POOL_NAMESPACE": pool.store.ns}
    runner = CliRunner()
    for args in (["show", name], ["show", name, "--json"], ["show", name, "-o", "wide"], ["ls", "--json"],
                 ["condor", "status", name, "--json"], ["condor", "env", name]):
        out = runner.invoke(cli, args, env=env)
        assert out.exit_code == 0, (args, out.output)
        assert secret not in out.output, args
    assert secret not in json.dumps(pool.store.events(name, count=1000))
    for path in pool_home.rglob("*"):
        if path.is_file() and secret in path.read_text(errors="replace"):
            assert path.name == "user-data" and not path.stat().st_mode & 0o077, path  # only the private user-data
    for path in (ROOT / "var" / "lib" / "elastic-pool").rglob("*"):
        if path.is_file() and not path.is_symlink() and secret in path.read_text(errors="replace"):
            assert path.name == "POOL" and not path.stat().st_mode & 0o077, path


def test_a_startd_without_the_pool_password_cannot_join(condor_pool: CondorPool) -> None:
    import subprocess

    from condor.startd import CondorStartd

    pool = condor_pool
    name = pool.apply(condor_spec("locked", max_size=1))
    collector = str((read_central(name) or {})["collector"])
    intruder = CondorStartd(domain=name, node="intruder", collector=collector, password="not-the-password",
                            root=ROOT)
    proc = subprocess.Popen(intruder.command(), env=intruder.env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(12)  # several update intervals
        assert intruder.slots() == []
        assert "Failed to authenticate" in (intruder.local / "log" / "StartLog").read_text()
    finally:
        intruder.stop(proc)
        intruder.cleanup()


def test_the_example_submit_file_runs_through_pool_condor_submit_and_env(condor_pool: CondorPool) -> None:
    import subprocess
    import sys

    from click.testing import CliRunner

    from pool.cli.commands import main as cli
    from tests.conftest import ROOT as REPO

    pool = condor_pool
    name = pool.apply(condor_spec("example", max_size=3))
    work = pool.jobs / "example"
    shutil.copytree(REPO / "examples" / "condor", work)
    for path in [work, *work.iterdir()]:
        os.chown(path, 2001, 2001)
    runner = CliRunner()
    out = runner.invoke(cli, ["condor", "submit", name, str(work / "sleep.sub")])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("20 job(s) submitted to cluster ")
    outside = runner.invoke(cli, ["condor", "submit", name, str(REPO / "examples" / "condor" / "sleep.sub")])
    assert outside.exit_code == 2 and "the schedd runs in a chroot" in outside.output
    exports = runner.invoke(cli, ["condor", "env", name]).output
    same = runner.invoke(cli, ["env", name, "-o", "shell"], env={"REDIS_URL": pool.manager.redis_url,
                                                              "POOL_NAMESPACE": pool.store.ns})
    assert same.exit_code == 0 and "_CONDOR_COLLECTOR_HOST=" in same.output and "redis" not in same.output, same.output
    env = {k: v for k, _, v in (line[len("export "):].partition("=") for line in exports.splitlines()
                                if line.startswith("export "))}
    count = subprocess.run([sys.executable, "-c", "import htcondor2; print(len(htcondor2.Schedd().query()))"],
                           env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert count.returncode == 0 and int(count.stdout) >= 1, count.stderr  # the bindings find the pool
    pool.wait(lambda: sum(1 for i in range(20) if (work / f"sleep.{i}.out").is_file()
                          and "done" in (work / f"sleep.{i}.out").read_text()) == 20, 240, "the 20 example jobs")
    assert max(len(pool.live(name)), 0) <= 3


def test_a_claimed_startd_asked_to_leave_finishes_its_job_first(condor_pool: CondorPool) -> None:
    pool = condor_pool
    name = pool.apply(condor_spec("drain", max_size=1))
    _, run = pool.submit(name, 1, seconds=12)
    pool.wait(lambda: bool(pool.busy(name)), 120, "the job to start")
    [node] = pool.busy(name)
    pool.store.set_override(name, 0)  # the operator scales the domain to 0 under a running job
    pool.wait(lambda: pool.store.node(name, node).state is S.DRAINING, 30, "the drain")
    pool.wait(lambda: pool.done(run, 1) == 1, 60, "the job to finish on the draining startd")
    pool.wait(lambda: pool.store.node(name, node).state in (S.TERMINATING, S.TERMINATED), 60, "the startd to go")
    log = (run / "job.log").read_text()
    assert started(run) == 1 and "evicted" not in log  # it ran once, to the end
    reasons = [h[2] for h in pool.store.node(name, node).history]
    assert "drained: holds no work" in reasons and not any("deadline passed" in r for r in reasons), reasons
