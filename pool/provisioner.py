"""Launches and terminates nodes on sites through libcloud: idempotent, with bounded backoff."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError
from libcloud.common.types import InvalidCredsError
from libcloud.compute.base import Node, NodeDriver
from libcloud.compute.types import NodeState as CloudState

from pool.model import NodeRecord


class ProvisionError(Exception):
    """A launch or terminate that did not happen."""


class RetryableError(ProvisionError):
    """Try again after ``delay`` seconds (throttling, a transient fault)."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


class CapacityError(RetryableError):
    """The site has no room for this size now; place elsewhere for a while."""


class PermanentError(ProvisionError):
    """Will not succeed by retrying (bad credentials, bad image): the site is marked broken."""


THROTTLE_MARKERS = ("RequestLimitExceeded", "Throttling", "TooManyRequests", "429", "503", "SlowDown")
CAPACITY_MARKERS = ("InsufficientInstanceCapacity", "InstanceLimitExceeded", "QUOTA_EXCEEDED",
                    "ZONE_RESOURCE_POOL_EXHAUSTED", "quota", "capacity")


def classify(exc: BaseException, *, delay: float) -> ProvisionError:
    """Sort a driver error into retryable (with a delay), capacity or permanent."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ProvisionError):
        return exc
    if isinstance(exc, InvalidCredsError):
        return PermanentError(f"credentials refused: {text}")
    if isinstance(exc, RateLimitReachedError) or any(m in text for m in THROTTLE_MARKERS):
        retry_after = getattr(exc, "retry_after", None)
        return RetryableError(f"throttled: {text}", float(retry_after or delay))
    if any(m in text for m in CAPACITY_MARKERS):
        return CapacityError(f"out of capacity: {text}", delay)
    if isinstance(exc, BaseHTTPError) and getattr(exc, "code", 0) in (401, 403):
        return PermanentError(f"credentials refused: {text}")
    if isinstance(exc, (OSError, TimeoutError, BaseHTTPError)):
        return RetryableError(text, delay)
    return PermanentError(text)


@dataclass
class Backoff:
    """Exponential backoff with full jitter and a cap, per site."""

    base: float = 1.0
    cap: float = 60.0
    failures: int = 0
    until: float = 0.0
    rng: random.Random = field(default_factory=random.Random)

    def fail(self, now: float, at_least: float = 0.0) -> float:
        self.failures += 1
        delay = max(at_least, self.rng.uniform(0, min(self.cap, self.base * 2 ** (self.failures - 1))))
        self.until = now + delay
        return delay

    def succeed(self) -> None:
        self.failures = 0
        self.until = 0.0

    def ready(self, now: float) -> bool:
        return now >= self.until


@dataclass(frozen=True)
class SiteNode:
    """What a site says of one machine."""

    node_id: str
    provider_id: str
    running: bool
    tags: Mapping[str, str]
    alive: bool = True  # listed in any state but ended (pending, starting, running, ...)


class Provisioner:
    """The only path from the manager to cloud APIs."""

    def __init__(self, drivers: Mapping[str, NodeDriver], *, on_event: Callable[..., None] | None = None,
                 backoff_base: float = 1.0, backoff_cap: float = 60.0) -> None:
        self.drivers = dict(drivers)
        self.backoff = {name: Backoff(base=backoff_base, cap=backoff_cap) for name in self.drivers}
        self.broken: dict[str, str] = {}
        self._lock = threading.Lock()
        self.on_event = on_event

    def driver(self, site: str) -> Any:
        """The site's libcloud driver (typed loosely: drivers take their own ``ex_`` arguments)."""
        try:
            return self.drivers[site]
        except KeyError:
            raise PermanentError(f"unknown site {site!r}; configured: {', '.join(sorted(self.drivers))}") from None

    def available(self, site: str, now: float) -> bool:
        return site in self.drivers and site not in self.broken and self.backoff[site].ready(now)

    def _failed(self, site: str, exc: BaseException, now: float) -> ProvisionError:
        err = classify(exc, delay=0.0)
        if isinstance(err, PermanentError):
            self.broken[site] = str(err)
        else:
            assert isinstance(err, RetryableError)
            err.delay = self.backoff[site].fail(now, at_least=err.delay)
        return err

    def launch(self, record: NodeRecord, *, userdata: str, now: float, tags: Mapping[str, str],
               extra: Mapping[str, Any] | None = None) -> str:
        """Launch the machine for ``record``; idempotent under its launch id. Returns the provider id."""
        driver = self.driver(record.site)
        if record.site in self.broken:
            raise PermanentError(f"site {record.site} is broken: {self.broken[record.site]}")
        try:
            node = driver.create_node(
                name=record.node_id,
                size=driver.list_sizes()[0],
                image=driver.list_images()[0],
                ex_userdata=userdata,
                ex_client_token=record.launch_id,
                ex_tags=dict(tags),
                **dict(extra or {}),
            )
        except Exception as exc:
            raise self._failed(record.site, exc, now) from exc
        self.backoff[record.site].succeed()
        return str(node.id)

    def _node(self, record: NodeRecord) -> Node:
        driver = self.driver(record.site)
        return Node(id=record.provider_id or record.node_id, name=record.node_id, state=CloudState.UNKNOWN,
                    public_ips=[], private_ips=[], driver=driver)

    def terminate(self, record: NodeRecord, *, grace: float, now: float) -> None:
        """Ask the site to end the machine; idempotent."""
        driver = self.driver(record.site)
        try:
            driver.destroy_node(self._node(record), ex_grace=grace)
        except Exception as exc:
            raise self._failed(record.site, exc, now) from exc

    def preempt(self, record: NodeRecord) -> bool:
        """Kill at once, where the site can (the local site's spot-loss simulation)."""
        driver = self.driver(record.site)
        fn = getattr(driver, "ex_preempt", None)
        return bool(fn(self._node(record))) if fn else False

    def list(self, site: str) -> dict[str, SiteNode]:
        """What the site says exists, by our node id (machines not tagged by us are left out)."""
        driver = self.driver(site)
        out: dict[str, SiteNode] = {}
        for node in driver.list_nodes():
            tags = node.extra.get("tags") or {}
            node_id = tags.get("elastic-pool/node") or node.name
            state = node.state  # libcloud's states are singletons: identity is exact and much faster
            alive = not (state is CloudState.TERMINATED or state is CloudState.STOPPED or state is CloudState.ERROR)
            out[node_id] = SiteNode(node_id, str(node.id), state is CloudState.RUNNING, tags, alive)
        return out

    def forget(self, record: NodeRecord) -> None:
        fn = getattr(self.driver(record.site), "ex_forget", None)
        if fn:
            fn(record.provider_id or record.node_id)
