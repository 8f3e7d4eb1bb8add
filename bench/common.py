"""Shared benchmark harness: a private Redis, a manager thread, plain workers, result files."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import redis

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEMO_APP = ROOT / "examples" / "demo_app"
sys.path.insert(0, str(ROOT))

from pool.control.manager import Manager  # noqa: E402
from pool.core.model import NodeRecord, NodeState, parse_domain_spec  # noqa: E402
from pool.sites.local import LocalNodeDriver  # noqa: E402
from pool.sites.provisioner import Provisioner  # noqa: E402
from pool.state.redisserver import RedisServer, broker_url_for  # noqa: E402
from pool.state.store import Store  # noqa: E402

os.environ.setdefault("C_FORCE_ROOT", "1")


def machine() -> dict[str, Any]:
    versions = {}
    for pkg in ("celery", "kombu", "redis", "apache-libcloud", "elastic-pool"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "packages": versions}


def write_result(name: str, data: dict[str, Any], table: list[dict[str, Any]]) -> Path:
    """Write bench/results/NAME.json with the machine, the date and the rows for BENCHMARKS.md."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"benchmark": name, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "machine": machine(), **data, "table": table}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    return path


def row(metric: str, value: float, target: str, ok: bool | None, note: str = "") -> dict[str, Any]:
    return {"metric": metric, "value": value, "target": target, "ok": ok, "note": note}


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


class Bench:
    """A private Redis server and a manager ticking in a thread, torn down on exit."""

    def __init__(self, *, interval: float = 1.0, wakeups: bool = True) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="ep-bench-"))
        os.environ["POOL_HOME"] = str(self.tmp)
        self.server = RedisServer.start(self.tmp / "redis")
        self.url = self.server.url
        self.store = Store.from_url(self.url, namespace="bench")
        self.driver = LocalNodeDriver(ex_state_dir=str(self.tmp / "sites" / "local"), ex_worker_env=("DEMO_*",))
        self.interval = interval
        self.manager: Manager | None = None
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.start_manager(wakeups=wakeups)

    def start_manager(self, *, wakeups: bool) -> None:
        self.stop_manager()
        self.stop = threading.Event()
        self.manager = Manager(store=self.store, provisioner=Provisioner({"local": self.driver}),
                               redis_url=self.url, wakeups=wakeups)
        self.thread = threading.Thread(target=self.manager.run, kwargs={"interval": self.interval, "stop": self.stop},
                                       daemon=True)
        self.thread.start()

    def stop_manager(self) -> None:
        if self.manager is not None and self.thread is not None:
            self.stop.set()
            self.manager.wake.set()
            self.thread.join(10)
            self.manager.close()
            self.manager = None

    def broker(self, db: int = 1) -> str:
        return broker_url_for(self.url, db)

    def redis(self, db: int = 1) -> redis.Redis:
        return redis.Redis.from_url(self.broker(db), decode_responses=True)

    def live(self, domain: str) -> list[NodeRecord]:
        return [n for n in self.store.nodes(domain)
                if n.state in (NodeState.REQUESTED, NodeState.PENDING, NodeState.STARTED, NodeState.JOINED)]

    def close(self) -> None:
        self.stop_manager()
        for node in self.driver.list_nodes():
            self.driver.ex_preempt(node)
        self.server.stop()

    def __enter__(self) -> "Bench":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def domain_spec(name: str, *, queue: str, max_size: int, **overrides: Any) -> Any:
    spec: dict[str, Any] = {
        "name": name, "min": 0, "max": max_size,
        "policy": {"name": "queue_depth", "tasks_per_worker": 1},
        "scaling": {"stabilization": 5},
        "celery": {"app": "tasks", "path": str(DEMO_APP), "queue": queue, "visibility_timeout": 60},
        "timeouts": {"heartbeat_interval": 1, "heartbeat_timeout": 5, "boot": 120, "drain": 120},
    }
    spec.update(overrides)
    return parse_domain_spec(spec)


def demo_tasks(broker: str) -> Any:
    """The bundled demo app, bound to ``broker``."""
    if str(DEMO_APP) not in sys.path:
        sys.path.insert(0, str(DEMO_APP))
    os.environ["DEMO_BROKER"] = broker
    import tasks  # type: ignore[import-not-found]

    return tasks


def enqueue(app_tasks: Any, broker: str, queue: str, items: list[tuple[int, float]], name: str = "demo.work") -> None:
    """Publish many tasks over one producer connection."""
    app = app_tasks.app
    with app.connection_for_write(broker) as conn:
        producer = conn.Producer()
        for i, seconds in items:
            app.send_task(name, (i, seconds) if name == "demo.work" else (i,), queue=queue, producer=producer)


def plain_workers(n: int, *, broker: str, queue: str, logdir: Path, concurrency: int = 1,
                  python: str = sys.executable, visibility_timeout: float = 60, first: int = 0,
                  stock_transport: bool = False) -> list[subprocess.Popen[bytes]]:
    """``n`` plain Celery workers with the same durable settings as pool-managed ones, not managed.

    ``python`` is the interpreter to run them with (a wrapper that runs it under a profiler, say);
    ``first`` numbers them (node names and log files) from there; ``stock_transport`` runs them
    on kombu's own Redis transport instead of the atomic pop.
    """
    procs = []
    for i in range(first, first + n):
        env = dict(os.environ, POOL_CELERY_APP="tasks", POOL_CELERY_PATH=str(DEMO_APP), POOL_BROKER_URL=broker,
                   POOL_QUEUE=queue, POOL_CONCURRENCY=str(concurrency), POOL_NODE_ID=f"plain{i}",
                   POOL_VISIBILITY_TIMEOUT=f"{visibility_timeout:g}", DEMO_BROKER=broker,
                   POOL_STOCK_TRANSPORT="1" if stock_transport else "0",
                   POOL_READY_FILE=str(logdir / f"plain{i}.ready"))
        log = open(logdir / f"plain{i}.log", "wb")
        procs.append(subprocess.Popen([python, str(ROOT / "bench" / "plain_worker.py")], env=env,
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    return procs


def wait_until(pred: Callable[[], bool], timeout: float, what: str, poll: float = 0.05) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def stop_procs(procs: list[subprocess.Popen[bytes]]) -> None:
    import signal

    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for p in procs:
        p.wait(10)


def node_seconds(nodes: list[NodeRecord], start: float, end: float) -> float:
    """Billed time of each node (launch request to termination), clipped to [start, end]."""
    total = 0.0
    for n in nodes:
        a = n.created
        b = n.entered(NodeState.TERMINATED) or end
        total += max(0.0, min(b, end) - max(a, start))
    return total


def chunks(xs: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(xs), size):
        yield xs[i:i + size]


def harness_worktree(rev: str, path: Path, *, harness: Path, name: str) -> Path | str:
    """A detached git worktree of ``rev`` at ``path`` with the file ``harness`` copied in as
    ``bench/NAME.py`` (a side-by-side benchmark runs one side there): the worktree, or why not."""
    import shutil

    added = subprocess.run(["git", "worktree", "add", "--detach", str(path), f"{rev}^{{commit}}"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    if added.returncode != 0:
        return (added.stderr.strip().splitlines() or ["git worktree add failed"])[-1]
    (path / "bench").mkdir(exist_ok=True)
    (path / "bench" / "__init__.py").touch()
    shutil.copyfile(harness, path / "bench" / f"{name}.py")
    return path
