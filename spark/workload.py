"""The Spark workload: each worker runs a Spark standalone Worker registered with the domain's master
(started and kept up by the manager, or adopted), and leaves by Spark's graceful decommission.

Imports ``pool.core``, ``pool.workloads`` and the rest of ``spark``.
"""

from __future__ import annotations

from typing import Any, Mapping

from pool.core.model import DomainSpec, SpecBlock
from pool.workloads.base import DomainService, NodeSide
from pool.workloads.images import AGENT_PREAMBLE, DeployableType
from spark.spec import SparkSpec, spark_defaults

SPARK_WORKER = DeployableType(
    name="spark-worker",
    required=("workload", "python", "redis_url", "namespace", "domain", "node_id", "launch_id", "heartbeat_interval",
              "master_url", "master_ui", "spark_host", "worker_cores", "worker_memory", "daemon_memory",
              "decommission", "decommission_signal", "drain_timeout"),
    template="""#!/bin/bash
# elastic-pool contextualization: spark-worker
# Joins the domain's Spark master on boot: the agent heartbeats, runs a Spark standalone Worker
# with this node's cores and memory, and decommissions it gracefully when the node is drained.
""" + AGENT_PREAMBLE + """export POOL_SPARK_MASTER=${master_url}
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


class Spark:
    """Spark workers sized from the pending and running tasks of the applications on the master."""

    name = "spark"
    deployable_type = SPARK_WORKER
    spec_block = SpecBlock(key="spark", model=SparkSpec, required=True, hint="(e.g. 'spark: {}' to start a master)",
                           defaults=spark_defaults, reserved=SPARK_WORKER.placeholders)

    def attributes(self, spec: DomainSpec) -> dict[str, str]:
        return {}  # the master's address and the worker's size come from the master service

    def sensor_defaults(self, spec: DomainSpec, *, broker: str) -> dict[str, Any]:
        return {}  # the spark sensor takes the master's web UI from the master service

    def check(self, spec: DomainSpec) -> None:
        if spec.max == 0:
            raise ValueError("max: 0 would keep a Spark master with no worker to run its jobs (they would wait "
                             "forever); give max >= 1, or `pool delete` the domain")

    def services(self) -> list[DomainService]:
        from spark.master import SparkMasterService

        return [SparkMasterService()]

    def node(self, env: Mapping[str, str]) -> NodeSide:
        from spark.worker import SparkWorkload

        worker = SparkWorkload.from_env(env)
        return NodeSide(command=worker.command(), env=worker.env(env), probe=worker.probe, drain=worker.drain,
                        cleanup=worker.cleanup)

    def cli(self) -> Any:
        from spark.cli import spark

        return spark  # `pool spark master|submit`
