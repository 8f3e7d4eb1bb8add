"""The slurm.conf lines of a slurm-node domain: its CLOUD nodes, partition and power saving.

Imports ``pool.core`` and the rest of ``slurm`` (no I/O).
"""

from __future__ import annotations

from pathlib import Path

from pool.core.model import DomainSpec
from slurm.hostlist import fold
from slurm.spec import node_names, slurm_spec


def resume_timeout(spec: DomainSpec) -> int:
    """slurmctld's ResumeTimeout: the spec's, else the domain's boot timeout and half a minute."""
    sl = slurm_spec(spec)
    return int(sl.resume_timeout if sl.resume_timeout is not None else spec.timeouts.boot + 30)


def domain_conf(spec: DomainSpec, programs: dict[str, Path]) -> str:
    """Lines to paste into slurm.conf (then `scontrol reconfigure`, or restart slurmctld)."""
    sl = slurm_spec(spec)
    nodes = fold(node_names(spec))
    features = f" Features={','.join(sl.features)}" if sl.features else ""
    return "\n".join([
        f"# elastic-pool: domain {spec.name} (slurm-node), {spec.max} CLOUD nodes powered up on demand",
        f"ResumeProgram={programs['resume']}",
        f"SuspendProgram={programs['suspend']}",
        f"ResumeFailProgram={programs['resume-fail']}",
        "# a job on powered-up nodes starts once they registered, not at slurmctld's next 30 s check",
        "# (merge it into an existing PrologSlurmctld)",
        f"PrologSlurmctld={programs['prolog']}",
        f"SuspendTime={int(sl.suspend_time)}",
        f"ResumeTimeout={resume_timeout(spec)}",
        "SuspendTimeout=30",
        "ResumeRate=0           # no cap: the pool paces launches per site",
        "SuspendRate=0",
        "TreeWidth=65533        # cloud nodes are not reachable through each other",
        "PrivateData=cloud      # powered-down nodes are shown (sinfo, scontrol)",
        "SlurmctldParameters=cloud_reg_addrs,idle_on_node_suspend",
        f"NodeName={nodes} CPUs={sl.cpus} RealMemory={sl.memory} State=CLOUD{features}",
        f"PartitionName={sl.partition} Nodes={nodes} MaxTime=INFINITE State=UP",
    ])
