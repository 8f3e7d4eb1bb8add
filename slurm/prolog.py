"""The PrologSlurmctld that lets a batch job start as soon as the nodes it powered up registered.

slurmctld launches such a job only from its periodic check (every 30 s), or at once when a
PrologSlurmctld ends: this one waits until the job's nodes show no powering-up, powered-down or
not-responding state (bounded by ResumeTimeout), then exits 0. Where sinfo cannot answer it exits
0 at once: the job then waits for the periodic check, as without it. Imports nothing.
"""

from __future__ import annotations

PROLOG = """#!/bin/sh
# PrologSlurmctld ({who}): a job on powered-up nodes starts once they registered, not at
# slurmctld's next 30 s check. Exits 0 whatever happens (a prolog that fails requeues the job).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
{conf}end=$(( $(date +%s) + {timeout} ))
while [ "$(date +%s)" -lt "$end" ]; do
    states=$(sinfo -h -N -n "$SLURM_JOB_NODELIST" -o %T 2>/dev/null) || exit 0
    case "$states" in
        ''|*'#'*|*'*'*|*'~'*|*'%'*) sleep 0.2 ;;
        *) exit 0 ;;
    esac
done
exit 0
"""


def prolog_text(*, who: str, timeout: int, conf: str | None = None) -> str:
    """The script; ``conf``: the slurm.conf sinfo reads (default: sinfo's own default)."""
    return PROLOG.format(who=who, timeout=int(timeout), conf=f"export SLURM_CONF={conf}\n" if conf else "")
