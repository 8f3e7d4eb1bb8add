"""HTCondor: an elastic condor-startd domain (0..6 startds) vs a static one (6 startds kept), side by side.

The same job list runs on both, one configuration after the other, each in a private Redis, a
fresh POOL_HOME and a manager with the :class:`condor.central.CondorCentralService` on the local
site (as the ``condor_pool`` fixture of tests/test_condor.py does): 200 jobs that sleep 2-20 s
(``random.Random(1)``) and then write ``done <ProcId>``, submitted with the htcondor2 bindings as
the chroot's user in two bursts of 100, 60 s apart. Workers are 1 CPU and 256 MB; jobs request
1 CPU, 64 MB and 1024 KiB of disk.

- static: min 6, max 6, all 6 startds JOINED before the first submit;
- elastic: min 0, max 6, from 0 startds, ``scaling: {stabilization: 2, idle_timeout: 5}``.

Measured for each: makespan (first submit to the last job's output written, by output-file
mtime), slot-seconds (the number of live startds, node records neither TERMINATED nor FAILED,
sampled every 0.5 s and integrated from the first submit to the last job's end), jobs lost
(no ``done`` output), jobs started more than once (``Job executing`` events per job in the user
log) and, per burst, the time from its submission to the first job executing on a startd whose
launch was requested after it (user-log timestamps: whole seconds).

Needs root and the HTCondor chroot (``make condor-root``). Imports ``bench.common``, ``condor``,
``pool`` and htcondor2. Everything started is stopped on the way out, also when a run fails.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import sys
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from bench.common import Bench, node_seconds, row, wait_until, write_result
from condor.central import CondorCentralService, read_central
from condor.cli import client_env
from condor.install import home, require
from pool.control.manager import Manager
from pool.core.model import DomainSpec, NodeRecord, NodeState, parse_domain_spec
from pool.sites.provisioner import Provisioner
from pool.state.store import Store

JOBS, BURSTS, GAP = 200, 2, 60.0
MIN_S, MAX_S, SEED = 2.0, 20.0, 1
WORKERS = 6
SAMPLE = 0.5  # seconds between samples of the live startds
CAP_S = 1200.0  # a configuration gives up this long after its first submit
ELASTIC_SCALING = {"stabilization": 2, "idle_timeout": 5}
TARGETS = {"makespan_ratio": 1.25, "slot_seconds_ratio": 0.6, "lost": 0}
#: a node is a live startd (a machine that exists, as a cloud bills it) in every state but these
GONE = (NodeState.TERMINATED, NodeState.FAILED)
JOB_SCRIPT = '#!/bin/sh\nsleep "$1"\necho "done $2"\n'


def log(msg: str) -> None:
    print(f"[condor {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def durations(n: int, seed: int = SEED) -> list[float]:
    """The job list: ``n`` sleeps of MIN_S..MAX_S seconds (0.1 s steps), the same for both configurations."""
    rng = random.Random(seed)
    return [round(rng.uniform(MIN_S, MAX_S), 1) for _ in range(n)]


def condor_domain(name: str, *, min_size: int, max_size: int, scaling: Mapping[str, float]) -> DomainSpec:
    """A condor-startd domain of 1-CPU, 256 MB workers (tests/test_condor.py's ``condor_spec``)."""
    return parse_domain_spec({
        "name": name, "deployable_type": "condor-startd", "min": min_size, "max": max_size, "scaling": dict(scaling),
        "condor": {"worker_cpus": 1, "worker_memory": 256, "job_lease": 8},
        "timeouts": {"heartbeat_interval": 1, "heartbeat_timeout": 15, "boot": 90, "drain": 120,
                     "terminate_grace": 10},
    })


class CondorBench(Bench):
    """:class:`bench.common.Bench` whose manager starts condor domains' central managers; on close
    also every central manager, the startds' directories in the chroot and the jobs' directory."""

    def __init__(self, *, interval: float = 0.5) -> None:
        self.service = CondorCentralService()
        self.root = require()
        self.jobs = home(self.root) / "jobs" / f"bench-{uuid.uuid4().hex[:8]}"
        super().__init__(interval=interval)
        self.observer = Store.from_url(self.url, namespace="bench")  # the manager thread has self.store

    def start_manager(self, *, wakeups: bool) -> None:
        self.stop_manager()
        self.stop = threading.Event()
        self.manager = Manager(store=self.store, provisioner=Provisioner({"local": self.driver}),
                               redis_url=self.url, wakeups=wakeups, services=[self.service])
        self.thread = threading.Thread(target=self.manager.run, kwargs={"interval": self.interval, "stop": self.stop},
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop_manager()
        for node in self.driver.list_nodes():
            self.driver.ex_preempt(node)
        specs = self.store.domains()
        nodes = [n.node_id for spec in specs for n in self.observer.nodes(spec.name)]
        for spec in specs:
            self.service.stop(spec)
        deadline = time.monotonic() + 15
        while self.driver.list_nodes() and time.monotonic() < deadline:
            time.sleep(0.1)
        for node_id in nodes:
            shutil.rmtree(self.root / "var" / "lib" / "elastic-pool" / "startd" / node_id, ignore_errors=True)
        shutil.rmtree(self.jobs, ignore_errors=True)
        super().close()

    def live(self, domain: str) -> list[NodeRecord]:
        return [n for n in self.observer.nodes(domain) if n.state not in GONE]


# ---------------------------------------------------------------------------
# jobs
# ---------------------------------------------------------------------------


@dataclass
class Run:
    """One configuration's jobs: a directory under the chroot user's home, its clusters and bursts."""

    directory: Path
    bursts: list[tuple[float, int, list[float]]] = field(default_factory=list)  # (submitted, cluster, secs)
    done: dict[tuple[int, int], float] = field(default_factory=dict)  # (cluster, proc) -> output mtime

    @property
    def expected(self) -> int:
        return sum(len(secs) for _, _, secs in self.bursts)

    def output(self, cluster: int, proc: int) -> Path:
        return self.directory / f"out.{cluster}.{proc}"

    def poll(self) -> int:
        """Record the jobs whose output says ``done <ProcId>``; how many have."""
        for _, cluster, secs in self.bursts:
            for proc in range(len(secs)):
                path = self.output(cluster, proc)
                if (cluster, proc) not in self.done and path.is_file() \
                        and path.read_text().strip() == f"done {proc}":
                    self.done[(cluster, proc)] = path.stat().st_mtime
        return len(self.done)


def make_run(jobs: Path, name: str) -> Run:
    directory = jobs / name
    directory.mkdir(parents=True)
    (directory / "job.sh").write_text(JOB_SCRIPT)
    (directory / "job.sh").chmod(0o755)
    for path in (jobs, directory):
        os.chown(path, 2001, 2001)  # condor.install.USER_ID: the schedd writes the outputs there
    return Run(directory)


def schedd(domain: str) -> Any:
    import htcondor2

    central = read_central(domain) or {}
    os.environ.update(client_env(central))
    htcondor2.reload_config()
    coll = htcondor2.Collector(str(central["collector"]))
    return htcondor2.Schedd(coll.locate(htcondor2.DaemonType.Schedd))


def submit(domain: str, run: Run, secs: list[float]) -> None:
    """One cluster of ``len(secs)`` jobs, job ``i`` sleeping ``secs[i]``; recorded in ``run``."""
    import htcondor2

    description = {"executable": str(run.directory / "job.sh"), "arguments": "$(secs) $(ProcId)",
                   "initialdir": str(run.directory), "output": "out.$(ClusterId).$(ProcId)",
                   "error": "err.$(ClusterId).$(ProcId)", "log": "job.log", "request_cpus": "1",
                   "request_memory": "64", "request_disk": "1024", "should_transfer_files": "NO"}
    started = time.time()
    result = schedd(domain).submit(htcondor2.Submit(description), itemdata=iter([{"secs": f"{s:g}"} for s in secs]))
    run.bursts.append((started, result.cluster(), secs))


def user_log(run: Run) -> dict[tuple[int, int], list[tuple[float, str]]]:
    """(time, startd node) of every ``Job executing`` event, by (cluster, proc)."""
    import htcondor2

    executions: dict[tuple[int, int], list[tuple[float, str]]] = defaultdict(list)
    path = run.directory / "job.log"
    if not path.exists():
        return executions
    for event in htcondor2.JobEventLog(str(path)).events(stop_after=0):
        if event.type == htcondor2.JobEventType.EXECUTE:
            executions[(event.cluster, event.proc)].append((float(event.timestamp), startd_of(event)))
    return executions


def startd_of(event: Any) -> str:
    """The pool node whose startd ran an execute event: its scratch directory is under the startd's
    LOCAL_DIR, ``/var/lib/elastic-pool/startd/<node>/execute/`` (the slot name has only the host's name)."""
    props = event.get("ExecuteProps")
    scratch = str(props.get("CondorScratchDir", "")) if props is not None else ""
    found = re.search(r"/startd/([^/]+)/execute/", scratch)
    return found.group(1) if found else ""


# ---------------------------------------------------------------------------
# one configuration
# ---------------------------------------------------------------------------


def drive(bench: CondorBench, domain: str, run: Run, bursts: list[list[float]], gap: float) -> list[tuple[float, int]]:
    """Submit ``bursts`` ``gap`` seconds apart and sample the live startds every SAMPLE seconds until
    every job is done (or CAP_S after the first submit): the samples, (time, live startds)."""
    samples: list[tuple[float, int]] = []
    while True:
        now = time.time()
        samples.append((now, len(bench.live(domain))))
        if len(run.bursts) < len(bursts) and (not run.bursts or now >= run.bursts[0][0] + gap * len(run.bursts)):
            submit(domain, run, bursts[len(run.bursts)])
            log(f"{domain}: burst {len(run.bursts)} submitted (cluster {run.bursts[-1][1]}, "
                f"{len(bursts[len(run.bursts) - 1])} jobs), {samples[-1][1]} startds live")
        elif len(run.bursts) == len(bursts) and run.poll() == run.expected:
            samples.append((time.time(), len(bench.live(domain))))
            return samples
        if time.time() - run.bursts[0][0] > CAP_S:
            log(f"{domain}: gave up {CAP_S:g}s after the first submit, {run.poll()} of {run.expected} jobs done")
            return samples
        time.sleep(SAMPLE)


def integrate(samples: list[tuple[float, int]], start: float, end: float) -> float:
    """The step function of ``samples`` (each value holds until the next sample) integrated over [start, end]."""
    total = 0.0
    for (t, n), (t_next, _) in zip(samples, samples[1:] + [(end, 0)]):
        a, b = max(t, start), min(t_next, end)
        total += n * max(0.0, b - a)
    return total


def bursts_of(run: Run, nodes: list[NodeRecord], executions: dict[tuple[int, int], list[tuple[float, str]]],
              samples: list[tuple[float, int]]) -> list[dict[str, Any]]:
    """Per burst: when its last job ended, and when the first startd launched after it was requested,
    joined and ran its first job (seconds after the burst's submission; None: no startd launched after it)."""
    out = []
    for started, cluster, secs in run.bursts:
        new = {n.node_id: n for n in nodes if n.created >= started}
        claims = [t for runs in executions.values() for t, node in runs if node in new]
        joined = [t for t in (n.entered(NodeState.JOINED) for n in new.values()) if t is not None]
        ends = [run.done[(cluster, p)] for p in range(len(secs)) if (cluster, p) in run.done]
        out.append({
            "cluster": cluster, "jobs": len(secs), "job_seconds": round(sum(secs), 1),
            "submitted_s": round(started - run.bursts[0][0], 2),
            "last_job_end_s": round(max(ends) - started, 1) if ends else None,
            "live_startds_at_submit": next((n for t, n in reversed(samples) if t <= started), 0),
            "startds_launched_after": len(new),
            "first_new_launch_request_s": round(min(n.created for n in new.values()) - started, 2) if new else None,
            "first_new_joined_s": round(min(joined) - started, 2) if joined else None,
            "time_to_first_new_claim_s": round(min(claims) - started, 1) if claims else None,
        })
    return out


def summarize(run: Run, samples: list[tuple[float, int]], nodes: list[NodeRecord]) -> dict[str, Any]:
    """Makespan, slot-seconds, lost and restarted jobs of one configuration's run."""
    executions = user_log(run)
    first = run.bursts[0][0]
    end = max(run.done.values()) if run.done else samples[-1][0]
    starts = [len(executions.get((cluster, p), [])) for _, cluster, secs in run.bursts for p in range(len(secs))]
    unnamed = sum(1 for runs in executions.values() for _, node in runs if node not in {n.node_id for n in nodes})
    return {
        "makespan_s": round(end - first, 1),
        "slot_seconds": round(integrate(samples, first, end), 1),
        "slot_seconds_from_records": round(node_seconds(nodes, first, end), 1),
        "job_seconds": round(sum(sum(secs) for _, _, secs in run.bursts), 1),
        "peak_startds": max(n for _, n in samples),
        "startds_launched": len(nodes),
        "launches_failed": sum(1 for n in nodes if n.entered(NodeState.FAILED) is not None),
        "jobs": run.expected, "jobs_done": len(run.done), "lost": run.expected - len(run.done),
        "started_more_than_once": sum(1 for n in starts if n > 1),
        "never_started": sum(1 for n in starts if n == 0),
        "executions": sum(starts),
        "executions_on_unknown_startds": unnamed,
        "samples": len(samples),
        "bursts": bursts_of(run, nodes, executions, samples),
    }


def measure(bench: CondorBench, spec: DomainSpec, secs: list[float], *, per_burst: int, gap: float) -> dict[str, Any]:
    """Bring ``spec`` up (its central manager; its ``min`` startds JOINED), run the job list on it."""
    t = time.time()
    bench.store.put_domain(spec)
    wait_until(lambda: (read_central(spec.name) or {}).get("state") == "up", 120, f"{spec.name}'s central manager",
               poll=0.2)
    wait_until(lambda: sum(1 for n in bench.live(spec.name) if n.state == NodeState.JOINED) >= spec.min, 240,
               f"{spec.min} JOINED startds of {spec.name}", poll=0.2)
    log(f"{spec.name}: central manager up, {len(bench.live(spec.name))} startds live after {time.time() - t:.1f}s")
    run = make_run(bench.jobs, spec.name)
    samples = drive(bench, spec.name, run, [secs[i:i + per_burst] for i in range(0, len(secs), per_burst)], gap)
    result = summarize(run, samples, bench.observer.nodes(spec.name))
    log(f"{spec.name}: makespan {result['makespan_s']}s, {result['slot_seconds']} slot-s, lost {result['lost']}")
    if spec.min == 0:
        done = time.time()
        try:
            wait_until(lambda: not bench.live(spec.name), 180, f"{spec.name} back to 0 startds", poll=0.5)
            result["back_to_zero_s"] = round(time.time() - (run.bursts[0][0] + result["makespan_s"]), 1)
        except TimeoutError:
            result["back_to_zero_s"] = None
            log(f"{spec.name}: still {len(bench.live(spec.name))} startds {time.time() - done:.0f}s after the last job")
    return result


# ---------------------------------------------------------------------------
# both, side by side
# ---------------------------------------------------------------------------


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def headline(static: dict[str, Any], elastic: dict[str, Any]) -> dict[str, Any]:
    """The ratios, lost jobs and claim times with their targets and whether each is met."""
    makespan = ratio(elastic["makespan_s"], static["makespan_s"])
    slots = ratio(elastic["slot_seconds"], static["slot_seconds"])
    lost = elastic["lost"] + static["lost"]
    return {
        "makespan_ratio": makespan, "slot_seconds_ratio": slots, "lost": lost,
        "time_to_first_new_claim_s": [b["time_to_first_new_claim_s"] for b in elastic["bursts"]],
        "targets": {"makespan_ratio": f"<= {TARGETS['makespan_ratio']}",
                    "slot_seconds_ratio": f"<= {TARGETS['slot_seconds_ratio']}", "lost": "0"},
        "met": {"makespan_ratio": makespan is not None and makespan <= TARGETS["makespan_ratio"],
                "slot_seconds_ratio": slots is not None and slots <= TARGETS["slot_seconds_ratio"],
                "lost": lost == TARGETS["lost"]},
    }


def table(head: dict[str, Any], static: dict[str, Any], elastic: dict[str, Any]) -> list[dict[str, Any]]:
    met, targets = head["met"], head["targets"]
    floor = static["job_seconds"] / static["slot_seconds"] if static["slot_seconds"] else 0.0
    rows = [
        row("makespan, elastic / static", head["makespan_ratio"], targets["makespan_ratio"], met["makespan_ratio"],
            f"{elastic['makespan_s']:.0f}s vs {static['makespan_s']:.0f}s"),
        row("slot-seconds (first submit to last job's end), elastic / static", head["slot_seconds_ratio"],
            targets["slot_seconds_ratio"], met["slot_seconds_ratio"],
            f"{elastic['slot_seconds']:.0f} vs {static['slot_seconds']:.0f} slot-s; the jobs alone occupy "
            f"{static['job_seconds']:.0f} slot-s ({floor:.2f} of static's)"),
        row("jobs lost (elastic + static)", head["lost"], targets["lost"], met["lost"],
            f"elastic {elastic['lost']}, static {static['lost']} of {static['jobs']} each"),
        row("jobs started more than once (elastic + static)",
            elastic["started_more_than_once"] + static["started_more_than_once"], "-", None,
            f"elastic {elastic['started_more_than_once']}, static {static['started_more_than_once']} "
            "(user log 'Job executing' events)"),
    ]
    for i, burst in enumerate(elastic["bursts"], 1):
        value = burst["time_to_first_new_claim_s"]
        note = (f"launch requested +{burst['first_new_launch_request_s']}s, joined +{burst['first_new_joined_s']}s "
                "(user-log times: whole seconds)" if value is not None else
                f"no startd launched after burst {i}: {burst['live_startds_at_submit']} of max {WORKERS} were live "
                "at its submission")
        line = row(f"burst {i} -> first job on a startd launched after it, s (elastic)", value or 0.0, "-", None, note)
        rows.append(line if value is not None else {**line, "value": "none"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=JOBS, help="jobs in all, split into equal bursts")
    parser.add_argument("--bursts", type=int, default=BURSTS)
    parser.add_argument("--gap", type=float, default=GAP, help="seconds between bursts' submissions")
    args = parser.parse_args()
    secs = durations(args.jobs)
    per_burst = -(-args.jobs // args.bursts)
    specs = {"static": condor_domain("condor-static", min_size=WORKERS, max_size=WORKERS, scaling=ELASTIC_SCALING),
             "elastic": condor_domain("condor-elastic", min_size=0, max_size=WORKERS, scaling=ELASTIC_SCALING)}
    results: dict[str, dict[str, Any]] = {}
    started = time.time()
    for name, spec in specs.items():
        bench = CondorBench()
        try:
            results[name] = measure(bench, spec, secs, per_burst=per_burst, gap=args.gap)
        finally:
            bench.close()
    static, elastic = results["static"], results["elastic"]
    head = headline(static, elastic)
    setup = {"jobs": args.jobs, "bursts": args.bursts, "gap_s": args.gap, "job_seconds": f"{MIN_S:g}-{MAX_S:g}",
             "seed": SEED, "worker": "1 CPU, 256 MB", "job_request": "1 CPU, 64 MB, 1024 KiB disk",
             "static": f"min {WORKERS}, max {WORKERS}, all JOINED before the first submit",
             "elastic": f"min 0, max {WORKERS}, from 0", "scaling": ELASTIC_SCALING,
             "policy": "queue_depth, 1 job per worker (the condor-startd default)", "manager_interval_s": 0.5,
             "sample_interval_s": SAMPLE, "live_startd": "node record not TERMINATED or FAILED",
             "took_s": round(time.time() - started, 1)}
    path = write_result("condor", {**head, "static": static, "elastic": elastic, "setup": setup},
                        table(head, static, elastic))
    log(f"makespan ratio {head['makespan_ratio']} (<= 1.25), slot-seconds ratio {head['slot_seconds_ratio']} "
        f"(<= 0.6), lost {head['lost']}, first new claim {head['time_to_first_new_claim_s']}; wrote {path}")


if __name__ == "__main__":
    main()
