"""Spark: an elastic domain (0..4 workers of 1 core) vs a static cluster of 4 workers, one job each.

Both run examples/spark_job.py (4 stages, 410 tasks) with the same properties. The static cluster
(a standalone master and 4 workers from pyspark) is started beforehand; the elastic domain starts
at 0 workers and is sized by the ``spark`` sensor and the ``spark_tasks`` policy. Measured side by
side in one run:

- completion: wall time from submit to the job's exit, elastic / static;
- worker-seconds over [submit, job end + 60 s idle]: a static worker counts the whole window, an
  elastic one from its launch request to its termination;
- RSS per worker (worker daemon + its executor JVM + the executor's Python workers; elastic
  nodes also count their agent), the peak of each worker during the job, median over workers.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, machine, node_seconds, row, wait_until, write_result
from pool.control.manager import Manager
from pool.core.model import NodeState, parse_domain_spec
from pool.sites.local import LocalNodeDriver
from pool.sites.provisioner import Provisioner
from pool.state.redisserver import RedisServer, free_port
from pool.state.store import Store
from spark.master import (
    DAEMON_JAVA_OPTS,
    SparkMasterService,
    read_master,
    start_ticks,
    submit_conf,
    terminate,
)
from spark.rest import master_state, spark_bin, spark_home
from spark.spec import spark_spec

JOB = ROOT / "examples" / "spark_job.py"
WORKERS = 4
IDLE_WINDOW = 60.0
#: The same for both clusters: short-lived JVMs do better with the client compiler only.
JVM_OPTS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def domain(idle_timeout: float) -> Any:
    return parse_domain_spec({
        "name": "bench-spark",
        "deployable_type": "spark-worker",
        "min": 0,
        "max": WORKERS,
        "scaling": {"stabilization": 5, "idle_timeout": idle_timeout},
        "spark": {"worker_cores": 1, "worker_memory": "512m", "daemon_memory": "192m",
                  "decommission": {"migration_interval": 1}},
        "timeouts": {"heartbeat_interval": 1, "heartbeat_timeout": 10, "boot": 180, "drain": 120},
    })


# ---------------------------------------------------------------------------
# memory: RSS of a process and all its descendants
# ---------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        ppid = int(text[text.rfind(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(stat.parent.name))
    return kids


def tree_rss_mb(pid: int, kids: dict[int, list[int]]) -> float:
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
        todo += kids.get(p, [])
    return total / 1024


class RssSampler(threading.Thread):
    """Samples the tree RSS of each worker (by a root pid) every ``every`` s; keeps the peaks."""

    def __init__(self, roots: Any, every: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.roots = roots  # callable -> {name: pid}
        self.every = every
        self.peaks: dict[str, float] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.every):
            kids = _children()
            for name, pid in self.roots().items():
                self.peaks[name] = max(self.peaks.get(name, 0.0), tree_rss_mb(pid, kids))


# ---------------------------------------------------------------------------
# the static cluster
# ---------------------------------------------------------------------------


def spark_env(**extra: str) -> dict[str, str]:
    return dict(os.environ, SPARK_HOME=str(spark_home()), SPARK_LOCAL_IP="127.0.0.1",
                SPARK_DAEMON_MEMORY="192m", SPARK_DAEMON_JAVA_OPTS=DAEMON_JAVA_OPTS,
                PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable, **extra)


def start_static(tmp: Path) -> tuple[str, str, list[subprocess.Popen[bytes]]]:
    port, ui_port = free_port(), free_port()
    url, ui = f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}"
    procs = []
    with open(tmp / "static-master.log", "wb") as log:
        procs.append(subprocess.Popen(
            [spark_bin("spark-class"), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
             "--port", str(port), "--webui-port", str(ui_port)],
            env=spark_env(SPARK_MASTER_OPTS="-Dspark.master.rest.enabled=false"), stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True))
    for i in range(WORKERS):
        with open(tmp / f"static-worker{i}.log", "wb") as log:
            procs.append(subprocess.Popen(
                [spark_bin("spark-class"), "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                 "--port", str(free_port()), "--webui-port", str(free_port()), "--cores", "1",
                 "--memory", "512m", "--work-dir", str(tmp / f"static-work{i}"), url],
                env=spark_env(SPARK_WORKER_OPTS="-Dspark.decommission.enabled=true"), stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True))

    def alive() -> int:
        try:
            return sum(1 for w in master_state(ui, timeout=1)["workers"] if w.get("state") == "ALIVE")
        except Exception:  # noqa: BLE001  (still starting)
            return 0

    wait_until(lambda: alive() == WORKERS, 180, "the static cluster's workers", poll=0.5)
    return url, ui, procs


# ---------------------------------------------------------------------------
# jobs
# ---------------------------------------------------------------------------


def job_args(partitions: int, items: int, task_ms: float) -> list[str]:
    return [str(JOB), "--partitions", str(partitions), "--items", str(items), "--task-ms", f"{task_ms:g}"]


def run_job(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, float, str]:
    """(start, end, RESULT line) of one job; raises if it fails or answers wrong."""
    start = time.time()
    with open(log, "w") as err:
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True, timeout=1200,
                              check=False)
    end = time.time()
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), "")
    if proc.returncode != 0 or not line.startswith("RESULT ok"):
        raise RuntimeError(f"job failed ({proc.returncode}): {line or proc.stdout[-500:]}; see {log}")
    return start, end, line


def conf_args(conf: dict[str, str]) -> list[str]:
    out = []
    for key, value in sorted(conf.items()):
        out += ["--conf", f"{key}={value}"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=200, help="map tasks per map stage (410 tasks)")
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--task-ms", type=float, default=600.0, help="work (sleep) per map task")
    parser.add_argument("--idle-timeout", type=float, default=10.0, help="elastic scaling.idle_timeout")
    args = parser.parse_args()

    tmp = Path(os.environ.get("BENCH_TMP") or f"/tmp/ep-bench-spark-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ["POOL_HOME"] = str(tmp / "pool-home")
    spec = domain(args.idle_timeout)
    jvm = {f"spark.{side}.extraJavaOptions": JVM_OPTS for side in ("driver", "executor")}
    conf = {**submit_conf(spark_spec(spec)), **jvm, "spark.log.level": "WARN"}
    task = job_args(args.partitions, args.items, args.task_ms)

    # -- static: 4 workers started beforehand ---------------------------------------------------
    print("static: starting a master and 4 workers", flush=True)
    url, _, procs = start_static(tmp)
    try:
        sampler = RssSampler(lambda: {f"static{i}": p.pid for i, p in enumerate(procs[1:])})
        sampler.start()
        cmd = [spark_bin("spark-submit"), "--master", url, *conf_args(conf), *task]
        s_start, s_end, s_line = run_job(cmd, spark_env(), tmp / "static-job.log")
        sampler.halt.set()
        static_rss = dict(sampler.peaks)
    finally:
        for p in procs:
            terminate(p.pid, start_ticks(p.pid))
            p.wait(10)
    static_completion = s_end - s_start
    static_ws = WORKERS * (s_end + IDLE_WINDOW - s_start)  # they run through the whole window
    print(f"static: {static_completion:.1f}s ({s_line})", flush=True)

    # -- elastic: 0..4 workers --------------------------------------------------------------------
    server = RedisServer.start(tmp / "redis")
    store = Store.from_url(server.url, namespace="bench")
    driver = LocalNodeDriver(ex_state_dir=str(tmp / "pool-home" / "sites" / "local"))
    service = SparkMasterService()
    manager = Manager(store=store, provisioner=Provisioner({"local": driver}), redis_url=server.url,
                      services=[service])
    stop = threading.Event()
    thread = threading.Thread(target=manager.run, kwargs={"interval": 0.5, "stop": stop}, daemon=True)
    thread.start()
    try:
        store.put_domain(spec)
        wait_until(lambda: (read_master(spec.name) or {}).get("state") == "up", 120, "the elastic master",
                   poll=0.2)
        print("elastic: master up, 0 workers; submitting", flush=True)

        def node_roots() -> dict[str, int]:
            return {str(n.id): int(n.extra["pid"]) for n in driver.list_nodes()}

        sampler = RssSampler(node_roots)
        sampler.start()
        cmd = [sys.executable, "-m", "pool.cli", "spark", "submit", "-d", spec.name, "--no-progress",
               *conf_args({**jvm, "spark.log.level": "WARN"}), *task]
        e_start, e_end, e_line = run_job(cmd, dict(os.environ), tmp / "elastic-job.log")
        sampler.halt.set()
        elastic_rss = dict(sampler.peaks)
        print(f"elastic: {e_end - e_start:.1f}s ({e_line}); idle window {IDLE_WINDOW:g}s", flush=True)
        time.sleep(max(0.0, e_end + IDLE_WINDOW - time.time()))
        nodes = store.nodes(spec.name)
        elastic_ws = node_seconds(nodes, e_start, e_end + IDLE_WINDOW)
        left = sum(1 for n in nodes if n.state != NodeState.TERMINATED)
        launched = len(nodes)
    finally:
        stop.set()
        manager.wake.set()
        thread.join(15)
        for node in driver.list_nodes():
            driver.ex_preempt(node)
        service.stop(spec)
        server.stop()

    elastic_completion = e_end - e_start
    completion_ratio = elastic_completion / static_completion
    ws_ratio = elastic_ws / static_ws
    rss = statistics.median(elastic_rss.values()) if elastic_rss else 0.0
    static_rss_mb = statistics.median(static_rss.values()) if static_rss else 0.0
    info = machine()
    info["packages"] = {**info.get("packages", {}), "pyspark": importlib.metadata.version("pyspark")}
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    info["java"] = (java.stderr.splitlines() or ["?"])[0]
    data = {
        "machine": info,
        "completion_ratio": round(completion_ratio, 3),
        "worker_seconds_ratio": round(ws_ratio, 3),
        "worker_rss_mb": round(rss, 1),
        "static_worker_rss_mb": round(static_rss_mb, 1),
        "elastic": {"completion_s": round(elastic_completion, 1), "worker_seconds": round(elastic_ws, 1),
                    "nodes_launched": launched, "nodes_left_after_window": left, "result": e_line,
                    "rss_mb_by_node": {k: round(v, 1) for k, v in elastic_rss.items()}},
        "static": {"completion_s": round(static_completion, 1), "worker_seconds": round(static_ws, 1),
                   "workers": WORKERS, "result": s_line,
                   "rss_mb_by_worker": {k: round(v, 1) for k, v in static_rss.items()}},
        "setup": {"job": f"examples/spark_job.py {' '.join(task[1:])}", "tasks": 2 * args.partitions
                  + max(2, args.partitions // 25) + 2, "idle_window_s": IDLE_WINDOW,
                  "elastic_scaling": spec.scaling.model_dump(), "worker": "1 core, 512m",
                  "jvm_options": JVM_OPTS},
    }
    table = [
        row("completion time, elastic / static", round(completion_ratio, 3), "<= 1.3", completion_ratio <= 1.3,
            f"{elastic_completion:.1f}s vs {static_completion:.1f}s"),
        row("worker-seconds (job + 60 s idle), elastic / static", round(ws_ratio, 3), "<= 0.8", ws_ratio <= 0.8,
            f"{elastic_ws:.0f} vs {static_ws:.0f}"),
        row("RSS per worker, MB (elastic node)", round(rss, 1), "", None,
            f"static worker {static_rss_mb:.0f} MB (no agent)"),
    ]
    path = write_result("spark", data, table)
    print(f"completion ratio {completion_ratio:.2f} (target <= 1.3), worker-seconds ratio {ws_ratio:.2f} "
          f"(target <= 0.8), RSS per worker {rss:.0f} MB; wrote {path}", flush=True)


if __name__ == "__main__":
    main()
