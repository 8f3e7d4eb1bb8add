"""The shapes the API takes and answers with (its OpenAPI document is drawn from them).

Imports pydantic only.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

#: largest size or step a request may name (far above any domain's max)
SIZE_LIMIT = 1_000_000

Size = Annotated[StrictInt, Field(ge=0, le=SIZE_LIMIT)]
Step = Annotated[StrictInt, Field(ge=-SIZE_LIMIT, le=SIZE_LIMIT)]


class ErrorBody(BaseModel):
    error: str = Field(description="one line naming the field or the reason")


class ReadingNow(BaseModel):
    value: float | None
    error: str | None
    time: float | None


class DomainSummary(BaseModel):
    name: str
    workload: str = Field(description="the deployable type")
    policy: str
    min: int
    max: int
    intended: int
    actual: int
    override: int | None
    paused: bool
    paused_by: str | None = None
    deleting: bool = False
    nodes: dict[str, int] = Field(description="records by state")
    reading: ReadingNow
    updated: float = Field(description="time of the manager's last decision (0: none yet)")


class DomainDetail(DomainSummary):
    spec: dict[str, Any] = Field(description="the spec as applied, secrets masked")
    last_decision: dict[str, Any] | None


class DomainList(BaseModel):
    domains: list[DomainSummary]


class ResizeBody(BaseModel):
    """Exactly one of ``size`` (a number, or ``"auto"``: back to the policy) and ``delta``."""

    model_config = ConfigDict(extra="forbid")

    size: Size | Literal["auto"] | None = None
    delta: Step | None = None


class Deleting(BaseModel):
    deleting: bool


class NodeView(BaseModel):
    id: str
    name: str | None
    state: str
    site: str
    created: float
    joined: float | None
    busy: bool | None
    endpoint: str | None


class NodeList(BaseModel):
    nodes: list[NodeView]


class Point(BaseModel):
    time: float
    value: float | None
    intended: int
    actual: int


class Points(BaseModel):
    points: list[Point]


class EventList(BaseModel):
    events: list[dict[str, Any]]


class Endpoint(BaseModel):
    node: str
    address: str


class EndpointList(BaseModel):
    endpoints: list[Endpoint]


class ManagerView(BaseModel):
    id: str
    host: str | None
    pid: int | None
    started: float | None
    seen: float | None
    roles: list[str]


class ManagerList(BaseModel):
    managers: list[ManagerView]


class WorkView(BaseModel):
    id: str
    op: str
    domain: str
    node: str
    site: str
    reason: str


class QueueView(BaseModel):
    pending: int = Field(description="items queued or being done")
    in_progress: int = Field(description="items a provisioner worker holds")
    items: list[WorkView] = Field(description="the oldest items (at most 100)")


class SiteUsage(BaseModel):
    worker_seconds: float
    cost: float


class DomainUsage(SiteUsage):
    sites: dict[str, SiteUsage]


class UsageView(BaseModel):
    domains: dict[str, DomainUsage]
    since: float


class Whoami(BaseModel):
    name: str
    role: str


class TokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=63)
    role: Literal["viewer", "operator", "admin"]


class TokenView(BaseModel):
    name: str
    role: str
    created: float


class TokenList(BaseModel):
    tokens: list[TokenView]


class NewToken(TokenView):
    token: str = Field(description="shown this once; only its hash is kept")


class Removed(BaseModel):
    removed: bool


class Health(BaseModel):
    ok: bool
