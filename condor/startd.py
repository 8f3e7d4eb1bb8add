"""The condor-startd workload on one worker: a ``condor_master`` running only a startd that joins
the domain's pool with one partitionable slot of the worker's size, and leaves by a graceful drain.

The pool password arrives in the agent's environment (from the user-data), is written to a file
only the daemons' user reads, and is not passed on: the daemons and the jobs get a fresh
environment. Imports ``pool.state`` and the rest of ``condor``; htcondor2 when probing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condor.config import LOCAL_SUBDIRS, startd_config
from condor.install import daemon_command, own, require
from pool.state.procs import children
from pool.state.redisserver import write_private

Beat = Callable[..., None]
PASSWORD_ENV = "POOL_CONDOR_PASSWORD"


def slots_of(collector: str, constraint: str, *, timeout: float = 1.0) -> list[Any]:
    """Startd slot ads matching ``constraint`` (state, activity, size and where they are)."""
    import htcondor2

    return list(htcondor2.Collector(collector).query(
        htcondor2.AdTypes.Startd, constraint=constraint,
        projection=["Name", "MyAddress", "Machine", "State", "Activity", "PartitionableSlot", "DynamicSlot",
                    "Cpus", "Memory", "Disk", "PoolNode", "PoolDomain", "JobId", "RemoteOwner"]))


@dataclass
class CondorStartd:
    """One startd of domain ``domain`` named after node ``node`` (its ``PoolNode`` attribute).

    ``probe`` gives ``ready`` once the collector lists the node's partitionable slot, and then asks
    nothing more: busy and idle come from the domain's sensor, which reads every startd's slots in
    one collector query per tick. ``drain`` asks the startd for a graceful drain (no new jobs;
    running ones finish within the retirement time, the domain's drain deadline) and stops the
    master once no slot is claimed.
    """

    domain: str
    node: str
    collector: str
    password: str
    root: Path
    host: str = "127.0.0.1"
    cpus: int = 1
    memory: int = 1024
    disk: int = 10 * 1024 * 1024
    drain_timeout: float = 600.0
    interval: float = 1.0
    ready: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CondorStartd:
        """Built from the contextualization's ``POOL_CONDOR_*`` variables."""
        missing = [k for k in ("POOL_CONDOR_COLLECTOR", PASSWORD_ENV) if not env.get(k)]
        if missing:
            raise ValueError(f"condor-startd: {', '.join(missing)} not set (the domain's pool is unknown)")
        return cls(domain=env["POOL_DOMAIN"], node=env["POOL_NODE_ID"], collector=env["POOL_CONDOR_COLLECTOR"],
                   password=env[PASSWORD_ENV], root=require(), host=env.get("POOL_CONDOR_HOST") or "127.0.0.1",
                   cpus=int(env.get("POOL_CONDOR_CPUS") or 1), memory=int(env.get("POOL_CONDOR_MEMORY") or 1024),
                   disk=int(env.get("POOL_CONDOR_DISK") or 10 * 1024 * 1024),
                   drain_timeout=float(env.get("POOL_CONDOR_DRAIN_TIMEOUT") or 600),
                   interval=float(env.get("POOL_HEARTBEAT_INTERVAL") or 1))

    @property
    def inside(self) -> str:
        return f"/var/lib/elastic-pool/startd/{self.node}"

    @property
    def local(self) -> Path:
        return self.root / self.inside.lstrip("/")

    # -- the process ------------------------------------------------------------------------
    def prepare(self) -> str:
        """Directories, the pool password (0600, the daemons' user's) and the config; its path inside."""
        shutil.rmtree(self.local, ignore_errors=True)
        for sub in LOCAL_SUBDIRS:
            (self.local / sub).mkdir(parents=True, exist_ok=True)
        (self.local / "passwords.d").chmod(0o700)
        write_private(self.local / "passwords.d" / "POOL", self.password)
        (self.local / "condor_config").write_text(startd_config(
            domain=self.domain, node=self.node, local_dir=self.inside, host=self.host, collector=self.collector,
            cpus=self.cpus, memory=self.memory, disk=self.disk, retirement=self.drain_timeout))
        own(self.local, self.root)
        return f"{self.inside}/condor_config"

    def command(self) -> list[str]:
        return daemon_command(self.root, self.prepare())

    def env(self) -> dict[str, str]:
        """What ``unshare`` and ``chroot`` need; nothing of the agent's (its store URL, the password)."""
        return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C.UTF-8"}

    def cleanup(self) -> None:
        shutil.rmtree(self.local, ignore_errors=True)

    # -- probes -----------------------------------------------------------------------------
    def slots(self) -> list[Any] | None:
        """This node's slot ads, or None when the collector does not answer."""
        try:
            return slots_of(self.collector, f'PoolNode == "{self.node}"', timeout=min(1.0, self.interval))
        except Exception:  # noqa: BLE001  (the collector may be restarting: unknown this beat)
            return None

    def probe(self) -> dict[str, object]:
        """Heartbeat field ``ready``: the collector lists this node's slot (asked until it does)."""
        if not self.ready:
            ads = self.slots()
            self.ready = ads is not None and any(ad.get("PartitionableSlot") for ad in ads)
        return {"ready": self.ready, "condor_slot": f"slot1@{self.node}"} if self.ready else {"ready": False}

    # -- drain --------------------------------------------------------------------------------
    def drain(self, proc: subprocess.Popen[bytes], beat: Beat) -> None:
        """Graceful drain (jobs finish, none start), then a clean stop of the master."""
        if proc.poll() is not None:
            return
        start = time.monotonic()
        why = "nothing was running"
        if self.ready:
            asked = self._ask_drain()
            beat(draining=True, condor_drain=asked)
            while time.monotonic() - start < self.drain_timeout and proc.poll() is None:
                ads = self.slots()
                claimed = None if ads is None else sum(1 for ad in ads if ad.get("State") == "Claimed")
                if claimed == 0:
                    why = "no job running"
                    break
                if claimed is not None:
                    beat(draining=True, active=claimed)
                time.sleep(self.interval)
            else:
                why = "drain deadline" if proc.poll() is None else "the daemons exited"
        print(f"condor-startd {self.node}: drained ({why}) after {time.monotonic() - start:.1f}s; stopping",
              file=sys.stderr, flush=True)
        beat(draining=True, active=0, condor_drained=why)
        self.stop(proc)

    def _ask_drain(self) -> str:
        """Ask this node's startd for a graceful drain, authenticated with the pool password."""
        try:
            import htcondor2

            ads = self.slots() or []
            located = [ad for ad in ads if ad.get("PartitionableSlot")]
            if not located:
                return "no slot ad"
            htcondor2.param["SEC_PASSWORD_DIRECTORY"] = str(self.local / "passwords.d")
            htcondor2.param["SEC_CLIENT_AUTHENTICATION_METHODS"] = "PASSWORD"
            htcondor2.param["SEC_USE_FAMILY_SESSION"] = "False"
            htcondor2.Startd(located[0]).drainJobs(htcondor2.DrainType.Graceful, start_expr="false",
                                                    reason="elastic-pool scale-in")
            return "graceful"
        except Exception as exc:  # noqa: BLE001  (stopping the master evicts the jobs: they run again)
            print(f"condor-startd {self.node}: drain request failed: {exc}", file=sys.stderr, flush=True)
            return f"failed: {type(exc).__name__}"

    def stop(self, proc: subprocess.Popen[bytes], *, timeout: float = 20.0) -> None:
        """SIGTERM to the condor_master (it removes its ads and stops the startd), then the namespace."""
        with contextlib.suppress(ProcessLookupError):
            for pid in children(proc.pid):
                os.kill(pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
