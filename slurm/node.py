"""The slurm-node workload on one worker: munged with the cluster's key, and ``slurmd -D -N NAME``
under the name slurmctld powered up, in a pid namespace that dies with the agent.

The key arrives in the agent's environment (the user-data), is written to a 0400 file of the munge
user and not passed on. On the local site (``bridge_netns`` set) the node gets a network namespace
of its own joined to that namespace's bridge at the address slurm.conf gives it (slurmd listens on
every interface), and a fresh time namespace (slurmctld ignores a node whose uptime is older than
its resume request). Imports ``pool.state.procs``, ``slurm.daemons`` and the standard library.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pool.state.procs import children, in_pid_namespace
from slurm.daemons import boot_offset

Beat = Callable[..., None]
#: Lines of the cluster's slurm.conf the node replaces with paths of its own.
OWN_PATHS = ("AuthInfo", "SlurmdSpoolDir", "SlurmdPidFile", "SlurmdLogFile")
#: Starts munged as the munge user, waits for its socket, then execs the rest (slurmd).
LAUNCH = """\
import os, subprocess, sys, time
uid, gid, socket, argv, run = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:12], sys.argv[12:]
subprocess.Popen(argv, user=uid, group=gid, extra_groups=[], stdin=subprocess.DEVNULL)
deadline = time.monotonic() + 20
while not os.path.exists(socket) and time.monotonic() < deadline:
    time.sleep(0.05)
os.execvp(run[0], run)
"""


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=30)


@dataclass
class SlurmNode:
    """slurmd for node ``name`` of the cluster whose slurm.conf is ``conf`` (text)."""

    name: str
    conf: str
    key: bytes
    bridge_netns: str = ""
    interval: float = 1.0
    work: Path = field(default_factory=lambda: Path.cwd() / "slurm")
    munge_dir: Path | None = None
    ready: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SlurmNode:
        missing = [k for k in ("POOL_SLURM_NODENAME", "POOL_SLURM_MUNGE_KEY", "POOL_SLURM_CONF") if not env.get(k)]
        if missing:
            raise ValueError(f"slurm-node: {', '.join(missing)} not set")
        return cls(name=env["POOL_SLURM_NODENAME"], conf=base64.b64decode(env["POOL_SLURM_CONF"]).decode(),
                   key=base64.b64decode(env["POOL_SLURM_MUNGE_KEY"]), bridge_netns=env.get("POOL_SLURM_BRIDGE_NETNS", ""),
                   interval=float(env.get("POOL_HEARTBEAT_INTERVAL") or 1))

    @property
    def netns(self) -> str:
        """The node's network namespace: one per node name and cluster (bridge), so two clusters on one
        machine never share one, and a worker of a name that was killed leaves one to be replaced."""
        return f"epn-{self.name}-{self.bridge_netns}" if self.bridge_netns else ""

    @property
    def conf_path(self) -> Path:
        return self.work / "slurm.conf"

    @property
    def socket(self) -> Path:
        assert self.munge_dir is not None
        return self.munge_dir / "munge.socket"

    def address(self) -> str | None:
        """This node's NodeAddr in slurm.conf, if the cluster fixes one."""
        for line in self.conf.splitlines():
            words = dict(w.split("=", 1) for w in line.split() if "=" in w)
            if words.get("NodeName") == self.name and "NodeAddr" in words:
                return words["NodeAddr"]
        return None

    # -- the process ------------------------------------------------------------------------
    def prepare(self) -> None:
        """The node's files: its slurm.conf (own socket and spool), the munge key (0400, munge's)."""
        munge = pwd.getpwnam("munge")
        self.work.mkdir(parents=True, exist_ok=True)
        # short paths: slurmstepd makes unix sockets in the spool (108 bytes at most), and munged
        # must reach its directory (the agent's is private to root)
        self.munge_dir = Path(tempfile.mkdtemp(prefix=f"ep-{self.name}-{self.bridge_netns}-"))
        spool = self.munge_dir / "spool"
        spool.mkdir()
        spool.chmod(0o700)
        self.munge_dir.chmod(0o755)
        os.chown(self.munge_dir, munge.pw_uid, munge.pw_gid)
        key = self.munge_dir / "munge.key"
        key.write_bytes(self.key)
        os.chown(key, munge.pw_uid, munge.pw_gid)
        key.chmod(0o400)
        own = {"AuthInfo": f"socket={self.socket}", "SlurmdSpoolDir": str(spool),
               "SlurmdPidFile": str(self.work / "slurmd.pid"), "SlurmdLogFile": str(self.work / "slurmd.log")}
        lines = [line for line in self.conf.splitlines()
                 if not re.match(rf"^\s*({'|'.join(OWN_PATHS)})\s*=", line, re.IGNORECASE)]
        self.conf_path.write_text("\n".join([*lines, *(f"{k}={v}" for k, v in own.items())]) + "\n")

    def _network(self) -> list[str]:
        """The node's own network namespace on the bridge (local site); the prefix that enters it."""
        address = self.address()
        if not self.bridge_netns or address is None:
            return []
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("netns", "delete", self.netns)  # left by a worker of this name that was killed
        veth = "v" + hashlib.sha256(self.name.encode()).hexdigest()[:12]
        _ip("netns", "add", self.netns)
        _ip("-n", self.netns, "link", "set", "lo", "up")
        _ip("-n", self.bridge_netns, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", self.netns)
        _ip("-n", self.bridge_netns, "link", "set", veth, "master", "br0", "up")
        _ip("-n", self.netns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", self.netns, "link", "set", "eth0", "up")
        return ["nsenter", f"--net=/run/netns/{self.netns}", "--"]

    def command(self) -> list[str]:
        self.prepare()
        munge = pwd.getpwnam("munge")
        assert self.munge_dir is not None
        m = self.munge_dir
        munged = ["munged", "--foreground", f"--socket={self.socket}", f"--key-file={m / 'munge.key'}",
                  f"--pid-file={m / 'munged.pid'}", f"--log-file={m / 'munged.log'}", f"--seed-file={m / 'munged.seed'}",
                  "--num-threads=2"]
        # slurmctld ignores a node whose boot (now - uptime, in whole seconds) is not after its resume
        # request: a fresh time namespace whose boot is now, past the second the request came in
        slurmd = [*self._network(), "unshare", "--time", f"--boottime={boot_offset(time.time())}", "--",
                  "slurmd", "-D", "-N", self.name, "-f", str(self.conf_path)]
        return in_pid_namespace([sys.executable, "-I", "-S", "-c", LAUNCH, str(munge.pw_uid), str(munge.pw_gid),
                                 str(self.socket), *munged, *slurmd])

    def env(self) -> dict[str, str]:
        """slurmd's environment: nothing of the agent's (its store URL, the key)."""
        return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C.UTF-8",
                "SLURM_CONF": str(self.conf_path)}

    def cleanup(self) -> None:
        if self.netns:
            with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                _ip("netns", "delete", self.netns)
        if self.munge_dir is not None:
            shutil.rmtree(self.munge_dir, ignore_errors=True)

    # -- probes -----------------------------------------------------------------------------
    def scontrol(self, *argv: str) -> str | None:
        """scontrol from the node's network, as the node's munge identity; None if it fails."""
        prefix = ["nsenter", f"--net=/run/netns/{self.netns}", "--"] if self.netns else []
        try:
            done = subprocess.run([*prefix, "scontrol", *argv], capture_output=True, text=True, env=self.env(),
                                  timeout=max(2.0, self.interval * 2))
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    def probe(self) -> dict[str, object]:
        """``ready``: slurmctld has this node up (not powering up, not down); ``active``: CPUs allocated."""
        out = self.scontrol("-o", "show", "node", self.name)
        if out is None:
            return {"ready": self.ready}
        fields = dict(w.split("=", 1) for w in out.split() if "=" in w)
        state = fields.get("State", "")
        self.ready = self.ready or not any(s in state for s in ("POWERING_UP", "POWERED_DOWN", "DOWN", "NOT_RESPONDING"))
        alloc = int(fields.get("CPUAlloc", "0") or 0)
        return {"ready": self.ready, "active": alloc, "slurm_state": state[:64]}

    def drain(self, proc: subprocess.Popen[bytes], beat: Beat) -> None:
        """slurmctld powers down only idle nodes: stop slurmd (SIGTERM through the namespace's init)."""
        with contextlib.suppress(ProcessLookupError):
            for pid in children(proc.pid) or [proc.pid]:  # the namespace's init passes it on to slurmd
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
