"""Test harness: a local EC2 API (moto in server mode) behind a small adapting proxy, for libcloud's real EC2 driver.

``moto_server`` (from ``moto[server]``) runs as a subprocess on 127.0.0.1 and a free port and is
stopped by its process id. libcloud's EC2 driver does not talk to it directly but to
:class:`Ec2Proxy`, an HTTP server in the test process that forwards every request to moto and
adapts moto 5's answers where they differ from EC2's. Each adaptation is here, in the tests, and
none of it touches libcloud: the driver's real request signing, HTTP and XML parsing and error
mapping all run.

What the proxy adapts, and why:

- **XML namespace.** moto 5 answers with ``xmlns="http://ec2.amazonaws.com/doc/2016-11-15"``;
  EC2 (and libcloud, which looks elements up under its ``NAMESPACE`` constant) use the same URI
  with a trailing slash. Without the rewrite every libcloud lookup silently finds nothing:
  ``list_nodes`` comes back empty and ``create_node`` returns ``[]``. The proxy adds the slash.
- **Error shape.** moto's errors carry ``<Code>``, ``<Message>`` *and* ``<Type>``; EC2 sends only
  the first two and libcloud unpacks exactly two children (``code, message = list(err)``), so a
  moto error reaches libcloud as ``ValueError: too many values to unpack``. The proxy drops
  ``<Type>`` from error bodies, so ``AuthFailure`` becomes libcloud's ``InvalidCredsError`` as
  it does against EC2.
- **Client tokens.** moto stores ``RunInstances``' ``ClientToken`` but does not act on it: a
  repeated token makes a second instance. EC2 answers a repeat with the first launch's
  reservation, and a repeat with different parameters with ``IdempotentParameterMismatch``.
  With ``emulate_client_token`` on (the default), the proxy keeps the first successful answer per
  token and replays it (or answers the mismatch error) without forwarding; off, moto's own
  behaviour shows through (the tests use that for sites that ignore tokens).
- **Forced errors.** :meth:`Ec2Proxy.fail_next` makes the next N requests fail with an
  EC2-shaped error (``RequestLimitExceeded`` on HTTP 503 by default, as EC2 throttles), answered
  by the proxy over HTTP, so libcloud's real error path produces the exception.

Also found: libcloud 3.9 signs ``us-east-1`` requests with signature version 2 unless told
otherwise; moto (like EC2 today) needs version 4 (``pool.sites.adapters.ec2_driver`` always
asks for it).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qsl, urlsplit

_NAMESPACE = re.compile(rb'xmlns="(http://ec2\.amazonaws\.com/doc/[0-9-]+)"')
_ERROR_TYPE = re.compile(rb"<Type>[^<]*</Type>")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade",
               "content-length"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class MotoServer:
    """A ``moto_server`` subprocess on 127.0.0.1 and a free port."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @classmethod
    def start(cls, workdir: Path, *, env: dict[str, str] | None = None, timeout: float = 60.0) -> MotoServer:
        """Start it and wait until it accepts connections; a few tries with fresh ports if one is taken."""
        last = ""
        for _attempt in range(3):
            port = free_port()
            log = workdir / f"moto-{port}.log"
            child_env = {**os.environ, **(env or {})}
            with open(log, "wb") as out:
                proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                        stdout=out, stderr=subprocess.STDOUT, env=child_env, cwd=workdir)
            server = cls(proc, port, log)
            deadline = time.monotonic() + timeout
            delay = 0.05
            while time.monotonic() < deadline and proc.poll() is None:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    return server
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
            died = proc.poll() is not None  # e.g. the port was taken between the pick and the bind
            last = log.read_text(errors="replace")[-2000:]
            server.stop()
            if not died:
                break
        raise RuntimeError(f"moto_server did not start: {last}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


@dataclass
class Fault:
    """One forced error answer, in EC2's error document shape."""

    status: int = 503
    code: str = "RequestLimitExceeded"
    message: str = "Request limit exceeded."
    retry_after: int | None = None

    def body(self) -> bytes:
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{self.code}</Code>'
                f"<Message>{self.message}</Message></Error></Errors>"
                "<RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>").encode()


@dataclass
class Call:
    """One request the proxy saw, and how it was answered."""

    action: str
    params: dict[str, str]
    status: int
    answered_by: str  # "moto", "fault" or "token-replay"


@dataclass
class Ec2Proxy:
    """An HTTP server on 127.0.0.1 in front of moto that adapts its answers to EC2's (see the module doc)."""

    upstream_port: int
    emulate_client_token: bool = True
    calls: list[Call] = field(default_factory=list)
    _faults: list[Fault] = field(default_factory=list)
    _tokens: dict[str, tuple[tuple[tuple[str, str], ...], int, bytes]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def start(self) -> Ec2Proxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                proxy._handle(self)

            def do_POST(self) -> None:  # noqa: N802
                proxy._handle(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def fail_next(self, count: int, fault: Fault | None = None) -> None:
        """Answer the next ``count`` requests with ``fault`` (EC2 throttling by default) instead of moto's answer."""
        with self._lock:
            self._faults.extend([fault or Fault()] * count)

    def actions(self, name: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.action == name]

    # -- request handling ---------------------------------------------------------------------
    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        params = dict(parse_qsl(urlsplit(req.path).query, keep_blank_values=True))
        if body and "x-www-form-urlencoded" in (req.headers.get("Content-Type") or ""):
            params.update(parse_qsl(body.decode(), keep_blank_values=True))
        action = params.get("Action", "")
        with self._lock:
            fault = self._faults.pop(0) if self._faults else None
        if fault is not None:
            headers = {"Content-Type": "text/xml"}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            self._record(action, params, fault.status, "fault")
            self._reply(req, fault.status, headers, fault.body())
            return
        token = params.get("ClientToken") if action == "RunInstances" and self.emulate_client_token else None
        fingerprint = tuple(sorted((k, v) for k, v in params.items() if k != "ClientToken"))
        if token:
            with self._lock:
                seen = self._tokens.get(token)
            if seen is not None:
                if seen[0] != fingerprint:
                    mismatch = Fault(400, "IdempotentParameterMismatch",
                                     f"Arguments on this idempotent request are inconsistent with arguments used "
                                     f"in previous request(s) (token {token}).")
                    self._record(action, params, 400, "token-replay")
                    self._reply(req, 400, {"Content-Type": "text/xml"}, mismatch.body())
                else:
                    self._record(action, params, seen[1], "token-replay")
                    self._reply(req, seen[1], {"Content-Type": "text/xml"}, seen[2])
                return
        status, headers, answer = self._forward(req.command, req.path, dict(req.headers.items()), body)
        if 200 <= status < 300:
            answer = _NAMESPACE.sub(rb'xmlns="\1/"', answer)
            if token:
                with self._lock:
                    self._tokens.setdefault(token, (fingerprint, status, answer))
        else:
            answer = _ERROR_TYPE.sub(b"", answer)
        self._record(action, params, status, "moto")
        self._reply(req, status, headers, answer)

    def _forward(self, method: str, path: str, headers: dict[str, str],
                 body: bytes) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
            conn.request(method, path, body=body or None, headers=sent)
            resp = conn.getresponse()
            answer = resp.read()
            kept = {k: v for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP}
            return resp.status, kept, answer
        finally:
            conn.close()

    def _record(self, action: str, params: dict[str, str], status: int, by: str) -> None:
        with self._lock:
            self.calls.append(Call(action, params, status, by))

    @staticmethod
    def _reply(req: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes) -> None:
        req.send_response(status)
        for key, value in headers.items():
            req.send_header(key, value)
        req.send_header("Content-Length", str(len(body)))
        req.send_header("Connection", "close")
        req.end_headers()
        req.wfile.write(body)


@contextlib.contextmanager
def moto_ec2(workdir: Path, *, env: dict[str, str] | None = None,
             emulate_client_token: bool = True) -> Iterator[tuple[MotoServer, Ec2Proxy]]:
    """A moto server and an adapting proxy in front of it; both stopped on exit."""
    server = MotoServer.start(workdir, env=env)
    try:
        proxy = Ec2Proxy(server.port, emulate_client_token=emulate_client_token).start()
        try:
            yield server, proxy
        finally:
            proxy.stop()
    finally:
        server.stop()
