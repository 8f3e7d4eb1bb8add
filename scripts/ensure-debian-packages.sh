#!/usr/bin/env bash
# Installs Debian packages when what they provide is missing (idempotent), for the tests' own servers.
#
#   ensure-debian-packages.sh NAME "CHECKS" PACKAGE...
#
# NAME names the caller in messages; CHECKS is a space-separated list of commands (found on PATH)
# or absolute paths (executable) that say the packages are there. The packages' own services are
# kept from starting while they install (a temporary policy-rc.d that denies service starts,
# removed afterwards): the tests start private servers on ports of their own and never use these.
# Where apt is impossible (no apt-get, not root and no password-less sudo) it says why and exits 0:
# the tests that need the packages then skip with that reason.
set -euo pipefail

NAME=$1 CHECKS=$2
shift 2
PKGS=("$@")

have_all() {
    local c
    for c in $CHECKS; do
        if [[ $c == /* ]]; then [ -x "$c" ] || return 1; else command -v "$c" >/dev/null 2>&1 || return 1; fi
    done
}

if have_all; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "$NAME: no apt-get on this machine: install ${PKGS[*]} to run the tests that need them" >&2
    exit 0
fi
SUDO=()
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        echo "$NAME: not root and no password-less sudo: cannot apt-get install ${PKGS[*]}" >&2
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
# the package lists may be stale or absent on a fresh machine: one update, then one more try
if ! "${APT[@]}" install --no-install-recommends "${PKGS[@]}"; then
    "${APT[@]}" update
    "${APT[@]}" install --no-install-recommends "${PKGS[@]}"
fi
have_all && echo "$NAME: ${PKGS[*]} installed" >&2
