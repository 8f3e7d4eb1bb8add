"""Slurm: a burst of 40 one-node jobs on 8 powered-down CLOUD nodes that the pool powers up, against
the same burst on 8 static nodes, one configuration after the other.

- elastic: a real slurmctld (slurm/daemons.py) whose power saving is the pool, set up by
  ``slurm_pool`` of tests/test_slurm.py (ResumeProgram/SuspendProgram are ``pool slurm
  resume|suspend``; a manager with the Slurm service runs the slurm-node domain on the local site)
  in a private Redis and POOL_HOME; SuspendTime 5 s, all 8 nodes powered down at the first submit.
- static: the same cluster with ordinary nodes (not CLOUD, power saving off) whose 8 slurmd were
  started with ``SlurmCluster.start_slurmd`` and are idle before the first submit.

The jobs sleep 5-20 s (``random.Random(1)``); each writes ``start <epoch.ns> <node>`` as its first
action and ``done <epoch.ns>`` as its last. Measured: the time from each ``sbatch`` call to its
job's start line (median, p95), jobs lost (no ``done`` line), makespan (first ``sbatch`` to the
last ``done``) and, elastic only, the live pool workers once the nodes were powered down again
(``nodes_at_end``) and the pool's share of a node's power up: from slurmctld calling the
ResumeProgram (its ``POWER: ... waking nodes`` line, logged once ``scontrol setdebug verbose``
raised its log level; ms precision) to ``Node cloudK now responding`` in its log, apart from
slurmctld's own delays before it (submit to the resume call) and after (registered to job start).

Needs root (network and time namespaces), slurm-wlm and munge (installed when missing). Imports
``bench.common``, ``pool``, ``slurm`` and ``tests.test_slurm``. Everything started is stopped on
the way out, also when a run fails: the harness stops its daemons and namespaces, ``slurm_pool``
the manager thread and the local workers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import median, row, wait_until, write_result
from pool.core.model import NodeRecord, NodeState
from pool.state.redisserver import RedisServer
from pool.state.store import Store
from slurm import daemons
from slurm.hostlist import expand

JOBS, NODES, SEED = 40, 8, 1
MIN_S, MAX_S = 5.0, 20.0
SUSPEND_TIME = 5  # SuspendTime of the elastic cluster: idle seconds before a node is powered down
CAP_S = 600.0  # a configuration gives up this long after its first submit
BACK_TO_ZERO_S = 120.0  # the elastic domain should have no live worker this long after the last job
TARGETS = {"pool_share_s_median": 5.0, "nodes_at_end": 0, "lost": 0}
LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)\] (.*)$")
WAKING = re.compile(r"waking nodes (\S+)")
RESPONDING = re.compile(r"Node (\S+) now responding")


def log(msg: str) -> None:
    print(f"[slurm {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def durations(n: int, seed: int = SEED) -> list[float]:
    """The burst: ``n`` sleeps of MIN_S..MAX_S seconds (0.1 s steps), the same for both configurations."""
    rng = random.Random(seed)
    return [round(rng.uniform(MIN_S, MAX_S), 1) for _ in range(n)]


def p95(xs: list[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(xs)
    return ordered[max(1, -(-len(ordered) * 95 // 100)) - 1]


# ---------------------------------------------------------------------------
# the two clusters
# ---------------------------------------------------------------------------


class StaticCluster(daemons.SlurmCluster):
    """The harness's cluster with ordinary nodes: not CLOUD, power saving off (SuspendTime=-1), no
    PrologSlurmctld; their slurmd are started beforehand (``start_static``)."""

    def __init__(self, *, nodes: int) -> None:
        super().__init__(nodes=nodes, suspend_time=-1, fast_launch=False)

    def conf_text(self) -> str:
        return super().conf_text().replace(" State=CLOUD", " State=UNKNOWN")

    def start_static(self, timeout: float = 120.0) -> None:
        """Every node's slurmd, and wait until sinfo shows them all idle."""
        for name in self.node_names:
            self.start_slurmd(name)

        def idle() -> bool:
            states = self.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.split()
            return len(states) == len(self.node_names) and set(states) == {"idle"}
        wait_until(idle, timeout, f"{len(self.node_names)} static nodes idle", poll=0.2)


@contextlib.contextmanager
def elastic_cluster(nodes: int, suspend_time: int) -> Iterator[tuple[daemons.SlurmCluster, Any, str]]:
    """``slurm_pool`` (tests/test_slurm.py) in a private Redis server and POOL_HOME, removed after."""
    from tests.test_slurm import slurm_pool

    tmp = Path(tempfile.mkdtemp(prefix="ep-bench-slurm-"))
    home = tmp / "home"
    home.mkdir()
    saved = {key: os.environ.get(key) for key in ("POOL_HOME", "REDIS_URL")}
    os.environ["POOL_HOME"] = str(home)
    os.environ.pop("REDIS_URL", None)
    server = RedisServer.start(tmp / "redis")
    try:
        store = Store.from_url(server.url, namespace="bench")
        with slurm_pool(store, server.url, home, nodes=nodes, suspend_time=suspend_time) as running:
            yield running
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------
# jobs
# ---------------------------------------------------------------------------


@dataclass
class Job:
    """One ``sbatch --wrap`` job: its sleep, output file, when sbatch was called, and what it wrote."""

    index: int
    seconds: float
    output: Path
    submitted: float = 0.0
    job_id: str = ""
    start: float | None = None
    node: str = ""
    done: float | None = None

    def command(self) -> str:
        return (f'echo "start $(date +%s.%N) $SLURMD_NODENAME"; sleep {self.seconds:g}; '
                'echo "done $(date +%s.%N)"')

    def poll(self) -> bool:
        """Read the output's start and done lines; whether the job is done."""
        if self.done is None and self.output.is_file():
            for line in self.output.read_text(errors="replace").splitlines():
                words = line.split()
                if len(words) >= 2 and words[0] == "start":
                    self.start, self.node = float(words[1]), words[2] if len(words) > 2 else ""
                elif len(words) == 2 and words[0] == "done":
                    self.done = float(words[1])
        return self.done is not None


def submit_burst(cluster: daemons.SlurmCluster, secs: list[float]) -> list[Job]:
    """One ``sbatch`` per job, back to back; each job's submission time is taken just before its call."""
    jobs = [Job(i, s, cluster.directory / "out" / f"j{i}.out") for i, s in enumerate(secs)]
    for job in jobs:
        job.submitted = time.time()
        out = cluster.run("sbatch", "--parsable", "-N", "1", "-J", f"j{job.index}", "-o", str(job.output),
                          "--wrap", job.command())
        job.job_id = out.stdout.strip().split(";")[0]
    return jobs


def wait_jobs(jobs: list[Job], what: str) -> None:
    """Poll the outputs until every job is done, or CAP_S after the first submission."""
    try:
        wait_until(lambda: all([job.poll() for job in jobs]), CAP_S - (time.time() - jobs[0].submitted),
                   f"{what}: {len(jobs)} jobs done", poll=0.25)
    except TimeoutError:
        log(f"{what}: gave up, {sum(j.done is not None for j in jobs)} of {len(jobs)} jobs done")


def job_summary(jobs: list[Job]) -> dict[str, Any]:
    """Start delays (sbatch to the job's start line), makespan and lost jobs of one burst."""
    delays = [job.start - job.submitted for job in jobs if job.start is not None]
    ends = [job.done for job in jobs if job.done is not None]
    first = jobs[0].submitted
    return {
        "start_s_median": round(median(delays), 3) if delays else None,
        "start_s_p95": round(p95(delays), 3) if delays else None,
        "start_s_min": round(min(delays), 3) if delays else None,
        "start_s_max": round(max(delays), 3) if delays else None,
        "makespan_s": round(max(ends) - first, 2) if ends else None,
        "submit_s": round(jobs[-1].submitted - first, 3),
        "job_seconds": round(sum(job.seconds for job in jobs), 1),
        "jobs": len(jobs), "jobs_done": len(ends), "lost": len(jobs) - len(ends),
        "never_started": sum(1 for job in jobs if job.start is None),
        "nodes_used": len({job.node for job in jobs if job.node}),
    }


# ---------------------------------------------------------------------------
# slurmctld's log: resume calls and registrations
# ---------------------------------------------------------------------------


def ctld_events(path: Path, pattern: re.Pattern[str]) -> list[tuple[float, str]]:
    """(epoch, first group) of each slurmctld log line matching ``pattern`` (local time, ms precision)."""
    out = []
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        stamped = LOG_LINE.match(line)
        found = pattern.search(stamped.group(2)) if stamped else None
        if stamped and found:
            out.append((dt.datetime.fromisoformat(stamped.group(1)).timestamp(), found.group(1)))
    return out


def first_after(events: list[tuple[float, str]], since: float, *, hostlist: bool = False) -> dict[str, float]:
    """Per node, the time of its first event at or after ``since`` (``hostlist``: events name a hostlist)."""
    out: dict[str, float] = {}
    for when, names in sorted(events):
        for name in expand(names) if hostlist else [names]:
            if when >= since:
                out.setdefault(name, when)
    return out


def node_ups(cluster: daemons.SlurmCluster, store: Store, domain: str, jobs: list[Job]) -> list[dict[str, Any]]:
    """Each node's first power up in the burst: resume call, store event, worker launch, registration,
    joined, and the first job it ran (its submission and start); times in epoch seconds."""
    since = jobs[0].submitted - 1.0
    called = first_after(ctld_events(cluster.slurmctld_log, WAKING), since, hostlist=True)
    registered = first_after(ctld_events(cluster.slurmctld_log, RESPONDING), since)
    resumes = [(e["time"], str(e.get("nodes", ""))) for e in store.events(domain, count=500, kind="slurm")
               if e.get("what") == "resume"]
    recorded = first_after(resumes, since, hostlist=True)
    records: dict[str, NodeRecord] = {}
    for record in store.nodes(domain):
        if record.name and record.created >= since:
            records.setdefault(record.name, record)
    ups = []
    for name in sorted(set(called) | set(recorded), key=lambda n: (len(n), n)):
        worker = records.get(name)
        reg = registered.get(name)
        first = min((j for j in jobs if j.node == name and j.start is not None and (reg is None or j.start >= reg)),
                    key=lambda j: j.start or 0.0, default=None)
        ups.append({"node": name, "resume_called": called.get(name), "resume_recorded": recorded.get(name),
                    "launch_requested": worker.created if worker else None,
                    "registered": reg, "joined": worker.entered(NodeState.JOINED) if worker else None,
                    "first_job_submitted": first.submitted if first else None,
                    "first_job_started": first.start if first else None})
    return ups


def span(ups: list[dict[str, Any]], a: str, b: str) -> float | None:
    """The median of ``b - a`` over the nodes that have both times."""
    xs = [u[b] - u[a] for u in ups if u.get(a) is not None and u.get(b) is not None]
    return round(median(xs), 3) if xs else None


def share_summary(ups: list[dict[str, Any]]) -> dict[str, Any]:
    """The pool's share of a power up and slurmctld's own delays around it (medians over the nodes)."""
    start = "resume_called" if any(u["resume_called"] is not None for u in ups) else "resume_recorded"
    return {
        "pool_share_s_median": span(ups, start, "registered"),
        "pool_share_from": f"{start} (slurmctld's log)" if start == "resume_called" else f"{start} (store event)",
        "ctld_submit_to_resume_s_median": span(ups, "first_job_submitted", "resume_called"),
        "resume_program_s_median": span(ups, "resume_called", "resume_recorded"),
        "resume_to_launch_s_median": span(ups, "resume_recorded", "launch_requested"),
        "launch_to_registered_s_median": span(ups, "launch_requested", "registered"),
        "registered_to_joined_s_median": span(ups, "registered", "joined"),
        "ctld_registered_to_start_s_median": span(ups, "registered", "first_job_started"),
        "cold_start_s_median": span(ups, "first_job_submitted", "first_job_started"),
        "nodes_powered_up": len(ups),
        "power_ups": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in u.items()} for u in ups],
    }


# ---------------------------------------------------------------------------
# one configuration each
# ---------------------------------------------------------------------------


def run_static(secs: list[float], nodes: int) -> dict[str, Any]:
    """The burst on ``nodes`` static nodes, all idle before the first submit."""
    cluster = StaticCluster(nodes=nodes)
    with cluster:
        t = time.time()
        cluster.start_static()
        log(f"static: {nodes} nodes idle after {time.time() - t:.1f}s; submitting {len(secs)} jobs")
        jobs = submit_burst(cluster, secs)
        wait_jobs(jobs, "static")
        result = job_summary(jobs)
    log(f"static: makespan {result['makespan_s']}s, start median {result['start_s_median']}s, lost {result['lost']}")
    return result


def run_elastic(secs: list[float], nodes: int) -> dict[str, Any]:
    """The burst on ``nodes`` powered-down CLOUD nodes of a pool domain; then back to 0 workers."""
    with elastic_cluster(nodes, SUSPEND_TIME) as (cluster, rm, domain):
        cluster.run("scontrol", "setdebug", "verbose")  # logs "POWER: power_save: pid N waking nodes HOSTLIST"
        states = cluster.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.split()
        log(f"elastic: node states {sorted(set(states))}, {len(rm.live(domain))} workers; "
            f"submitting {len(secs)} jobs")
        jobs = submit_burst(cluster, secs)
        wait_jobs(jobs, "elastic")
        result = job_summary(jobs)
        end = max((j.done for j in jobs if j.done is not None), default=time.time())
        try:
            wait_until(lambda: not rm.live(domain), BACK_TO_ZERO_S, "the elastic domain back to 0 workers", poll=0.5)
            result["back_to_zero_s"] = round(time.time() - end, 1)
        except TimeoutError:
            result["back_to_zero_s"] = None
        result["nodes_at_end"] = len(rm.live(domain))
        result["node_states_at_end"] = sorted(set(cluster.run("sinfo", "-h", "-N", "-o", "%T",
                                                              check=False).stdout.split()))
        result["workers_launched"] = sum(1 for n in rm.store.nodes(domain) if n.created >= jobs[0].submitted)
        result.update(share_summary(node_ups(cluster, rm.store, domain, jobs)))
    log(f"elastic: makespan {result['makespan_s']}s, start median {result['start_s_median']}s, "
        f"pool share {result['pool_share_s_median']}s, lost {result['lost']}, {result['nodes_at_end']} nodes at end")
    return result


# ---------------------------------------------------------------------------
# side by side
# ---------------------------------------------------------------------------


def headline(static: dict[str, Any], elastic: dict[str, Any]) -> dict[str, Any]:
    """The elastic run's numbers, the makespan ratio, and each target with whether it is met."""
    ratio = (round(elastic["makespan_s"] / static["makespan_s"], 3)
             if elastic["makespan_s"] and static["makespan_s"] else None)
    share = elastic["pool_share_s_median"]
    return {
        "start_s_median": elastic["start_s_median"], "start_s_p95": elastic["start_s_p95"],
        "pool_share_s_median": share, "nodes_at_end": elastic["nodes_at_end"],
        "lost": elastic["lost"] + static["lost"], "makespan_ratio": ratio,
        "targets": {"pool_share_s_median": f"<= {TARGETS['pool_share_s_median']:g}", "nodes_at_end": "0",
                    "lost": "0"},
        "met": {"pool_share_s_median": share is not None and share <= TARGETS["pool_share_s_median"],
                "nodes_at_end": elastic["nodes_at_end"] == TARGETS["nodes_at_end"],
                "lost": elastic["lost"] + static["lost"] == TARGETS["lost"]},
    }


def table(head: dict[str, Any], static: dict[str, Any], elastic: dict[str, Any]) -> list[dict[str, Any]]:
    met, targets = head["met"], head["targets"]
    return [
        row("sbatch to job start, median, s (elastic)", head["start_s_median"], "-", None,
            f"static {static['start_s_median']}s; the job's own first line (date +%s.%N)"),
        row("sbatch to job start, p95, s (elastic)", head["start_s_p95"], "-", None,
            f"static {static['start_s_p95']}s"),
        row("pool's share of a power up, median, s", head["pool_share_s_median"], targets["pool_share_s_median"],
            met["pool_share_s_median"],
            f"ResumeProgram called to 'Node cloudK now responding' (slurmctld log), over "
            f"{elastic['nodes_powered_up']} nodes; slurmctld's own: submit to resume call "
            f"{elastic['ctld_submit_to_resume_s_median']}s, registered to job start "
            f"{elastic['ctld_registered_to_start_s_median']}s"),
        row("live pool workers after SuspendTime (nodes_at_end)", head["nodes_at_end"], targets["nodes_at_end"],
            met["nodes_at_end"], f"back to 0 {elastic['back_to_zero_s']}s after the last job (SuspendTime "
                                 f"{SUSPEND_TIME}s)"),
        row("jobs lost (elastic + static)", head["lost"], targets["lost"], met["lost"],
            f"elastic {elastic['lost']}, static {static['lost']} of {static['jobs']} each"),
        row("makespan, elastic / static", head["makespan_ratio"] or 0.0, "-", None,
            f"{elastic['makespan_s']}s vs {static['makespan_s']}s"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=JOBS)
    parser.add_argument("--nodes", type=int, default=NODES)
    args = parser.parse_args()
    why = daemons.ensure_installed()
    if why:
        sys.exit(f"bench-slurm: {why}")
    secs = durations(args.jobs)
    started = time.time()
    elastic = run_elastic(secs, args.nodes)
    static = run_static(secs, args.nodes)
    head = headline(static, elastic)
    setup = {"jobs": args.jobs, "nodes": args.nodes, "job_seconds": f"{MIN_S:g}-{MAX_S:g}", "seed": SEED,
             "node": "1 CPU, 256 MB; jobs: 1 node, 1 CPU", "suspend_time_s": SUSPEND_TIME,
             "elastic": f"{args.nodes} CLOUD nodes, all powered down at the first submit; pool slurm-node domain "
                        "on the local site, manager interval 0.25 s",
             "static": f"{args.nodes} ordinary nodes (not CLOUD, SuspendTime=-1), slurmd idle before the first submit",
             "submission": "one sbatch per job, back to back", "took_s": round(time.time() - started, 1)}
    path = write_result("slurm", {**head, "static": static, "elastic": elastic, "setup": setup},
                        table(head, static, elastic))
    log(f"start median {head['start_s_median']}s p95 {head['start_s_p95']}s, pool share "
        f"{head['pool_share_s_median']}s (<= 5), nodes at end {head['nodes_at_end']}, lost {head['lost']}, "
        f"makespan ratio {head['makespan_ratio']}; wrote {path}")


if __name__ == "__main__":
    main()
