"""Test harness: a private RabbitMQ node (own name, ports, epmd, cookie and directories) per session.

The node comes from Debian's ``rabbitmq-server`` package and shares nothing with a RabbitMQ that
may already run on this machine on the default ports (5672, 15672, 25672, 4369): every port is
picked free on 127.0.0.1, the node has a name of its own, its own epmd, its own Erlang cookie
and its own data, log and config directories under one temporary directory.

Quirks met with Debian's package (3.10), and what this module does about each:

- ``/usr/sbin/rabbitmq-server`` is a wrapper that ``su``s to the ``rabbitmq`` user and sends the
  output to ``/var/log/rabbitmq``: the scripts under ``/usr/lib/rabbitmq/bin`` are run directly.
- ``rabbitmq-env`` sources ``/etc/rabbitmq/rabbitmq-env.conf`` (which may set ``NODENAME``,
  ``ERL_FLAGS``, ...): ``RABBITMQ_CONF_ENV_FILE`` points at an empty file of our own instead, and
  ``RABBITMQ_CONFIG_FILE`` / ``RABBITMQ_ADVANCED_CONFIG_FILE`` keep ``/etc/rabbitmq`` out too.
- The Erlang cookie lives in ``$HOME/.erlang.cookie``: ``HOME`` is a private directory, shared by
  the node and ``rabbitmqctl``, so neither root's cookie nor the system node's is read or written.
- epmd: started here in the foreground (``epmd -port P -address 127.0.0.1``) so its process id is
  known; the node finds it through ``ERL_EPMD_PORT`` and does not spawn a daemon of its own.
- ``rabbitmqctl`` listens for distribution on a fixed range (35672-35682) unless told otherwise:
  ``RABBITMQ_CTL_DIST_PORT_MIN/MAX=0`` lets the OS pick a port per call, so concurrent calls and
  other nodes' CLIs never collide.
- The management listener can fail with ``eaddrinuse`` when a free-picked port is taken between
  the pick and the node's bind (other test sessions run concurrently): the start is retried
  (bounded) with fresh ports.
- ``rabbitmq-server`` runs ``erl`` as a child and forwards SIGTERM to it; beam spawns helpers
  (``erl_child_setup``, ``inet_gethost``, a disk monitor shell). The script is started in a new
  session, so stopping signals that process group (its id is the script's process id), SIGTERM
  then SIGKILL after a bound.
- ``guest`` may log in only from loopback, which is all the tests need: no user is added.
- A fresh node takes 10-25 s to boot on the 2-core test machine (feature flags, plugins): the
  wait is bounded (90 s) with backoff, and watches the process, so a node that dies at boot fails
  at once with its log's last error.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
ROOT = Path(__file__).resolve().parent.parent
ENSURE_SCRIPT = ROOT / "scripts" / "ensure-rabbitmq.sh"
#: RabbitMQ's defaults: AMQP, management, distribution, epmd, and the CLI's distribution range.
DEFAULT_PORTS = frozenset({5672, 15672, 25672, 4369, *range(35672, 35683)})


class RabbitUnavailable(RuntimeError):
    """No private RabbitMQ node could be started."""


def free_port() -> int:
    """A free TCP port on 127.0.0.1, never one of RabbitMQ's defaults."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in DEFAULT_PORTS:
            return port


def server_script() -> Path | None:
    """The package's own ``rabbitmq-server`` script, or None when the package is not installed."""
    script = RABBIT_BIN / "rabbitmq-server"
    return script if script.exists() and shutil.which("epmd") else None


def ensure_installed(timeout: float = 600.0) -> str | None:
    """Install the package when missing (``scripts/ensure-rabbitmq.sh``); None, or why not."""
    if server_script() is not None:
        return None
    try:
        proc = subprocess.run(["bash", str(ENSURE_SCRIPT)], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not run {ENSURE_SCRIPT.name}: {exc}"
    if server_script() is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"rabbitmq-server is not installed and {ENSURE_SCRIPT.name} could not install it: {tail[0]}"
    return None


@dataclass
class RabbitNode:
    """One RabbitMQ node bound to 127.0.0.1 on ports of its own, with the management plugin."""

    directory: Path
    nodename: str
    amqp_port: int
    management_port: int
    dist_port: int
    epmd_port: int
    server: subprocess.Popen[bytes] = field(repr=False)
    epmd: subprocess.Popen[bytes] = field(repr=False)

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}//"

    @property
    def management_url(self) -> str:
        return f"http://guest:guest@127.0.0.1:{self.management_port}"

    @property
    def log_file(self) -> Path:
        return self.directory / "log" / f"{self.nodename}.log"

    def env(self) -> dict[str, str]:
        """The environment ``rabbitmq-server`` and ``rabbitmqctl`` need to find this node alone."""
        return node_env(self.directory, nodename=self.nodename, amqp_port=self.amqp_port,
                        dist_port=self.dist_port, epmd_port=self.epmd_port)

    def ctl_command(self) -> list[str]:
        """``rabbitmqctl`` aimed at this node (run it with :meth:`env`)."""
        return [str(RABBIT_BIN / "rabbitmqctl"), "-n", self.nodename]

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl`` against this node; its standard output, or an error naming the call."""
        proc = subprocess.run([*self.ctl_command(), *args], env=self.env(), capture_output=True,
                              text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RabbitUnavailable(f"rabbitmqctl {' '.join(args)} failed: {proc.stderr.strip()[-300:]}")
        return proc.stdout

    def management_get(self, path: str, timeout: float = 5.0) -> object:
        req = urllib.request.Request(f"http://127.0.0.1:{self.management_port}{path}")
        req.add_header("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")  # guest:guest
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.load(resp)

    def answers(self) -> bool:
        """True when both AMQP and the management API answer."""
        from kombu import Connection

        try:
            with Connection(self.amqp_url, connect_timeout=2) as conn:
                conn.connect()
            self.management_get("/api/overview", timeout=2)
            return True
        except Exception:  # noqa: BLE001 (not up yet, whatever the reason)
            return False

    @classmethod
    def start(cls, directory: Path, *, tries: int = 3, timeout: float = 90.0,
              statistics_interval_ms: int = 5000) -> RabbitNode:
        """Start epmd and the node, and wait (bounded, with backoff) until both listeners answer."""
        script = server_script()
        if script is None:
            raise RabbitUnavailable("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
        last = ""
        for attempt in range(tries):
            node_dir = directory / f"node{attempt}"
            try:
                return cls._start_once(node_dir, script=script, timeout=timeout,
                                       statistics_interval_ms=statistics_interval_ms)
            except RabbitUnavailable as exc:
                last = str(exc)
                time.sleep(0.5 * 2**attempt)
        raise RabbitUnavailable(f"no RabbitMQ node after {tries} tries: {last}")

    @classmethod
    def _start_once(cls, directory: Path, *, script: Path, timeout: float,
                    statistics_interval_ms: int) -> RabbitNode:
        for sub in ("home", "mnesia", "log"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        nodename = f"ep-test-{uuid.uuid4().hex[:8]}@localhost"
        ports: set[int] = set()
        while len(ports) < 4:
            ports.add(free_port())
        amqp_port, management_port, dist_port, epmd_port = sorted(ports)
        (directory / "rabbitmq-env.conf").write_text("")
        (directory / "advanced.config").write_text("[].\n")
        (directory / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (directory / "rabbitmq.conf").write_text(
            "\n".join([
                f"listeners.tcp.1 = 127.0.0.1:{amqp_port}",
                "management.tcp.ip = 127.0.0.1",
                f"management.tcp.port = {management_port}",
                f"collect_statistics_interval = {statistics_interval_ms}",
                "disk_free_limit.absolute = 50MB",
                "log.console = false",
                "log.file.level = info",
                "",
            ])
        )
        env = node_env(directory, nodename=nodename, amqp_port=amqp_port, dist_port=dist_port,
                       epmd_port=epmd_port)
        epmd = subprocess.Popen(
            ["epmd", "-port", str(epmd_port), "-address", "127.0.0.1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        with open(directory / "server.out", "wb") as out:
            server = subprocess.Popen(
                [str(script)], env=env, cwd=directory, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        node = cls(directory=directory, nodename=nodename, amqp_port=amqp_port,
                   management_port=management_port, dist_port=dist_port, epmd_port=epmd_port,
                   server=server, epmd=epmd)
        deadline = time.monotonic() + timeout
        delay = 0.2
        while time.monotonic() < deadline:
            if server.poll() is not None:
                node.stop()
                raise RabbitUnavailable(f"node {nodename} exited at boot: {node.log_tail()}")
            if node.answers():
                return node
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)
        node.stop()
        raise RabbitUnavailable(f"node {nodename} did not answer within {timeout:g} s: {node.log_tail()}")

    def log_tail(self, chars: int = 400) -> str:
        """The last error line of the node's log (or of its console output), else the log's end."""
        for path in (self.log_file, self.directory / "server.out"):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").strip()
                errors = [line for line in text.splitlines() if "error" in line.lower()]
                return " ".join((errors[-1] if errors else text).split())[-chars:]
        return "no log"

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the node's process group, then its epmd, by process id (SIGTERM, SIGKILL after a bound)."""
        for proc in (self.server, self.epmd):
            _stop_group(proc, timeout)


def node_env(directory: Path, *, nodename: str, amqp_port: int, dist_port: int,
             epmd_port: int) -> dict[str, str]:
    """Environment for the package's scripts that keeps the node and its CLI private."""
    erl_args = "-kernel inet_dist_use_interface {127,0,0,1}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
    env.update(
        HOME=str(directory / "home"),
        RABBITMQ_CONF_ENV_FILE=str(directory / "rabbitmq-env.conf"),
        RABBITMQ_NODENAME=nodename,
        RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
        RABBITMQ_NODE_PORT=str(amqp_port),
        RABBITMQ_DIST_PORT=str(dist_port),
        RABBITMQ_MNESIA_BASE=str(directory / "mnesia"),
        RABBITMQ_LOG_BASE=str(directory / "log"),
        RABBITMQ_CONFIG_FILE=str(directory / "rabbitmq.conf"),
        RABBITMQ_ADVANCED_CONFIG_FILE=str(directory / "advanced.config"),
        RABBITMQ_ENABLED_PLUGINS_FILE=str(directory / "enabled_plugins"),
        RABBITMQ_PID_FILE=str(directory / "rabbitmq.pid"),
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=erl_args,
        RABBITMQ_CTL_ERL_ARGS=erl_args,
        RABBITMQ_CTL_DIST_PORT_MIN="0",
        RABBITMQ_CTL_DIST_PORT_MAX="0",
        ERL_EPMD_ADDRESS="127.0.0.1",
        ERL_EPMD_PORT=str(epmd_port),
    )
    return env


def _stop_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the process group led by ``proc`` (started with a new session), SIGKILL after ``timeout``."""
    if proc.poll() is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # helpers left behind by a leader that exited
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
