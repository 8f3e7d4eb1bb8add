#!/usr/bin/env bash
# Installs Debian's slurm-wlm and munge when they are missing (idempotent): the Slurm tests start
# private daemons (munged, slurmctld, slurmd) through slurm/daemons.py; the packages' own services
# never start (slurmctld must never listen in the root network namespace).
exec bash "$(dirname "$0")/../scripts/ensure-debian-packages.sh" ensure-slurm \
    "slurmctld slurmd munged sbatch" slurm-wlm munge
