#!/usr/bin/env bash
# Installs Debian's rabbitmq-server when it is missing (idempotent): the tests start a private node.
exec bash "$(dirname "$0")/ensure-debian-packages.sh" ensure-rabbitmq \
    "/usr/lib/rabbitmq/bin/rabbitmq-server epmd" rabbitmq-server
