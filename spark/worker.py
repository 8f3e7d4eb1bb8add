"""The spark-worker workload: a Spark standalone Worker that the agent probes, and decommissions on drain."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pool.state.redisserver import free_port
from spark.master import DAEMON_JAVA_OPTS
from spark.rest import (
    Unreachable,
    app_api,
    driver_ui_of,
    master_state,
    spark_bin,
    spark_home,
    worker_state,
)

Beat = Callable[..., None]


@dataclass
class SparkWorkload:
    """One Spark Worker bound to ``host`` and free ports, registered with ``master_url``.

    ``probe`` gives the heartbeat's ``ready`` (the master lists this worker ALIVE), ``active`` (tasks
    running in this worker's executors, from each driver's REST API) and ``idle_since``.
    ``drain`` decommissions the worker (``decommission_signal`` to the Worker JVM, which needs
    ``spark.decommission.enabled``): the master marks it DECOMMISSIONED and tells each driver,
    whose executors here take no new tasks, migrate their shuffle and cached blocks (when the job
    enables it) and exit. The worker is stopped once it has no executor left, or its executors
    have run nothing for ``quiet`` seconds, or ``drain_timeout`` passes.
    """

    master_url: str
    master_ui: str
    work_dir: Path
    host: str = "127.0.0.1"
    cores: int = 1
    memory: str = "1g"
    daemon_memory: str = "256m"
    decommission: bool = True
    decommission_signal: str = "PWR"
    drain_timeout: float = 600.0
    quiet: float = 10.0
    interval: float = 1.0
    timeout: float = 1.0
    port: int = 0
    ui_port: int = 0
    ready: bool = False
    active: int = 0
    idle_since: float | None = None
    _drivers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.port = self.port or free_port(self.host)
        self.ui_port = self.ui_port or free_port(self.host)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SparkWorkload:
        """Built from the contextualization's ``POOL_SPARK_*`` variables."""
        missing = [k for k in ("POOL_SPARK_MASTER", "POOL_SPARK_MASTER_UI") if not env.get(k)]
        interval = float(env.get("POOL_HEARTBEAT_INTERVAL") or 1)
        if missing:
            raise ValueError(f"spark-worker: {', '.join(missing)} not set (the domain's master is unknown)")
        return cls(
            master_url=env["POOL_SPARK_MASTER"],
            master_ui=env["POOL_SPARK_MASTER_UI"],
            work_dir=Path(env.get("POOL_SPARK_WORK_DIR") or Path.cwd() / "spark"),
            host=env.get("POOL_SPARK_HOST") or "127.0.0.1",
            cores=int(env.get("POOL_SPARK_CORES") or 1),
            memory=env.get("POOL_SPARK_MEMORY") or "1g",
            daemon_memory=env.get("POOL_SPARK_DAEMON_MEMORY") or "256m",
            decommission=env.get("POOL_SPARK_DECOMMISSION", "1") == "1",
            decommission_signal=env.get("POOL_SPARK_DECOMMISSION_SIGNAL") or "PWR",
            drain_timeout=float(env.get("POOL_SPARK_DRAIN_TIMEOUT") or 600),
            interval=interval,
            timeout=max(0.2, min(1.0, interval / 3)),  # a probe must not stall the heartbeat
        )

    @property
    def worker_ui(self) -> str:
        return f"http://{self.host}:{self.ui_port}"

    # -- the process ------------------------------------------------------------------------
    def command(self) -> list[str]:
        return [spark_bin("spark-class"), "org.apache.spark.deploy.worker.Worker",
                "--host", self.host, "--port", str(self.port), "--webui-port", str(self.ui_port),
                "--cores", str(self.cores), "--memory", self.memory,
                "--work-dir", str(self.work_dir / "work"), self.master_url]

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        (self.work_dir / "local").mkdir(parents=True, exist_ok=True)
        opts = [f"-Dspark.worker.decommission.signal={self.decommission_signal}"]
        if self.decommission:
            opts.append("-Dspark.decommission.enabled=true")
        env = dict(base)
        env.update({
            "SPARK_HOME": str(spark_home()),
            "SPARK_LOCAL_IP": self.host,
            "SPARK_LOCAL_DIRS": str(self.work_dir / "local"),
            "SPARK_DAEMON_MEMORY": self.daemon_memory,
            "SPARK_WORKER_OPTS": " ".join(opts),
            "SPARK_DAEMON_JAVA_OPTS": DAEMON_JAVA_OPTS,
        })
        return env

    def cleanup(self) -> None:
        """Remove the worker's work and local directories (executor logs, shuffle files)."""
        shutil.rmtree(self.work_dir, ignore_errors=True)

    # -- probes -----------------------------------------------------------------------------
    def registered(self) -> bool:
        """The master lists this worker (by host and port) as ALIVE."""
        try:
            state = master_state(self.master_ui, timeout=self.timeout)
        except Unreachable:
            return False
        return any(w.get("host") == self.host and int(w.get("port", 0)) == self.port
                   and w.get("state") == "ALIVE" for w in state.get("workers", []))

    def _driver(self, app_id: str) -> str | None:
        if app_id not in self._drivers:
            try:
                url = driver_ui_of(self.master_ui, app_id, timeout=self.timeout)
            except Unreachable:
                url = None
            if url is None:
                return None
            self._drivers[app_id] = url
        return self._drivers[app_id]

    def executors(self) -> list[dict[str, Any]] | None:
        """This worker's executors (``appid``, ``id``), or None when its web UI does not answer."""
        try:
            return list(worker_state(self.worker_ui, timeout=self.timeout).get("executors", []))
        except Unreachable:
            return None

    def running_tasks(self, executors: list[dict[str, Any]]) -> int:
        """Tasks running in these executors; an executor whose driver cannot be read counts as busy."""
        total = 0
        by_app: dict[str, list[str]] = {}
        for e in executors:
            by_app.setdefault(str(e.get("appid")), []).append(str(e.get("id")))
        for app_id, ids in by_app.items():
            driver = self._driver(app_id)
            try:
                if driver is None:
                    raise Unreachable(app_id)
                listed = app_api(driver, app_id, "executors", timeout=self.timeout)
            except Unreachable:
                self._drivers.pop(app_id, None)
                total += len(ids)  # unknown: assume busy, never lose work by guessing idle
                continue
            total += sum(int(x.get("activeTasks", 0)) for x in listed if str(x.get("id")) in ids)
        return total

    def probe(self) -> dict[str, object]:
        """Heartbeat fields: ``ready``, ``active``, ``idle_since``."""
        now = time.time()
        if not self.ready:
            self.ready = self.registered()
            if not self.ready:
                return {"ready": False, "active": 0}
        executors = self.executors()
        active = self.active if executors is None else self.running_tasks(executors)
        if active > 0:
            self.idle_since = None
        elif self.active > 0 or self.idle_since is None:
            self.idle_since = now
        self.active = active
        return {"ready": True, "active": active,
                "idle_since": "" if self.idle_since is None else repr(self.idle_since),
                "spark_worker": f"{self.host}:{self.port}", "spark_worker_ui": self.worker_ui}

    # -- drain --------------------------------------------------------------------------------
    def drain(self, proc: subprocess.Popen[bytes], beat: Beat) -> None:
        """Decommission gracefully, then stop the Worker JVM (SIGTERM)."""
        if proc.poll() is not None:
            return
        if not (self.decommission and self.ready):  # nothing runs here yet: just stop
            proc.terminate()
            return
        start = time.monotonic()
        try:
            os.kill(proc.pid, getattr(signal, f"SIG{self.decommission_signal}"))
        except (ProcessLookupError, AttributeError) as exc:
            print(f"spark-worker: cannot signal decommission ({exc}); stopping", file=sys.stderr, flush=True)
            proc.terminate()
            return
        print(f"spark-worker {self.host}:{self.port}: decommissioning", file=sys.stderr, flush=True)
        beat(draining=True, decommissioning=repr(time.time()))
        quiet_since: float | None = None
        misses = 0
        why = "drain timeout"
        while time.monotonic() - start < self.drain_timeout and proc.poll() is None:
            executors = self.executors()
            if executors is None:
                misses += 1
                if misses >= 5:
                    why = "worker UI stopped answering"
                    break
            elif not executors:
                why = "no executor left (tasks done, blocks migrated)"
                break
            else:
                misses = 0
                running = self.running_tasks(executors)
                beat(draining=True, active=running)
                if running > 0:
                    quiet_since = None
                elif quiet_since is None:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= self.quiet:
                    why = f"executors idle for {self.quiet:g}s"
                    break
            time.sleep(self.interval)
        print(f"spark-worker {self.host}:{self.port}: decommissioned ({why}) after "
              f"{time.monotonic() - start:.1f}s; stopping", file=sys.stderr, flush=True)
        beat(draining=True, active=0, decommissioned=why)
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
