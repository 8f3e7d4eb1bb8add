"""Real Slurm daemons (slurm/daemons.py): a CLOUD node is resumed for a job, then suspended when idle.

slurmctld runs the ResumeProgram / SuspendProgram below (inside its own network namespace); they
only append "<epoch> <hostname>" lines to a log file each. The test process watches those files
and plays the part a pool worker will play later: it starts ``slurmd -N host`` for each resumed
host and stops it for each suspended one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from slurm.daemons import NETNS_DIR, SlurmCluster, ensure_installed, netns_pids, reap_stale

pytestmark = pytest.mark.slow

SUSPEND_TIME = 3
PROGRAM = """#!/bin/sh
# slurmctld gives a hostlist expression (cloud[1-2]): one line per host, with the time of the call.
now=$(date +%s.%N)
for host in $(SLURM_CONF={conf} scontrol show hostnames "$1"); do
    echo "$now $host" >> {log}
done
"""


@dataclass
class Harness:
    """The cluster, and what the test saw of slurmctld's calls to the programs (host -> epoch)."""

    cluster: SlurmCluster
    logs: dict[str, Path]
    calls: dict[str, dict[str, float]] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    block_signals: bool = False  # start slurmd with signals blocked, as slurmctld's ResumeProgram children have

    def pump(self) -> None:
        """Start slurmd for newly resumed hosts, stop it for newly suspended ones."""
        for kind, path in self.logs.items():
            lines = path.read_text().splitlines() if path.exists() else []
            for line in lines[self.seen.get(kind, 0):]:
                stamp, host = line.split()
                self.calls.setdefault(kind, {})[host] = float(stamp)
                handle = self.cluster.slurmds.get(host)
                if kind == "resume" and handle is None:
                    self.started[host] = self._start(host)
                elif kind == "suspend" and handle is not None:
                    self.cluster.stop_slurmd(handle)
            self.seen[kind] = len(lines)

    def _start(self, host: str) -> float:
        blocked = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2}
        old = signal.pthread_sigmask(signal.SIG_BLOCK, blocked if self.block_signals else set())
        try:
            return self.cluster.start_slurmd(host).started_at
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def wait(self, what: str, timeout: float, predicate: object) -> float:
        """Pump until ``predicate()`` holds; the epoch when it did."""
        deadline = time.monotonic() + timeout
        while True:
            self.pump()
            if callable(predicate) and predicate():
                return time.time()
            if time.monotonic() > deadline:
                log = self.cluster.slurmctld_log
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.exists() else ""
                pytest.fail(f"no {what} after {timeout:.0f} s; slurmctld log:\n{tail}")
            time.sleep(0.1)

    def job_field(self, job_id: str, key: str) -> str:
        out = self.cluster.run("scontrol", "-o", "show", "job", job_id, check=False).stdout
        fields = dict(word.split("=", 1) for word in out.split() if "=" in word)
        return fields.get(key, "")


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    why = ensure_installed()
    if why:
        pytest.skip(f"real Slurm daemons cannot run here: {why}")
    base = tmp_path_factory.mktemp("slurm")
    logs = {kind: base / f"{kind}.log" for kind in ("resume", "suspend", "resume_fail")}
    programs = {}
    for kind, log in logs.items():
        program = base / f"{kind}.sh"
        program.write_text(PROGRAM.format(conf=base / "cluster" / "etc" / "slurm.conf", log=log))
        program.chmod(0o755)
        programs[kind] = program
    with SlurmCluster(base / "cluster", nodes=2, resume_program=programs["resume"],
                      suspend_program=programs["suspend"], resume_fail_program=programs["resume_fail"],
                      suspend_time=SUSPEND_TIME, suspend_timeout=3, resume_timeout=30) as cluster:
        yield Harness(cluster, logs)
    assert not cluster.slurmds


def registered(state: str) -> bool:
    """A sinfo state of a node whose slurmd answers: not powering up (#), down (~), powering down (%), not responding (*)."""
    return bool(state) and not any(mark in state for mark in "#~%*")


def run_job(h: Harness, node: str) -> dict[str, float]:
    """sbatch a short job on ``node`` (powered down) and follow it to completion; the epochs seen."""
    out = h.cluster.directory / "out" / f"{node}.out"
    t_submit = time.time()
    job_id = h.cluster.run("sbatch", "--parsable", "-p", "cloud", "-w", node, f"--output={out}",
                           "--wrap", "date +%s.%N; hostname; sleep 1").stdout.strip().split(";")[0]
    t_resume = h.wait(f"ResumeProgram call for {node}", 60, lambda: node in h.calls.get("resume", {}))
    t_registered = h.wait(f"{node} registered", 45, lambda: registered(h.cluster.node_state(node)))
    t_done = h.wait(f"job {job_id} to complete", 45,
                    lambda: h.job_field(job_id, "JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"))
    assert h.job_field(job_id, "JobState") == "COMPLETED", h.cluster.run("scontrol", "show", "job", job_id).stdout
    t_start = float(out.read_text().split()[0])
    timings = {"sbatch->ResumeProgram": h.calls["resume"][node] - t_submit,
               "ResumeProgram->slurmd started": h.started[node] - h.calls["resume"][node],
               "slurmd started->registered": t_registered - h.started[node],
               "registered->job start": t_start - t_registered, "sbatch->job start": t_start - t_submit,
               "sbatch->completed": t_done - t_submit}
    print(f"\n{node}: " + ", ".join(f"{key} {value:.1f} s" for key, value in timings.items()))
    assert t_resume >= t_submit
    return {"done": t_done, **timings}


def test_job_on_cloud_node_runs_after_resume(harness: Harness) -> None:
    """(a) sbatch on the all-CLOUD partition: ResumeProgram is called, slurmd starts, the job completes."""
    assert harness.cluster.node_state("cloud1") == "idle~"
    run_job(harness, "cloud1")
    assert "cloud1" in harness.cluster.slurmds
    assert not harness.calls.get("resume_fail")


def test_idle_node_is_suspended_and_slurmd_stopped(harness: Harness) -> None:
    """(b) after SuspendTime idle, SuspendProgram is called with the node; its slurmd is stopped."""
    done = run_job(harness, "cloud2")["done"]
    t_suspend = harness.wait("SuspendProgram call for cloud2", SUSPEND_TIME + 45,
                             lambda: "cloud2" in harness.calls.get("suspend", {}))
    print(f"cloud2: idle->SuspendProgram {harness.calls['suspend']['cloud2'] - done:.1f} s")
    assert "cloud2" not in harness.cluster.slurmds
    harness.wait("cloud2 powered down", 30, lambda: harness.cluster.node_state("cloud2") == "idle~")
    print(f"cloud2: SuspendProgram->powered down {time.time() - t_suspend:.1f} s")
    harness.wait("cloud1 suspended too", SUSPEND_TIME + 45, lambda: "cloud1" not in harness.cluster.slurmds)
    assert not harness.calls.get("resume_fail")


def test_slurmd_started_with_blocked_signals_registers_and_stops(harness: Harness) -> None:
    """(c) slurmd started from a blocked signal mask (a ResumeProgram's) still registers, and stops on SIGTERM."""
    harness.block_signals = True
    try:
        run_job(harness, "cloud1")
    finally:
        harness.block_signals = False
    handle = harness.cluster.slurmds["cloud1"]
    began = time.monotonic()
    harness.cluster.stop_slurmd(handle)
    assert handle.process.returncode != -signal.SIGKILL, "slurmd ignored SIGTERM"
    assert time.monotonic() - began < 5
    assert not (NETNS_DIR / handle.netns).exists()


HARD_KILLED = """
import sys, time
from slurm.daemons import SlurmCluster
cluster = SlurmCluster(nodes=1).start()
handle = cluster.start_slurmd("cloud1")
print(cluster.controller_ns, handle.netns, cluster.directory, cluster.munge_dir, flush=True)
time.sleep(600)
"""


def test_harness_killed_hard_is_reaped(harness: Harness) -> None:
    """(d) a harness killed with SIGKILL leaves daemons and namespaces: the next start reaps them by id."""
    root = Path(__file__).resolve().parent.parent
    child = subprocess.Popen([sys.executable, "-c", HARD_KILLED], cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        ctl_ns, node_ns, directory, munge_dir = child.stdout.readline().split()
    finally:
        child.kill()
        child.wait()
    pids = netns_pids(ctl_ns) + netns_pids(node_ns)
    assert len(pids) >= 3, pids  # munged, slurmctld (+ slurmscriptd), slurmd
    reaped = reap_stale()
    assert {ctl_ns, node_ns, directory, munge_dir} <= set(reaped), reaped
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3]
    assert not (NETNS_DIR / ctl_ns).exists() and not Path(directory).exists() and not Path(munge_dir).exists()
