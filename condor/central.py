"""The HTCondor central manager of a condor-startd domain (collector, negotiator, schedd), started
and kept up by the manager like a Spark master, or adopted from the spec's ``condor.collector``.

Its pool password is made at its first start (random, in a file only the daemons' user reads) and
handed to the domain's startds through the attribute bag, never shown. An adopted pool's password
is read from ``{state}/condor/<domain>/pool_password``, put there by the operator: a spec never
names a file on this machine. Imports ``pool.core``, ``pool.state`` and the rest of ``condor``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from condor.config import LOCAL_SUBDIRS, central_config
from condor.install import CondorNotInstalled, daemon_command, own, require
from condor.spec import CondorSpec, condor_spec
from pool.core.model import DomainSpec
from pool.core.secrets import remember
from pool.state.procs import Supervised, children, start_ticks, terminate
from pool.state.redisserver import free_port, state_dir, write_private

log = logging.getLogger("elastic_pool.condor")

#: Seconds a starting central manager may take to show its schedd in the collector.
START_TIMEOUT = 60.0


def central_dir(domain: str) -> Path:
    return state_dir() / "condor" / domain


def read_central(domain: str) -> dict[str, Any] | None:
    """What the manager recorded of the domain's central manager (collector, schedd, pid)."""
    try:
        data = json.loads((central_dir(domain) / "central.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_central(domain: str, data: Mapping[str, Any]) -> None:
    path = central_dir(domain) / "central.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(data), indent=1, sort_keys=True))
    tmp.replace(path)


def inside_dir(domain: str) -> str:
    """The central manager's LOCAL_DIR inside the chroot: one per state directory and domain."""
    tag = hashlib.sha256(str(state_dir()).encode()).hexdigest()[:10]
    return f"/var/lib/elastic-pool/central/{tag}-{domain}"


def collector_up(collector: str, *, timeout: float = 2.0) -> bool:
    """The collector answers and lists a schedd (the pool can take jobs)."""
    import htcondor2

    try:
        return bool(htcondor2.Collector(collector).query(htcondor2.AdTypes.Schedd, projection=["Name"]))
    except Exception:  # noqa: BLE001  (any failure is "not up yet")
        return False


@dataclass(kw_only=True)
class _Central(Supervised):
    host: str
    port: int

    @property
    def collector(self) -> str:
        return f"{self.host}:{self.port}"


class CondorCentralService:
    """A :class:`pool.workloads.base.DomainService` for condor-startd domains.

    ``ensure`` never blocks: it returns no context until the collector lists the schedd, so the
    domain's sensor says "no collector yet" and the domain holds its size. A central manager that
    dies is restarted on the same port after a backoff doubling up to a minute; the schedd's job
    queue survives in its spool.
    """

    def __init__(self) -> None:
        self._centrals: dict[str, _Central] = {}

    def applies(self, spec: DomainSpec) -> bool:
        return isinstance(spec.block, CondorSpec)

    def ensure(self, spec: DomainSpec, now: float) -> Mapping[str, str]:
        cs = condor_spec(spec)
        if cs.collector:
            password = self._adopted_password(spec)
            data = {**self._facts(spec), "collector": cs.collector, "adopted": True, "state": "up"}
            if read_central(spec.name) != data:
                _write_central(spec.name, data)
            return {**self._context(spec), "collector": cs.collector, "pool_password": password}
        c = self._centrals.get(spec.name) or self._adopt_recorded(spec, now)
        if c is not None and (c.host != cs.host or (cs.port or c.port) != c.port):
            self._stop(spec.name, c)  # the spec moved it
            c = None
        if c is not None and c.alive():
            if c.up_since is None:
                if not collector_up(c.collector, timeout=1.0):
                    if now - c.started > START_TIMEOUT:
                        self._stop(spec.name, c)
                        self._centrals[spec.name] = c
                        self._failed(spec, c, now, f"did not list its schedd within {START_TIMEOUT:g}s")
                    return {}
                c.up_since = now
                c.failures = 0
                self._record(spec, c, "up")
                log.info("condor central manager of %s up at %s", spec.name, c.collector)
            return {**self._context(spec), "collector": c.collector, "pool_password": self._password(spec.name)}
        if c is not None and c.started:
            code = c.exit_code()
            c.proc, c.pid = None, 0
            self._failed(spec, c, now, f"exited{'' if code is None else f' with code {code}'}")
        if c is not None and now < c.next_start:
            return {}
        self._start(spec, c, now)
        return {}

    def _context(self, spec: DomainSpec) -> dict[str, str]:
        cs = condor_spec(spec)
        return {"condor_host": cs.host, "worker_cpus": str(cs.worker_cpus), "worker_memory": str(cs.worker_memory),
                "worker_disk": str(cs.worker_disk), "drain_timeout": f"{spec.timeouts.drain:g}"}

    def _failed(self, spec: DomainSpec, c: _Central, now: float, why: str) -> NoReturn:
        delay = c.back_off(now)
        raise RuntimeError(f"condor central manager of {spec.name} {why}; restart {c.failures} in {delay:g}s "
                           f"(logs: {central_dir(spec.name) / 'central.log'} and {self._log_dir(spec.name)})")

    def _log_dir(self, domain: str) -> Path:
        try:
            return require() / inside_dir(domain).lstrip("/") / "log"
        except CondorNotInstalled:
            return Path(inside_dir(domain)) / "log"

    def _adopt_recorded(self, spec: DomainSpec, now: float) -> _Central | None:
        """A central manager started by an earlier manager process that still runs."""
        data = read_central(spec.name)
        if not data or not data.get("pid"):
            return None
        c = _Central(host=str(data["host"]), port=int(data["port"]), pid=int(data["pid"]),
                     ticks=data.get("start_ticks"), started=now)
        if not c.alive():
            return None
        self._centrals[spec.name] = c
        return c

    def _start(self, spec: DomainSpec, c: _Central | None, now: float) -> None:
        cs = condor_spec(spec)
        if c is None:
            recorded = read_central(spec.name) or {}
            same = recorded.get("host") == cs.host and recorded.get("port")
            c = _Central(host=cs.host, port=cs.port or (int(recorded["port"]) if same else free_port(cs.host)))
            self._centrals[spec.name] = c
        try:
            root = require()
            config = self._prepare(spec, root, c)
            directory = central_dir(spec.name)
            with open(directory / "central.log", "ab") as out:
                c.proc = subprocess.Popen(daemon_command(root, config), stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True, cwd=str(directory))
        except (OSError, CondorNotInstalled) as exc:
            self._failed(spec, c, now, f"could not start: {exc}")
        assert c.proc is not None
        c.pid, c.ticks, c.started, c.up_since = c.proc.pid, start_ticks(c.proc.pid), now, None
        self._record(spec, c, "starting")
        log.info("starting condor central manager of %s on %s, pid %d", spec.name, c.collector, c.pid)

    def _prepare(self, spec: DomainSpec, root: Path, c: _Central) -> str:
        """The central manager's directories, pool password and configuration (path inside the chroot)."""
        cs = condor_spec(spec)
        inside = inside_dir(spec.name)
        local = root / inside.lstrip("/")
        for sub in LOCAL_SUBDIRS:
            (local / sub).mkdir(parents=True, exist_ok=True)
        key = local / "passwords.d" / "POOL"
        if not key.exists():
            write_private(key, secrets.token_urlsafe(32))
        (local / "passwords.d").chmod(0o700)
        config = local / "condor_config"
        config.write_text(central_config(domain=spec.name, local_dir=inside, host=cs.host, collector=c.collector,
                                         schedd=f"{spec.name}@elastic-pool", job_lease=cs.job_lease))
        own(local, root)
        central_dir(spec.name).mkdir(parents=True, exist_ok=True)
        return f"{inside}/condor_config"

    def _password(self, domain: str) -> str:
        key = require() / inside_dir(domain).lstrip("/") / "passwords.d" / "POOL"
        value = key.read_text().strip()
        remember(value)
        return value

    def _adopted_password(self, spec: DomainSpec) -> str:
        path = central_dir(spec.name) / "pool_password"
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            value = path.read_text().strip()
        except OSError:
            raise RuntimeError(f"domain {spec.name} joins the pool at {condor_spec(spec).collector}: put that pool's "
                               f"password in {path} (mode 0600) for its startds") from None
        if path.stat().st_mode & 0o077:
            raise RuntimeError(f"{path} is readable by others: chmod 600 it")
        remember(value)
        return value

    def _facts(self, spec: DomainSpec) -> dict[str, Any]:
        """What `pool condor status` needs besides the collector: the worker's size, which jobs count."""
        cs = condor_spec(spec)
        return {"domain": spec.name, "worker_cpus": cs.worker_cpus, "worker_memory": cs.worker_memory,
                "worker_disk": cs.worker_disk, "schedds": list(cs.schedds), "constraint": cs.constraint,
                "max": spec.max}

    def _record(self, spec: DomainSpec, c: _Central, state: str) -> None:
        _write_central(spec.name, {
            **self._facts(spec), "collector": c.collector, "host": c.host, "port": c.port, "pid": c.pid,
            "start_ticks": c.ticks, "state": state, "schedd": f"{spec.name}@elastic-pool",
            "local_dir": inside_dir(spec.name)})

    # -- stop -------------------------------------------------------------------------------
    def _stop(self, domain: str, c: _Central) -> None:
        if c.alive():
            ticks = c.ticks if c.proc is None else start_ticks(c.pid)
            master = children(c.pid)  # condor_master: SIGTERM lets it stop its daemons cleanly
            terminate(c.pid, ticks, timeout=15.0, first=master[0] if master else None)
        if c.proc is not None:
            try:
                c.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        c.proc, c.pid = None, 0
        self._centrals.pop(domain, None)

    def stop(self, spec: DomainSpec) -> None:
        """Stop the domain's central manager if this pool started it, and remove its directories."""
        c = self._centrals.get(spec.name) or self._adopt_recorded(spec, time.time())
        if c is not None:
            self._stop(spec.name, c)
        (central_dir(spec.name) / "central.json").unlink(missing_ok=True)
        if not condor_spec(spec).collector:
            try:
                shutil.rmtree(require() / inside_dir(spec.name).lstrip("/"), ignore_errors=True)
            except CondorNotInstalled:
                pass

    def close(self) -> None:
        """Forget the processes without stopping them (the startds keep their pool)."""
        self._centrals.clear()

    def stop_all(self) -> list[str]:
        """`pool down`: stop every central manager this pool started; what was stopped."""
        return [f"condor central manager of {domain}" for domain in stop_centrals()]


def stop_centrals() -> list[str]:
    """Stop every central manager this pool started (by recorded pid)."""
    stopped = []
    base = state_dir() / "condor"
    for path in sorted(base.glob("*/central.json")) if base.is_dir() else []:
        data = read_central(path.parent.name) or {}
        if data.get("pid"):
            pid = int(data["pid"])
            master = children(pid)
            if terminate(pid, data.get("start_ticks"), timeout=15.0, first=master[0] if master else None):
                stopped.append(path.parent.name)
        path.unlink(missing_ok=True)
    return stopped

