"""A client of the endpoint registry for push-style callers: :class:`EndpointPool` keeps a domain's
list of worker endpoints current and hands them out round-robin.

It fetches ``GET /domains/{name}/endpoints`` and follows the event stream ``GET /events/stream``
(server-sent events, the bearer token in a header, never in the URL): a worker that leaves JOINED
(draining, unhealthy, terminating, failed, terminated), is sent a drain, is past its drain deadline or
whose workload exited is dropped the moment its event arrives; a worker that joins makes it fetch the
list again. The list is also fetched again every ``refresh`` seconds and whenever the stream
reconnects, so nothing missed while disconnected stays wrong for long. What an event does to the list
is :func:`apply_event`, pure.

Imports ``httpx`` and the standard library only (it runs in the caller's program).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence
from urllib.parse import quote

import httpx

log = logging.getLogger("elastic_pool.client")

#: node states a listed worker may be in; an event moving it to any other drops it
SERVING = "JOINED"
#: events that end a worker's service whatever its state says
LEAVING_EVENTS = frozenset({"drain", "drain_deadline", "workload_exit", "retired", "zombie"})


class ApiError(RuntimeError):
    """The API refused a request (the one-line reason it gave, and the status)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


class NoEndpoint(LookupError):
    """The domain has no healthy joined worker with an endpoint now."""


@dataclass(frozen=True)
class Endpoint:
    """One worker's address."""

    node: str
    address: str


def apply_event(current: Sequence[Endpoint], kind: str, data: Mapping[str, Any]) -> tuple[tuple[Endpoint, ...], bool]:
    """The endpoints after one event of their domain, and whether the list must be fetched again (pure)."""
    node = data.get("node")
    if kind == "deleted":  # the domain went (its workers were drained first)
        return (), False
    if kind == "node" and data.get("to") == SERVING:
        return tuple(current), True
    leaving = (kind == "node" and data.get("to") != SERVING) or kind in LEAVING_EVENTS
    if leaving and isinstance(node, str):
        return tuple(e for e in current if e.node != node), False
    return tuple(current), False


def parse_endpoints(body: Any) -> tuple[Endpoint, ...]:
    """The endpoints of a ``GET /domains/{name}/endpoints`` answer; entries that are not
    ``{"node": str, "address": str}`` are left out."""
    items = body.get("endpoints") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise ApiError(200, "answer has no 'endpoints' list")
    return tuple(Endpoint(i["node"], i["address"]) for i in items
                 if isinstance(i, dict) and isinstance(i.get("node"), str) and isinstance(i.get("address"), str))


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """``(event, data)`` of a server-sent-event stream, from its lines (ids skipped); a comment (the
    server's keepalive) gives ``(":", text)``."""
    kind, data = "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield kind, "\n".join(data)
            kind, data = "message", []
        elif line.startswith(":"):
            yield ":", line[1:].strip()
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)


class EndpointPool:
    """A domain's worker endpoints, kept current from the API's event stream, handed out round-robin.

    ``with EndpointPool(url, "web", token=t) as pool: pool.next().address``. :meth:`start` fetches the
    list (raising :class:`ApiError` if the API refuses: a bad token, no such domain) and starts the
    thread that follows the stream; :meth:`close` stops it.
    """

    def __init__(self, base_url: str, domain: str, *, token: str, verify: bool | str = True,
                 timeout: float = 5.0, refresh: float = 10.0, retry: float = 1.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.domain = domain
        self.refresh_every = refresh
        self.retry = retry
        self._headers = {"Authorization": f"Bearer {token}"}
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers, verify=verify, timeout=timeout)
        self._stream_http = httpx.Client(base_url=self.base_url, headers=self._headers, verify=verify,
                                         timeout=httpx.Timeout(timeout, read=max(40.0, 3 * timeout)))
        self._lock = threading.Condition()
        self._endpoints: tuple[Endpoint, ...] = ()
        self._turn = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._response: httpx.Response | None = None
        self._fetched_at = 0.0
        #: stream connections made (the first one and each reconnect)
        self.connections = 0

    # -- the caller's side --------------------------------------------------------------------
    def start(self) -> "EndpointPool":
        try:
            self.refresh()
        except BaseException:
            self.close()
            raise
        self._thread = threading.Thread(target=self._follow, daemon=True, name=f"endpoints-{self.domain}")
        self._thread.start()
        return self

    def __enter__(self) -> "EndpointPool":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next(self) -> Endpoint:
        """The next endpoint in turn; :class:`NoEndpoint` when there is none."""
        with self._lock:
            if not self._endpoints:
                raise NoEndpoint(f"domain {self.domain}: no healthy joined worker has an endpoint now")
            found = self._endpoints[self._turn % len(self._endpoints)]
            self._turn += 1
            return found

    def endpoints(self) -> tuple[Endpoint, ...]:
        with self._lock:
            return self._endpoints

    def discard(self, node: str) -> None:
        """Drop a worker the caller found unreachable (it comes back with the next fetch if it is listed)."""
        self._set(tuple(e for e in self.endpoints() if e.node != node))

    def wait_for(self, predicate: Callable[[tuple[Endpoint, ...]], bool], timeout: float) -> bool:
        """Wait until ``predicate(endpoints)`` holds (True) or ``timeout`` seconds pass (False)."""
        with self._lock:
            return self._lock.wait_for(lambda: predicate(self._endpoints), timeout)

    def refresh(self) -> None:
        """Fetch the list now."""
        response = self._http.get(f"/domains/{quote(self.domain, safe='')}/endpoints")
        _raise_for(response)
        self._fetched_at = time.monotonic()
        self._set(parse_endpoints(response.json()))

    def close(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            try:
                response.close()
            except Exception:  # noqa: BLE001  (closing from another thread: the read ends either way)
                pass
        if self._thread is not None:
            self._thread.join(5.0)
        self._http.close()
        self._stream_http.close()

    # -- the stream ----------------------------------------------------------------------------
    def _set(self, endpoints: tuple[Endpoint, ...]) -> None:
        with self._lock:
            self._endpoints = endpoints
            self._lock.notify_all()

    def _follow(self) -> None:
        """Follow the event stream until closed, reconnecting (and fetching the list again) after a failure."""
        while not self._stop.is_set():
            try:
                self._stream_once()
            except Exception as exc:  # noqa: BLE001  (the API restarting, a network blip: try again)
                if self._stop.is_set():
                    return
                log.warning("endpoints of %s: event stream: %s; reconnecting", self.domain, exc)
            self._stop.wait(self.retry)

    def _stream_once(self) -> None:
        with self._stream_http.stream("GET", "/events/stream", headers={"Accept": "text/event-stream"}) as response:
            if response.status_code != 200:
                response.read()
                _raise_for(response)
            self._response = response
            self.connections += 1
            self.refresh()  # after the stream is open: nothing between the fetch and the events is missed
            for kind, text in sse_events(response.iter_lines()):
                if self._stop.is_set():
                    return
                self._on_event(kind, text)
                if time.monotonic() - self._fetched_at > self.refresh_every:
                    self.refresh()

    def _on_event(self, kind: str, text: str) -> None:
        if kind == ":":
            return
        try:
            data = json.loads(text)
        except ValueError:
            return
        if not isinstance(data, dict) or data.get("domain") != self.domain:
            return
        with self._lock:
            after, fetch = apply_event(self._endpoints, kind, data)
            if after != self._endpoints:
                self._set(after)
        if fetch:
            self.refresh()


def _raise_for(response: httpx.Response) -> None:
    """:class:`ApiError` with the API's one-line reason for a status that is not 2xx."""
    if response.is_success:
        return
    try:
        body = response.json()
        reason = str(body.get("error")) if isinstance(body, dict) else response.text[:200]
    except ValueError:
        reason = response.text[:200]
    raise ApiError(response.status_code, reason)
