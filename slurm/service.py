"""What a slurm-node domain's workers need from the manager's machine: the cluster's munge key and
slurm.conf, put by the operator in ``{state}/slurm/<domain>/`` (``munge.key`` mode 0600 or 0400,
``slurm.conf``): a spec never names a file on this machine. The key travels only in the attribute
bag, masked wherever it is shown. Imports ``pool.core``, ``pool.state`` and the rest of ``slurm``.
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from pool.core.model import DomainSpec
from pool.core.secrets import remember
from pool.state.redisserver import state_dir
from slurm.spec import SlurmSpec, slurm_spec

#: slurm.conf read for the workers: at most this many bytes
CONF_MAX = 256 * 1024


def files_dir(domain: str) -> Path:
    return state_dir() / "slurm" / domain


class SlurmService:
    """A :class:`pool.workloads.base.DomainService` for slurm-node domains (nothing to run: it reads)."""

    def applies(self, spec: DomainSpec) -> bool:
        return isinstance(spec.block, SlurmSpec)

    def ensure(self, spec: DomainSpec, now: float) -> Mapping[str, str]:
        directory = files_dir(spec.name)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key_path, conf_path = directory / "munge.key", directory / "slurm.conf"
        try:
            key = key_path.read_bytes()
            conf = conf_path.read_bytes()[: CONF_MAX + 1]
        except OSError as exc:
            raise RuntimeError(f"domain {spec.name}: put the cluster's munge key in {key_path} (mode 0600) and its "
                               f"slurm.conf in {conf_path} ({exc.strerror or exc}: {exc.filename})") from None
        if key_path.stat().st_mode & 0o077:
            raise RuntimeError(f"{key_path} is readable by others: chmod 600 it")
        if len(conf) > CONF_MAX or not key:
            raise RuntimeError(f"{conf_path} is larger than {CONF_MAX} bytes" if key else f"{key_path} is empty")
        encoded = base64.b64encode(key).decode()
        remember(encoded)
        return {"munge_key": encoded, "slurm_conf": base64.b64encode(conf).decode(),
                "bridge_netns": slurm_spec(spec).bridge_netns or ""}

    def stop(self, spec: DomainSpec) -> None:
        """Nothing runs here for the domain."""


def scontrol(spec: DomainSpec, *argv: str, timeout: float = 10.0) -> str:
    """``scontrol ARGV`` against the domain's cluster (its slurm.conf from the state directory, in
    ``slurm.client_netns`` when set); its output, or RuntimeError with scontrol's first line."""
    netns = slurm_spec(spec).client_netns
    prefix = ["nsenter", f"--net=/run/netns/{netns}", "--"] if netns else []
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["SLURM_CONF"] = str(files_dir(spec.name) / "slurm.conf")
    try:
        done = subprocess.run([*prefix, "scontrol", *argv], capture_output=True, text=True, env=env, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"scontrol {argv[0] if argv else ''}: {exc}") from None
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no output"])[0][:200]
        raise RuntimeError(f"scontrol {' '.join(argv[:2])} exited with {done.returncode}: {first}")
    return done.stdout


#: node states in which a node neither runs jobs now nor is on its way to (``scontrol show node``'s State=)
UNAVAILABLE = ("POWERED_DOWN", "POWERING_DOWN", "DOWN", "DRAIN", "FAIL", "NOT_RESPONDING")


def node_states(spec: DomainSpec, names: list[str]) -> dict[str, set[str]]:
    """Each named node's state flags, as slurmctld says (``scontrol -o show node``); unknown names are left out."""
    from slurm.hostlist import fold

    out: dict[str, set[str]] = {}
    for line in scontrol(spec, "-o", "show", "node", fold(names)).splitlines():
        fields = dict(word.split("=", 1) for word in line.split() if "=" in word)
        if fields.get("NodeName") in names:
            out[fields["NodeName"]] = set(fields.get("State", "").split("+"))
    return out


def power_up(spec: DomainSpec, *, target: int) -> list[str]:
    """Ask slurmctld to power up powered-down nodes of the domain until ``target`` nodes are up or coming
    (counting what slurmctld powers up on its own); the names asked for, lowest first."""
    from slurm.spec import node_names

    names = node_names(spec)
    states = node_states(spec, names)
    up = [n for n in names if n in states and not states[n] & set(UNAVAILABLE)]
    ready = [n for n in names if states.get(n, set()) & {"POWERED_DOWN"} and not states[n] & {"DOWN", "DRAIN",
                                                                                                "FAIL", "POWERING_DOWN"}]
    chosen = ready[: max(0, min(target, spec.max) - len(up))]
    if chosen:
        from slurm.hostlist import fold

        scontrol(spec, "update", f"nodename={fold(chosen)}", "state=POWER_UP")
    return chosen
