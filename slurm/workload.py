"""The Slurm workload: each worker runs slurmd under the node name slurmctld asked to power up
(a named domain: `pool slurm resume` records the names, the plan launches one worker for each).

Imports ``pool.core``, ``pool.workloads`` and the rest of ``slurm``.
"""

from __future__ import annotations

from typing import Any, Mapping

from pool.core.model import DomainSpec, SpecBlock
from pool.workloads.base import DomainService, NodeSide
from pool.workloads.images import AGENT_PREAMBLE, DeployableType
from slurm.spec import SlurmSpec, slurm_defaults, slurm_spec

SLURM_NODE = DeployableType(
    name="slurm-node",
    required=("workload", "python", "redis_url", "namespace", "domain", "node_id", "launch_id", "heartbeat_interval",
              "node_name", "munge_key", "slurm_conf"),
    template="""#!/bin/bash
# elastic-pool contextualization: slurm-node
# Runs slurmd under the node name slurmctld powered up, with the cluster's munge key and slurm.conf.
""" + AGENT_PREAMBLE + """export POOL_SLURM_NODENAME=${node_name}
export POOL_SLURM_MUNGE_KEY=${munge_key}
export POOL_SLURM_CONF=${slurm_conf}
export POOL_SLURM_BRIDGE_NETNS=${bridge_netns}
exec ${python} -m pool.node.agent
""",
)


class Slurm:
    """Slurm CLOUD nodes powered up and down by slurmctld's power saving."""

    name = "slurm"
    named = True  # the plan reconciles workers by the names slurmctld asked for
    deployable_type = SLURM_NODE
    spec_block = SpecBlock(key="slurm", model=SlurmSpec, required=True,
                           hint="(e.g. 'slurm: {controller: ctl.example.org}')", defaults=slurm_defaults,
                           reserved=SLURM_NODE.placeholders)

    def attributes(self, spec: DomainSpec) -> dict[str, str]:
        return {}  # the key and the configuration come from the Slurm service

    def sensor_defaults(self, spec: DomainSpec, *, broker: str) -> dict[str, Any]:
        from slurm.service import files_dir

        sl = slurm_spec(spec)
        out: dict[str, Any] = {"domain": spec.name, "partition": sl.partition,
                               "conf": str(files_dir(spec.name) / "slurm.conf")}
        if sl.client_netns:
            out["netns"] = sl.client_netns
        return out

    def node_failed(self, spec: DomainSpec, name: str, why: str) -> None:
        """A node's worker failed before joining: DOWN with the reason, then powered down, so slurmctld
        requeues its job and asks again (another node), instead of waiting out ResumeTimeout."""
        from slurm.service import scontrol

        reason = "elastic-pool: " + "".join(ch if ch.isalnum() or ch in " .,:-_()" else " " for ch in why)[:180]
        scontrol(spec, "update", f"nodename={name}", "state=DOWN", f"reason={reason}")
        scontrol(spec, "update", f"nodename={name}", "state=POWER_DOWN_FORCE")

    def runs_ahead(self, spec: DomainSpec) -> bool:
        return slurm_spec(spec).prewarm

    def warm(self, spec: DomainSpec, *, target: int) -> list[str]:
        """``prewarm``: powered-down nodes powered up through slurmctld toward the policy's size; slurmctld
        then calls ResumeProgram for them, as for a job."""
        from slurm.service import power_up

        return power_up(spec, target=target)

    def check(self, spec: DomainSpec) -> None:
        if spec.max == 0:
            raise ValueError("max: 0 gives the partition no node to power up; give max >= 1 (the number of CLOUD "
                             "nodes), or `pool delete` the domain")

    def services(self) -> list[DomainService]:
        from slurm.service import SlurmService

        return [SlurmService()]

    def node(self, env: Mapping[str, str]) -> NodeSide:
        from slurm.node import SlurmNode

        node = SlurmNode.from_env(env)
        return NodeSide(command=node.command(), env=node.env(), probe=node.probe, drain=node.drain,
                        cleanup=node.cleanup)

    def cli(self) -> Any:
        from slurm.cli import slurm

        return slurm  # `pool slurm resume|suspend|resume-fail|config`
