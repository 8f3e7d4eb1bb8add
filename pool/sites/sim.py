"""The `sim` site: a libcloud NodeDriver over a simulated IaaS on an injected clock."""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, overload

from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError
from libcloud.compute.base import (
    Node,
    NodeAuthPassword,
    NodeAuthSSHKey,
    NodeDriver,
    NodeImage,
    NodeLocation,
    NodeSize,
)
from libcloud.compute.types import NodeState

PROVIDER = "elastic_sim"

RUN = "RunInstances"
TERMINATE = "TerminateInstances"
DESCRIBE = "DescribeInstances"
APIS = (RUN, TERMINATE, DESCRIBE)


# ---------------------------------------------------------------------------
# Profile: what kind of cloud is simulated
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SimCloudProfile:
    """Everything that makes the simulated cloud behave like a given IaaS.

    Token buckets are ``(size, refill per second)``; ``math.inf`` turns a bucket off. The
    defaults are EC2's published API throttling limits (request-rate and resource-rate buckets
    for RunInstances and TerminateInstances, a request bucket for the Describe calls).

    Parameters:
        run_requests, run_requests_refill: RunInstances calls (EC2: 5, refill 2/s).
        run_instances, run_instances_refill: instances launched (EC2: 1000, refill 2/s).
        terminate_requests, terminate_requests_refill: TerminateInstances calls (EC2: 100, 5/s).
        terminate_instances, terminate_instances_refill: instances terminated (EC2: 1000, 20/s).
        describe_requests, describe_requests_refill: DescribeInstances calls (EC2: 100, 20/s).
        boot_median: median seconds from an accepted launch to the worker's first heartbeat.
        boot_sigma: sigma of the log-normal boot time (0: every boot takes the median).
        never_boot: fraction of instances that run but never boot (no heartbeat, ever).
        capacity: most instances alive on the site at once (``None``: no limit); more is
            refused with InsufficientInstanceCapacity.
        preemption_rate: spot reclaims per instance-hour (exponential lifetimes; 0: none).
        lag: seconds by which DescribeInstances lags: listings show the state of that long ago.
        pending: seconds a new instance is listed as ``pending`` before ``running``.
        terminated_visible: seconds an ended instance stays in listings as ``terminated``
            (EC2 keeps them about an hour; shorter keeps long simulations fast).
    """

    name: str = "ec2"
    run_requests: float = 5.0
    run_requests_refill: float = 2.0
    run_instances: float = 1000.0
    run_instances_refill: float = 2.0
    terminate_requests: float = 100.0
    terminate_requests_refill: float = 5.0
    terminate_instances: float = 1000.0
    terminate_instances_refill: float = 20.0
    describe_requests: float = 100.0
    describe_requests_refill: float = 20.0
    boot_median: float = 40.0
    boot_sigma: float = 0.3
    never_boot: float = 0.0
    capacity: int | None = None
    preemption_rate: float = 0.0
    lag: float = 1.0
    pending: float = 0.0
    terminated_visible: float = 300.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("name", "capacity"):
                continue
            if not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
                raise ValueError(f"sim profile {self.name}: {f.name} must be a number >= 0, got {value!r}")
        for f_name in ("run_requests", "run_instances", "terminate_requests", "terminate_instances",
                       "describe_requests"):
            if getattr(self, f_name) < 1:
                raise ValueError(f"sim profile {self.name}: {f_name} must be >= 1 (a bucket that holds "
                                 f"no token refuses every call), got {getattr(self, f_name)!r}")
        if self.boot_median <= 0:
            raise ValueError(f"sim profile {self.name}: boot_median must be > 0 seconds, got {self.boot_median!r}")
        if not 0.0 <= self.never_boot <= 1.0:
            raise ValueError(f"sim profile {self.name}: never_boot must be a fraction in [0, 1], got {self.never_boot!r}")
        if self.capacity is not None and (not isinstance(self.capacity, int) or self.capacity < 0):
            raise ValueError(f"sim profile {self.name}: capacity must be a whole number >= 0 or None, "
                             f"got {self.capacity!r}")

    def bucket(self, key: str) -> tuple[float, float]:
        """``(size, refill per second)`` of one bucket, e.g. ``bucket("run_requests")``."""
        return float(getattr(self, key)), float(getattr(self, key + "_refill"))


UNLIMITED = math.inf

#: Named profiles: ``ec2`` (EC2-like limits and boot times) and ``local`` (fast, unthrottled).
PROFILES: dict[str, SimCloudProfile] = {
    "ec2": SimCloudProfile(),
    "local": SimCloudProfile(
        name="local",
        run_requests=UNLIMITED, run_instances=UNLIMITED,
        terminate_requests=UNLIMITED, terminate_instances=UNLIMITED,
        describe_requests=UNLIMITED,
        boot_median=2.0, boot_sigma=0.2, lag=0.0, terminated_visible=60.0,
    ),
}


def _coerce(name: str, raw: str) -> Any:
    text = raw.strip()
    if name == "capacity":
        return None if text.lower() in ("", "none") else int(text)
    if name == "name":
        return text
    return float(text)


def parse_profile(text: str) -> SimCloudProfile:
    """``NAME`` or ``NAME:key=value,key=value`` -> a profile; errors name what would be right."""
    base_name, _, rest = text.partition(":")
    base = PROFILES.get(base_name.strip())
    if base is None:
        raise ValueError(f"unknown site profile {base_name!r}; valid: {', '.join(sorted(PROFILES))}")
    if not rest.strip():
        return base
    allowed = [f.name for f in dataclasses.fields(SimCloudProfile) if f.name != "name"]
    changes: dict[str, Any] = {}
    for item in rest.split(","):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in allowed:
            raise ValueError(f"site profile {base_name}: {item.strip()!r} is not key=value with a known key "
                             f"(allowed: {', '.join(allowed)})")
        try:
            changes[key] = _coerce(key, value)
        except ValueError:
            raise ValueError(f"site profile {base_name}: {key}={value.strip()!r} is not a number") from None
    return dataclasses.replace(base, **changes)


# ---------------------------------------------------------------------------
# Token buckets and the errors a throttled or full cloud answers with
# ---------------------------------------------------------------------------


@dataclass
class TokenBucket:
    """A bucket of ``size`` tokens refilled at ``refill`` per second of the injected clock."""

    size: float
    refill: float
    tokens: float = -1.0
    stamp: float | None = None

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.size

    def level(self, now: float) -> float:
        if self.stamp is not None and now > self.stamp and self.refill > 0:
            self.tokens = min(self.size, self.tokens + (now - self.stamp) * self.refill)
        if self.stamp is None or now > self.stamp:
            self.stamp = now
        return self.tokens

    def take(self, now: float, n: float = 1.0) -> bool:
        """Take ``n`` tokens if there are that many; False (and nothing taken) otherwise."""
        if math.isinf(self.size):
            return True
        if self.level(now) + 1e-9 < n:
            return False
        self.tokens -= n
        return True


class RequestLimitExceeded(RateLimitReachedError):
    """EC2's throttling answer (HTTP 503 ``RequestLimitExceeded``): a bucket was empty."""

    def __init__(self, api: str, bucket: str) -> None:
        super().__init__()
        self.code = 503
        self.message = f"RequestLimitExceeded: Request limit exceeded ({api}: {bucket} bucket empty)"
        self.args = (self.message,)


class InsufficientInstanceCapacity(BaseHTTPError):
    """EC2's answer when the site has no room for the instances asked for."""

    def __init__(self, wanted: int, room: int) -> None:
        super().__init__(500, "InsufficientInstanceCapacity: We currently do not have sufficient capacity "
                              f"for the instances requested (asked for {_words(wanted)}, room for {_words(room)})")


class IdempotentParameterMismatch(BaseHTTPError):
    """A client token reused with a different request."""

    def __init__(self, token: str) -> None:
        super().__init__(400, f"IdempotentParameterMismatch: client token {token!r} was used with a "
                              "different instance count")


def _words(n: int) -> str:
    # numbers in error text could be mistaken for HTTP codes by text matching: spell small ones
    return "none" if n == 0 else "one" if n == 1 else "several" if n < 10 else "many"


# ---------------------------------------------------------------------------
# Machines and API calls
# ---------------------------------------------------------------------------


@dataclass
class SimMachine:
    """One simulated instance, from its accepted launch to its end."""

    id: str
    name: str
    token: str | None
    tags: dict[str, str]
    launched: float
    boot_at: float | None  # None: never boots
    preempt_at: float | None
    ended: float | None = None
    end_reason: str = ""
    stop_requested: float | None = None
    kill_at: float | None = None
    booted: bool = False
    listed: tuple[NodeState, float | None, Node] | None = field(default=None, repr=False, compare=False)

    def alive(self, now: float) -> bool:
        return self.ended is None or now < self.ended

    def state_at(self, when: float, pending: float) -> NodeState:
        if self.ended is not None and when >= self.ended:
            return NodeState.TERMINATED
        if when < self.launched + pending:
            return NodeState.PENDING
        return NodeState.RUNNING


class ApiCall(NamedTuple):
    """One API request: when, which API, whether it was accepted, how many instances it touched."""

    time: float
    api: str
    accepted: bool
    instances: int


class ShutdownRequest(NamedTuple):
    """A terminate asked of a booted machine: its agent should warm-shut down within ``grace``."""

    node: Node
    time: float
    grace: float


class SimNodeDriver(NodeDriver):
    """A simulated IaaS on an injected clock (``ex_clock``: a callable returning simulated seconds).

    - ``create_node`` is idempotent under ``ex_client_token`` (a repeat returns the same machines)
      and takes ``ex_count=N`` (with ``ex_min_count``) to launch N instances in one request, like
      RunInstances' MaxCount/MinCount: **with ``ex_count`` it returns a list of nodes**, without
      it one node. An empty request bucket raises :class:`RequestLimitExceeded` (a libcloud
      ``RateLimitReachedError``, code 503); a full site raises
      :class:`InsufficientInstanceCapacity`.
    - ``destroy_node(node, ex_grace=...)`` is idempotent. A machine that has not booted ends at
      once; a booted one is asked to shut down (see :meth:`ex_shutdown_requests`) and ends when
      its agent says it is done (:meth:`ex_shutdown_complete`) or when the grace runs out.
    - ``list_nodes`` shows the site as it was ``profile.lag`` seconds ago.
    - ``ex_booted(now)`` / ``ex_ended(now)`` report, once each, machines that finished booting /
      ended by ``now``; ``ex_next_event_time()`` says when the next of those happens, so a
      discrete-event simulator can step to it.
    - ``ex_events()`` lists every API call; ``ex_request_rates()`` sums them per API and second.
    """

    type = PROVIDER
    name = "elastic-pool simulated cloud"
    website = "https://github.com/elastic-pool/elastic-pool"
    features: dict[str, list[str]] = {"create_node": []}  # noqa: RUF012 (libcloud declares it so)
    #: ``create_node`` gives each instance of a batch its own name, tags and user-data
    #: (``ex_names``, ``ex_tags_each``, ``ex_userdata_each``): the pool may batch its launches here.
    batch_identity = True

    def __init__(self, key: str = "sim", secret: str | None = None, *, ex_clock: Callable[[], float] | None = None,
                 ex_profile: SimCloudProfile | str = "ec2", ex_seed: int = 0, **kwargs: Any) -> None:
        super().__init__(key=key, secret=secret)
        if ex_clock is None:
            raise ValueError("the sim site needs ex_clock: a callable returning simulated seconds")
        self.clock = ex_clock
        self.profile = parse_profile(ex_profile) if isinstance(ex_profile, str) else ex_profile
        self.seed = ex_seed
        self.rng = random.Random(ex_seed)
        p = self.profile
        self.buckets: dict[str, TokenBucket] = {
            key: TokenBucket(*p.bucket(key))
            for key in ("run_requests", "run_instances", "terminate_requests", "terminate_instances",
                        "describe_requests")
        }
        self.machines: dict[str, SimMachine] = {}
        self._by_token: dict[str, tuple[int, list[str]]] = {}
        self._visible: dict[str, SimMachine] = {}  # machines a listing may still show
        self._alive = 0
        self._seq = 0
        self._heap: list[tuple[float, int, str, str]] = []  # (time, seq, "boot"|"end", machine id)
        self._hseq = 0
        self._booted_out: list[SimMachine] = []
        self._ended_out: list[SimMachine] = []
        self._shutdowns: list[ShutdownRequest] = []
        self.calls: list[ApiCall] = []
        self._size = NodeSize("sim.worker", "simulated worker", ram=4096, disk=20, bandwidth=0, price=0.0,
                              driver=self)
        self._image = NodeImage("sim-image", "simulated worker image", driver=self)

    # -- catalogue --------------------------------------------------------------------------
    def list_sizes(self, location: NodeLocation | None = None) -> list[NodeSize]:
        return [self._size]

    def list_images(self, location: NodeLocation | None = None, ex_owner: str | None = None) -> list[NodeImage]:
        return [self._image]

    def list_locations(self) -> list[NodeLocation]:
        return [NodeLocation("sim-1a", "simulated zone", "sim", driver=self)]

    # -- internals --------------------------------------------------------------------------
    def _push(self, when: float, kind: str, machine_id: str) -> None:
        self._hseq += 1
        heapq.heappush(self._heap, (when, self._hseq, kind, machine_id))

    def _end(self, m: SimMachine, when: float, reason: str, *, report: bool) -> None:
        if m.ended is not None:
            return
        m.ended = when
        m.end_reason = reason
        self._alive -= 1
        if report:
            self._ended_out.append(m)

    def _settle(self, now: float) -> None:
        """Apply every scheduled boot, preemption and grace kill due by ``now``, in time order."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, kind, mid = heapq.heappop(heap)
            m = self.machines[mid]
            if m.ended is not None:
                continue
            if kind == "boot":
                m.booted = True
                self._booted_out.append(m)
            elif kind == "preempt":
                self._end(m, when, "preempted", report=True)
            elif kind == "kill" and m.kill_at == when:
                self._end(m, when, "killed: shutdown grace ran out", report=True)

    def _call(self, now: float, api: str, request_bucket: str, resource_bucket: str | None = None,
              instances: int = 0) -> None:
        """Charge one API request (and ``instances`` resource tokens) or raise RequestLimitExceeded."""
        req = self.buckets[request_bucket]
        res = self.buckets[resource_bucket] if resource_bucket else None
        if not req.take(now):
            self.calls.append(ApiCall(now, api, False, instances))
            raise RequestLimitExceeded(api, "request")
        if res is not None and instances and not res.take(now, instances):
            self.calls.append(ApiCall(now, api, False, instances))
            raise RequestLimitExceeded(api, "resource")
        self.calls.append(ApiCall(now, api, True, instances))

    def _node(self, m: SimMachine, state: NodeState) -> Node:
        return Node(
            id=m.id, name=m.name, state=state, public_ips=[], private_ips=[], driver=self,
            size=self._size, image=self._image,
            extra={"tags": m.tags, "client_token": m.token, "launched": m.launched, "boot_at": m.boot_at,
                   "ended": m.ended, "end_reason": m.end_reason},
        )

    def _current(self, m: SimMachine, now: float) -> Node:
        return self._node(m, m.state_at(now, self.profile.pending))

    def _lookup(self, node: Node | str) -> SimMachine | None:
        key = node if isinstance(node, str) else str(node.id)
        m = self.machines.get(key)
        if m is None and not isinstance(node, str):
            m = self.machines.get(str(node.name))  # a record without the provider id
        return m

    def _launch_one(self, name: str, token: str | None, tags: Mapping[str, str], now: float) -> SimMachine:
        p, rng = self.profile, self.rng
        self._seq += 1
        mid = f"i-{self._seq:017x}"
        boot = p.boot_median * (math.exp(p.boot_sigma * rng.gauss(0.0, 1.0)) if p.boot_sigma > 0 else 1.0)
        never = rng.random() < p.never_boot if p.never_boot > 0 else False
        preempt = now + rng.expovariate(p.preemption_rate / 3600.0) if p.preemption_rate > 0 else None
        m = SimMachine(id=mid, name=name, token=token, tags=dict(tags), launched=now,
                       boot_at=None if never else now + boot, preempt_at=preempt)
        self.machines[mid] = m
        self._visible[mid] = m
        self._alive += 1
        if m.boot_at is not None:
            self._push(m.boot_at, "boot", mid)
        if preempt is not None:
            self._push(preempt, "preempt", mid)
        return m

    # -- node API ---------------------------------------------------------------------------
    @overload
    def create_node(self, name: str, size: NodeSize | None = None, image: NodeImage | None = None,
                    location: NodeLocation | None = None, auth: NodeAuthSSHKey | NodeAuthPassword | None = None,
                    *, ex_userdata: str = "", ex_client_token: str | None = None,
                    ex_tags: Mapping[str, str] | None = None, ex_count: None = None,
                    ex_min_count: int | None = None,
                    ex_names: Sequence[str] | None = None, ex_tags_each: Sequence[Mapping[str, str]] | None = None,
                    ex_userdata_each: Sequence[str] | None = None, **kwargs: Any) -> Node: ...

    @overload
    def create_node(self, name: str, size: NodeSize | None = None, image: NodeImage | None = None,
                    location: NodeLocation | None = None, auth: NodeAuthSSHKey | NodeAuthPassword | None = None,
                    *, ex_userdata: str = "", ex_client_token: str | None = None,
                    ex_tags: Mapping[str, str] | None = None, ex_count: int,
                    ex_min_count: int | None = None,
                    ex_names: Sequence[str] | None = None, ex_tags_each: Sequence[Mapping[str, str]] | None = None,
                    ex_userdata_each: Sequence[str] | None = None, **kwargs: Any) -> list[Node]: ...

    def create_node(self, name: str, size: NodeSize | None = None, image: NodeImage | None = None,
                    location: NodeLocation | None = None, auth: NodeAuthSSHKey | NodeAuthPassword | None = None,
                    *, ex_userdata: str = "", ex_client_token: str | None = None,
                    ex_tags: Mapping[str, str] | None = None, ex_count: int | None = None,
                    ex_min_count: int | None = None,
                    ex_names: Sequence[str] | None = None, ex_tags_each: Sequence[Mapping[str, str]] | None = None,
                    ex_userdata_each: Sequence[str] | None = None, **kwargs: Any) -> Node | list[Node]:
        """Launch one instance (or ``ex_count`` of them: then a list is returned).

        ``ex_min_count`` (default ``ex_count``): with less room than that the request fails with
        InsufficientInstanceCapacity; with room for at least that many, as many as fit up to
        ``ex_count`` are launched. Batch instances are named ``name``, ``name-1``, ``name-2``...
        and share the tags given.

        Per-instance identity (the pool's batched launches): ``ex_names``, ``ex_tags_each`` and
        ``ex_userdata_each``, each with ``ex_count`` entries, give instance *i* its own name, its
        own tags (over ``ex_tags``) and its own user-data. When fewer instances fit than asked,
        the first ones in these lists are launched.
        """
        count = 1 if ex_count is None else ex_count
        minimum = count if ex_min_count is None else ex_min_count
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"ex_count must be a whole number >= 1, got {ex_count!r}")
        if not isinstance(minimum, int) or not 1 <= minimum <= count:
            raise ValueError(f"ex_min_count must be a whole number in [1, ex_count={count}], got {ex_min_count!r}")
        for label, each in (("ex_names", ex_names), ("ex_tags_each", ex_tags_each),
                            ("ex_userdata_each", ex_userdata_each)):
            if each is not None and len(each) != count:
                raise ValueError(f"{label} must have ex_count={count} entries, got {len(each)}")
        now = self.clock()
        self._settle(now)
        if ex_client_token is not None and ex_client_token in self._by_token:
            asked, ids = self._by_token[ex_client_token]
            self._call(now, RUN, "run_requests")
            if asked != count:
                raise IdempotentParameterMismatch(ex_client_token)
            nodes = [self._current(self.machines[i], now) for i in ids]
            return nodes if ex_count is not None else nodes[0]
        cap = self.profile.capacity
        room = count if cap is None else max(0, min(count, cap - self._alive))
        if room < minimum:
            self._call(now, RUN, "run_requests")
            raise InsufficientInstanceCapacity(count, room)
        self._call(now, RUN, "run_requests", "run_instances", room)
        tags = dict(ex_tags or {})
        made = [self._launch_one(ex_names[i] if ex_names is not None else name if i == 0 else f"{name}-{i}",
                                 ex_client_token, {**tags, **ex_tags_each[i]} if ex_tags_each is not None else tags,
                                 now)
                for i in range(room)]
        if ex_client_token is not None:
            self._by_token[ex_client_token] = (count, [m.id for m in made])
        nodes = [self._current(m, now) for m in made]
        return nodes if ex_count is not None else nodes[0]

    def list_nodes(self, *args: Any, **kwargs: Any) -> list[Node]:
        """Instances as the site saw them ``lag`` seconds ago (ended ones for a while, as terminated)."""
        now = self.clock()
        self._settle(now)
        self._call(now, DESCRIBE, "describe_requests")
        seen = now - self.profile.lag
        keep = self.profile.terminated_visible
        pending = self.profile.pending
        out: list[Node] = []
        gone: list[str] = []
        for mid, m in self._visible.items():
            if m.launched > seen:
                continue
            if m.ended is not None and m.ended + keep < seen:
                gone.append(mid)
                continue
            state = m.state_at(seen, pending)
            cached = m.listed
            if cached is None or cached[0] is not state or cached[1] != m.ended:
                cached = m.listed = (state, m.ended, self._node(m, state))
            out.append(cached[2])
        for mid in gone:
            del self._visible[mid]
        return out

    def destroy_node(self, node: Node, ex_grace: float = 0.0) -> bool:
        """Terminate; idempotent. A booted machine gets ``ex_grace`` seconds to shut down cleanly."""
        now = self.clock()
        self._settle(now)
        m = self._lookup(node)
        live = m is not None and m.ended is None
        self._call(now, TERMINATE, "terminate_requests", "terminate_instances" if live else None,
                   1 if live else 0)
        if m is None or m.ended is not None:
            return True
        if not m.booted or ex_grace <= 0:
            self._end(m, now, "terminated" if not m.booted else "terminated without grace", report=m.booted)
            return True
        kill_at = now + ex_grace
        if m.stop_requested is None:
            m.stop_requested = now
            self._shutdowns.append(ShutdownRequest(self._current(m, now), now, ex_grace))
        if m.kill_at is None or kill_at < m.kill_at:
            m.kill_at = kill_at
            self._push(kill_at, "kill", m.id)
        return True

    # -- hooks for a simulator (the machine's side of the world) -----------------------------
    def ex_booted(self, now: float) -> list[Node]:
        """Machines that finished booting by ``now`` and were not reported before (each once)."""
        self._settle(now)
        out = [self._node(m, NodeState.RUNNING) for m in self._booted_out]
        self._booted_out.clear()
        return out

    def ex_ended(self, now: float) -> list[Node]:
        """Booted machines that the site ended by ``now`` (preempted, killed after grace, no grace)."""
        self._settle(now)
        out = [self._node(m, NodeState.TERMINATED) for m in self._ended_out]
        self._ended_out.clear()
        return out

    def ex_shutdown_requests(self) -> list[ShutdownRequest]:
        """Terminates asked of booted machines since the last call: their agents should shut down."""
        out = list(self._shutdowns)
        self._shutdowns.clear()
        return out

    def ex_shutdown_complete(self, node: Node | str, now: float) -> None:
        """The machine's agent finished its warm shutdown: the machine ends now."""
        m = self._lookup(node)
        if m is not None:
            self._end(m, now, "shut down", report=False)

    def ex_next_event_time(self) -> float | None:
        """When the next scheduled boot, preemption or grace kill happens (None: nothing scheduled)."""
        heap = self._heap
        while heap:
            when, _, kind, mid = heap[0]
            m = self.machines[mid]
            if m.ended is not None or (kind == "kill" and m.kill_at != when):
                heapq.heappop(heap)
                continue
            return when
        return None

    def ex_preempt(self, node: Node) -> bool:
        """Reclaim the machine at once, like a spot loss."""
        now = self.clock()
        self._settle(now)
        m = self._lookup(node)
        if m is None or m.ended is not None:
            return False
        self._end(m, now, "preempted", report=m.booted)
        return True

    def ex_machine(self, node: Node | str) -> SimMachine | None:
        """The simulated machine behind a node or an instance id."""
        return self._lookup(node)

    def ex_alive(self) -> int:
        """Instances that exist now (launched, not ended)."""
        return self._alive

    def ex_billed_seconds(self, until: float) -> float:
        """Instance-seconds billed up to ``until``: from each accepted launch to its end."""
        total = 0.0
        for m in self.machines.values():
            end = until if m.ended is None else min(m.ended, until)
            total += max(0.0, end - m.launched)
        return total

    # -- request accounting -----------------------------------------------------------------
    def ex_events(self) -> list[ApiCall]:
        """Every API call so far, in order."""
        return list(self.calls)

    def ex_request_rates(self) -> dict[str, dict[str, float]]:
        """Per API: calls accepted and throttled, and the most accepted calls in one clock second.

        ``bound_per_second`` is what the request bucket allows in any one second (size + refill),
        so ``max_per_second <= bound_per_second`` shows the site's limits held.
        """
        bucket_of = {RUN: "run_requests", TERMINATE: "terminate_requests", DESCRIBE: "describe_requests"}
        out: dict[str, dict[str, float]] = {}
        for api in APIS:
            per_second: Counter[int] = Counter()
            accepted = throttled = instances = 0
            for call in self.calls:
                if call.api != api:
                    continue
                if call.accepted:
                    accepted += 1
                    instances += call.instances
                    per_second[math.floor(call.time)] += 1
                else:
                    throttled += 1
            size, refill = self.profile.bucket(bucket_of[api])
            out[api] = {
                "accepted": accepted,
                "throttled": throttled,
                "instances": instances,
                "max_per_second": max(per_second.values(), default=0),
                "bound_per_second": size + refill,
            }
        return out

    def ex_calls_per_second(self, api: str, *, accepted_only: bool = True) -> dict[int, int]:
        """``{second: calls}`` for one API (seconds of the injected clock, floored)."""
        counts: Counter[int] = Counter()
        for call in self.calls:
            if call.api == api and (call.accepted or not accepted_only):
                counts[math.floor(call.time)] += 1
        return dict(sorted(counts.items()))


__all__ = [
    "PROFILES",
    "ApiCall",
    "InsufficientInstanceCapacity",
    "RequestLimitExceeded",
    "ShutdownRequest",
    "SimCloudProfile",
    "SimMachine",
    "SimNodeDriver",
    "TokenBucket",
    "parse_profile",
]
