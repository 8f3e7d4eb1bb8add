"""The Celery workload: each worker runs the user's Celery app on the domain's queue, with durable
settings (acks late, reject on worker lost, prefetch 1) and the atomic Redis pop.

Imports ``pool.core`` and ``pool.workloads``.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping

from pool.core.model import DomainSpec
from pool.workloads.base import DomainService, NodeSide
from pool.workloads.images import AGENT_PREAMBLE, DeployableType


def safe_code_dir(path: str) -> str:
    """``path`` as a directory a worker may import code from, or ``ValueError`` saying why not.

    The worker runs as the manager's user: code that another user can change there would run with
    its rights. So the directory and every directory above it must belong to this user or root
    and be writable by no one else (the sticky /tmp itself excepted).
    """
    full = os.path.realpath(path)
    me = os.getuid()
    current = full
    while True:
        try:
            st = os.stat(current)
        except OSError:
            raise ValueError(f"celery.path {full!r} does not exist on the manager's machine") from None
        sticky = bool(st.st_mode & 0o1000) and current != full
        others = st.st_mode & 0o002 or (st.st_mode & 0o020 and st.st_gid not in (0, os.getgid()))
        if st.st_uid not in (0, me) or (others and not sticky):
            raise ValueError(f"celery.path {full!r}: {current} may be changed by other users (owner uid "
                             f"{st.st_uid}, mode {st.st_mode & 0o7777:o}); workers import code only from "
                             "directories that only you (or root) can write")
        parent = os.path.dirname(current)
        if parent == current:
            return full
        current = parent


CELERY_WORKER = DeployableType(
    name="celery-worker",
    required=("workload", "python", "redis_url", "namespace", "domain", "node_id", "launch_id", "broker",
              "queue", "celery_app", "heartbeat_interval"),
    template="""#!/bin/bash
# elastic-pool contextualization: celery-worker
# Joins the domain's pull queue on boot: the agent heartbeats and runs the user's Celery worker.
""" + AGENT_PREAMBLE + """export POOL_BROKER_URL=${broker}
export POOL_QUEUE=${queue}
export POOL_CELERY_APP=${celery_app}
export POOL_CELERY_PATH=${celery_path}
export POOL_CONCURRENCY=${concurrency}
export POOL_CELERY_POOL=${celery_pool}
export POOL_VISIBILITY_TIMEOUT=${visibility_timeout}
export POOL_LOGLEVEL=${loglevel}
exec ${python} -m pool.node.agent
""",
)


class Celery:
    """Celery workers sized from their queue's depth (ready plus in-flight)."""

    name = "celery"
    deployable_type = CELERY_WORKER

    def attributes(self, spec: DomainSpec) -> dict[str, str]:
        celery = spec.celery
        if celery is None:
            return {}
        return {"queue": celery.queue, "celery_app": celery.app,
                "celery_path": safe_code_dir(celery.path) if celery.path else "",
                "concurrency": str(celery.concurrency), "celery_pool": celery.pool,
                "visibility_timeout": f"{celery.visibility_timeout:g}", "loglevel": celery.loglevel}

    def sensor_defaults(self, spec: DomainSpec, *, broker: str) -> dict[str, Any]:
        if spec.sensor.name != "celery":
            return {}
        out: dict[str, Any] = {"broker": broker}
        if spec.celery is not None:
            out["queue"] = spec.celery.queue
            # AMQP: in-flight messages are bounded by consumers x prefetch (one per task slot)
            out["prefetch"] = spec.celery.concurrency
        out["timeout"] = spec.sensor.timeout
        return out

    def services(self) -> list[DomainService]:
        return []

    def node(self, env: Mapping[str, str]) -> NodeSide:
        return NodeSide(command=[sys.executable, "-m", "pool.workloads.celery_worker"])

    def cli(self) -> Any:
        return None  # Celery users keep their own tools (producers, `celery inspect`)
