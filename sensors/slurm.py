"""Slurm's queue: pending jobs (with their reasons) and CPUs asked, running jobs, from ``squeue``.

Imports ``pool.core`` and ``sensors``; runs ``squeue`` when reading.
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from dataclasses import dataclass, field

from pool.core.model import Reading
from sensors import Throttled, error_text

FORMAT = "%i|%T|%P|%C|%r"


@dataclass
class SlurmQueueSensor(Throttled):
    """Jobs of ``partition`` waiting and running, read with ``squeue -h -o FORMAT`` (one call per read).

    The value is pending plus running jobs; ``detail`` has ``pending``, ``pending_cpus``,
    ``running`` and ``configuring`` (jobs whose nodes are powering up); ``notes`` say why jobs wait
    (squeue's reasons, e.g. ``2 pending jobs: Resources``). In a slurm-node domain slurmctld decides
    which nodes run (its ResumeProgram); this reading says what waits. A squeue that fails gives a
    reading with ``error`` set.

    Parameters:
        partition: only this partition's jobs (default: every partition).
        conf: SLURM_CONF for squeue (default: squeue's own default).
        netns: run squeue in this network namespace (``/run/netns/NAME``), where slurmctld is reachable.
    """

    partition: str | None = None
    conf: str | None = None
    netns: str | None = None
    domain: str | None = None
    timeout: float = 5.0
    min_interval: float = 2.0
    name: str = "slurm"
    _last: Reading | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        for attr in ("partition", "netns"):
            value = getattr(self, attr)
            if value is not None and (not isinstance(value, str) or not value.replace("-", "").replace("_", "")
                                      .replace(".", "").isalnum() or len(value) > 64):
                raise ValueError(f"{attr} must be a name (letters, digits, - _ .), got {value!r}")

    def _argv(self) -> list[str]:
        argv = ["squeue", "-h", "-t", "PD,R,CF", "-o", FORMAT]
        if self.partition:
            argv += ["-p", self.partition]
        return (["nsenter", f"--net=/run/netns/{self.netns}", "--"] if self.netns else []) + argv

    def _read(self, now: float) -> Reading:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        if self.conf:
            env["SLURM_CONF"] = self.conf
        try:
            done = subprocess.run(self._argv(), capture_output=True, text=True, timeout=self.timeout, env=env)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Reading(self.name, None, now, error=f"squeue: {error_text(exc)}")
        if done.returncode != 0:
            first = (done.stderr.strip().splitlines() or ["no output"])[0][:200]
            return Reading(self.name, None, now, error=f"squeue exited with {done.returncode}: {first}")
        pending = running = configuring = cpus = 0
        reasons: Counter[str] = Counter()
        for line in done.stdout.splitlines():
            parts = line.split("|")
            if len(parts) != 5:
                continue
            state = parts[1]
            if state == "PENDING":
                pending += 1
                cpus += int(parts[3]) if parts[3].isdigit() else 1
                reasons[parts[4][:40]] += 1
            elif state == "CONFIGURING":
                configuring += 1
            else:
                running += 1
        notes = tuple(f"{n} pending job{'s' if n != 1 else ''}: {why}" for why, n in sorted(reasons.items()))
        return Reading(self.name, float(pending + running + configuring), now, notes=notes,
                       detail={"pending": pending, "pending_cpus": cpus, "running": running,
                               "configuring": configuring})

    def close(self) -> None:
        self._last = None
