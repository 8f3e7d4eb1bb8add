"""Deployable types: what a worker is, and the contextualization that makes it join its domain."""

from __future__ import annotations

import shlex
import string
from dataclasses import dataclass
from typing import Mapping

from pool.core.model import UnknownPlugin

#: Attributes that are rendered into user-data only, never into records, events or status.
SECRET_ATTRIBUTES = frozenset({"redis_url", "broker"})


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


#: What every worker's user-data sets up for its agent: the store, its domain, its identity.
AGENT_PREAMBLE = """set -euo pipefail
export POOL_REDIS_URL=${redis_url}
export POOL_NAMESPACE=${namespace}
export POOL_DOMAIN=${domain}
export POOL_NODE_ID=${node_id}
export POOL_LAUNCH_ID=${launch_id}
export POOL_HEARTBEAT_INTERVAL=${heartbeat_interval}
"""

CELERY_WORKER = DeployableType(
    name="celery-worker",
    required=("python", "redis_url", "namespace", "domain", "node_id", "launch_id", "broker",
              "queue", "celery_app", "heartbeat_interval"),
    template="""#!/bin/bash
# elastic-pool contextualization: celery-worker
# Joins the domain's pull queue on boot: the agent heartbeats and runs the user's Celery worker.
""" + AGENT_PREAMBLE + """export POOL_BROKER_URL=${broker}
export POOL_QUEUE=${queue}
export POOL_CELERY_APP=${celery_app}
export POOL_CELERY_PATH=${celery_path}
export POOL_CONCURRENCY=${concurrency}
export POOL_CELERY_POOL=${celery_pool}
export POOL_VISIBILITY_TIMEOUT=${visibility_timeout}
export POOL_LOGLEVEL=${loglevel}
exec ${python} -m pool.node.agent
""",
)

SPARK_WORKER = DeployableType(
    name="spark-worker",
    required=("python", "redis_url", "namespace", "domain", "node_id", "launch_id", "heartbeat_interval",
              "master_url", "master_ui", "spark_host", "worker_cores", "worker_memory", "daemon_memory",
              "decommission", "decommission_signal", "drain_timeout"),
    template="""#!/bin/bash
# elastic-pool contextualization: spark-worker
# Joins the domain's Spark master on boot: the agent heartbeats, runs a Spark standalone Worker
# with this node's cores and memory, and decommissions it gracefully when the node is drained.
""" + AGENT_PREAMBLE + """export POOL_WORKLOAD=spark
export POOL_SPARK_MASTER=${master_url}
export POOL_SPARK_MASTER_UI=${master_ui}
export POOL_SPARK_HOST=${spark_host}
export POOL_SPARK_CORES=${worker_cores}
export POOL_SPARK_MEMORY=${worker_memory}
export POOL_SPARK_DAEMON_MEMORY=${daemon_memory}
export POOL_SPARK_DECOMMISSION=${decommission}
export POOL_SPARK_DECOMMISSION_SIGNAL=${decommission_signal}
export POOL_SPARK_DRAIN_TIMEOUT=${drain_timeout}
exec ${python} -m pool.node.agent
""",
)

DEPLOYABLE_TYPES: dict[str, DeployableType] = {CELERY_WORKER.name: CELERY_WORKER,
                                               SPARK_WORKER.name: SPARK_WORKER}


def deployable_type(name: str) -> DeployableType:
    try:
        return DEPLOYABLE_TYPES[name]
    except KeyError:
        raise UnknownPlugin(
            f"unknown deployable type {name!r}; valid: {', '.join(sorted(DEPLOYABLE_TYPES))}"
        ) from None


def public_attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    """The attribute bag as it may be shown: secrets masked."""
    return {k: ("***" if k in SECRET_ATTRIBUTES else v) for k, v in attributes.items()}
