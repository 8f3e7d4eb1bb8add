"""The `condor:` block of a condor-startd domain spec: the pool the startds join, the size of one
worker, and which idle jobs are this domain's.

Imports ``pool.core`` and pydantic only (no I/O).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints, field_validator

from pool.core.model import SECONDS_MAX, DomainSpec, Host, WorkloadSpec, matches, show_value

COLLECTOR_RE = re.compile(r"^[A-Za-z0-9.\-]{1,253}:\d{1,5}\Z")
NAME_RE = re.compile(r"^[A-Za-z0-9_.@\-]{1,255}\Z")
USER_RE = re.compile(r"^[a-z_][a-z0-9_\-]{0,31}\Z")

ScheddName = Annotated[str, StringConstraints(min_length=1, max_length=255), AfterValidator(
    matches(NAME_RE, "a schedd name (letters, digits, _ . @ -)"))]
Constraint = Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class CondorSpec(WorkloadSpec):
    """`condor:` block of a condor-startd domain: its pool (collector), one worker's slot, its jobs."""

    collector: str | None = Field(
        None, description="join this pool's collector (host:port); default: start a central manager for the domain"
    )
    host: Host = Field("127.0.0.1", description="address the central manager and the startds bind")
    port: int | None = Field(None, ge=1, le=65535, description="collector port of a started central manager")
    schedds: list[ScheddName] = Field(
        default_factory=list, max_length=64, description="schedds whose idle jobs count (default: every schedd of the pool)"
    )
    constraint: Constraint | None = Field(
        None, description="ClassAd expression: only idle jobs matching it are this domain's (e.g. 'Owner == \"ana\"')"
    )
    worker_cpus: int = Field(1, ge=1, le=1024, description="CPUs of one worker's partitionable slot")
    worker_memory: int = Field(1024, ge=16, le=64 * 1024 * 1024, description="MB of one worker's slot")
    worker_disk: int = Field(
        10 * 1024 * 1024, ge=1024, le=2**40, description="KiB of disk one worker offers (RequestDisk is in KiB)"
    )
    job_lease: float = Field(
        30.0, ge=5, le=SECONDS_MAX,
        description="seconds a started central manager's schedd waits for a vanished startd before the job "
                    "runs again elsewhere (JOB_DEFAULT_LEASE_DURATION)")
    idle_timeout: float = Field(30.0, ge=0, le=SECONDS_MAX, description="default scaling.idle_timeout")

    @field_validator("collector")
    @classmethod
    def _collector(cls, v: str | None) -> str | None:
        if v is not None and not COLLECTOR_RE.match(v):
            raise ValueError(f"{show_value(v)} is not a collector address; expected host:port")
        return v

    @field_validator("constraint")
    @classmethod
    def _constraint(cls, v: str | None) -> str | None:
        if v is not None and (not v.isprintable() or not v.strip()):
            raise ValueError("must be one line of printable text (a ClassAd expression)")
        return v


def condor_spec(spec: DomainSpec) -> CondorSpec:
    """The domain's `condor:` block (a condor-startd domain always has one)."""
    block = spec.block
    if not isinstance(block, CondorSpec):
        raise ValueError(f"domain {spec.name} has no condor: block (deployable_type {spec.deployable_type})")
    return block


def condor_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """A condor-startd domain defaults to the condor sensor, one worker per slot's worth of idle and
    running jobs (queue_depth, 1 per worker) and `condor.idle_timeout` as `scaling.idle_timeout`."""
    data.setdefault("sensor", {"name": "condor"})
    data.setdefault("policy", {"name": "queue_depth", "tasks_per_worker": 1})
    block = data.get("condor")
    scaling = data.get("scaling")
    if isinstance(block, dict) and (scaling is None or isinstance(scaling, dict)):
        scaling = dict(scaling or {})
        scaling.setdefault("idle_timeout", block.get("idle_timeout", CondorSpec.model_fields["idle_timeout"].default))
        data["scaling"] = scaling
    return data
