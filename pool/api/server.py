"""Serving the API: uvicorn in a thread of the calling process (the manager's, under `pool up --api`, or
a test's), on a socket bound before it starts (so port 0 gets a free port), with a clean stop.

A non-loopback address is refused without TLS (``tls_cert`` and ``tls_key``) unless ``insecure``: the
bearer tokens would cross the network in the clear. Imports uvicorn and the standard library.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn


class BindRefused(ValueError):
    """The address may not be served as asked; the message is one line saying what would do."""


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback one (a name that does not resolve is not)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def check_bind(host: str, *, tls: bool, insecure: bool) -> None:
    """Refuse a non-loopback ``host`` without TLS unless ``insecure``."""
    if not tls and not insecure and not is_loopback(host):
        raise BindRefused(f"--api {host}: a non-loopback address needs TLS (--tls-cert FILE --tls-key FILE), "
                          "or --insecure to send tokens in the clear; or bind 127.0.0.1")


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``PORT`` (on 127.0.0.1) as (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise BindRefused(f"--api {text[:100]!r}: expected HOST:PORT with a port from 0 to 65535 (e.g. 127.0.0.1:8080)")
    return host, int(port)


@dataclass
class ApiServer:
    """A running API server: its address, and :meth:`stop`."""

    server: uvicorn.Server
    thread: threading.Thread
    app: Any
    host: str
    port: int
    scheme: str
    sock: socket.socket = field(repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking requests, end the event streams, and wait for the thread (at most ``timeout`` s)."""
        stopping = getattr(self.app.state, "stopping", None)
        if stopping is not None:
            stopping.set()
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(2.0)
        self.sock.close()


def serve(app: Any, *, host: str = "127.0.0.1", port: int = 0, tls_cert: str | None = None,
          tls_key: str | None = None, insecure: bool = False, startup_timeout: float = 10.0) -> ApiServer:
    """Serve ``app`` on ``host:port`` in a daemon thread; returns once it accepts connections.

    Raises :class:`BindRefused` (the address refused, or the certificate files not both given) and
    ``OSError`` (the address in use, say) with the cause."""
    if (tls_cert is None) != (tls_key is None):
        raise BindRefused("--tls-cert and --tls-key go together: give both, or neither")
    check_bind(host, tls=tls_cert is not None, insecure=insecure)
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False, ssl_certfile=tls_cert,
                            ssl_keyfile=tls_key, timeout_graceful_shutdown=2, proxy_headers=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="api", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise OSError(f"the API server on {host}:{port} did not start")
        time.sleep(0.01)
    bound = sock.getsockname()
    return ApiServer(server=server, thread=thread, app=app, host=host, port=int(bound[1]),
                     scheme="https" if tls_cert else "http", sock=sock)
