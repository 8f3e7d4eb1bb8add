"""Deployable types: what a worker is, and the contextualization that makes it join its domain."""

from __future__ import annotations

import shlex
import string
from dataclasses import dataclass
from typing import Mapping

#: Attributes that are rendered into user-data only, never into records, events or status.
SECRET_ATTRIBUTES = frozenset({"redis_url", "broker", "pool_password", "munge_key"})


@dataclass(frozen=True)
class DeployableType:
    """A contextualization template (bash user-data) with ``${attribute}`` placeholders."""

    name: str
    template: str
    required: tuple[str, ...]

    def render(self, attributes: Mapping[str, str]) -> str:
        """Fill the template from the attribute bag; every value is shell-quoted."""
        missing = [a for a in self.required if a not in attributes]
        if missing:
            raise ValueError(f"deployable type {self.name}: missing attributes {', '.join(missing)}")
        quoted = {k: shlex.quote(str(v)) for k, v in attributes.items()}
        return string.Template(self.template).safe_substitute(quoted)

    @property
    def placeholders(self) -> frozenset[str]:
        """Every ``${attribute}`` of the template (and the required ones): attributes the pool sets."""
        return frozenset(string.Template(self.template).get_identifiers()) | frozenset(self.required)


#: What every worker's user-data sets up for its agent: the store, its domain, its identity.
AGENT_PREAMBLE = """set -euo pipefail
export POOL_WORKLOAD=${workload}
export POOL_REDIS_URL=${redis_url}
export POOL_NAMESPACE=${namespace}
export POOL_DOMAIN=${domain}
export POOL_NODE_ID=${node_id}
export POOL_LAUNCH_ID=${launch_id}
export POOL_HEARTBEAT_INTERVAL=${heartbeat_interval}
"""

def deployable_type(name: str) -> DeployableType:
    """The deployable type ``name``, from the workload that owns it; unknown names list the valid ones."""
    from pool.workloads.base import workload_for_type

    return workload_for_type(name).deployable_type


def deployable_types() -> dict[str, DeployableType]:
    """Every workload's deployable type, by name."""
    from pool.workloads.base import workloads

    return {w.deployable_type.name: w.deployable_type for w in workloads()}


def public_attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    """The attribute bag as it may be shown: secrets masked."""
    return {k: ("***" if k in SECRET_ATTRIBUTES else v) for k, v in attributes.items()}
