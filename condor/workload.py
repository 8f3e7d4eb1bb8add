"""The HTCondor workload: each worker runs a startd that joins the domain's pool (a central manager
the manager starts, or the collector the spec names) and leaves by a graceful drain.

Imports ``pool.core``, ``pool.workloads`` and the rest of ``condor``.
"""

from __future__ import annotations

from typing import Any, Mapping

from condor.spec import CondorSpec, condor_defaults, condor_spec
from pool.core.model import DomainSpec, SpecBlock
from pool.workloads.base import DomainService, NodeSide
from pool.workloads.images import AGENT_PREAMBLE, DeployableType

CONDOR_STARTD = DeployableType(
    name="condor-startd",
    required=("workload", "python", "redis_url", "namespace", "domain", "node_id", "launch_id", "heartbeat_interval",
              "collector", "pool_password", "condor_host", "worker_cpus", "worker_memory", "worker_disk",
              "drain_timeout"),
    template="""#!/bin/bash
# elastic-pool contextualization: condor-startd
# Joins the domain's HTCondor pool on boot: the agent heartbeats, runs a condor_master with only a
# startd (one partitionable slot of this worker's size) and drains it gracefully on scale-in.
""" + AGENT_PREAMBLE + """export POOL_CONDOR_COLLECTOR=${collector}
export POOL_CONDOR_PASSWORD=${pool_password}
export POOL_CONDOR_HOST=${condor_host}
export POOL_CONDOR_CPUS=${worker_cpus}
export POOL_CONDOR_MEMORY=${worker_memory}
export POOL_CONDOR_DISK=${worker_disk}
export POOL_CONDOR_DRAIN_TIMEOUT=${drain_timeout}
exec ${python} -m pool.node.agent
""",
)


class Condor:
    """HTCondor execute machines sized from the idle jobs of the pool's schedds."""

    name = "condor"
    deployable_type = CONDOR_STARTD
    spec_block = SpecBlock(key="condor", model=CondorSpec, required=True,
                           hint="(e.g. 'condor: {}' to start a central manager)", defaults=condor_defaults,
                           reserved=CONDOR_STARTD.placeholders)

    def attributes(self, spec: DomainSpec) -> dict[str, str]:
        return {}  # the collector, the password and the slot's size come from the central manager service

    def sensor_defaults(self, spec: DomainSpec, *, broker: str) -> dict[str, Any]:
        cs = condor_spec(spec)
        out: dict[str, Any] = {"domain": spec.name, "worker_cpus": cs.worker_cpus, "worker_memory": cs.worker_memory,
                               "worker_disk": cs.worker_disk}
        if cs.schedds:
            out["schedds"] = list(cs.schedds)
        if cs.constraint:
            out["constraint"] = cs.constraint
        return out

    def check(self, spec: DomainSpec) -> None:
        cs = condor_spec(spec)
        if spec.max == 0:
            raise ValueError("max: 0 would keep a central manager with no startd to run its jobs (they would stay "
                             "idle forever); give max >= 1, or `pool delete` the domain")
        if cs.constraint is not None:
            import classad2

            try:
                classad2.ExprTree(cs.constraint)
            except Exception as exc:  # noqa: BLE001
                raise ValueError(f"condor.constraint: {cs.constraint!r} is not a ClassAd expression ({exc}); "
                                 "e.g. 'Owner == \"ana\"'") from None

    def producer_env(self, spec: DomainSpec) -> dict[str, Any]:
        """What `pool env` prints: the pool's collector and the client settings (no broker, no secret)."""
        from condor.central import read_central
        from condor.cli import client_env

        data = read_central(spec.name)
        if not data or not isinstance(data.get("collector"), str):
            raise LookupError(f"domain {spec.name} has no HTCondor pool yet: `pool up` starts its central manager "
                              "(then run this again)")
        return {"collector": data["collector"], "schedd": data.get("schedd"), "env": client_env(data)}

    def services(self) -> list[DomainService]:
        from condor.central import CondorCentralService

        return [CondorCentralService()]

    def node(self, env: Mapping[str, str]) -> NodeSide:
        from condor.startd import CondorStartd

        startd = CondorStartd.from_env(env)
        return NodeSide(command=startd.command(), env=startd.env(), probe=startd.probe, drain=startd.drain,
                        cleanup=startd.cleanup)

    def cli(self) -> Any:
        from condor.cli import condor

        return condor  # `pool condor status|env|submit|q`
