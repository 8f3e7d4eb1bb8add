"""The Spark standalone master of a spark-worker domain, started (or adopted) and kept up by the manager."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from pool.core.model import DomainSpec
from pool.state.procs import Supervised, start_ticks, terminate
from pool.state.redisserver import free_port, state_dir
from spark.rest import SparkNotInstalled, Unreachable, master_state, spark_bin, spark_home
from spark.spec import SparkSpec, spark_spec

log = logging.getLogger("elastic_pool.spark")

#: Seconds a starting master may take to answer on its web UI before it is restarted.
START_TIMEOUT = 90.0
#: A master up this long has its restart backoff forgotten.
STABLE_AFTER = 60.0
#: JVM options of the master and worker daemons (not of executors): they start faster and use
#: less memory with the serial collector and the client compiler only.
DAEMON_JAVA_OPTS = "-XX:+UseSerialGC -XX:TieredStopAtLevel=1"
#: JVM options of the master: no submission REST server, bind exactly the recorded ports (or
#: fail and be restarted), forget a silent worker after 15 s, decommission by POST from localhost.
MASTER_OPTS = (
    "-Dspark.master.rest.enabled=false -Dspark.port.maxRetries=0 -Dspark.worker.timeout=15 "
    "-Dspark.master.ui.decommission.allow.mode=LOCAL"
)


def masters_dir() -> Path:
    return state_dir() / "spark"


def master_file(domain: str) -> Path:
    return masters_dir() / domain / "master.json"


def read_master(domain: str) -> dict[str, Any] | None:
    """What the manager recorded about the domain's master (URL, web UI, pid), if anything."""
    try:
        data = json.loads(master_file(domain).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def known_masters() -> dict[str, dict[str, Any]]:
    """Every recorded master under the pool's state directory, by domain."""
    out = {}
    for path in sorted(masters_dir().glob("*/master.json")):
        data = read_master(path.parent.name)
        if data is not None:
            out[path.parent.name] = data
    return out


def _write_master(domain: str, data: Mapping[str, Any]) -> None:
    path = master_file(domain)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(data), indent=1, sort_keys=True))
    tmp.replace(path)


def submit_conf(spark: SparkSpec) -> dict[str, str]:
    """Spark properties `pool spark submit` gives every job on the domain.

    One executor fills one worker, and a leaving worker's executors are decommissioned with their
    shuffle and cached blocks migrated to the executors that stay.
    """
    dec = spark.decommission
    conf = {
        "spark.executor.memory": spark.worker_memory,
        "spark.executor.cores": str(spark.worker_cores),
    }
    if dec.enabled:
        conf.update({
            "spark.decommission.enabled": "true",
            "spark.storage.decommission.enabled": str(dec.shuffle_blocks or dec.rdd_blocks).lower(),
            "spark.storage.decommission.shuffleBlocks.enabled": str(dec.shuffle_blocks).lower(),
            "spark.storage.decommission.rddBlocks.enabled": str(dec.rdd_blocks).lower(),
            "spark.storage.decommission.replicationReattemptInterval": f"{dec.migration_interval:g}s",
        })
    return conf


def worker_context(spec: DomainSpec) -> dict[str, str]:
    """Attributes every spark-worker of the domain needs, besides the master's address."""
    sp = spark_spec(spec)
    return {
        "spark_host": sp.host,
        "worker_cores": str(sp.worker_cores),
        "worker_memory": sp.worker_memory,
        "daemon_memory": sp.daemon_memory,
        "decommission": "1" if sp.decommission.enabled else "0",
        "decommission_signal": sp.decommission.signal,
        "drain_timeout": f"{spec.timeouts.drain:g}",
    }


def stop_masters() -> list[str]:
    """Stop every master this pool started (by recorded pid) and forget adopted ones."""
    stopped = []
    for domain, data in known_masters().items():
        ours = not data.get("adopted") and data.get("pid")
        if ours and terminate(int(data["pid"]), data.get("start_ticks")):
            stopped.append(domain)
        master_file(domain).unlink(missing_ok=True)
    return stopped


@dataclass(kw_only=True)
class _Master(Supervised):
    """One master process this service runs."""

    host: str
    port: int
    ui_port: int

    @property
    def url(self) -> str:
        return f"spark://{self.host}:{self.port}"

    @property
    def ui(self) -> str:
        return f"http://{self.host}:{self.ui_port}"



class SparkMasterService:
    """A :class:`pool.workloads.base.DomainService` for spark-worker domains.

    For a domain whose ``spark.master_url`` is set, the master is adopted: nothing is started.
    Otherwise a standalone master from pyspark runs on ``spark.host`` and free ports (or the ports
    the spec names), supervised: if it dies it is restarted on the same ports after a backoff that
    doubles up to a minute. ``ensure`` never blocks on a starting master: it returns no context
    until the master answers on its web UI, so the domain's sensor reports "no master yet" and
    the domain holds its size.
    """

    def __init__(self, *, probe_timeout: float = 0.5) -> None:
        self.probe_timeout = probe_timeout
        self._masters: dict[str, _Master] = {}

    def applies(self, spec: DomainSpec) -> bool:
        return isinstance(spec.block, SparkSpec)

    # -- ensure -----------------------------------------------------------------------------
    def ensure(self, spec: DomainSpec, now: float) -> Mapping[str, str]:
        sp = spark_spec(spec)
        context = worker_context(spec)
        if sp.master_url:
            assert sp.master_ui is not None
            self._record(spec, {"adopted": True, "url": sp.master_url, "ui": sp.master_ui})
            return {**context, "master_url": sp.master_url, "master_ui": sp.master_ui}
        m = self._masters.get(spec.name) or self._adopt_recorded(spec, now)
        if m is not None and (m.host != sp.host or (sp.master_port or m.port) != m.port
                              or (sp.ui_port or m.ui_port) != m.ui_port):
            self._stop(spec.name, m)  # the spec moved the master
            m = None
        if m is not None and m.alive():
            if m.up_since is None:
                if self._answers(m):
                    m.up_since = now
                    self._record(spec, self._describe(m))
                    log.info("spark master of %s up at %s (UI %s)", spec.name, m.url, m.ui)
                elif now - m.started > START_TIMEOUT:
                    self._stop(spec.name, m)
                    self._masters[spec.name] = m
                    self._failed(spec, m, now, f"did not answer on {m.ui} within {START_TIMEOUT:g}s",
                                 came_up=False)
                return {**context, "master_url": m.url, "master_ui": m.ui} if m.up_since else {}
            if now - m.up_since > STABLE_AFTER:
                m.failures = 0
            return {**context, "master_url": m.url, "master_ui": m.ui}
        if m is not None and m.started:  # ours, and it died
            code = m.exit_code()
            came_up = m.up_since is not None
            m.proc = None
            m.pid = 0
            self._failed(spec, m, now, f"exited{'' if code is None else f' with code {code}'}",
                         came_up=came_up)
        if m is not None and now < m.next_start:
            return {}
        self._start(spec, m, now)
        return {}

    def _failed(self, spec: DomainSpec, m: _Master, now: float, why: str, *, came_up: bool) -> NoReturn:
        """Schedule a restart after a backoff and report why (the manager records it)."""
        delay = m.back_off(now)
        sp = spark_spec(spec)
        if not came_up and m.failures > 1:  # it never came up again: its ports may be taken
            m.port = sp.master_port or free_port(sp.host)
            m.ui_port = sp.ui_port or free_port(sp.host)
        raise RuntimeError(
            f"spark master of {spec.name} {why}; restart {m.failures} in {delay:g}s "
            f"(log: {master_file(spec.name).parent / 'master.log'})"
        )

    def _answers(self, m: _Master) -> bool:
        try:
            state = master_state(m.ui, timeout=self.probe_timeout)
        except Unreachable:
            return False
        return str(state.get("status", "")).upper() == "ALIVE"

    def _adopt_recorded(self, spec: DomainSpec, now: float) -> _Master | None:
        """A master started by an earlier manager process that still runs."""
        data = read_master(spec.name)
        if not data or data.get("adopted") or not data.get("pid"):
            return None
        m = _Master(host=str(data["host"]), port=int(data["port"]), ui_port=int(data["ui_port"]),
                    pid=int(data["pid"]), ticks=data.get("start_ticks"), started=now)
        if not m.alive():
            return None
        self._masters[spec.name] = m
        return m

    def _start(self, spec: DomainSpec, m: _Master | None, now: float) -> None:
        sp = spark_spec(spec)
        if m is None:
            recorded = read_master(spec.name) or {}
            same_host = recorded.get("host") == sp.host and not recorded.get("adopted")
            m = _Master(
                host=sp.host,
                port=sp.master_port or (int(recorded["port"]) if same_host else free_port(sp.host)),
                ui_port=sp.ui_port or (int(recorded["ui_port"]) if same_host else free_port(sp.host)),
            )
            self._masters[spec.name] = m
        directory = master_file(spec.name).parent
        directory.mkdir(parents=True, exist_ok=True)
        try:
            env = dict(os.environ)
            env.update({
                "SPARK_HOME": str(spark_home()),
                "SPARK_LOCAL_IP": sp.host,
                "SPARK_DAEMON_MEMORY": sp.daemon_memory,
                "SPARK_MASTER_OPTS": MASTER_OPTS,
                "SPARK_DAEMON_JAVA_OPTS": DAEMON_JAVA_OPTS,
            })
            cmd = [spark_bin("spark-class"), "org.apache.spark.deploy.master.Master",
                   "--host", sp.host, "--port", str(m.port), "--webui-port", str(m.ui_port)]
            with open(directory / "master.log", "ab") as out:
                m.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True, cwd=str(directory), env=env)
        except (OSError, SparkNotInstalled) as exc:  # retried after a backoff, like a death
            self._failed(spec, m, now, f"could not start: {exc}", came_up=False)
        m.pid = m.proc.pid
        m.ticks = start_ticks(m.pid)
        m.started = now
        m.up_since = None
        self._record(spec, self._describe(m, state="starting"))
        log.info("starting spark master of %s on %s (UI %s), pid %d", spec.name, m.url, m.ui, m.pid)

    def _describe(self, m: _Master, *, state: str = "up") -> dict[str, Any]:
        return {"adopted": False, "url": m.url, "ui": m.ui, "host": m.host, "port": m.port,
                "ui_port": m.ui_port, "pid": m.pid, "start_ticks": m.ticks, "state": state}

    def _record(self, spec: DomainSpec, data: dict[str, Any]) -> None:
        sp = spark_spec(spec)
        full = {**data, "domain": spec.name, "submit_conf": submit_conf(sp),
                "worker_memory": sp.worker_memory, "worker_cores": sp.worker_cores, "max": spec.max}
        if read_master(spec.name) != full:
            _write_master(spec.name, full)

    # -- stop -------------------------------------------------------------------------------
    def _stop(self, domain: str, m: _Master) -> None:
        if m.alive():
            terminate(m.pid, m.ticks if m.proc is None else start_ticks(m.pid))
        if m.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                m.proc.wait(timeout=5)
        m.proc = None
        m.pid = 0
        self._masters.pop(domain, None)

    def stop(self, spec: DomainSpec) -> None:
        """Stop the domain's master if this pool started it; forget it either way."""
        m = self._masters.get(spec.name) or self._adopt_recorded(spec, time.time())
        if m is not None:
            self._stop(spec.name, m)
        master_file(spec.name).unlink(missing_ok=True)

    def close(self) -> None:
        """Forget the processes without stopping them (the workers keep their master)."""
        self._masters.clear()

    def stop_all(self) -> list[str]:
        """`pool down`: stop every master this pool started; what was stopped."""
        return [f"spark master of {domain}" for domain in stop_masters()]
