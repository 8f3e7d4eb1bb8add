"""Value types of the pool and the node state machine: no I/O at all."""

from __future__ import annotations

import copy
import dataclasses
import enum
import functools
import importlib
import inspect
import json
import math
import re
import reprlib
import types
import typing
from collections import abc
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Callable, Literal, Mapping

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    StringConstraints,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from pool.core.secrets import redact_text


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
    # STARTED -> DRAINING: scale-in of a worker whose agent runs (it may hold work before it says so)
    S.STARTED: frozenset({S.JOINED, S.DRAINING, S.FAILED, S.TERMINATING, S.TERMINATED, S.UNHEALTHY}),
    # JOINED -> DRAINING: scale-in by handshake, or a preemption notice; JOINED -> TERMINATING: never
    # by scale-in (a joined worker is drained first), only by an operator's kill
    S.JOINED: frozenset({S.DRAINING, S.TERMINATING, S.TERMINATED, S.UNHEALTHY}),
    # DRAINING -> TERMINATING: the agent reported drained (holds no work), or the drain deadline passed
    S.DRAINING: frozenset({S.TERMINATING, S.TERMINATED, S.UNHEALTHY}),
    S.UNHEALTHY: frozenset({S.TERMINATING, S.TERMINATED}),
    S.FAILED: frozenset({S.TERMINATING, S.TERMINATED}),
    S.TERMINATING: frozenset({S.TERMINATED}),
    S.TERMINATED: frozenset(),
}

_STATE_NAMES = frozenset(s.value for s in NodeState)

#: States in which a node counts toward the actual size of its domain.
LIVE_STATES = frozenset({S.REQUESTED, S.PENDING, S.STARTED, S.JOINED})
#: States in which a node has not yet joined (scale-in takes these first).
UNJOINED_STATES = frozenset({S.REQUESTED, S.PENDING, S.STARTED})
#: States in which a machine may still exist on a site.
EXISTING_STATES = frozenset(set(NodeState) - {S.TERMINATED})
FINAL_STATES = frozenset({S.TERMINATED})


class IllegalTransition(ValueError):
    """A state change that the node state table does not allow."""


class InvalidRecord(ValueError):
    """A record read back from the store that is not one the pool wrote: refused, never acted on."""


#: Node ids, launch ids and site names as the pool makes them: no path separators, no control characters.
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: A site's machine id (clouds differ: some use slashes or colons), bounded, printable.
PROVIDER_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+=-]{0,511}")
_RECORD_FIELDS = {"node_id", "domain", "launch_id", "site", "deployable_type", "state", "created", "history",
                  "provider_id", "drain_deadline", "drain_sent", "name"}


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
            or value in (float("inf"), float("-inf")):
        raise InvalidRecord(f"node record: {what} must be a finite number")
    return float(value)


def _checked_record(data: Any) -> dict[str, Any]:
    """The keyword arguments of a :class:`NodeRecord` from stored JSON, every field checked."""
    if not isinstance(data, dict):
        raise InvalidRecord("node record: not a JSON object")
    unknown = set(data) - _RECORD_FIELDS
    if unknown:
        raise InvalidRecord(f"node record: unknown field {sorted(unknown)[0][:40]!r}")
    for name in ("node_id", "launch_id", "site"):
        value = data.get(name)
        if not isinstance(value, str) or not (value == "" and name == "launch_id" or ID_RE.fullmatch(value)):
            raise InvalidRecord(f"node record: {name} must match {ID_RE.pattern}")
    for name in ("domain", "deployable_type"):
        value = data.get(name)
        if not isinstance(value, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", value):
            raise InvalidRecord(f"node record: {name} must be a lowercase name")
    try:
        state = NodeState(data.get("state"))
    except ValueError:
        raise InvalidRecord(f"node record: state must be one of {', '.join(s.value for s in NodeState)}") from None
    provider_id = data.get("provider_id")
    if provider_id is not None and not (isinstance(provider_id, str) and PROVIDER_ID_RE.fullmatch(provider_id)):
        raise InvalidRecord("node record: provider_id is not a machine id")
    history = data.get("history", [])
    if not isinstance(history, list) or len(history) > 10_000:
        raise InvalidRecord("node record: history must be a list")
    checked = []
    for h in history:
        if not (isinstance(h, list) and len(h) == 3 and h[0] in _STATE_NAMES and isinstance(h[2], str)
                and len(h[2]) <= 4096):
            raise InvalidRecord("node record: a history entry is not [state, time, detail]")
        checked.append((h[0], _finite(h[1], "a history time"), h[2]))
    node_name = data.get("name")
    if node_name is not None and not (isinstance(node_name, str) and ID_RE.fullmatch(node_name)):
        raise InvalidRecord(f"node record: name must match {ID_RE.pattern}")
    deadline = data.get("drain_deadline")
    drain_sent = data.get("drain_sent", False)
    if not isinstance(drain_sent, bool):
        raise InvalidRecord("node record: drain_sent must be true or false")
    return {"node_id": data["node_id"], "domain": data["domain"], "launch_id": data["launch_id"],
            "site": data["site"], "deployable_type": data["deployable_type"], "state": state,
            "created": _finite(data.get("created", 0.0), "created"), "history": checked,
            "provider_id": provider_id, "drain_sent": drain_sent, "name": node_name,
            "drain_deadline": None if deadline is None else _finite(deadline, "drain_deadline")}


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
    name: str | None = None  # the workload's own name for the node (a batch scheduler's node name), in named domains

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
        if data["name"] is None:  # records of unnamed domains stay as they were
            del data["name"]
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> "NodeRecord":
        """Parse and validate a stored record; :class:`InvalidRecord` (one line) if it is not one."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            raise InvalidRecord("node record: not JSON") from None
        return cls(**_checked_record(data))

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
        name: str | None = None,
    ) -> "NodeRecord":
        rec = cls(
            node_id=node_id,
            domain=domain,
            launch_id=launch_id,
            site=site,
            deployable_type=deployable_type,
            created=now,
            name=name,
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
    drained: bool = False  # the workload stopped taking work and holds none: the machine may go


@dataclass(frozen=True)
class Reading:
    """One number read from the world, or the reason it could not be read."""

    sensor: str
    value: float | None
    time: float
    error: str | None = None
    detail: Mapping[str, float] = field(default_factory=dict)
    #: what the sensor wants in the domain's event log (recorded when it changes), e.g. work it did not count
    notes: tuple[str, ...] = ()
    #: work each node holds, by node id, as the workload's own view reads it for the whole domain at once
    #: (a batch system's claimed slots): the manager prefers it to what each node's heartbeat says
    nodes: Mapping[str, int] | None = None

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
    #: median seconds from launch request to JOINED of the domain's recent nodes; None: none observed yet
    boot_seconds: float | None = None


@dataclass(frozen=True)
class Decision:
    """A policy's answer: the intended size and why.

    ``memory`` (JSON-serializable) is handed back to the same policy as ``view.memory`` on the
    next tick: how a pure policy keeps windows, cooldowns or ramps without state of its own.
    ``None`` keeps the previous memory. ``activation``: whether the domain's activation threshold
    (0 -> 1 only above it) applies to this target: yes for a target read from the queue; no for a
    size that does not come from it (a fixed size, a scheduled minimum, a new application's first
    worker), which is never held at 0 by an empty queue.
    """

    target: int
    reason: str
    inputs: Mapping[str, Any] = field(default_factory=dict)
    memory: Mapping[str, Any] | None = None
    activation: bool = True


# ---------------------------------------------------------------------------
# Domain specification (what `pool apply -f` reads)
# ---------------------------------------------------------------------------
#
# A spec comes from whoever may run `pool apply`; it is stored as JSON and read back on every tick.
# So every field is strictly typed (no `true` for 1, no "5" for 5), every number is finite and
# bounded, every string, mapping and list has a length limit, names are matched whole (a trailing
# newline is not a name), and every error is one bounded line that never shows a credential.

#: Domain and site names: a DNS label (lowercase letters, digits and '-', 1-63 characters).
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
#: Deployable type names, also the keys of a site's `images` and `sizes`.
TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")
#: Policy and sensor names (built-in aliases and entry points).
PLUGIN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z")
#: Parameter names of a policy or sensor, and the driver `options` of a site.
PARAM_RE = re.compile(r"^[a-z_][a-z0-9_]{0,63}\Z")
#: Keys of a mapping inside a parameter (sensor names, environment variable names, ...).
PARAM_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z")
#: Names of the free `attributes` of a domain.
ATTRIBUTE_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}\Z")
#: A libcloud provider as `Provider` spells it (`pool apply` matches it case-insensitively).
PROVIDER_RE = re.compile(r"^[A-Za-z0-9_]{1,63}\Z")
#: An address to bind: a host name, an IPv4 or an IPv6 address.
HOST_RE = re.compile(r"^[A-Za-z0-9_.:%\[\]-]{1,253}\Z")
CREDENTIAL_REF = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+)\Z")
BROKER_SCHEMES = ("redis", "rediss", "redis+socket", "amqp", "amqps", "pyamqp")
PLACEMENTS = ("overflow", "spread", "cheapest", "spot_first")

NAME_MAX = 63  # domain, site, deployable type and attribute names
ID_MAX = 255  # image ids, sizes, regions
URL_MAX = 1024  # URLs, paths, credential references
VALUE_MAX = 4096  # attribute values and string parameters of a plug-in
ENTRIES_MAX = 64  # entries of attributes, options, images, sizes; parameters of a plug-in
SITES_MAX = 32
SIZE_MAX = 100_000  # nodes of one domain
SECONDS_MAX = 7 * 24 * 3600.0  # every timeout and window
SENSOR_TIMEOUT_MAX = 600.0
RATE_MIN = 0.001  # launch requests (or machines) per second: at least one in about 17 minutes
RATE_MAX = 1e6
BURST_MAX = 1_000_000
PRICE_MAX = 1e6  # per node-hour
WEIGHT_MAX = 1e6
RANK_MAX = 1_000_000
ACTIVATION_MAX = 1e12
PARAM_DEPTH_MAX = 4  # levels of a parameter value: a list of mappings of lists of scalars
PARAM_ITEMS_MAX = 256  # items of one list or mapping in a parameter
PARAM_VALUES_MAX = 1024  # values in all the parameters of one plug-in
PARAM_NUMBER_MAX = 1e15
SHOW_MAX = 80  # a value or a location part as shown in an error
ERROR_MESSAGE_MAX = 300  # one message of an error line
ERROR_LINE_MAX = 500  # a whole error line
ERRORS_SHOWN = 3

#: Attributes the pool sets itself in every worker's contextualization (`Manager.attributes`,
#: pool.workloads.images.AGENT_PREAMBLE): a spec may not set them. Each workload reserves its own
#: too (:attr:`SpecBlock.reserved`: every ``${...}`` of its deployable type and what its services set).
RESERVED_ATTRIBUTES: frozenset[str] = frozenset({
    "workload", "python", "redis_url", "namespace", "domain", "node_id", "node_name", "launch_id", "broker",
    "heartbeat_interval",
})

#: Characters no spec string may hold: control characters (C0, DEL, C1), line and paragraph
#: separators, lone surrogates and the invisible formatting marks that can disguise a line.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ud800-\udfff]")
#: The same, except newline and tab, for the string parameters of a plug-in (a folded formula).
_UNPRINTABLE_PARAM = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff"
                                "\ud800-\udfff]")
_TOKEN = re.compile(r"\S+")
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = SHOW_MAX
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist = 3, 6, 6


def _mask_token(match: re.Match[str]) -> str:
    token = match.group()
    scheme = token.find("://")
    at = token.rfind("@")
    return token[: scheme + 3] + "***" + token[at:] if 0 <= scheme < at else token


def _mask_userinfo(text: str) -> str:
    """Every ``scheme://user:password@`` part of ``text`` as ``scheme://***@``; linear in ``len(text)``."""
    return _TOKEN.sub(_mask_token, text) if "://" in text else text


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def clean_text(text: str, limit: int = ERROR_LINE_MAX) -> str:
    """``text`` as it may be shown: one line of at most ``limit`` characters, credentials in URLs and
    remembered secrets masked, control characters escaped."""
    text = _mask_userinfo(text)
    cut = len(text) > limit
    text = _UNPRINTABLE.sub(_escape, text[:limit])
    text = redact_text(text)  # bounded input: its cost grows faster than linearly
    if cut or len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    return text


def show_value(value: Any, limit: int = SHOW_MAX) -> str:
    """A value as an error may echo it: repr'd, credentials masked, escaped, at most ``limit`` characters."""
    if isinstance(value, str):
        text = repr(_mask_userinfo(value)[: limit + 1])
    elif value is None or isinstance(value, bool):
        text = json.dumps(value)  # as YAML and JSON write them: null, true, false
    else:
        try:
            text = _REPR.repr(value)
        except (ValueError, RecursionError):  # an int too long to print, say
            text = f"<{type(value).__name__}>"
    return clean_text(text, limit)


def _printable(v: str) -> str:
    bad = _UNPRINTABLE.search(v)
    if bad:  # the value itself is not shown: it may be a credential
        raise ValueError(f"holds a control character ({_escape(bad)} at position {bad.start()}); none is allowed")
    return v


def matches(regex: re.Pattern[str], wanted: str) -> Callable[[str], str]:
    def check(v: str) -> str:
        if not regex.match(v):
            raise ValueError(f"must be {wanted}; got {show_value(v)}")
        return v

    return check


def _attribute_name(v: str) -> str:
    if v in RESERVED_ATTRIBUTES:
        raise ValueError(f"{v!r} is reserved: the pool sets this attribute itself; choose another name")
    if not ATTRIBUTE_RE.match(v):
        raise ValueError(f"attribute name {show_value(v)} must be lowercase letters, digits and '_', starting with "
                         f"a letter, 1-{NAME_MAX} chars")
    return v


def _path(v: str) -> str:
    _printable(v)
    if any(len(part) > 255 for part in v.split("/")):
        raise ValueError("a path component is longer than 255 characters")
    return v


_NAME_RULE = "lowercase letters, digits and '-', 1-63 chars, starting and ending with a letter or digit"
#: A domain or site name.
Name = Annotated[str, StringConstraints(min_length=1, max_length=NAME_MAX),
                 AfterValidator(matches(NAME_RE, _NAME_RULE))]
TypeName = Annotated[str, StringConstraints(min_length=1, max_length=NAME_MAX),
                     AfterValidator(matches(TYPE_RE, "lowercase letters, digits and '-', 1-63 chars"))]
PluginName = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(
    matches(PLUGIN_RE, "letters, digits, '_', '.' and '-', starting with a letter or '_', 1-64 chars"))]
ProviderName = Annotated[str, StringConstraints(min_length=1, max_length=NAME_MAX), AfterValidator(
    matches(PROVIDER_RE, "a libcloud provider name (letters, digits and '_'), e.g. ec2"))]
Host = Annotated[str, StringConstraints(min_length=1, max_length=253), AfterValidator(
    matches(HOST_RE, "a host name or an IP address"))]
#: Image ids, sizes, regions: printable text.
Ident = Annotated[str, StringConstraints(min_length=1, max_length=ID_MAX), AfterValidator(_printable)]
Url = Annotated[str, StringConstraints(min_length=1, max_length=URL_MAX), AfterValidator(_printable)]
PathText = Annotated[str, StringConstraints(min_length=1, max_length=URL_MAX), AfterValidator(_path)]
AttributeName = Annotated[str, StringConstraints(min_length=1, max_length=NAME_MAX),
                          AfterValidator(_attribute_name)]
AttributeValue = Annotated[str, StringConstraints(max_length=VALUE_MAX), AfterValidator(_printable)]

_SPEC_CONFIG = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False, str_max_length=VALUE_MAX)


def _check_value(value: Any, where: str, depth: int, budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError(f"{where}: more than {PARAM_VALUES_MAX} values in all; keep parameters small")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} is not allowed; give a finite number")
        if not -PARAM_NUMBER_MAX <= value <= PARAM_NUMBER_MAX:
            raise ValueError(f"{where}: out of range; give a number between {-PARAM_NUMBER_MAX:g} and "
                             f"{PARAM_NUMBER_MAX:g}")
        return
    if isinstance(value, str):
        if len(value) > VALUE_MAX:
            raise ValueError(f"{where}: {len(value)} characters; at most {VALUE_MAX}")
        bad = _UNPRINTABLE_PARAM.search(value)
        if bad:
            raise ValueError(f"{where}: holds a control character ({_escape(bad)} at position {bad.start()}); "
                             "only newline and tab are allowed")
        return
    if isinstance(value, (list, dict)):
        if depth >= PARAM_DEPTH_MAX:
            raise ValueError(f"{where}: nested deeper than {PARAM_DEPTH_MAX} levels")
        if len(value) > PARAM_ITEMS_MAX:
            raise ValueError(f"{where}: {len(value)} items; at most {PARAM_ITEMS_MAX}")
        if isinstance(value, list):
            for i, item in enumerate(value):
                _check_value(item, f"{where}[{i}]", depth + 1, budget)
            return
        for key, item in value.items():
            if not isinstance(key, str) or not PARAM_KEY_RE.match(key):
                raise ValueError(f"{where}: key {show_value(key)} must be letters, digits, '_', '.' and '-', "
                                 "starting with a letter or '_', 1-64 chars")
            _check_value(item, f"{where}.{key}", depth + 1, budget)
        return
    raise ValueError(f"{where}: {type(value).__name__} is not allowed; give a number, a string, true/false, "
                     "null, or a list or mapping of them")


def check_params(params: Mapping[Any, Any], *, what: str = "parameter") -> None:
    """Raise ``ValueError`` (one line) unless ``params`` are names to JSON values a plug-in may take:
    names ``[a-z_][a-z0-9_]*`` of at most 64 characters, values numbers (finite, bounded), strings
    (bounded), true/false, null, or small lists and mappings of them."""
    if len(params) > ENTRIES_MAX:
        raise ValueError(f"{len(params)} {what}s; at most {ENTRIES_MAX}")
    budget = [PARAM_VALUES_MAX]
    for key, value in params.items():
        if not isinstance(key, str) or not PARAM_RE.match(key):
            raise ValueError(f"{what} name {show_value(key)} must be lowercase letters, digits and '_', starting "
                             "with a letter or '_', 1-64 chars")
        _check_value(value, f"{what} {key}", 1, budget)


class _Spec(BaseModel):
    model_config = _SPEC_CONFIG


class PolicySpec(BaseModel):
    """`policy:` block: a registered policy name plus its own parameters."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True, allow_inf_nan=False,
                              str_max_length=VALUE_MAX)
    name: PluginName = "queue_depth"

    @model_validator(mode="after")
    def _params(self) -> "PolicySpec":
        check_params(self.model_extra or {})
        return self

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class SensorSpec(BaseModel):
    """`sensor:` block: a registered sensor name plus its own parameters."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True, allow_inf_nan=False,
                              str_max_length=VALUE_MAX)
    name: PluginName = Field(..., description="default: the workload's sensor")
    timeout: float = Field(2.0, gt=0, le=SENSOR_TIMEOUT_MAX)

    @model_validator(mode="after")
    def _params(self) -> "SensorSpec":
        check_params(self.model_extra or {})
        return self

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ScalingSpec(_Spec):
    """Shaping the manager applies to every policy's target."""

    activation: float = Field(
        0.0, ge=0, le=ACTIVATION_MAX, description="0->1 only when the sensor value exceeds this (KEDA activation)"
    )
    scale_up_limit: int = Field(0, ge=0, le=SIZE_MAX, description="max new launches per tick; 0 = unlimited")
    max_in_flight: int = Field(0, ge=0, le=SIZE_MAX, description="max nodes booting at once; 0 = unlimited")
    stabilization: float = Field(
        30.0, ge=0, le=SECONDS_MAX,
        description="seconds: scale down only to the highest target seen in this window"
    )
    idle_timeout: float = Field(
        0.0, ge=0, le=SECONDS_MAX, description="seconds a worker must be idle before it may be removed"
    )
    fallback: Literal["hold", "fixed"] = "hold"
    fallback_size: int = Field(0, ge=0, le=SIZE_MAX)


class WorkloadSpec(_Spec):
    """Base of the block a workload owns in a domain spec (a YAML key of its own, named after the workload):
    strict, frozen and bounded like every spec model."""


@dataclass(frozen=True)
class SpecBlock:
    """What a workload adds to the domain spec, given by the workload (its ``spec_block``).

    ``key`` is the top-level YAML key of its block and ``model`` validates it; ``required`` says a
    domain of this workload must have one (``hint`` says what to add); ``defaults`` fills the raw
    spec before validation (a default sensor, policy or scaling setting); ``reserved`` names the
    attributes the workload sets itself, which a spec may not.
    """

    key: str
    model: type[WorkloadSpec]
    required: bool = False
    hint: str = ""
    defaults: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    reserved: frozenset[str] = frozenset()


class TimeoutSpec(_Spec):
    heartbeat_interval: float = Field(2.0, gt=0, le=SECONDS_MAX)
    heartbeat_timeout: float = Field(6.0, gt=0, le=SECONDS_MAX)
    boot: float = Field(120.0, gt=0, le=SECONDS_MAX, description="seconds from request to joined")
    boot_replace: float | None = Field(
        None, gt=0, le=SECONDS_MAX,
        description="seconds from launch after which a node that has neither joined nor sent a "
        "heartbeat is presumed dead for planning: a replacement is launched, the node is kept until `boot` "
        "in case it joins late; none: `boot`")
    drain: float = Field(600.0, gt=0, le=SECONDS_MAX, description="drain deadline for a busy worker")
    terminate_grace: float = Field(10.0, ge=0, le=SECONDS_MAX)

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


class SiteSpec(_Spec):
    """One site a domain may place workers on: a libcloud driver, its offering and its place in the order."""

    name: Name = Field(..., description="the site's name ('local', 'sim', or any name with a provider)")
    provider: ProviderName | None = Field(None, description="libcloud compute provider (e.g. 'ec2'); none: a built-in "
                                      "site")
    key: Url | None = Field(None, description="credential by reference: env:NAME or file:/path")
    secret: Url | None = Field(None, description="credential by reference: env:NAME or file:/path")
    region: Ident | None = None
    options: dict[str, Any] = Field(default_factory=dict, max_length=ENTRIES_MAX,
                                    description="more driver arguments (host, port, ...)")
    image: Ident | None = Field(None, description="image id for every deployable type not in `images`")
    images: dict[TypeName, Ident] = Field(default_factory=dict, max_length=ENTRIES_MAX,
                                          description="deployable type -> image id")
    size: Ident | None = Field(None, description="size (instance type) for every deployable type not in `sizes`")
    sizes: dict[TypeName, Ident] = Field(default_factory=dict, max_length=ENTRIES_MAX,
                                         description="deployable type -> size")
    spot: bool = Field(False, description="preemptible capacity")
    price: float = Field(0.0, ge=0, le=PRICE_MAX, description="per node-hour, for cheapest-first placement")
    rank: int = Field(0, ge=-RANK_MAX, le=RANK_MAX, description="overflow order: lower first; scale-in from the "
                      "highest")
    max: int | None = Field(None, ge=0, le=SIZE_MAX, description="most live nodes of this domain on this site")
    weight: float = Field(1.0, ge=0, le=WEIGHT_MAX, description="share for spread placement")
    batch: int = Field(1, ge=1, le=1000, description="most machines per launch request, where the driver can")
    rate: float | None = Field(None, ge=RATE_MIN, le=RATE_MAX, description="launch requests per second the pool "
                               "allows itself here (the cloud's published limit, e.g. 2 on EC2); none: unpaced")
    burst: int = Field(1, ge=1, le=BURST_MAX, description="launch requests that may go at once before pacing "
                       "(EC2: 5)")
    instance_rate: float | None = Field(None, ge=RATE_MIN, le=RATE_MAX, description="machines per second the "
                                        "cloud's launch budget refills (EC2's RunInstances resource bucket: 2); "
                                        "batches are sized to what is left of it; none: not tracked")
    instance_burst: int = Field(1000, ge=1, le=BURST_MAX, description="machines the launch budget holds when full "
                                "(EC2: 1000)")

    @field_validator("key", "secret")
    @classmethod
    def _reference(cls, v: str | None) -> str | None:
        if v is not None and not CREDENTIAL_REF.match(v):
            raise ValueError("must be a reference, env:NAME or file:/path (a literal credential is refused "
                             "and not shown)")
        return v

    @field_validator("options")
    @classmethod
    def _options(cls, v: dict[str, Any]) -> dict[str, Any]:
        check_params(v, what="option")
        return v

    def image_for(self, deployable_type: str) -> str | None:
        return self.images.get(deployable_type, self.image)

    def size_for(self, deployable_type: str) -> str | None:
        return self.sizes.get(deployable_type, self.size)


class DomainSpec(_Spec):
    """A domain: a pool of identical workers with one policy."""

    name: Name
    deployable_type: TypeName = Field(..., description="the workload's deployable type; default: the "
                                      "default workload's (pool.workloads.base.DEFAULT_TYPE)")
    site: Name = Field("local", description="the only site (shorthand for `sites: [{name: SITE}]`)")
    sites: list[SiteSpec] = Field(default_factory=list, max_length=SITES_MAX, description="sites in placement "
                                  "order")
    placement: Literal["overflow", "spread", "cheapest", "spot_first"] = "overflow"
    overprovision: float = Field(0.0, ge=0, le=100, description="percent of the nodes still to join launched "
                                 "above them (with two standard deviations) while the target has not joined (some "
                                 "machines never boot); the surplus goes once it has (docs/sites.md)")
    capacity_ttl: float = Field(180.0, ge=0, le=SECONDS_MAX, description="seconds a site that answered 'out of "
                                "capacity' gets no launches")
    min: int = Field(0, ge=0, le=SIZE_MAX)
    max: int = Field(..., ge=0, le=SIZE_MAX)
    broker: Url | None = Field(None, description="broker URL; default: the pool's own Redis")
    policy: PolicySpec = PolicySpec()
    sensor: SensorSpec = Field(..., description="default: the workload's sensor")
    scaling: ScalingSpec = ScalingSpec()
    timeouts: TimeoutSpec = TimeoutSpec()
    attributes: dict[AttributeName, AttributeValue] = Field(
        default_factory=dict, max_length=ENTRIES_MAX,
        description="more name -> value pairs for a worker's contextualization (not the pool's own: "
        "RESERVED_ATTRIBUTES and the workload's own)")
    # the block the workload owns (under a key of its own): validated by the workload's model, written
    # back under its key by the serializer
    _block: WorkloadSpec | None = PrivateAttr(None)
    _block_key: str | None = PrivateAttr(None)

    @property
    def block(self) -> WorkloadSpec | None:
        """The block this domain's workload owns (validated by its :attr:`SpecBlock.model`), if any."""
        return self._block

    @model_validator(mode="wrap")
    @classmethod
    def _with_workload(cls, data: Any, handler: ModelWrapValidatorHandler[DomainSpec]) -> DomainSpec:
        """The workload of the deployable type fills its defaults, then owns its block: every field
        error and every block error are reported together, with their locations."""
        if not isinstance(data, Mapping):
            return handler(data)
        data = _site_list(data)
        data.setdefault("deployable_type", _default_type())
        block = _spec_block(data["deployable_type"])
        if block is not None and block.defaults is not None:
            data = block.defaults(data)
        raw = data.pop(block.key, None) if block is not None else None
        misplaced: list[InitErrorDetails] = []
        for key in [k for k in data if isinstance(k, str) and k not in cls.model_fields]:
            owner = _block_owner(key)
            if owner is not None and data[key] is None:  # `KEY: null`: how earlier versions stored
                del data[key]                           # "no block" (every block was a field then)
            elif owner is not None:
                misplaced.append(_error((key,), data.pop(key), f"belongs to deployable_type {owner}; this domain's "
                                        f"is {show_value(data['deployable_type'])}"))
        errors: list[InitErrorDetails] = []
        spec: DomainSpec | None = None
        try:
            spec = handler(data)
        except ValidationError as exc:
            errors = [_error(e["loc"], e.get("input"), e["msg"], e["type"]) for e in exc.errors()]
        parsed = _parse_block(block, raw, data["deployable_type"], errors)
        errors += misplaced
        if spec is not None and block is not None:
            errors += [_error(("attributes", name), name, f"{name!r} is reserved: the {block.key} workload sets "
                              "this attribute itself; choose another name")
                       for name in spec.attributes if name in block.reserved]
        if errors or spec is None:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        spec._block, spec._block_key = parsed, (block.key if parsed is not None and block else None)
        return spec

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if self._block is not None and self._block_key is not None:
            out[self._block_key] = self._block.model_dump(mode="json")
        return out

    @field_validator("broker")
    @classmethod
    def _broker(cls, v: str | None) -> str | None:
        if v is None:
            return v
        scheme = v.split("://", 1)[0] if "://" in v else ""
        if scheme not in BROKER_SCHEMES:
            raise ValueError(f"{show_value(v)} is not a broker URL; expected one of "
                             f"{', '.join(s + '://' for s in BROKER_SCHEMES)}")
        return v

    @model_validator(mode="after")
    def _bounds(self) -> "DomainSpec":
        names = [s.name for s in self.sites]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sites: {', '.join(dupes)} listed more than once; site names must be unique")
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must be >= min ({self.min})")
        return self

    def site_spec(self, name: str) -> SiteSpec:
        for site in self.sites:
            if site.name == name:
                return site
        # a site no longer configured: its nodes are still ended cleanly (not validated: the name
        # comes from a node record, which may predate today's name rules)
        return SiteSpec.model_construct(name=name)


def _site_list(data: Mapping[str, Any]) -> dict[str, Any]:
    """`site: NAME` and `sites: [...]` are one setting: the first site listed is `site`."""
    data = dict(data)
    sites = data.get("sites")
    if not sites:
        data["sites"] = [{"name": data.get("site", "local")}]
    elif isinstance(sites, list) and sites and isinstance(sites[0], Mapping) and "name" in sites[0]:
        if "site" in data and data["site"] != sites[0]["name"]:
            raise ValueError(f"site: {show_value(data['site'])} is not the first of sites "
                             f"({show_value(sites[0]['name'])}); give one or the other")
        data["site"] = sites[0]["name"]
    return data


def _error(loc: tuple[Any, ...] | list[Any], value: Any, msg: str, kind: str = "value_error") -> InitErrorDetails:
    """One line of a :class:`ValidationError`, its message kept as it is."""
    return {"type": PydanticCustomError(kind, msg), "loc": tuple(loc), "input": value}  # no context: not formatted


def _parse_block(block: SpecBlock | None, raw: Any, deployable_type: Any,
                 errors: list[InitErrorDetails]) -> WorkloadSpec | None:
    """The workload's block validated by its model; what is wrong goes to ``errors``, under its key."""
    if block is None:
        return None
    if raw is None:
        if block.required:
            errors.append(_error((block.key,), None, f"deployable_type {clean_text(str(deployable_type), SHOW_MAX)} "
                                 f"needs a '{block.key}:' block{' ' + block.hint if block.hint else ''}"))
        return None
    try:
        return block.model.model_validate(raw)
    except ValidationError as exc:
        errors.extend(_error((block.key, *e["loc"]), e.get("input"), e["msg"], e["type"]) for e in exc.errors())
        return None


# The workloads are plug-ins resolved by name when a spec is validated (as policies and sensors are
# for their parameter types): this module never imports them.
_WORKLOADS = "pool.workloads.base"


def _default_type() -> str:
    try:
        return str(importlib.import_module(_WORKLOADS).DEFAULT_TYPE)
    except Exception:  # noqa: BLE001  (no workload package here: the field is then required)
        return ""


def _spec_block(deployable_type: Any) -> SpecBlock | None:
    """The spec block of the workload of ``deployable_type``; None: it has none, or no workload is known
    (`pool apply` names the valid deployable types)."""
    if not isinstance(deployable_type, str):
        return None
    try:
        found = importlib.import_module(_WORKLOADS).spec_block_for_type(deployable_type)
    except Exception:  # noqa: BLE001  (an unknown or broken plug-in: reported by `pool apply`)
        return None
    return found if isinstance(found, SpecBlock) else None


def _block_keys() -> list[str]:
    """The block keys of the workloads known here."""
    try:
        return [str(k) for k in importlib.import_module(_WORKLOADS).block_keys()]
    except Exception:  # noqa: BLE001
        return []


def _block_owner(key: str) -> str | None:
    """The deployable type of the workload whose block is called ``key``, if any workload's is."""
    try:
        owner = importlib.import_module(_WORKLOADS).block_owner(key)
    except Exception:  # noqa: BLE001
        return None
    return owner if isinstance(owner, str) else None


class SpecError(ValueError):
    """A domain spec that does not validate; the message is one line."""


def one_line_error(exc: ValidationError, *, prefix: str = "") -> str:
    """Turn a pydantic error into one bounded line naming the field and what is allowed.

    Each location part is cut to :data:`SHOW_MAX` characters and each message to
    :data:`ERROR_MESSAGE_MAX`; at most :data:`ERRORS_SHOWN` errors are listed; the line is at most
    :data:`ERROR_LINE_MAX` characters, with credentials masked and control characters escaped.
    """
    errors = exc.errors(include_url=False, include_input=False)
    parts = []
    for err in errors[:ERRORS_SHOWN]:
        loc = ".".join(clean_text(str(p), SHOW_MAX) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
            model = _model_for(err["loc"])
            if model is not None:
                fields = list(model.model_fields) + (_block_keys() if model is DomainSpec else [])
                msg += f" (allowed: {', '.join(fields)})"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        parts.append(f"{loc}: {clean_text(msg, ERROR_MESSAGE_MAX)}" if loc else clean_text(msg, ERROR_MESSAGE_MAX))
    if len(errors) > ERRORS_SHOWN:
        parts.append(f"and {len(errors) - ERRORS_SHOWN} more")
    return clean_text(prefix + "; ".join(parts), ERROR_LINE_MAX)


def _model_for(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = DomainSpec
    if len(loc) > 1 and str(loc[0]) not in DomainSpec.model_fields:  # inside a workload's block
        owner = _block_owner(str(loc[0]))
        block = _spec_block(owner) if owner else None
        if block is None:
            return None
        model, loc = block.model, loc[1:]
    for part in loc[:-1]:
        if isinstance(part, int):  # an item of a list of models
            continue
        field_info = model.model_fields.get(str(part))
        if field_info is None:
            return None
        ann = field_info.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        candidates += [arg for c in candidates for arg in getattr(c, "__args__", ())]
        nxt = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nxt is None:
            return None
        model = nxt
    return model


_PLUGIN_PACKAGES = {"policy": "policies", "sensor": "sensors"}


def _describe(tp: Any) -> str:
    """What a declared parameter type asks for, in words."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_describe(a) for a in args))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    named = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
             type(None): "null"}
    if tp in named:
        return named[tp]
    if _is_sequence(tp):
        return "a list"
    if _is_mapping(tp):
        return "a mapping"
    return clean_text(str(tp), SHOW_MAX)


def _is_sequence(tp: Any) -> bool:
    origin = typing.get_origin(tp) or tp
    return origin in (list, tuple, set, frozenset, abc.Sequence, abc.MutableSequence, abc.Collection,
                      abc.Iterable, abc.Set)


def _is_mapping(tp: Any) -> bool:
    return (typing.get_origin(tp) or tp) in (dict, abc.Mapping, abc.MutableMapping)


def _fits(value: Any, tp: Any) -> bool:
    """Whether a JSON value is of a declared parameter type; types this check does not know fit."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if tp is type(None) or tp is None:
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if _is_sequence(tp):
        if not isinstance(value, list):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
        return all(_fits(v, args[0]) for v in value) if args else True
    if _is_mapping(tp):
        if not isinstance(value, dict):
            return False
        key_type, value_type = args if len(args) == 2 else (Any, Any)
        return all(_fits(k, key_type) and _fits(v, value_type) for k, v in value.items())
    return True


@functools.lru_cache(maxsize=256)
def _plugin_class(kind: str, name: str) -> Any:
    """The registered ``kind`` plug-in class ``name``, or None when it cannot be resolved here."""
    try:
        return importlib.import_module(_PLUGIN_PACKAGES[kind]).registry.resolve(name)
    except Exception:  # noqa: BLE001  (an unknown or broken plug-in: not this check's to report)
        return None


def _declared(kind: str, name: str) -> tuple[tuple[str, Any], ...] | None:
    """The declared parameter types of the registered ``kind`` plug-in ``name``; None: not known here
    (an unknown name is reported by `pool apply`, which names the valid ones)."""
    cls = _plugin_class(kind, name)
    if cls is None:
        return None
    try:
        if dataclasses.is_dataclass(cls):
            hints = typing.get_type_hints(cls)
            return tuple((f.name, hints.get(f.name, Any)) for f in dataclasses.fields(cls) if f.init)
        hints = typing.get_type_hints(cls.__init__)
        return tuple((p, hints.get(p, Any)) for p in inspect.signature(cls).parameters if p != "self")
    except Exception:  # noqa: BLE001  (an unknown or broken plug-in: not this check's to report)
        return None


def check_plugin_types(kind: str, name: str, params: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the first parameter whose value is not of the type plug-in ``name``
    declares for it (a number where a string is wanted, ``true`` where a number is, ...)."""
    operator_only: frozenset[str] = getattr(_plugin_class(kind, name), "OPERATOR_ONLY", frozenset())
    for key in params:
        if key in operator_only:
            raise ValueError(f"parameter {key}: not allowed in a spec (it chooses what the manager runs on its "
                             "machine; the operator sets it through the manager's PATH and environment)")
    declared = _declared(kind, name)
    if declared is None:
        return
    types_of = dict(declared)
    for key, value in params.items():
        if key in types_of and not _fits(value, types_of[key]):
            raise ValueError(f"parameter {key}: must be {_describe(types_of[key])}, got {show_value(value)}")


def parse_domain_spec(data: Any) -> DomainSpec:
    """Validate a mapping as a domain spec or raise :class:`SpecError` with a one-line message.

    Besides the models' own checks, the parameters of the named policy and sensor are checked
    against the types the plug-in declares (it is resolved, i.e. imported, once for that; a plug-in
    that cannot be resolved is not checked here).
    """
    if not isinstance(data, Mapping):
        raise SpecError(f"a domain spec must be a mapping of fields, got {type(data).__name__}")
    try:
        spec = DomainSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(one_line_error(exc, prefix="invalid domain spec: ")) from None
    except RecursionError:
        raise SpecError("invalid domain spec: nested too deeply") from None
    for kind, block in (("policy", spec.policy), ("sensor", spec.sensor)):
        try:
            check_plugin_types(kind, block.name, block.params)
        except ValueError as exc:
            raise SpecError(clean_text(f"invalid domain spec: {kind}: {exc}")) from None
    return spec


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
    boot_failures: int = 0  # consecutive nodes that failed before joining (reset by a join)
    boot_failed_at: float | None = None  # when the last of them failed
    boot_error: str = ""  # why it failed, as the doctor said

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes | None) -> "DomainState":
        if not text:
            return cls()
        data = json.loads(text)
        data["recent"] = [tuple(r) for r in data.get("recent", [])]
        return cls(**data)
