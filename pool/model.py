"""Value types of the pool and the node state machine: no I/O at all."""

from __future__ import annotations

import copy
import enum
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class NodeState(str, enum.Enum):
    """Where one node is in its life."""

    REQUESTED = "REQUESTED"  # launch record written, not yet handed to a site
    PENDING = "PENDING"  # the site accepted the launch
    STARTED = "STARTED"  # the agent is alive (first heartbeat), the workload is booting
    JOINED = "JOINED"  # the workload pulls work
    DRAINING = "DRAINING"  # asked to finish its work and stop (warm shutdown)
    TERMINATING = "TERMINATING"  # terminate sent to the site
    TERMINATED = "TERMINATED"  # gone
    UNHEALTHY = "UNHEALTHY"  # heartbeats stopped or the workload died
    FAILED = "FAILED"  # launch error, boot timeout, never joined


S = NodeState

#: The one table of legal moves. Anything else is refused by :func:`set_state`.
TRANSITIONS: dict[NodeState, frozenset[NodeState]] = {
    S.REQUESTED: frozenset({S.PENDING, S.FAILED, S.TERMINATING, S.TERMINATED}),
    S.PENDING: frozenset({S.STARTED, S.FAILED, S.TERMINATING, S.TERMINATED, S.UNHEALTHY}),
    S.STARTED: frozenset({S.JOINED, S.FAILED, S.TERMINATING, S.TERMINATED, S.UNHEALTHY}),
    S.JOINED: frozenset({S.DRAINING, S.TERMINATING, S.TERMINATED, S.UNHEALTHY}),
    S.DRAINING: frozenset({S.TERMINATING, S.TERMINATED, S.UNHEALTHY}),
    S.UNHEALTHY: frozenset({S.TERMINATING, S.TERMINATED}),
    S.FAILED: frozenset({S.TERMINATING, S.TERMINATED}),
    S.TERMINATING: frozenset({S.TERMINATED}),
    S.TERMINATED: frozenset(),
}

#: States in which a node counts toward the actual size of its domain.
LIVE_STATES = frozenset({S.REQUESTED, S.PENDING, S.STARTED, S.JOINED})
#: States in which a node has not yet joined (scale-in takes these first).
UNJOINED_STATES = frozenset({S.REQUESTED, S.PENDING, S.STARTED})
#: States in which a machine may still exist on a site.
EXISTING_STATES = frozenset(set(NodeState) - {S.TERMINATED})
FINAL_STATES = frozenset({S.TERMINATED})


class IllegalTransition(ValueError):
    """A state change that the node state table does not allow."""


@dataclass
class NodeRecord:
    """What the control plane knows of one node; changed only through :meth:`set_state`."""

    node_id: str
    domain: str
    launch_id: str
    site: str
    deployable_type: str
    state: NodeState = S.REQUESTED
    created: float = 0.0
    history: list[tuple[str, float, str]] = field(default_factory=list)
    provider_id: str | None = None  # the site's id for the machine
    drain_deadline: float | None = None
    drain_sent: bool = False  # DRAINING: the warm shutdown has been asked of the machine

    def copy(self) -> "NodeRecord":
        """A copy that can change state without touching this one (history entries are immutable)."""
        twin = copy.copy(self)
        twin.history = list(self.history)
        return twin

    def set_state(self, new: NodeState, now: float, detail: str = "") -> None:
        """Move to ``new`` or raise :class:`IllegalTransition`; keeps ``(state, time, detail)``."""
        if new not in TRANSITIONS[self.state]:
            raise IllegalTransition(
                f"node {self.node_id}: {self.state.value} -> {new.value} is not allowed "
                f"(allowed: {', '.join(sorted(s.value for s in TRANSITIONS[self.state])) or 'none'})"
            )
        self.state = new
        self.history.append((new.value, now, detail))

    def entered(self, state: NodeState) -> float | None:
        """When the node last entered ``state``, from its history."""
        for name, when, _ in reversed(self.history):
            if name == state.value:
                return when
        return None

    @property
    def since(self) -> float:
        """When the node entered its current state."""
        return self.history[-1][1] if self.history else self.created

    def to_json(self) -> str:
        data = asdict(self)
        data["state"] = self.state.value
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> "NodeRecord":
        data = json.loads(text)
        data["state"] = NodeState(data["state"])
        data["history"] = [tuple(h) for h in data.get("history", [])]
        return cls(**data)

    @classmethod
    def new(
        cls,
        *,
        node_id: str,
        domain: str,
        launch_id: str,
        site: str,
        deployable_type: str,
        now: float,
        detail: str = "",
    ) -> "NodeRecord":
        rec = cls(
            node_id=node_id,
            domain=domain,
            launch_id=launch_id,
            site=site,
            deployable_type=deployable_type,
            created=now,
        )
        rec.history.append((S.REQUESTED.value, now, detail))
        return rec


@dataclass(frozen=True)
class Heartbeat:
    """What a node's agent last reported about itself."""

    time: float
    ready: bool = False  # the workload is pulling work
    active: int = 0  # tasks running now
    idle_since: float | None = None  # when the last task ended (None: never busy / busy now)
    workload_alive: bool = True
    draining: bool = False
    preempt_notice: float | None = None  # when the site warned that it will reclaim the machine


@dataclass(frozen=True)
class Reading:
    """One number read from the world, or the reason it could not be read."""

    sensor: str
    value: float | None
    time: float
    error: str | None = None
    detail: Mapping[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.value is not None


@dataclass(frozen=True)
class DomainView:
    """A frozen snapshot of a domain, handed to a policy."""

    name: str
    min_size: int
    max_size: int
    actual: int  # live nodes: requested + pending + started + joined
    joined: int
    booting: int  # requested + pending + started
    busy: int
    idle: int
    draining: int
    intended: int  # the last intended size
    last_scale_up: float | None = None
    last_scale_down: float | None = None
    #: the policy's own memory from its previous decision (JSON-serializable), e.g. sample windows
    memory: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """A policy's answer: the intended size and why.

    ``memory`` (JSON-serializable) is handed back to the same policy as ``view.memory`` on the
    next tick: how a pure policy keeps windows, cooldowns or ramps without state of its own.
    ``None`` keeps the previous memory.
    """

    target: int
    reason: str
    inputs: Mapping[str, Any] = field(default_factory=dict)
    memory: Mapping[str, Any] | None = None


# ---------------------------------------------------------------------------
# Domain specification (what `pool apply -f` reads)
# ---------------------------------------------------------------------------

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PolicySpec(BaseModel):
    """`policy:` block: a registered policy name plus its own parameters."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = "queue_depth"

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class SensorSpec(BaseModel):
    """`sensor:` block: a registered sensor name plus its own parameters."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = "celery"
    timeout: float = Field(2.0, gt=0)

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ScalingSpec(_Spec):
    """Shaping the manager applies to every policy's target."""

    activation: float = Field(
        0.0, ge=0, description="0->1 only when the sensor value exceeds this (KEDA activation)"
    )
    scale_up_limit: int = Field(0, ge=0, description="max new launches per tick; 0 = unlimited")
    max_in_flight: int = Field(0, ge=0, description="max nodes booting at once; 0 = unlimited")
    stabilization: float = Field(
        30.0, ge=0, description="seconds: scale down only to the highest target seen in this window"
    )
    idle_timeout: float = Field(
        0.0, ge=0, description="seconds a worker must be idle before it may be removed"
    )
    fallback: Literal["hold", "fixed"] = "hold"
    fallback_size: int = Field(0, ge=0)


class CelerySpec(_Spec):
    """How a celery-worker node runs the user's Celery app."""

    app: str = Field(..., min_length=1, description="the -A argument, e.g. 'tasks' or 'proj.celery:app'")
    path: str | None = Field(None, description="directory added to PYTHONPATH of the worker")
    queue: str = Field("celery", min_length=1)
    concurrency: int = Field(1, ge=1, le=256)
    pool: Literal["auto", "prefork", "solo", "threads"] = Field(
        "auto", description="Celery execution pool; auto = solo (Redis) or threads (AMQP) for "
        "concurrency 1, else prefork"
    )
    visibility_timeout: float = Field(
        30.0, gt=0, description="Redis broker: seconds before an unacked task is redelivered"
    )
    loglevel: str = "WARNING"


class SparkDecommissionSpec(_Spec):
    """How a spark-worker leaves without losing work (Spark's graceful decommission)."""

    enabled: bool = Field(
        True, description="scale-in decommissions the worker (signal) before it stops"
    )
    signal: str = Field("PWR", pattern=r"^[A-Z0-9]+$", description="spark.worker.decommission.signal")
    shuffle_blocks: bool = Field(True, description="jobs migrate shuffle files off a leaving executor")
    rdd_blocks: bool = Field(True, description="jobs migrate cached RDD blocks off a leaving executor")
    migration_interval: float = Field(
        2.0, gt=0, description="seconds between block-migration rounds (replicationReattemptInterval)"
    )


class SparkSpec(_Spec):
    """`spark:` block of a spark-worker domain: its standalone master and the size of a worker."""

    master_url: str | None = Field(
        None, description="adopt this master (spark://host:port); default: start one"
    )
    master_ui: str | None = Field(None, description="web UI of an adopted master (http://host:port)")
    host: str = Field("127.0.0.1", min_length=1, description="address the master and workers bind")
    master_port: int | None = Field(None, ge=1, le=65535, description="default: a free port at start")
    ui_port: int | None = Field(None, ge=1, le=65535, description="default: a free port at start")
    worker_cores: int = Field(1, ge=1, le=1024)
    worker_memory: str = Field("1g", description="memory a worker offers executors, e.g. 512m, 2g")
    daemon_memory: str = Field("256m", description="heap of the master and worker daemons")
    idle_timeout: float = Field(
        60.0, ge=0, description="default scaling.idle_timeout (Spark's executorIdleTimeout)"
    )
    decommission: SparkDecommissionSpec = SparkDecommissionSpec()

    @field_validator("master_url")
    @classmethod
    def _master_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^spark://[^/:]+:\d+$", v):
            raise ValueError(f"{v!r} is not a Spark master URL; expected spark://host:port")
        return v

    @field_validator("master_ui")
    @classmethod
    def _master_ui(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/]+/?$", v):
            raise ValueError(f"{v!r} is not a web UI address; expected http://host:port")
        return v.rstrip("/") if v else v

    @field_validator("worker_memory", "daemon_memory")
    @classmethod
    def _memory(cls, v: str) -> str:
        if not re.match(r"^\d+[kmgtKMGT]?$", v):
            raise ValueError(
                f"{v!r} is not a JVM memory size; expected a number with k, m, g or t, e.g. 512m"
            )
        return v

    @model_validator(mode="after")
    def _adopt(self) -> SparkSpec:
        if self.master_url and not self.master_ui:
            raise ValueError(
                "master_url needs master_ui too (the adopted master's web UI, http://host:port)"
            )
        return self


class TimeoutSpec(_Spec):
    heartbeat_interval: float = Field(2.0, gt=0)
    heartbeat_timeout: float = Field(6.0, gt=0)
    boot: float = Field(120.0, gt=0, description="seconds from request to joined")
    boot_replace: float | None = Field(
        None, gt=0, description="seconds from launch after which a node that has neither joined nor sent a "
        "heartbeat is presumed dead for planning: a replacement is launched, the node is kept until `boot` "
        "in case it joins late; none: `boot`")
    drain: float = Field(600.0, gt=0, description="drain deadline for a busy worker")
    terminate_grace: float = Field(10.0, ge=0)

    @model_validator(mode="after")
    def _hb(self) -> "TimeoutSpec":
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ValueError(
                f"heartbeat_timeout ({self.heartbeat_timeout}) must be greater than "
                f"heartbeat_interval ({self.heartbeat_interval})"
            )
        if self.boot_replace is not None and self.boot_replace > self.boot:
            raise ValueError(f"boot_replace ({self.boot_replace}) must be at most boot ({self.boot}): a node is "
                             "replaced no later than its boot timeout")
        return self


PLACEMENTS = ("overflow", "spread", "cheapest", "spot_first")
CREDENTIAL_REF = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$")


class SiteSpec(_Spec):
    """One site a domain may place workers on: a libcloud driver, its offering and its place in the order."""

    name: str = Field(..., min_length=1, description="the site's name ('local', 'sim', or any name with a provider)")
    provider: str | None = Field(None, description="libcloud compute provider (e.g. 'ec2'); none: a built-in site")
    key: str | None = Field(None, description="credential by reference: env:NAME or file:/path")
    secret: str | None = Field(None, description="credential by reference: env:NAME or file:/path")
    region: str | None = None
    options: dict[str, Any] = Field(default_factory=dict, description="more driver arguments (host, port, ...)")
    image: str | None = Field(None, description="image id for every deployable type not in `images`")
    images: dict[str, str] = Field(default_factory=dict, description="deployable type -> image id")
    size: str | None = Field(None, description="size (instance type) for every deployable type not in `sizes`")
    sizes: dict[str, str] = Field(default_factory=dict, description="deployable type -> size")
    spot: bool = Field(False, description="preemptible capacity")
    price: float = Field(0.0, ge=0, description="per node-hour, for cheapest-first placement")
    rank: int = Field(0, description="overflow order: lower first; scale-in from the highest")
    max: int | None = Field(None, ge=0, description="most live nodes of this domain on this site")
    weight: float = Field(1.0, ge=0, description="share for spread placement")
    batch: int = Field(1, ge=1, le=1000, description="most machines per launch request, where the driver can")
    rate: float | None = Field(None, gt=0, description="launch requests per second the pool allows itself "
                               "here (the cloud's published limit, e.g. 2 on EC2); none: unpaced")
    burst: int = Field(1, ge=1, description="launch requests that may go at once before pacing (EC2: 5)")
    instance_rate: float | None = Field(None, gt=0, description="machines per second the cloud's launch budget "
                                        "refills (EC2's RunInstances resource bucket: 2); batches are sized to "
                                        "what is left of it; none: not tracked")
    instance_burst: int = Field(1000, ge=1, description="machines the launch budget holds when full (EC2: 1000)")

    @field_validator("key", "secret")
    @classmethod
    def _reference(cls, v: str | None) -> str | None:
        if v is not None and not CREDENTIAL_REF.match(v):
            raise ValueError("must be a reference, env:NAME or file:/path (a literal credential is refused "
                             "and not shown)")
        return v

    def image_for(self, deployable_type: str) -> str | None:
        return self.images.get(deployable_type, self.image)

    def size_for(self, deployable_type: str) -> str | None:
        return self.sizes.get(deployable_type, self.size)


class DomainSpec(_Spec):
    """A domain: a pool of identical workers with one policy."""

    name: str
    deployable_type: str = "celery-worker"
    site: str = Field("local", description="the only site (shorthand for `sites: [{name: SITE}]`)")
    sites: list[SiteSpec] = Field(default_factory=list, description="sites in placement order")
    placement: Literal["overflow", "spread", "cheapest", "spot_first"] = "overflow"
    overprovision: float = Field(0.0, ge=0, le=100, description="percent of the nodes still to join launched "
                                 "above them (with two standard deviations) while the target has not joined (some "
                                 "machines never boot); the surplus goes once it has (docs/sites.md)")
    capacity_ttl: float = Field(180.0, ge=0, description="seconds a site that answered 'out of capacity' "
                                "gets no launches")
    min: int = Field(0, ge=0)
    max: int = Field(..., ge=0, le=100_000)
    broker: str | None = Field(None, description="broker URL; default: the pool's own Redis")
    policy: PolicySpec = PolicySpec()
    sensor: SensorSpec = SensorSpec()
    scaling: ScalingSpec = ScalingSpec()
    celery: CelerySpec | None = None
    spark: SparkSpec | None = None
    timeouts: TimeoutSpec = TimeoutSpec()
    attributes: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("must be lowercase letters, digits and '-', 1-63 chars")
        return v

    @field_validator("broker")
    @classmethod
    def _broker(cls, v: str | None) -> str | None:
        if v is None:
            return v
        schemes = ("redis", "rediss", "redis+socket", "amqp", "amqps", "pyamqp")
        scheme = v.split("://", 1)[0] if "://" in v else ""
        if scheme not in schemes:
            raise ValueError(f"{v!r} is not a broker URL; expected one of {', '.join(s + '://' for s in schemes)}")
        return v

    @model_validator(mode="after")
    def _bounds(self) -> "DomainSpec":
        names = [s.name for s in self.sites]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sites: {', '.join(dupes)} listed more than once; site names must be unique")
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must be >= min ({self.min})")
        if self.deployable_type == "celery-worker" and self.celery is None:
            raise ValueError("deployable_type celery-worker needs a 'celery:' block with at least 'app'")
        return self

    def site_spec(self, name: str) -> SiteSpec:
        for site in self.sites:
            if site.name == name:
                return site
        return SiteSpec(name=name)  # a site no longer configured: its nodes are still ended cleanly

    @model_validator(mode="before")
    @classmethod
    def _site_list(cls, data: Any) -> Any:
        """`site: NAME` and `sites: [...]` are one setting: the first site listed is `site`."""
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        sites = data.get("sites")
        if not sites:
            data["sites"] = [{"name": data.get("site", "local")}]
        elif isinstance(sites, list) and sites and isinstance(sites[0], Mapping) and "name" in sites[0]:
            if "site" in data and data["site"] != sites[0]["name"]:
                raise ValueError(f"site: {data['site']!r} is not the first of sites ({sites[0]['name']!r}); "
                                 "give one or the other")
            data["site"] = sites[0]["name"]
        return data

    @model_validator(mode="before")
    @classmethod
    def _spark_defaults(cls, data: Any) -> Any:
        """A spark-worker domain defaults to the spark sensor, the spark_tasks policy and the
        `spark.idle_timeout` as `scaling.idle_timeout`, unless the spec says otherwise."""
        if not isinstance(data, Mapping) or data.get("deployable_type") != "spark-worker":
            return data
        data = dict(data)
        data.setdefault("sensor", {"name": "spark"})
        data.setdefault("policy", {"name": "spark_tasks"})
        spark = data.get("spark")
        scaling = data.get("scaling")
        if isinstance(spark, Mapping) and (scaling is None or isinstance(scaling, Mapping)):
            scaling = dict(scaling or {})
            default_idle = SparkSpec.model_fields["idle_timeout"].default
            scaling.setdefault("idle_timeout", spark.get("idle_timeout", default_idle))
            data["scaling"] = scaling
        return data

    @model_validator(mode="after")
    def _spark(self) -> DomainSpec:
        if self.deployable_type == "spark-worker" and self.spark is None:
            raise ValueError(
                "deployable_type spark-worker needs a 'spark:' block (e.g. 'spark: {}' to start a master)"
            )
        return self


class SpecError(ValueError):
    """A domain spec that does not validate; the message is one line."""


def one_line_error(exc: ValidationError, *, prefix: str = "") -> str:
    """Turn a pydantic error into one line naming the field and what is allowed."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "spec"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
            model = _model_for(err["loc"])
            if model is not None:
                msg += f" (allowed: {', '.join(model.model_fields)})"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        parts.append(f"{loc}: {msg}")
    return prefix + "; ".join(parts)


def _model_for(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = DomainSpec
    for part in loc[:-1]:
        field_info = model.model_fields.get(str(part))
        if field_info is None:
            return None
        ann = field_info.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        nxt = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nxt is None:
            return None
        model = nxt
    return model


def parse_domain_spec(data: Any) -> DomainSpec:
    """Validate a mapping as a domain spec or raise :class:`SpecError` with a one-line message."""
    if not isinstance(data, Mapping):
        raise SpecError(f"a domain spec must be a mapping of fields, got {type(data).__name__}")
    try:
        return DomainSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(one_line_error(exc, prefix="invalid domain spec: ")) from None


# ---------------------------------------------------------------------------
# Plug-in registries: alias -> "module:Class", then an entry-point group
# ---------------------------------------------------------------------------


class UnknownPlugin(LookupError):
    """A plug-in name that is neither an alias nor a registered entry point."""


class PluginParamError(ValueError):
    """Parameters that a plug-in does not take, or values it refuses."""


class Registry:
    """Resolves short names to classes: a built-in alias table, then an entry-point group."""

    def __init__(self, kind: str, group: str, aliases: Mapping[str, str]) -> None:
        self.kind = kind
        self.group = group
        self.aliases = dict(aliases)

    def _entry_points(self) -> dict[str, Any]:
        from importlib.metadata import entry_points

        return {ep.name: ep for ep in entry_points(group=self.group)}

    def names(self) -> list[str]:
        return sorted(set(self.aliases) | set(self._entry_points()))

    def resolve(self, name: str) -> type:
        import importlib

        target = self.aliases.get(name)
        if target is not None:
            module, _, attr = target.partition(":")
            return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
        ep = self._entry_points().get(name)
        if ep is not None:
            return ep.load()  # type: ignore[no-any-return]
        raise UnknownPlugin(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}")

    def build(self, name: str, params: Mapping[str, Any]) -> Any:
        """Instantiate plug-in ``name`` with keyword ``params``, naming any that it does not take."""
        cls = self.resolve(name)
        import dataclasses
        import inspect

        if dataclasses.is_dataclass(cls):
            allowed = [f.name for f in dataclasses.fields(cls) if f.init]
        else:
            sig = inspect.signature(cls)
            allowed = [p for p in sig.parameters if p != "self"]
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise PluginParamError(
                f"{self.kind} {name}: unknown parameter {', '.join(map(repr, unknown))} "
                f"(allowed: {', '.join(allowed) or 'none'})"
            )
        try:
            return cls(**params)
        except TypeError as exc:
            raise PluginParamError(f"{self.kind} {name}: {exc}") from None
        except ValueError as exc:
            raise PluginParamError(f"{self.kind} {name}: {exc}") from None


@dataclass
class DomainState:
    """The manager's own memory of a domain between ticks (persisted in the store)."""

    intended: int = 0
    override: int | None = None  # operator's manual size; None = the policy decides
    recent: list[tuple[float, int]] = field(default_factory=list)  # (time, bounded raw target)
    last_decision: dict[str, Any] | None = None
    readings: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_scale_up: float | None = None
    last_scale_down: float | None = None
    policy_memory: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes | None) -> "DomainState":
        if not text:
            return cls()
        data = json.loads(text)
        data["recent"] = [tuple(r) for r in data.get("recent", [])]
        return cls(**data)
