#!/usr/bin/env bash
# Installs Debian's rabbitmq-server when it is missing (idempotent): the tests start a private node.
#
# The package's own service is kept from starting while it installs (a temporary policy-rc.d that
# denies service starts, removed afterwards): the tests never use a broker on the default ports.
# Where apt is impossible (no apt-get, not root and no password-less sudo) it says why and exits 0:
# the RabbitMQ tests then skip with that reason.
set -euo pipefail

have_rabbit() { [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] && command -v epmd >/dev/null 2>&1; }

if have_rabbit; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-rabbitmq: no apt-get on this machine: install rabbitmq-server to run the RabbitMQ tests" >&2
    exit 0
fi
SUDO=()
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        echo "ensure-rabbitmq: not root and no password-less sudo: cannot apt-get install rabbitmq-server" >&2
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
if ! "${APT[@]}" install --no-install-recommends rabbitmq-server; then
    "${APT[@]}" update
    "${APT[@]}" install --no-install-recommends rabbitmq-server
fi
have_rabbit && echo "ensure-rabbitmq: rabbitmq-server installed" >&2
