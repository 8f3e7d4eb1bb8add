"""The `local` site: a libcloud NodeDriver whose nodes are process groups on this machine.

Every machine lives in a directory of its own under the site's directory (private to its owner:
0700, user-data and console 0600); a machine id is only ever a name inside that directory, never a
path, so nothing read back from the store can make the site signal or remove anything else. A
worker gets an explicit environment (a fixed base plus what the operator allows), never the
manager's. Imports libcloud, ``pool.sites.config``, ``pool.core.model``, ``pool.state.procs`` and
``pool.state.redisserver`` only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from libcloud.compute.base import Node, NodeDriver, NodeImage, NodeLocation, NodeSize
from libcloud.compute.types import NodeState

from pool.core.model import ID_RE
from pool.sites.config import OperatorConfig
from pool.state.procs import start_ticks as _start_ticks
from pool.state.redisserver import private_dir, write_private

PROVIDER = "elastic_local"


def _live_groups() -> set[int]:
    """Process group ids that have at least one process that is not a zombie."""
    groups: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields and fields[0] != "Z":
            groups.add(int(fields[2]))
    return groups


TOKEN_ENV = "ELASTIC_POOL_CLIENT_TOKEN"


def _process_with_token(token: str) -> int | None:
    """The live process-group leader spawned for launch ``token``, if one exists."""
    needle = f"{TOKEN_ENV}={token}".encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if needle not in fh.read().split(b"\0"):
                    continue
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pid:  # alive and its own group's leader
            return pid
    return None


class LocalNodeDriver(NodeDriver):
    """Each node runs its contextualization (user-data) with bash as a new process group.

    ``create_node`` is idempotent under ``ex_client_token``; ``destroy_node`` sends SIGTERM to the
    group leader (the agent, which warm-shuts its workload down) and SIGKILL to the whole group
    after ``ex_grace`` seconds; ``ex_preempt`` kills the group at once, like a spot loss.
    """

    type = PROVIDER
    name = "elastic-pool local processes"
    website = "https://github.com/elastic-pool/elastic-pool"
    features: dict[str, list[str]] = {"create_node": []}

    def __init__(self, key: str = "local", secret: str | None = None, *, ex_state_dir: str | None = None,
                 ex_worker_env: tuple[str, ...] = (), **kwargs: Any) -> None:
        """``ex_worker_env``: patterns of the manager's environment variables that workers receive
        besides the fixed base (the operator's ``worker_env``)."""
        super().__init__(key=key, secret=secret)
        if ex_state_dir is None:
            from pool.state.redisserver import state_dir

            ex_state_dir = str(state_dir() / "sites" / "local")
        self.root = private_dir(Path(ex_state_dir))
        self.env_config = OperatorConfig(worker_env=tuple(ex_worker_env))
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    # -- catalogue ------------------------------------------------------------------------
    def list_sizes(self, location: NodeLocation | None = None) -> list[NodeSize]:
        return [NodeSize("process", "one process group", ram=0, disk=0, bandwidth=0, price=0.0, driver=self)]

    def list_images(self, location: NodeLocation | None = None, ex_owner: str | None = None) -> list[NodeImage]:
        return [NodeImage("bash", "bash user-data", driver=self)]

    def list_locations(self) -> list[NodeLocation]:
        return [NodeLocation("localhost", "this machine", "local", driver=self)]

    # -- records --------------------------------------------------------------------------
    def _dir(self, node_id: str) -> Path:
        """The machine's directory: a plain name inside the site's directory, or ``ValueError``."""
        if not isinstance(node_id, str) or not ID_RE.fullmatch(node_id) or node_id in (".", ".."):
            raise ValueError(f"{str(node_id)[:80]!r} is not a machine id of the local site")
        return self.root / node_id

    def _load(self, node_id: str) -> dict[str, Any] | None:
        try:
            rec = json.loads((self._dir(node_id) / "node.json").read_text())
        except (OSError, ValueError):
            return None
        ok = (isinstance(rec, dict) and rec.get("id") == node_id and isinstance(rec.get("pid"), int)
              and rec["pid"] > 1)
        return rec if ok else None

    def _alive(self, rec: dict[str, Any], groups: set[int] | None = None) -> bool:
        child = self._children.get(rec["id"])
        if child is not None and child.poll() is not None:
            self._children.pop(rec["id"], None)
        pid = int(rec["pid"])
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if this process started it
        if _start_ticks(pid) == rec.get("start_ticks"):
            return True
        # the leader is gone: is anything of its group left?
        return pid in (groups if groups is not None else _live_groups())

    def _node(self, rec: dict[str, Any], groups: set[int] | None = None) -> Node:
        alive = self._alive(rec, groups)
        return Node(
            id=rec["id"],
            name=rec["name"],
            state=NodeState.RUNNING if alive else NodeState.TERMINATED,
            public_ips=[],
            private_ips=["127.0.0.1"],
            driver=self,
            extra={"pid": rec["pid"], "tags": rec.get("tags", {}), "client_token": rec.get("token"),
                   "created": rec.get("created"), "console": str(self._dir(rec["id"]) / "console.log")},
        )

    # -- node API -------------------------------------------------------------------------
    def create_node(self, name: str, size: NodeSize | None = None,  # type: ignore[override]
                    image: NodeImage | None = None,
                    location: NodeLocation | None = None, ex_userdata: str = "",
                    ex_client_token: str | None = None, ex_tags: dict[str, str] | None = None,
                    ex_env: dict[str, str] | None = None, **kwargs: Any) -> Node:
        with self._lock:
            if ex_client_token:
                for rec in self._records():
                    if rec.get("token") == ex_client_token:
                        return self._node(rec)  # a retry of the same launch: same machine
                self._claim(ex_client_token)
                orphan = _process_with_token(ex_client_token)
                if orphan is not None:  # spawned by a launcher that died before recording it
                    return self._record(name, orphan, ex_client_token, ex_tags)
            node_id = name
            directory = self._dir(node_id)
            if (directory / "node.json").exists():
                raise ValueError(f"local node {node_id!r} exists already")
            private_dir(directory)
            script = directory / "user-data"
            write_private(script, ex_userdata)  # it holds the worker's secrets
            env = self.env_config.worker_environment(os.environ)
            env.update(ex_env or {})
            if ex_client_token:
                env[TOKEN_ENV] = ex_client_token  # the machine carries its launch id, like a cloud tag
            fd = os.open(directory / "console.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "ab") as console:
                proc = subprocess.Popen(
                    ["bash", str(script)],
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=str(directory),
                    env=env,
                )
            self._children[node_id] = proc
            return self._record(node_id, proc.pid, ex_client_token, ex_tags)

    def _record(self, node_id: str, pid: int, token: str | None, tags: dict[str, str] | None) -> Node:
        directory = self._dir(node_id)
        directory.mkdir(parents=True, exist_ok=True)
        rec = {"id": node_id, "name": node_id, "pid": pid, "start_ticks": _start_ticks(pid),
               "token": token, "tags": dict(tags or {}), "created": time.time()}
        write_private(directory / "node.json", json.dumps(rec))
        return self._node(rec)

    def _claim(self, token: str) -> None:
        """Take the launch id for this process before spawning anything (O_EXCL claim file).

        A launch id claimed by another live process (a manager paused mid-launch, say) raises a
        retryable ``BlockingIOError``: the caller tries again later and then finds the machine.
        A claim left by a dead process is taken over.
        """
        claims = private_dir(self.root / ".claims")
        if not ID_RE.fullmatch(token):
            raise ValueError(f"{token[:80]!r} is not a launch id")
        path = claims / token
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            try:
                owner = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner and owner != os.getpid() and _start_ticks(owner) is not None:
                raise BlockingIOError(f"launch {token} is in progress in process {owner}") from None
            path.write_text(str(os.getpid()))
            return
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))

    def _records(self) -> list[dict[str, Any]]:
        out = []
        for path in self.root.glob("*/node.json"):
            if not ID_RE.fullmatch(path.parent.name):
                continue
            rec = self._load(path.parent.name)
            if rec is not None:
                out.append(rec)
        return out

    def list_nodes(self, ex_include_gone: bool = False) -> list[Node]:
        """Nodes whose process group lives (and, with ``ex_include_gone``, the ones that ended)."""
        groups = _live_groups()
        nodes = [self._node(rec, groups) for rec in self._records()]
        return [n for n in nodes if ex_include_gone or n.state == NodeState.RUNNING]

    def ex_console_path(self, node_id: str) -> Path:
        """Where the machine's console (its boot script's and workload's stdout and stderr) is
        written: ``{site directory}/{machine id}/console.log``; ``ValueError`` for a bad id."""
        return self._dir(node_id) / "console.log"

    def ex_describe(self, node_ids: list[str]) -> dict[str, dict[str, Any]]:
        """For people (``pool show``, ``pool logs``): each machine's process id (while it runs),
        whether it runs, and its console log, by machine id. Machines without a directory here
        (forgotten, never launched, not an id of this site) are left out. Signals nothing."""
        out: dict[str, dict[str, Any]] = {}
        groups: set[int] | None = None
        for node_id in node_ids:
            try:
                directory = self._dir(node_id)
            except ValueError:
                continue
            if not directory.is_dir():
                continue
            rec = self._load(node_id)
            alive = False
            if rec is not None:
                if _start_ticks(int(rec["pid"])) == rec.get("start_ticks"):
                    alive = True
                else:  # the leader is gone: is anything of its group left? (one /proc scan for all)
                    groups = _live_groups() if groups is None else groups
                    alive = int(rec["pid"]) in groups
            console = directory / "console.log"
            out[node_id] = {"pid": int(rec["pid"]) if rec is not None and alive else None, "alive": alive,
                            "console": str(console) if console.exists() else None,
                            "created": rec.get("created") if rec is not None else None}
        return out

    def _signal_group(self, node: Node, sig: int, *, leader_only: bool = False) -> bool:
        rec = self._load(str(node.id))
        if rec is None or not self._alive(rec):
            return False
        pid = int(rec["pid"])
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if leader_only and _start_ticks(pid) == rec.get("start_ticks"):
                os.kill(pid, sig)
            else:
                os.killpg(pid, sig)
        return True

    def destroy_node(self, node: Node, ex_grace: float = 10.0) -> bool:
        """SIGTERM to the leader now, SIGKILL to the group after ``ex_grace`` s; idempotent."""
        if ex_grace <= 0:
            self._signal_group(node, signal.SIGKILL)
        elif self._signal_group(node, signal.SIGTERM, leader_only=True):
            timer = threading.Timer(ex_grace, self._signal_group, args=(node, signal.SIGKILL))
            timer.daemon = True
            timer.start()
        return True

    def ex_preempt(self, node: Node) -> bool:
        """Kill the node's whole process group at once with SIGKILL (a spot loss)."""
        return self._signal_group(node, signal.SIGKILL)

    def ex_preempt_notice(self, node: Node) -> bool:
        """Tell the node it will be reclaimed soon (SIGUSR1 to its agent)."""
        return self._signal_group(node, signal.SIGUSR1, leader_only=True)

    def ex_forget(self, node_id: str) -> None:
        """Drop the record of a node that has ended (only ever a directory of this site)."""
        try:
            directory = self._dir(node_id)
        except ValueError:
            return
        rec = self._load(node_id)
        if rec is not None and self._alive(rec):
            return
        with contextlib.suppress(OSError):
            for f in directory.iterdir():
                f.unlink()
            directory.rmdir()
