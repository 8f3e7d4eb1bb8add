"""The `slurm:` block of a slurm-node domain spec: the cluster the nodes join and what they are.

Imports ``pool.core`` and pydantic only (no I/O).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints, field_validator

from pool.core.model import SECONDS_MAX, DomainSpec, WorkloadSpec, matches, show_value

CONTROLLER_RE = re.compile(r"^[A-Za-z0-9.\-]{1,253}(:\d{1,5})?\Z")
PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z-]\Z|^[a-z]\Z")
FEATURE_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}\Z")

Feature = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(
    matches(FEATURE_RE, "a node feature (letters, digits, _ . -)"))]


class SlurmSpec(WorkloadSpec):
    """`slurm:` block: the slurmctld the nodes register with, their names, size and partition."""

    controller: str = Field(..., description="slurmctld's address, host or host:port")
    partition: str = Field("cloud", pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="the partition of the nodes")
    node_prefix: str | None = Field(None, description="node names are PREFIX1..PREFIXmax (default: the domain's name)")
    cpus: int = Field(1, ge=1, le=4096, description="CPUs of one node (slurm.conf CPUs=)")
    memory: int = Field(1024, ge=16, le=64 * 1024 * 1024, description="MB of one node (RealMemory=)")
    features: list[Feature] = Field(default_factory=list, max_length=32, description="node features (Feature=)")
    suspend_time: float = Field(60.0, ge=1, le=SECONDS_MAX, description="SuspendTime: idle seconds before power down")
    resume_timeout: float | None = Field(
        None, ge=1, le=SECONDS_MAX, description="ResumeTimeout (default: the domain's boot timeout plus 30 s)")
    prewarm: bool = Field(
        False, description="the domain's policy may power nodes up before slurmctld asks: when its size (on the "
                           "slurm sensor: pending and running jobs, or a schedule) is above the nodes up or "
                           "coming, the pool asks slurmctld to power up powered-down nodes (scontrol "
                           "state=POWER_UP), which then ask for themselves by name")
    client_netns: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.\-]{1,64}$",
        description="run scontrol and squeue in this network namespace (where slurmctld is reachable); "
                    "default: this machine's own network")
    bridge_netns: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.\-]{1,64}$",
        description="local site: the network namespace whose bridge br0 each node's own namespace joins "
                    "(slurmd listens on every interface); default: the worker's own network, as on a cloud machine")

    @field_validator("controller")
    @classmethod
    def _controller(cls, v: str) -> str:
        if not CONTROLLER_RE.match(v):
            raise ValueError(f"{show_value(v)} is not a slurmctld address; expected host or host:port")
        return v

    @field_validator("node_prefix")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        if v is not None and not PREFIX_RE.match(v):
            raise ValueError(f"{show_value(v)} is not a node name prefix; expected lowercase letters, digits and "
                             "-, ending in a letter or - (e.g. cloud)")
        return v


def slurm_spec(spec: DomainSpec) -> SlurmSpec:
    """The domain's `slurm:` block (a slurm-node domain always has one)."""
    block = spec.block
    if not isinstance(block, SlurmSpec):
        raise ValueError(f"domain {spec.name} has no slurm: block (deployable_type {spec.deployable_type})")
    return block


def node_prefix(spec: DomainSpec) -> str:
    """The prefix of the domain's node names: ``slurm.node_prefix``, else the domain's name and a dash."""
    return slurm_spec(spec).node_prefix or f"{spec.name}-"


def node_names(spec: DomainSpec) -> list[str]:
    """Every node name of the domain: PREFIX1 .. PREFIXmax."""
    prefix = node_prefix(spec)
    return [f"{prefix}{i}" for i in range(1, spec.max + 1)]


def slurm_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """slurmctld decides which nodes run (named demand): the sensor is there to be read, never to size."""
    data.setdefault("sensor", {"name": "slurm"})
    data.setdefault("policy", {"name": "fixed", "size": 0})
    return data
