#!/usr/bin/env bash
# Installs Debian's slurm-wlm and munge when they are missing (idempotent): the Slurm tests start
# private daemons (munged, slurmctld, slurmd) through slurm/daemons.py.
#
# The packages' own services (munge, slurmctld, slurmd) are kept from starting while they install
# (a temporary policy-rc.d that denies service starts, removed afterwards): the tests never use
# them, and slurmctld must never listen in the root network namespace.
# Where apt is impossible (no apt-get, not root and no password-less sudo) it says why and exits 0:
# the Slurm tests then skip with that reason.
set -euo pipefail

have_slurm() {
    command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 \
        && command -v munged >/dev/null 2>&1 && command -v sbatch >/dev/null 2>&1
}

if have_slurm; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-slurm: no apt-get on this machine: install slurm-wlm and munge to run the Slurm tests" >&2
    exit 0
fi
SUDO=()
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        echo "ensure-slurm: not root and no password-less sudo: cannot apt-get install slurm-wlm munge" >&2
        exit 0
    fi
fi

POLICY=/usr/sbin/policy-rc.d
ADDED_POLICY=0
cleanup() {
    if [ "$ADDED_POLICY" = 1 ]; then
        "${SUDO[@]}" rm -f "$POLICY"
    fi
}
trap cleanup EXIT
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
    ADDED_POLICY=1
fi

export DEBIAN_FRONTEND=noninteractive
APT=("${SUDO[@]}" apt-get -y -q -o DPkg::Lock::Timeout=300)
PKGS=(slurm-wlm munge)
# the package lists may be stale or absent on a fresh machine: one update, then one more try
if ! "${APT[@]}" install --no-install-recommends "${PKGS[@]}"; then
    "${APT[@]}" update
    "${APT[@]}" install --no-install-recommends "${PKGS[@]}"
fi
have_slurm && echo "ensure-slurm: slurm-wlm and munge installed" >&2
