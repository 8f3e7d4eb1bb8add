"""Launches and terminates nodes on sites through libcloud: idempotent, with bounded backoff."""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError
from libcloud.common.types import InvalidCredsError
from libcloud.compute.base import Node, NodeDriver
from libcloud.compute.types import NodeState as CloudState

from pool.core.model import NodeRecord, SiteSpec
from pool.sites import adapters
from pool.sites.config import OperatorConfig

log = logging.getLogger("elastic_pool.provisioner")


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


#: Error codes and words that mean "slow down" (EC2, GCE, Azure, S3-style APIs); matched case-insensitively.
THROTTLE_MARKERS = ("RequestLimitExceeded", "Throttling", "TooManyRequests", "SlowDown", "RateLimitExceeded")
#: HTTP statuses that mean "slow down": checked on the error's status code, never searched for in its text
#: (an instance id or a message can contain "503").
THROTTLE_STATUSES = (429, 503)
#: Capacity and quota: the offering has no room now.
CAPACITY_MARKERS = ("InsufficientInstanceCapacity", "InsufficientHostCapacity", "InstanceLimitExceeded",
                    "VcpuLimitExceeded", "MaxSpotInstanceCountExceeded", "QUOTA_EXCEEDED",
                    "ZONE_RESOURCE_POOL_EXHAUSTED", "quota", "capacity")
#: Refused credentials or permissions: retrying only hammers the API.
AUTH_MARKERS = ("AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId", "SignatureDoesNotMatch",
                "OptInRequired", "AccessDenied")


def _status(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    try:
        return int(code) if code is not None else None
    except (TypeError, ValueError):
        return None


def classify(exc: BaseException, *, delay: float) -> ProvisionError:
    """Sort a driver error into retryable (with a delay), capacity or permanent."""
    if isinstance(exc, ProvisionError):
        return exc
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    status = _status(exc)
    if isinstance(exc, InvalidCredsError) or any(m.lower() in lowered for m in AUTH_MARKERS):
        return PermanentError(f"credentials refused: {text}")
    if (isinstance(exc, RateLimitReachedError) or status in THROTTLE_STATUSES
            or any(m.lower() in lowered for m in THROTTLE_MARKERS)):
        retry_after = getattr(exc, "retry_after", None)
        return RetryableError(f"throttled: {text}", float(retry_after or delay))
    if any(m.lower() in lowered for m in CAPACITY_MARKERS):
        return CapacityError(f"out of capacity: {text}", delay)
    if isinstance(exc, BaseHTTPError) and status in (401, 403):
        return PermanentError(f"credentials refused: {text}")
    if isinstance(exc, (OSError, TimeoutError, BaseHTTPError)):
        return RetryableError(text, delay)
    return PermanentError(text)


@dataclass
class Backoff:
    """Exponential backoff with jitter and a cap, per site.

    The delay after the n-th failure in a row is drawn from ``[floor * d, d]`` with
    ``d = min(cap, base * 2 ** (n - 1))``: ``floor`` 0 is full jitter (launches); a floor above 0
    makes the delays grow for certain, so n failures in a row take at least ``floor * d`` each.
    """

    base: float = 1.0
    cap: float = 60.0
    failures: int = 0
    until: float = 0.0
    rng: random.Random = field(default_factory=random.Random)
    floor: float = 0.0

    def fail(self, now: float, at_least: float = 0.0) -> float:
        self.failures += 1
        ceiling = min(self.cap, self.base * 2 ** min(self.failures - 1, 64))
        delay = max(at_least, self.rng.uniform(self.floor * ceiling, ceiling))
        self.until = now + delay
        return delay

    def succeed(self) -> None:
        self.failures = 0
        self.until = 0.0

    def ready(self, now: float) -> bool:
        return now >= self.until


@dataclass
class Pacer:
    """A client-side token bucket: the pool's own request rate to a site stays under the cloud's limit."""

    rate: float
    burst: int = 1
    tokens: float = -1.0
    at: float | None = None

    def take(self, now: float) -> float:
        """0.0 and one token used, or the seconds until a token is there."""
        if self.at is None:
            self.tokens, self.at = float(self.burst), now
        self.tokens = min(float(self.burst), self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = max(self.at, now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def level(self, now: float) -> float:
        """Tokens there now, none taken."""
        if self.at is None:
            return float(self.burst)
        return min(float(self.burst), self.tokens + max(0.0, now - self.at) * self.rate)

    def spend(self, n: float, now: float) -> None:
        """Take ``n`` tokens (the level may go below zero: the cloud had room after all)."""
        self.tokens, self.at = self.level(now) - n, max(self.at or now, now)

    def empty(self, now: float) -> None:
        """The cloud said the budget is spent."""
        self.tokens, self.at = 0.0, max(self.at or now, now)


def _keep_bucket(table: dict[str, tuple[tuple[float, int], Pacer]], site: str, rate: float | None,
                 burst: int) -> None:
    """The site's bucket as configured: made anew when its shape changed, dropped when unset."""
    if rate is None:
        table.pop(site, None)
    elif table.get(site, (None,))[0] != (rate, burst):
        table[site] = ((rate, burst), Pacer(rate=rate, burst=burst))


#: A failed listing waits at least this share of its exponential delay (so failures in a row stay apart).
LIST_BACKOFF_FLOOR = 0.5

#: Most machines one batched launch request carries (EC2's RunInstances takes up to 1000 per call).
BATCH_MAX = 1000
#: Seconds after which a throttled site's batch size doubles (until a batch is throttled again).
BATCH_RECOVER = 60.0


class CallGate(Protocol):
    """Who makes the calls, where that is modelled (the simulated fleet's provisioner workers): how long
    before a launch request may go, and each call as it is made."""

    def wait(self, site: str, now: float) -> float: ...

    def made(self, op: str) -> None: ...


@dataclass(frozen=True)
class SiteBlock:
    """Why a site takes no launch request (``until``: when it may again; ``None``: not by itself)."""

    reason: str
    until: float | None
    permanent: bool = False


@dataclass(frozen=True)
class SiteNode:
    """What a site says of one machine."""

    node_id: str
    provider_id: str
    running: bool
    tags: Mapping[str, str]
    alive: bool = True  # listed in any state but ended (pending, starting, running, ...)
    site: str = ""


class Provisioner:
    """The only path from the manager to cloud APIs."""

    def __init__(self, drivers: Mapping[str, NodeDriver], *, on_event: Callable[..., None] | None = None,
                 backoff_base: float = 1.0, backoff_cap: float = 60.0, config: OperatorConfig | None = None,
                 gate: CallGate | None = None) -> None:
        """``config``: what the operator allows sites of a spec to use (credential references, endpoints);
        by default nothing: only the sites in ``drivers`` and built-in sites without options."""
        self.config = config or OperatorConfig()
        self.gate = gate
        self.drivers = dict(drivers)
        self.backoff = {name: Backoff(base=backoff_base, cap=backoff_cap) for name in self.drivers}
        self.broken: dict[str, str] = {}
        self._lock = threading.Lock()
        self.on_event = on_event
        self._catalogue: dict[tuple[str, str, str | None], Any] = {}
        self.full: dict[str, float] = {}  # site -> until when it gets no launches (out of capacity)
        self.pace: dict[str, tuple[tuple[float, int], Pacer]] = {}  # site -> client-side request pacing
        self._backoff_args = (backoff_base, backoff_cap)
        self._batch_cap: dict[str, tuple[int, float]] = {}  # site -> (machines per request, since): see batch_limit
        #: site -> the cloud's launch budget in machines as the pool tracks it (SiteSpec.instance_rate)
        self.budget: dict[str, tuple[tuple[float, int], Pacer]] = {}
        #: per site, the last listing's answer per libcloud Node object (kept with it, so identity is safe)
        self._listed: dict[str, dict[int, tuple[Node, SiteNode]]] = {}
        #: per site, the backoff of its listing (see :meth:`list`); apart from the launch backoff
        self.list_backoff: dict[str, Backoff] = {}

    def ensure_site(self, site: SiteSpec) -> None:
        """Make the driver for a configured site, once; a site that cannot be made is marked broken."""
        _keep_bucket(self.pace, site.name, site.rate, site.burst)
        _keep_bucket(self.budget, site.name, site.instance_rate, site.instance_burst)
        if site.name in self.drivers or site.name in self.broken:
            return
        self.backoff.setdefault(site.name, Backoff(base=self._backoff_args[0], cap=self._backoff_args[1]))
        refusal = self.config.site_refusal(site)
        if refusal is not None:  # the spec asks for more than the operator allows: no driver, no request
            self.broken[site.name] = refusal
            log.error("site %s: %s", site.name, refusal)
            return
        try:
            self.drivers[site.name] = make_site_driver(site)
        except Exception as exc:  # a missing credential, an unknown provider: say so, never retry blindly
            self.broken[site.name] = f"cannot make driver: {exc}"
            log.error("site %s: %s", site.name, self.broken[site.name])

    def driver(self, site: str) -> Any:
        """The site's libcloud driver (typed loosely: drivers take their own ``ex_`` arguments)."""
        try:
            return self.drivers[site]
        except KeyError:
            raise PermanentError(f"unknown site {site!r}; configured: {', '.join(sorted(self.drivers))}") from None

    def blocked(self, site: str, now: float) -> SiteBlock | None:
        """Why the site takes no launch request now, and until when (``None``: it takes them)."""
        if site not in self.drivers and site not in self.broken:
            return SiteBlock(f"unknown site {site!r}", None, permanent=True)
        if site in self.broken:
            return SiteBlock(f"site {site} is broken: {self.broken[site]}", None, permanent=True)
        until = max(self.backoff[site].until, self.full.get(site, 0.0))
        if until > now:
            why = "out of capacity" if self.full.get(site, 0.0) > now else "backing off after errors"
            return SiteBlock(f"site {site} is {why}", until)
        return None

    def seed(self, seed: int) -> None:
        """Seed the jitter of every site's backoff (a simulation's runs then repeat exactly)."""
        for i, backoff in enumerate(self.backoff.values()):
            backoff.rng = random.Random(seed * 7919 + i)

    def available(self, site: str, now: float) -> bool:
        return (site in self.drivers and site not in self.broken and self.backoff[site].ready(now)
                and self.full.get(site, 0.0) <= now)

    def may_request(self, site: str, now: float) -> float:
        """Take a launch request token of the site's pacing: 0.0 if taken, else seconds until one is there
        (or until the call gate, where there is one, has a worker free)."""
        if self.gate is not None:
            wait = self.gate.wait(site, now)
            if wait > 0:
                return wait
        paced = self.pace.get(site)
        wait = 0.0 if paced is None else paced[1].take(now)
        if wait == 0.0 and self.gate is not None:
            self.gate.made("launch")
        return wait

    def _failed(self, site: str, exc: BaseException, now: float, *, capacity_ttl: float = 180.0) -> ProvisionError:
        err = classify(exc, delay=0.0)
        if isinstance(err, PermanentError):
            self.broken[site] = str(err)
        elif isinstance(err, CapacityError):  # place elsewhere for a while; no backoff growth
            self.full[site] = now + capacity_ttl
            err.delay = capacity_ttl
        else:
            assert isinstance(err, RetryableError)
            err.delay = self.backoff[site].fail(now, at_least=err.delay)
        return err

    def launch(self, record: NodeRecord, *, userdata: str, now: float, tags: Mapping[str, str],
               extra: Mapping[str, Any] | None = None, image: str | None = None,
               size: str | None = None, capacity_ttl: float = 180.0) -> str:
        """Launch the machine for ``record``; idempotent under its launch id. Returns the provider id.

        ``image`` and ``size`` are the site's ids for the deployable type (an AMI id and an
        instance type on EC2); without them the site's first listed image and size are used,
        where the site allows that. A driver with client tokens gets the launch id as its token;
        for one without, the site is first searched for a machine tagged with the launch id.
        """
        driver = self.driver(record.site)
        if record.site in self.broken:
            raise PermanentError(f"site {record.site} is broken: {self.broken[record.site]}")
        adapter = adapters.adapter_for(driver)
        tags = {**tags, adapters.TAG_LAUNCH: record.launch_id}
        kwargs = {**adapter.launch_kwargs(userdata=userdata, token=record.launch_id, tags=tags),
                  **dict(extra or {})}  # the site's own ex_ arguments (subnet, key pair, ...)
        try:
            node_image = self._resolve(record.site, driver, "image", image)
            node_size = self._resolve(record.site, driver, "size", size)
            if not adapter.client_token:
                found = adapter.find_launched(driver, launch_id=record.launch_id, name=record.node_id)
                if found is not None:
                    self.backoff[record.site].succeed()
                    return str(found.id)
            node = driver.create_node(name=record.node_id, size=node_size, image=node_image, **kwargs)
        except adapters.UnknownOffering as exc:  # configuration of this deployable type, not the site
            raise PermanentError(f"launch {record.launch_id} on {record.site}: {exc}") from exc
        except Exception as exc:
            if "IdempotentParameterMismatch" in str(exc):  # this launch's token reused differently
                raise PermanentError(f"launch {record.launch_id}: {exc}") from exc
            raise self._failed(record.site, exc, now, capacity_ttl=capacity_ttl) from exc
        if isinstance(node, list):  # a driver that answers a launch with a list (EC2 on some replies)
            if not node:
                raise self._failed(record.site, RuntimeError(
                    f"launch {record.launch_id}: the site answered with no machine"), now)
            node = node[0]
        self.backoff[record.site].succeed()
        self._spend(record.site, 1, now)
        return str(node.id)

    def budget_wait(self, site: str, now: float) -> float:
        """Seconds until the site's tracked launch budget holds one machine (0 when untracked)."""
        budget = self.budget.get(site)
        if budget is None:
            return 0.0
        return max(0.0, (1.0 - budget[1].level(now)) / budget[1].rate)

    def _spend(self, site: str, machines: int, now: float) -> None:
        budget = self.budget.get(site)
        if budget is not None:
            budget[1].spend(machines, now)

    def batch_limit(self, site: str, now: float | None = None) -> int:
        """Most machines one launch request may carry on ``site`` now.

        1 unless the site's driver batches with per-instance identity (each machine its own node
        tag), which :meth:`launch_many` needs; then up to :data:`BATCH_MAX`. Where the site's
        launch budget is tracked (``instance_rate``), no more than the machines left in it, which
        may be 0: wait. Otherwise a throttled batch
        means the site's instance budget is spent (EC2's RunInstances resource bucket: 1000
        instances, refilled at 2 a second): the site falls back to one machine per request, which
        the request pacing keeps within its limits, and the batch doubles after every
        :data:`BATCH_RECOVER` seconds until a batch is throttled again.
        """
        budget = self.budget.get(site)
        left = BATCH_MAX if budget is None or now is None else max(0, int(budget[1].level(now)))
        driver = self.drivers.get(site)
        if driver is None or not getattr(driver, "batch_identity", False):
            return min(1, left)
        adapter = adapters.adapter_for(driver)
        if not (adapter.batch and adapter.client_token):
            return min(1, left)
        if budget is not None:  # sized to the tracked budget, not the fallback below
            return min(BATCH_MAX, left)
        cap = self._batch_cap.get(site)
        if cap is None:
            return BATCH_MAX
        size, since = cap
        if now is not None and now - since >= BATCH_RECOVER:
            steps = int((now - since) // BATCH_RECOVER)
            size, since = min(BATCH_MAX, size * 2 ** min(steps, 20)), since + steps * BATCH_RECOVER
            if size >= BATCH_MAX:
                del self._batch_cap[site]
                return BATCH_MAX
            self._batch_cap[site] = (size, since)
        return size

    def launch_many(self, records: Sequence[NodeRecord], *, userdata: Sequence[str], now: float,
                    tags: Sequence[Mapping[str, str]], extra: Mapping[str, Any] | None = None,
                    image: str | None = None, size: str | None = None,
                    capacity_ttl: float = 180.0) -> list[str | None]:
        """Launch the machines for ``records`` (one site) in one request, as RunInstances' MaxCount does.

        Each machine gets its record's node id as its name, its own tags (with its launch id) and
        its own user-data. Idempotent: the client token is derived from the launch ids, so a retry
        of the same batch returns the same machines. Returns the provider ids in record order;
        ``None`` for records the site had no room for (it launched the first ones that fit).
        Raises like :meth:`launch`, for the whole batch; one record goes through :meth:`launch`.
        """
        if not records:
            return []
        if len(records) == 1:
            return [self.launch(records[0], userdata=userdata[0], now=now, tags=tags[0], extra=extra,
                                image=image, size=size, capacity_ttl=capacity_ttl)]
        site = records[0].site
        if any(r.site != site for r in records) or len(userdata) != len(records) or len(tags) != len(records):
            raise ValueError("launch_many: one site per batch, and one user-data and tag set per record")
        if len(records) > max(1, self.batch_limit(site)):  # not now: the limit of a throttled site grows back
            raise ValueError(f"site {site} launches at most {self.batch_limit(site)} machines per request")
        driver = self.driver(site)
        if site in self.broken:
            raise PermanentError(f"site {site} is broken: {self.broken[site]}")
        adapter = adapters.adapter_for(driver)
        token = "batch-" + hashlib.sha256("\n".join(r.launch_id for r in records).encode()).hexdigest()[:32]
        each = [{**t, adapters.TAG_LAUNCH: r.launch_id} for r, t in zip(records, tags)]
        kwargs = {**adapter.launch_kwargs(userdata=userdata[0], token=token, tags={}, count=len(records)),
                  "ex_min_count": 1, "ex_names": [r.node_id for r in records], "ex_tags_each": each,
                  "ex_userdata_each": list(userdata), **dict(extra or {})}
        try:
            node_image = self._resolve(site, driver, "image", image)
            node_size = self._resolve(site, driver, "size", size)
            nodes = driver.create_node(name=records[0].node_id, size=node_size, image=node_image, **kwargs)
        except adapters.UnknownOffering as exc:
            raise PermanentError(f"launch of {len(records)} on {site}: {exc}") from exc
        except Exception as exc:
            if "IdempotentParameterMismatch" in str(exc):
                raise PermanentError(f"launch of {len(records)} on {site}: {exc}") from exc
            err = self._failed(site, exc, now, capacity_ttl=capacity_ttl)
            if type(err) is RetryableError and str(err).startswith("throttled"):
                budget = self.budget.get(site)
                if budget is not None:
                    budget[1].empty(now)  # the cloud's budget is spent: batches grow as it refills
                else:
                    self._batch_cap[site] = (1, now)  # the instance budget is spent: one per request for now
            raise err from exc
        if not isinstance(nodes, list) or not nodes:
            raise self._failed(site, RuntimeError(f"launch of {len(records)} on {site}: the site answered "
                                                  "with no machine"), now)
        self.backoff[site].succeed()
        self._spend(site, len(nodes), now)
        by_name = {str(n.name): str(n.id) for n in nodes}
        return [by_name.get(r.node_id) for r in records]

    def _resolve(self, site: str, driver: NodeDriver, kind: str, ref: str | None) -> Any:
        """The NodeImage/NodeSize for ``ref`` on ``site``, resolved once per driver."""
        key = (site, kind, ref)
        hit = self._catalogue.get(key)
        if hit is not None and hit.driver is driver:
            return hit
        obj = adapters.resolve_image(driver, ref) if kind == "image" else adapters.resolve_size(driver, ref)
        self._catalogue[key] = obj
        return obj

    def _node(self, record: NodeRecord) -> Node:
        driver = self.driver(record.site)
        return Node(id=record.provider_id or record.node_id, name=record.node_id, state=CloudState.UNKNOWN,
                    public_ips=[], private_ips=[], driver=driver)

    def terminate(self, record: NodeRecord, *, grace: float, now: float) -> None:
        """Ask the site to end the machine; idempotent."""
        if self.gate is not None:
            self.gate.made("terminate")
        driver = self.driver(record.site)
        try:
            driver.destroy_node(self._node(record), **adapters.adapter_for(driver).destroy_kwargs(grace=grace))
        except Exception as exc:
            raise self._failed(record.site, exc, now) from exc

    def preempt(self, record: NodeRecord) -> bool:
        """Kill at once, where the site can (the local site's spot-loss simulation)."""
        driver = self.driver(record.site)
        fn = getattr(driver, "ex_preempt", None)
        return bool(fn(self._node(record))) if fn else False

    def _list_backoff(self, site: str) -> Backoff:
        backoff = self.list_backoff.get(site)
        if backoff is None:
            base, cap = self._backoff_args
            # seeded by the site's name: a simulation replays the same delays
            backoff = self.list_backoff[site] = Backoff(base=base, cap=cap, floor=LIST_BACKOFF_FLOOR,
                                                        rng=random.Random(f"list:{site}"))
        return backoff

    def listing_wait(self, site: str, now: float) -> float:
        """Seconds until the site may be listed again (0.0: now); failed listings back off."""
        backoff = self.list_backoff.get(site)
        return 0.0 if backoff is None else max(0.0, backoff.until - now)

    def list(self, site: str, *, now: float | None = None) -> dict[str, SiteNode]:
        """What the site says exists, by our node id (from the node tag; else the machine's name).

        With ``now``, listings back off per site like launches do: a failed listing makes the site
        unlisted for an exponentially growing, jittered, capped delay (reset by a listing that
        works); asked within it, this raises :class:`RetryableError` without calling the site.
        """
        if now is not None:
            wait = self.listing_wait(site, now)
            if wait > 0:
                raise RetryableError(f"listing of site {site} backs off for {wait:.1f}s more", wait)
            try:
                listed = self._list(site)
            except Exception as exc:
                backoff = self._list_backoff(site)
                delay = backoff.fail(now)
                err = classify(exc, delay=delay)
                raise RetryableError(f"listing of site {site} failed ({backoff.failures} in a row; next in "
                                     f"{delay:.1f}s): {err}", delay) from exc
            done = self.list_backoff.get(site)
            if done is not None:
                done.succeed()
            return listed
        return self._list(site)

    def _list(self, site: str) -> dict[str, SiteNode]:
        driver = self.driver(site)
        adapter = adapters.adapter_for(driver)
        out: dict[str, SiteNode] = {}
        before = self._listed.get(site, {})
        seen_now: dict[int, tuple[Node, SiteNode]] = {}
        for node in driver.list_nodes(**adapter.list_kwargs()):
            hit = before.get(id(node))
            if hit is not None and hit[0] is node:  # a driver that hands back the same Node while nothing changed
                listed = hit[1]
            else:
                tags = adapter.node_tags(node)
                state = node.state  # libcloud's states are singletons: identity is exact and much faster
                alive = not (state is CloudState.TERMINATED or state is CloudState.STOPPED
                             or state is CloudState.ERROR)
                listed = SiteNode(tags.get(adapters.TAG_NODE) or node.name, str(node.id),
                                  state is CloudState.RUNNING, tags, alive, site)
            seen_now[id(node)] = (node, listed)
            seen = out.get(listed.node_id)
            if seen is not None and seen.alive and not listed.alive:
                continue  # a live machine wins over an ended one with the same node id (EC2 lists ended ones a while)
            out[listed.node_id] = listed
        self._listed[site] = seen_now
        return out

    def forget(self, record: NodeRecord) -> None:
        fn = getattr(self.driver(record.site), "ex_forget", None)
        if fn:
            fn(record.provider_id or record.node_id)


def make_site_driver(site: SiteSpec) -> NodeDriver:
    """The libcloud driver for a site spec: a built-in site by name, else the named libcloud provider.

    Credentials are read here from their references (``env:NAME``, ``file:/path``) and go only to
    the driver: never into records, events or status.
    """
    from libcloud.compute.providers import get_driver

    from pool.sites.registry import BUILTIN_SITES, make_driver

    if site.provider is None:
        if site.name not in BUILTIN_SITES:
            raise PermanentError(f"site {site.name!r} names no provider; built-in sites: "
                                 f"{', '.join(sorted(BUILTIN_SITES))}; others need provider: (e.g. ec2)")
        return make_driver(site.name, **site.options)
    key = adapters.secret_from(site.key) if site.key else None
    secret = adapters.secret_from(site.secret) if site.secret else None
    if site.provider.lower() == "ec2":
        opts = dict(site.options)
        return adapters.ec2_driver(region=site.region or "us-east-1", key=site.key or "env:AWS_ACCESS_KEY_ID",
                                   secret=site.secret or "env:AWS_SECRET_ACCESS_KEY", **opts)
    try:
        cls = get_driver(site.provider)
    except AttributeError:
        raise PermanentError(f"site {site.name}: unknown libcloud provider {site.provider!r}") from None
    kwargs: dict[str, Any] = dict(site.options)
    if site.region:
        kwargs.setdefault("region", site.region)
    args = [a for a in (key, secret) if a is not None]
    return cls(*args, **kwargs)  # type: ignore[no-any-return]
