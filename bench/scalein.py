"""Scale-in while work is held: tasks restarted, busy workers killed and worker-seconds, side by side.

A workload that ends with long tasks while the policy scales in, on a baseline revision
(``--base REV``, default :data:`BASE_REV`: scale-in SIGTERMs an idle-looking worker and SIGKILLs
it after ``terminate_grace``) and on the current code (``--head REV``, default ".": this working
tree as it is; scale-in by the drain handshake), each in its own process: the baseline in a
temporary detached git worktree with this harness copied into it (``bench/scalein_side.py``), the
way ``bench/tick.py`` does. Per broker, in rounds, the two sides alternating:

- ``redis`` and ``rabbitmq``: a Celery domain (an app this harness writes: every run of a task
  is logged with its node), the recommended ``lookahead`` policy with ``scaling: {stabilization:
  0}``, max 4, default timeouts; on RabbitMQ a private node (tests/rabbitmq.py) and no
  management URL, so in-flight tasks count only while others wait. LONG tasks of LONG_S seconds
  (after SHORT short ones, if any) submitted at once; measured until every task has completed and
  the domain is back to 0 workers. Each round gives the app another boot delay (BOOT_DELAYS), which
  moves the moment a new worker takes its first task across the manager's tick.
- ``spark``: a spark-worker domain (``spark_tasks`` policy, max 4) and one application: 8 map
  tasks, then a last stage of 2 tasks of SPARK_LONG_S seconds during which the policy scales in
  to 2. Counted from the driver's own REST API: task attempts beyond the 10 the application needs,
  failed task attempts, executors removed and why; ``Lost executor`` lines in the driver's log.

Every server and process started binds 127.0.0.1 on ports of its own and is stopped by its
process id, also when a run fails half-way (each side's machines, Redis, Spark master and driver
are reaped from their state and pid files by the parent).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: the revision before the drain handshake: scale-in SIGTERMs an idle-looking worker and SIGKILLs it
#: after ``terminate_grace`` (``--base REV`` overrides it)
BASE_REV = "8bd01ab"
#: what is measured against it: "." is this working tree as it is (uncommitted changes included)
HEAD_REV = "."
HARNESS = "scalein_side"  # this file's name in the baseline's worktree: bench/scalein_side.py
BROKERS = ("redis", "rabbitmq", "spark")
PACKAGES = ("pool", "sensors", "policies", "spark")  # the project's top-level packages

DOMAIN = "scalein"
MAX = 4
SHORT, SHORT_S = 0, 2.0  # short tasks first
LONG, LONG_S = 4, 30.0  # then the long ones the scale-in meets
#: the lookahead policy as recommended (docs/policies.md), boot_time set to the local site's boot
POLICY = {"name": "lookahead", "boot_time": 5, "service_time": 30, "patience": 3}
#: seconds from the submit until a Celery run gives up (every task done and 0 workers expected well before)
CAP_S = 240.0
SPARK_LONG_S = 30.0
SPARK_CAP_S = 420.0
POLL = 0.25
#: per round, how long the app sleeps at import (a real app's imports and connections): it moves the moment a
#: new worker takes its first task across the manager's tick, where the baseline's race lives (see markdown())
BOOT_DELAYS: dict[str, tuple[float, ...]] = {"redis": (0.0, 0.5), "rabbitmq": (0.0, 0.25, 0.5, 0.75)}

APP = '''"""Written by bench/scalein.py: a Celery app that logs every run of a task with its node."""

import json
import os
import sys
import time
import uuid

import redis
from celery import Celery

app = Celery("scalein")
_clients = {}
# the boot of a real app (imports, connections): shifts when the worker takes its first task
time.sleep(float(os.environ.get("SCALEIN_BOOT_DELAY") or 0))


def _results():
    pid = os.getpid()
    if pid not in _clients:
        _clients.clear()
        _clients[pid] = redis.Redis.from_url(os.environ["SCALEIN_RESULTS"])
    return _clients[pid]


def _tree():
    path = getattr(sys.modules.get("pool"), "__file__", None) or ""
    return os.path.dirname(os.path.dirname(os.path.abspath(path))) if path else ""


@app.task(name="scalein.work", bind=True)
def work(self, i, seconds):
    r = _results()
    run = uuid.uuid4().hex
    node = (self.request.hostname or "").split("@")[0]
    info = self.request.delivery_info or {}
    r.rpush("scalein:log", json.dumps({"ev": "start", "task": i, "run": run, "node": node, "t": time.time(),
                                       "tree": _tree(), "redelivered": bool(info.get("redelivered"))}))
    r.hincrby("scalein:starts", i, 1)
    time.sleep(seconds)
    r.hincrby("scalein:done", i, 1)
    r.rpush("scalein:log", json.dumps({"ev": "finish", "task": i, "run": run, "node": node, "t": time.time()}))
    return i
'''


def log(msg: str) -> None:
    print(f"[scalein {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# one side, one broker: runs in its own process, in the tree it measures
# ---------------------------------------------------------------------------------------------


def foreign_modules() -> list[str]:
    """The project's modules this process loaded from outside ROOT (there must be none)."""
    out = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name.split(".")[0] in PACKAGES and path and not Path(path).resolve().is_relative_to(ROOT):
            out.append(f"{name} ({path})")
    return sorted(out)


class Side:
    """A private Redis (control plane, Celery broker on database 1, the app's log on database 2), a
    manager ticking every second in a thread, the local site; torn down by :meth:`close`."""

    def __init__(self, run_dir: Path, *, worker_env: tuple[str, ...] = (), services: list[Any] | None = None) -> None:
        from pool.control.manager import Manager
        from pool.sites.local import LocalNodeDriver
        from pool.sites.provisioner import Provisioner
        from pool.state.redisserver import RedisServer
        from pool.state.store import Store

        self.run_dir = run_dir
        os.environ["POOL_HOME"] = str(run_dir / "home")
        self.server = RedisServer.start(run_dir / "redis", appendonly=False)
        self.url = self.server.url
        self.store = Store.from_url(self.url, namespace="scalein")
        self.driver = LocalNodeDriver(ex_state_dir=str(run_dir / "sites" / "local"),
                                      ex_worker_env=("PYTHONPATH", *worker_env))
        self.manager = Manager(store=self.store, provisioner=Provisioner({"local": self.driver}),
                               redis_url=self.url, services=services or [])
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.manager.run, kwargs={"interval": 1.0, "stop": self.stop},
                                       daemon=True)
        self.thread.start()

    def db(self, n: int) -> str:
        from pool.state.redisserver import broker_url_for

        return broker_url_for(self.url, n)

    def back_to_zero(self) -> bool:
        """No record outside TERMINATED/FAILED and no machine of the site running."""
        from pool.core.model import NodeState

        ended = (NodeState.TERMINATED, NodeState.FAILED)
        return all(n.state in ended for n in self.store.nodes(DOMAIN)) and not self.driver.list_nodes()

    def census(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.store.nodes(DOMAIN):
            counts[n.state.value] = counts.get(n.state.value, 0) + 1
        return counts

    def close(self) -> None:
        self.stop.set()
        self.manager.wake.set()
        self.thread.join(15)
        with contextlib.suppress(Exception):
            self.manager.close()
        with contextlib.suppress(Exception):
            for node in self.driver.list_nodes():
                self.driver.ex_preempt(node)
        self.server.stop()


def node_report(nodes: list[Any], t0: float, end: float) -> dict[str, Any]:
    """Launches, worker-seconds (launch request to TERMINATED, clipped to [t0, end]) and each node's history."""
    from pool.core.model import NodeState

    total = 0.0
    history = {}
    for n in nodes:
        stop = n.entered(NodeState.TERMINATED) or end
        total += max(0.0, min(stop, end) - max(n.created, t0))
        history[n.node_id] = [(state, round(when - t0, 2), detail) for state, when, detail in n.history]
    return {"launches": len(nodes), "worker_seconds": round(total, 1), "history": history}


def scalein_events(store: Any, t0: float) -> dict[str, Any]:
    """The domain's drain_deadline events (a worker killed at its drain deadline) and its scale-in moves."""
    events = store.events(DOMAIN, 2000)
    deadline = [e for e in events if e.get("kind") == "drain_deadline"]
    moves = []
    for e in events:
        data = e.get("data") if isinstance(e.get("data"), dict) else e
        detail = str(data.get("detail") or data.get("why") or "")
        if e.get("kind") in ("node", "drain") and ("scale-in" in detail or "drain" in detail):
            moves.append({"t": round(float(e.get("time", t0)) - t0, 2), "kind": e.get("kind"),
                          "node": data.get("node"), "to": data.get("to"), "detail": detail})
    return {"drain_deadline_events": len(deadline), "drain_deadline": deadline,
            "scalein_moves": sorted(moves, key=lambda m: m["t"])}


def workload() -> dict[str, Any]:
    """The Celery workload and policy (``--workload JSON`` overrides any of its keys)."""
    return {"short": [SHORT, SHORT_S], "long": [LONG, LONG_S], "policy": dict(POLICY)}


def run_celery(broker_kind: str, amqp_url: str, run_dir: Path, side_name: str, work: dict[str, Any]) -> dict[str, Any]:
    """One Celery run: the workload, until every task is done and the domain is back to 0 (or CAP_S)."""
    import redis
    from celery import Celery

    from pool.core.model import NodeState, parse_domain_spec

    app_dir = run_dir / "app"
    app_dir.mkdir(parents=True, exist_ok=True)
    (app_dir / "scalein_app.py").write_text(APP)
    side = Side(run_dir, worker_env=("SCALEIN_*",))
    try:
        results_url = side.db(2)
        os.environ["SCALEIN_RESULTS"] = results_url
        os.environ["SCALEIN_BOOT_DELAY"] = f"{float(work.get('boot_delay', 0.0)):g}"
        results = redis.Redis.from_url(results_url, decode_responses=True)
        broker = side.db(1) if broker_kind == "redis" else amqp_url
        queue = f"scalein-{side_name}-{os.getpid()}"
        raw: dict[str, Any] = {
            "name": DOMAIN, "site": "local", "deployable_type": "celery-worker", "min": 0, "max": MAX,
            "broker": broker, "policy": dict(work["policy"]), "scaling": {"stabilization": 0},
            "celery": {"app": "scalein_app", "path": str(app_dir), "queue": queue, "visibility_timeout": 300},
        }
        spec = parse_domain_spec(raw)
        side.store.put_domain(spec)
        time.sleep(2.0)  # the manager has read the domain (at 0 workers)
        (short, short_s), (long, long_s) = work["short"], work["long"]
        items = [(i, float(short_s)) for i in range(short)] + [(short + i, float(long_s)) for i in range(long)]
        producer = Celery("scalein-producer", broker=broker)
        t0 = time.time()
        with producer.connection_for_write() as conn:
            pub = conn.Producer()
            for i, seconds in items:
                producer.send_task("scalein.work", (i, seconds), queue=queue, producer=pub)
        log(f"{side_name} {broker_kind}: submitted {len(items)} tasks ({short} x {short_s:g}s, {long} x {long_s:g}s)")
        t_done: float | None = None
        end = t0
        capped = False
        while True:
            now = time.time()
            done = results.hlen("scalein:done")
            if t_done is None and done >= len(items):
                t_done = now
                log(f"{side_name} {broker_kind}: every task done after {now - t0:.1f}s; {side.census()}")
            if t_done is not None and side.back_to_zero():
                end = now
                break
            if now - t0 > CAP_S:
                end, capped = now, True
                log(f"{side_name} {broker_kind}: gave up after {CAP_S:g}s ({done}/{len(items)} done; {side.census()})")
                break
            time.sleep(POLL)
        nodes = side.store.nodes(DOMAIN)
        runs = [json.loads(x) for x in results.lrange("scalein:log", 0, -1)]
        out: dict[str, Any] = {
            "broker": broker_kind, "tasks": len(items), "capped": capped,
            "completed": results.hlen("scalein:done"),
            "wall_s": round(max((r["t"] for r in runs if r["ev"] == "finish"), default=end) - t0, 1),
            "back_to_zero_s": round(end - t0, 1),
        }
        out.update(task_runs(runs, nodes, items, t0, end))
        out.update(node_report(nodes, t0, end))
        out.update(scalein_events(side.store, t0))
        out["killed_busy"] = len(out["interrupted"])
        out["nodes_left"] = sum(1 for n in nodes if n.state not in (NodeState.TERMINATED, NodeState.FAILED))
        return out
    finally:
        side.close()


def task_runs(runs: list[dict[str, Any]], nodes: list[Any], items: list[tuple[int, float]], t0: float,
              end: float) -> dict[str, Any]:
    """Starts per task, runs cut short (started, never finished, on a node that ended before the
    end of the observation: a worker killed while it held the task), and the trees the workers ran."""
    from pool.core.model import NodeState

    starts: dict[int, int] = {}
    finished = {r["run"] for r in runs if r["ev"] == "finish"}
    by_node = {n.node_id: n for n in nodes}
    interrupted: list[dict[str, Any]] = []
    running: list[dict[str, Any]] = []
    for r in runs:
        if r["ev"] != "start":
            continue
        starts[r["task"]] = starts.get(r["task"], 0) + 1
        if r["run"] in finished:
            continue
        rec = by_node.get(r["node"])
        ended = None
        if rec is not None:
            ended = min((w for s, w, _ in rec.history if s in (NodeState.TERMINATING.value,
                                                               NodeState.TERMINATED.value,
                                                               NodeState.UNHEALTHY.value)), default=None)
        entry = {"task": r["task"], "node": r["node"], "started": round(r["t"] - t0, 2),
                 "node_last_state": rec.state.value if rec is not None else None,
                 "node_history": [[s, round(w - t0, 2), d] for s, w, d in rec.history] if rec is not None else []}
        (interrupted if ended is not None and ended <= end else running).append(entry)
    return {
        "starts": {str(k): v for k, v in sorted(starts.items())},
        "restarted_by_scalein": sum(max(0, v - 1) for v in starts.values()),
        "never_started": sum(1 for i, _ in items if i not in starts),
        "interrupted": interrupted,
        "running_at_end": running,
        "trees": sorted({r.get("tree", "") for r in runs if r["ev"] == "start"}),
        "runs": [[r["task"], r["node"], r["ev"], round(r["t"] - t0, 2)] for r in runs],
    }


def one(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--one`` entry: one broker on this tree; returns the measurement."""
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if args.broker == "spark":
        out = run_spark(run_dir, args.side)
    else:
        out = run_celery(args.broker, args.amqp, run_dir, args.side, {**workload(), **json.loads(args.workload)})
    out["root"] = str(ROOT)
    out["foreign_modules"] = foreign_modules()
    trees = [t for t in out.get("trees", []) if t]
    if any(Path(t).resolve() != ROOT for t in trees):
        out["foreign_workers"] = trees
    return out


# ---------------------------------------------------------------------------------------------
# spark
# ---------------------------------------------------------------------------------------------


SPARK_JOB = '''"""Written by bench/scalein.py: a shuffle whose last stage has long tasks, while the pool scales in."""

import json
import sys
import time
import urllib.request

from pyspark.sql import SparkSession

long_s = float(sys.argv[1])
spark = SparkSession.builder.appName("scalein").getOrCreate()
sc = spark.sparkContext


def short(part):
    time.sleep(4)
    return [(x % 40, x) for x in part]


def long(part):
    rows = list(part)
    time.sleep(long_s)
    return rows


t0 = time.time()
# 8 map tasks of 4 s spread over the workers, then the last stage: 2 reduce tasks of long_s each,
# while the other workers are idle and the policy scales in to 2
sums = sc.parallelize(range(8000), 8).mapPartitions(short).reduceByKey(lambda a, b: a + b, 2).mapPartitions(long)
total = sum(v for _, v in sums.collect())
t1 = time.time()


def get(path):
    with urllib.request.urlopen(f"{sc.uiWebUrl}/api/v1/applications/{sc.applicationId}/{path}", timeout=10) as r:
        return json.load(r)


stages = get("stages")
executors = get("allexecutors")
out = {
    "ok": total == sum(range(8000)),
    "job_s": round(t1 - t0, 1),
    "stages": [{k: st.get(k) for k in ("stageId", "attemptId", "status", "numTasks", "numCompleteTasks",
                                       "numFailedTasks", "numKilledTasks")} for st in stages],
    "executors": [{"id": e.get("id"), "active": e.get("isActive"), "reason": e.get("removeReason"),
                   "tasks": e.get("totalTasks"), "failed": e.get("failedTasks")}
                  for e in executors if e.get("id") != "driver"],
}
print("RESULT " + json.dumps(out), flush=True)
spark.stop()
'''
#: task attempts the application needs when nothing is lost: 8 map tasks, 2 long reduce tasks
SPARK_TASKS = 10


def run_spark(run_dir: Path, side_name: str) -> dict[str, Any]:
    """One application on a spark-worker domain (0..MAX workers): the job above, until it ended and the
    domain is back to 0 workers (or SPARK_CAP_S)."""
    from pool.core.model import NodeState, parse_domain_spec
    from spark.master import SparkMasterService, read_master

    job = run_dir / "job.py"
    run_dir.mkdir(parents=True, exist_ok=True)
    job.write_text(SPARK_JOB)
    service = SparkMasterService()
    side = Side(run_dir, services=[service])
    spec = parse_domain_spec({
        "name": DOMAIN, "site": "local", "deployable_type": "spark-worker", "min": 0, "max": MAX,
        "policy": {"name": "spark_tasks"}, "sensor": {"name": "spark"},
        "scaling": {"stabilization": 0, "idle_timeout": 5},
        "spark": {"worker_cores": 1, "worker_memory": "512m", "daemon_memory": "192m",
                  "decommission": {"migration_interval": 1}},
        "timeouts": {"heartbeat_interval": 1, "heartbeat_timeout": 10, "boot": 180},
    })
    driver: subprocess.Popen[str] | None = None
    try:
        side.store.put_domain(spec)
        deadline = time.time() + 120
        while (read_master(DOMAIN) or {}).get("state") != "up":
            if time.time() > deadline:
                raise RuntimeError("the domain's Spark master did not come up within 120 s")
            time.sleep(0.5)
        jvm = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
        cmd = [sys.executable, "-m", "pool.cli", "spark", "submit", "-d", DOMAIN, "--no-progress", "--log-level", "INFO",
               "--conf", f"spark.driver.extraJavaOptions={jvm}", "--conf", f"spark.executor.extraJavaOptions={jvm}",
               str(job), f"{SPARK_LONG_S:g}"]
        t0 = time.time()
        with open(run_dir / "driver.log", "w") as err:
            driver = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True,
                                      start_new_session=True)
            (run_dir / "driver.pid").write_text(json.dumps({"pid": driver.pid, "start_ticks": start_ticks(driver.pid)}))
            log(f"{side_name} spark: submitted (2 x {SPARK_LONG_S:g}s tasks in the middle job)")
            try:
                stdout, _ = driver.communicate(timeout=SPARK_CAP_S)
            except subprocess.TimeoutExpired:
                stdout = ""
        t_done = time.time()
        line = next((ln for ln in stdout.splitlines() if ln.startswith("RESULT ")), "")
        app: dict[str, Any] = json.loads(line[7:]) if line else {}
        if not app:
            tail = (run_dir / "driver.log").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"the application gave no result (exit {driver.returncode}): {tail}")
        log(f"{side_name} spark: application ended after {t_done - t0:.1f}s; {side.census()}")
        capped = False
        end = time.time()
        while not side.back_to_zero():
            end = time.time()
            if end - t0 > SPARK_CAP_S:
                capped = True
                break
            time.sleep(POLL)
        nodes = side.store.nodes(DOMAIN)
        attempts = sum(int(st.get("numCompleteTasks") or 0) + int(st.get("numFailedTasks") or 0)
                       + int(st.get("numKilledTasks") or 0) for st in app["stages"])
        failed = sum(int(st.get("numFailedTasks") or 0) for st in app["stages"])
        removed = [e for e in app["executors"] if not e.get("active")]
        lost = [e for e in removed if "decommission" not in str(e.get("reason") or "").lower()]
        text = (run_dir / "driver.log").read_text(errors="replace")
        out: dict[str, Any] = {
            "broker": "spark", "capped": capped, "result_ok": app["ok"], "job_s": app["job_s"],
            "wall_s": round(t_done - t0, 1), "back_to_zero_s": round(end - t0, 1),
            "task_attempts": attempts, "task_attempts_needed": SPARK_TASKS,
            "restarted_by_scalein": max(0, attempts - SPARK_TASKS), "failed_tasks": failed,
            "stage_retries": sum(1 for st in app["stages"] if int(st.get("attemptId") or 0) > 0),
            "executors_removed": len(removed), "executors_lost": len(lost),
            "executor_removals": [e.get("reason") for e in removed],
            "lost_executor_log_lines": sum(1 for ln in text.splitlines() if "Lost executor" in ln),
            "shuffle_lost_log_lines": sum(1 for ln in text.splitlines() if "Shuffle files lost" in ln),
            "stages": app["stages"],
        }
        out.update(node_report(nodes, t0, end))
        out.update(scalein_events(side.store, t0))
        out["killed_busy"] = failed  # a task attempt that failed: it ran on an executor that went away
        out["nodes_left"] = sum(1 for n in nodes if n.state not in (NodeState.TERMINATED, NodeState.FAILED))
        return out
    finally:
        if driver is not None and driver.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(10)
        side.close()
        with contextlib.suppress(Exception):
            service.stop(spec)


# ---------------------------------------------------------------------------------------------
# the parent: both sides, every broker, the result file
# ---------------------------------------------------------------------------------------------


def git(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def checkout(rev: str, path: Path) -> tuple[Path, str] | str:
    """A detached worktree of ``rev`` at ``path`` with this harness in it: (path, harness module), or
    why not. ``rev`` "." is this working tree itself, as it is."""
    if rev == ".":
        return ROOT, "bench.scalein"
    from bench.common import harness_worktree  # here only: the harness itself runs on older trees too

    made = harness_worktree(rev, path, harness=Path(__file__).resolve(), name=HARNESS)
    return made if isinstance(made, str) else (made, f"bench.{HARNESS}")


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (tells it from a reused pid): the pool's own reading, imported here because
    each side imports the pool from its own tree."""
    from spark.master import start_ticks as read

    return read(pid)


def reap(run_dir: Path) -> list[str]:
    """Stop by process id whatever a side left running: its machines (the local site's records), its
    redis-server and Spark master (their pid files). What was stopped."""
    stopped = []
    for node_json in run_dir.glob("sites/local/*/node.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            rec = json.loads(node_json.read_text())
            pid = int(rec["pid"])
            if rec.get("start_ticks") is not None and start_ticks(pid) == rec["start_ticks"]:
                os.killpg(pid, signal.SIGKILL)
                stopped.append(f"machine {rec['id']} (pid {pid})")
    for master_json in run_dir.glob("home/**/master.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            rec = json.loads(master_json.read_text())
            pid = int(rec["pid"])
            if rec.get("start_ticks") is not None and start_ticks(pid) == rec["start_ticks"]:
                os.killpg(pid, signal.SIGKILL)
                stopped.append(f"spark master (pid {pid})")
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        rec = json.loads((run_dir / "driver.pid").read_text())
        if rec["start_ticks"] is not None and start_ticks(int(rec["pid"])) == rec["start_ticks"]:
            os.killpg(int(rec["pid"]), signal.SIGKILL)
            stopped.append(f"spark driver (pid {rec['pid']})")
    pidfile = run_dir / "redis" / "redis.pid"
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"redis-server" in cmdline:
            os.kill(pid, signal.SIGKILL)
            stopped.append(f"redis-server (pid {pid})")
    return stopped


def run_side(root: Path, module: str, broker: str, side: str, run_dir: Path, amqp: str, work: dict[str, Any],
             timeout: float) -> dict[str, Any]:
    """One side and broker in a fresh process of that tree; its JSON, or an error."""
    cmd = [sys.executable, "-m", module, "--one", "--broker", broker, "--side", side, "--run-dir", str(run_dir),
           "--amqp", amqp, "--workload", json.dumps(work)]
    env = dict(os.environ, PYTHONPATH=str(root), C_FORCE_ROOT="1")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, text=True)
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the side tears down in its finally
        try:
            stdout, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, _ = proc.communicate()
        return {"error": f"no answer within {timeout:g}s"}
    finally:
        left = reap(run_dir)
        if left:
            log(f"{side} {broker}: stopped what the run left: {', '.join(left)}")
    lines = stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}: {stdout[-500:]}"}
    out = dict(json.loads(lines[-1]))
    if out.get("root") != str(root):
        out["error"] = f"measured the tree at {out.get('root')}, not {root}"
    elif out.get("foreign_modules") or out.get("foreign_workers"):
        out["error"] = (f"code from outside {root}: {out.get('foreign_modules') or ''} "
                        f"{out.get('foreign_workers') or ''}")
    return out


def uncommitted() -> list[str]:
    return [line[3:] for line in git("status", "--porcelain", "--", *PACKAGES).stdout.splitlines()]


#: summed over a broker's rounds; the times are averaged
SUMMED = ("restarted_by_scalein", "killed_busy", "worker_seconds", "launches", "drain_deadline_events")
AVERAGED = ("wall_s", "back_to_zero_s")


def combine(broker: str, side: str, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One result per broker and side: the rounds' counts and worker-seconds summed, times averaged."""
    for r in rounds:  # the nodes' histories are kept where something went wrong: the evidence
        if not (r.get("restarted_by_scalein") or r.get("killed_busy") or r.get("drain_deadline_events")
                or r.get("error") or r.get("capped") or r.get("nodes_left")):
            r.pop("history", None)
            r.pop("scalein_moves", None)
    out: dict[str, Any] = {"broker": broker, "side": side, "rounds": rounds}
    errors = [f"round {i + 1}: {r['error']}" for i, r in enumerate(rounds) if "error" in r]
    good = [r for r in rounds if "error" not in r]
    if errors:
        out["error"] = "; ".join(errors)
    if not good:
        return out
    for key in SUMMED:
        out[key] = round(sum(r.get(key, 0) for r in good), 1)
    for key in AVERAGED:
        out[key] = round(sum(r[key] for r in good) / len(good), 1)
    out["launches"] = int(out["launches"])
    out["killed_busy"] = int(out["killed_busy"])
    out["restarted_by_scalein"] = int(out["restarted_by_scalein"])
    out["capped"] = any(r.get("capped") for r in good)
    out["nodes_left"] = sum(r.get("nodes_left", 0) for r in good)
    return out


def summary(r: dict[str, Any]) -> str:
    if "error" in r and "worker_seconds" not in r:
        return f"ERROR {r['error']}"
    text = (f"restarted {r.get('restarted_by_scalein')}, killed busy {r.get('killed_busy')}, worker-seconds "
            f"{r.get('worker_seconds')}, launches {r.get('launches')}, every task done after {r.get('wall_s')}s, "
            f"0 workers after {r.get('back_to_zero_s')}s")
    return text + (f" (ERROR {r['error']})" if "error" in r else "")


def measure(base_rev: str, head_rev: str, brokers: list[str], rounds: int, keep: bool) -> dict[str, Any]:
    """Every broker's rounds, base and current alternating (which goes first alternates too)."""
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="ep-scalein-"))
    sides: dict[str, tuple[Path, str]] = {}
    out: dict[str, Any] = {"base_rev": base_rev, "head_rev": head_rev, "working_tree_uncommitted": uncommitted(),
                           "results": []}
    rabbit: Any = None
    try:
        for side, rev in (("base", base_rev), ("head", head_rev)):
            got = checkout(rev, tmp / side)
            if isinstance(got, str):
                raise RuntimeError(f"revision {rev} cannot be checked out: {got}")
            sides[side] = got
            out[f"{side}_commit"] = git("rev-parse", "--short", "HEAD", cwd=got[0]).stdout.strip()
        amqp = ""
        if "rabbitmq" in brokers:
            from tests.rabbitmq import RabbitNode, ensure_installed

            why = ensure_installed()
            if why:
                raise RuntimeError(why)
            rabbit = RabbitNode.start(tmp / "rabbit")
            amqp = rabbit.amqp_url
            log(f"rabbitmq node {rabbit.nodename} on 127.0.0.1:{rabbit.amqp_port} (no management URL given to the pool)")
        for broker in brokers:
            per_side: dict[str, list[dict[str, Any]]] = {"base": [], "head": []}
            delays = BOOT_DELAYS.get(broker, (0.0,))[:max(1, rounds)] if rounds else BOOT_DELAYS.get(broker, (0.0,))
            for k, delay in enumerate(delays):
                for side in (("base", "head") if k % 2 == 0 else ("head", "base")):
                    root, module = sides[side]
                    cap = SPARK_CAP_S if broker == "spark" else CAP_S
                    t = time.monotonic()
                    what = f"{side} ({out[f'{side}_commit']}) {broker} round {k + 1}/{len(delays)}"
                    log(f"{what}: starting" + (f" (app boot delay {delay:g}s)" if broker != "spark" else ""))
                    r = run_side(root, module, broker, side, tmp / f"{side}-{broker}-{k}", amqp,
                                 {"boot_delay": delay}, cap + 240)
                    r.update({"boot_delay": delay, "took_s": round(time.monotonic() - t)})
                    per_side[side].append(r)
                    log(f"{what}: {summary(r)}")
            for side in ("base", "head"):
                out["results"].append(combine(broker, side, per_side[side]))
    finally:
        if rabbit is not None:
            rabbit.stop()
        for root, _ in sides.values():
            if root != ROOT:
                git("worktree", "remove", "--force", str(root))
        git("worktree", "prune")
        for run_dir in tmp.glob("*-*"):
            reap(run_dir)
        if keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    out["took_s"] = round(time.monotonic() - started)
    return out


# ---------------------------------------------------------------------------------------------
# the result file and BENCHMARKS.md
# ---------------------------------------------------------------------------------------------


def ratios(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Worker-seconds, current / baseline, per broker (over the same rounds)."""
    by = {(r["broker"], r["side"]): r for r in results}
    out: dict[str, Any] = {}
    for broker in dict.fromkeys(r["broker"] for r in results):
        b, h = by.get((broker, "base"), {}), by.get((broker, "head"), {})
        if "error" not in b and "error" not in h and b.get("worker_seconds") and "worker_seconds" in h:
            out[broker] = round(h["worker_seconds"] / b["worker_seconds"], 3)
    return out


def per_round(r: dict[str, Any]) -> str:
    """Each round of a side in a few words."""
    parts = []
    for i, x in enumerate(r.get("rounds", [])):
        if "error" in x:
            parts.append(f"#{i + 1} failed")
            continue
        delay = f" delay {x['boot_delay']:g}s" if r["broker"] != "spark" else ""
        parts.append(f"#{i + 1}{delay}: {x['restarted_by_scalein']} restarted, {x['killed_busy']} killed, "
                     f"{x['worker_seconds']:.0f} worker-s, {x['launches']} launches")
    return "; ".join(parts)


FAILED: Any = "failed"  # the value of a row that could not be measured


def table(data: dict[str, Any]) -> list[dict[str, Any]]:
    from bench.common import row

    rows = []
    by = {(r["broker"], r["side"]): r for r in data["results"]}
    base = data.get("base_commit", data["base_rev"])
    for broker in dict.fromkeys(r["broker"] for r in data["results"]):
        b, h = by.get((broker, "base"), {}), by.get((broker, "head"), {})
        if "worker_seconds" not in h:
            rows.append(row(f"{broker}: tasks restarted by scale-in, current", FAILED, "0", False,
                            h.get("error", "")[:300]))
            continue
        rounds = len(h.get("rounds", []))
        note = (f"baseline {base}: {b['restarted_by_scalein']}" if "worker_seconds" in b
                else f"baseline failed: {b.get('error', '')[:200]}")
        rows.append(row(f"{broker}: tasks restarted by scale-in, current ({rounds} round{'s' * (rounds > 1)})",
                        h["restarted_by_scalein"], "0", h["restarted_by_scalein"] == 0, note))
        note = f"drain deadline events (current): {h.get('drain_deadline_events', 0)}"
        if "worker_seconds" in b:
            note = f"baseline {base}: {b['killed_busy']}; " + note
        rows.append(row(f"{broker}: busy workers killed, current", h["killed_busy"], "0", h["killed_busy"] == 0,
                        note))
        ratio = data["ratio"].get(broker)
        if ratio is not None:
            rows.append(row(f"{broker}: worker-seconds, current / baseline", ratio, "report", None,
                            f"{h['worker_seconds']:.0f} vs {b['worker_seconds']:.0f} worker-s; launches "
                            f"{h['launches']} vs {b['launches']}; all done after {h['wall_s']:.0f}s vs "
                            f"{b['wall_s']:.0f}s (mean), 0 workers after {h['back_to_zero_s']:.0f}s vs "
                            f"{b['back_to_zero_s']:.0f}s"))
        if broker == "spark" and "worker_seconds" in b:
            lost = {x: sum(r.get("executors_lost", 0) for r in y.get("rounds", []) if "error" not in r)
                    for x, y in (("base", b), ("head", h))}
            reasons = sorted({str(e) for r in h.get("rounds", []) for e in r.get("executor_removals", [])})
            rows.append(row("spark: executors lost (removed other than by decommission), current", lost["head"], "0",
                            lost["head"] == 0, f"baseline {base}: {lost['base']}; removals (current): "
                            f"{', '.join(reasons) or 'none'}"))
        if "error" in h or "error" in b:
            rows.append(row(f"{broker}: rounds that failed", FAILED, "none", False,
                            "; ".join(x for x in (b.get("error", ""), h.get("error", "")) if x)[:300]))
    return rows


def markdown(data: dict[str, Any]) -> str:
    base = data.get("base_commit", data["base_rev"])
    head = data.get("head_commit", data["head_rev"])
    if data["head_rev"] == "." and data.get("working_tree_uncommitted"):
        head += f" + uncommitted changes to {len(data['working_tree_uncommitted'])} files"
    lines = ["| broker | side | rounds | restarted by scale-in | busy killed | worker-s | launches | all done, s "
             "| 0 workers, s | per round |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["results"]:
        name = f"baseline {base}" if r["side"] == "base" else f"current {head}"
        if "worker_seconds" not in r:
            lines.append(f"| {r['broker']} | {name} | | failed: {r.get('error', '')[:120]} | | | | | | |")
            continue
        lines.append(f"| {r['broker']} | {name} | {len(r['rounds'])} | {r['restarted_by_scalein']} | "
                     f"{r['killed_busy']} | {r['worker_seconds']:.0f} | {r['launches']} | {r['wall_s']:.0f} | "
                     f"{r['back_to_zero_s']:.0f} | {per_round(r)} |")
    policy = ", ".join(f"{k} {v}" for k, v in POLICY.items() if k != "name")
    lines += ["", (
        f"`make bench-scalein` runs each side in its own process, one after the other (the baseline in a "
        f"temporary git worktree of `--base REV`, default {BASE_REV}, with this harness copied in; the current "
        "side from the working tree as it is), alternating which goes first. **Celery** (Redis, and a private "
        "RabbitMQ node with no management URL, so a task counts as running only while others wait): the "
        f"`lookahead` policy ({policy}), `scaling: {{stabilization: 0}}`, max {MAX}, default timeouts; "
        f"{LONG} tasks of {LONG_S:g} s submitted at once" + (f" after {SHORT} of {SHORT_S:g} s" if SHORT else "")
        + ", measured until every task is done and the domain is back to 0 workers. Whether the baseline "
        "kills a worker that has just taken the last task depends on where that moment falls in the "
        "manager's 1 s tick (it looks idle until its busy sampler writes, up to 0.2 s later), so each round "
        "gives the app a different boot delay (0, 0.25, 0.5, 0.75 s on RabbitMQ) that moves it across the "
        "tick; the counts and worker-seconds are summed over the rounds. Restarted: runs of a task beyond "
        "its first (the app logs every run with its node). Busy killed: runs cut short on a node that was "
        "ended (SIGKILL after `terminate_grace`, or the drain deadline). Worker-seconds: each node from its "
        "launch request to TERMINATED. **Spark**: a spark-worker domain (`spark_tasks`, `scaling: "
        f"{{stabilization: 0, idle_timeout: 5}}`, max {MAX}, workers of 1 core) and one application: 8 "
        f"map tasks of 4 s, then a last stage of 2 tasks of {SPARK_LONG_S:g} s while the policy scales in "
        "to 2; restarted is task attempts beyond the 10 it needs, busy killed is failed task attempts (both "
        "from the driver's REST API); `Lost executor` lines are counted in the driver's log. All workers "
        "of the local site share the host 127.0.0.1, so Spark drops every map output of the host when "
        "one worker leaves (`Shuffle files lost for host`): a job that read that shuffle again would "
        "recompute it on either side, which is why the long stage is the last one.")]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=BASE_REV, help=f"baseline git revision (default {BASE_REV})")
    parser.add_argument("--head", default=HEAD_REV, help="revision measured against it (default '.': this working tree)")
    parser.add_argument("--brokers", default=",".join(BROKERS), help=f"comma list of {', '.join(BROKERS)}")
    parser.add_argument("--rounds", type=int, default=0, help="at most this many rounds per broker (default: all)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, consoles)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--broker", default="redis", help=argparse.SUPPRESS)
    parser.add_argument("--side", default="head", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--amqp", default="", help=argparse.SUPPRESS)
    parser.add_argument("--workload", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        def on_term(signum: int, frame: Any) -> None:
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, on_term)
        print(json.dumps(one(args)), flush=True)
        return

    from bench.common import write_result

    brokers = [b for b in args.brokers.split(",") if b]
    unknown = [b for b in brokers if b not in BROKERS]
    if unknown:
        parser.error(f"unknown broker {', '.join(unknown)}; valid: {', '.join(BROKERS)}")
    data = measure(args.base, args.head, brokers, args.rounds, args.keep)
    data["ratio"] = ratios(data["results"])
    data["setup"] = {"max": MAX, "policy": POLICY, "scaling": {"stabilization": 0}, "boot_delays": BOOT_DELAYS,
                     "celery_tasks": {"short": [SHORT, SHORT_S], "long": [LONG, LONG_S]}, "cap_s": CAP_S,
                     "spark": {"map_tasks": [8, 4.0], "long_tasks": [2, SPARK_LONG_S], "tasks_needed": SPARK_TASKS}}
    data["markdown"] = markdown(data)
    rows = table(data)
    print(write_result("scalein", data, rows))
    for r in data["results"]:
        print(f"{r['broker']:8} {r['side']}: {summary(r)}")
    for broker, ratio in data["ratio"].items():
        print(f"{broker}: worker-seconds current / baseline {ratio:.3f}")
    print(f"took {data['took_s']} s")


if __name__ == "__main__":
    main()
