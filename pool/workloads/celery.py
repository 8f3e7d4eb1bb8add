"""The Celery workload: each worker runs the user's Celery app on the domain's queue, with durable
settings (acks late, reject on worker lost, prefetch 1) and the atomic Redis pop.

Imports ``pool.core`` and ``pool.workloads``.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Annotated, Any, Literal, Mapping

from pydantic import AfterValidator, Field, StringConstraints

from pool.core.model import (
    SECONDS_MAX,
    DomainSpec,
    PathText,
    SpecBlock,
    WorkloadSpec,
    matches,
)
from pool.workloads.base import DomainService, NodeSide
from pool.workloads.images import AGENT_PREAMBLE, DeployableType

#: Celery queue names.
QUEUE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,199}\Z")
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
#: Celery's -A argument: a dotted module path, optionally ':' and a dotted attribute.
CELERY_APP_RE = re.compile(rf"^{_IDENT}(\.{_IDENT})*(:{_IDENT}(\.{_IDENT})*)?\Z")
CELERY_APP_MAX = 200

QueueName = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(
    matches(QUEUE_RE, "letters, digits, '_', '.', ':', '@' and '-', 1-200 chars"))]
CeleryApp = Annotated[str, StringConstraints(min_length=1, max_length=CELERY_APP_MAX), AfterValidator(
    matches(CELERY_APP_RE, "a Python module path, optionally ':' and an attribute (tasks, proj.celery:app)"))]
CeleryLogLevel = Literal["DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL",
                         "debug", "info", "warning", "warn", "error", "critical", "fatal"]


class CelerySpec(WorkloadSpec):
    """How a celery-worker node runs the user's Celery app."""

    app: CeleryApp = Field(..., description="the -A argument, e.g. 'tasks' or 'proj.celery:app'")
    path: PathText | None = Field(None, description="directory added to PYTHONPATH of the worker")
    queue: QueueName = "celery"
    concurrency: int = Field(1, ge=1, le=256)
    pool: Literal["auto", "prefork", "solo", "threads"] = Field(
        "auto", description="Celery execution pool; auto = solo (Redis) or threads (AMQP) for "
        "concurrency 1, else prefork"
    )
    visibility_timeout: float = Field(
        30.0, gt=0, le=SECONDS_MAX, description="Redis broker: seconds before an unacked task is redelivered"
    )
    loglevel: CeleryLogLevel = "WARNING"


def celery_spec(spec: DomainSpec) -> CelerySpec | None:
    """The domain's `celery:` block."""
    block = spec.block
    return block if isinstance(block, CelerySpec) else None


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


def _defaults(data: dict[str, Any]) -> dict[str, Any]:
    """A Celery domain reads its queue with the celery sensor unless the spec names another."""
    sensor = data.get("sensor")
    if sensor is None:
        data["sensor"] = {"name": "celery"}
    elif isinstance(sensor, Mapping) and "name" not in sensor:
        data["sensor"] = {"name": "celery", **sensor}
    return data


class Celery:
    """Celery workers sized from their queue's depth (ready plus in-flight)."""

    name = "celery"
    deployable_type = CELERY_WORKER
    spec_block = SpecBlock(key="celery", model=CelerySpec, required=True, hint="with at least 'app' (e.g. "
                           "'celery: {app: tasks}')", defaults=_defaults, reserved=CELERY_WORKER.placeholders)

    def attributes(self, spec: DomainSpec) -> dict[str, str]:
        celery = celery_spec(spec)
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
        celery = celery_spec(spec)
        if celery is not None:
            out["queue"] = celery.queue
            # AMQP: in-flight messages are bounded by consumers x prefetch (one per task slot)
            out["prefetch"] = celery.concurrency
        out["timeout"] = spec.sensor.timeout
        return out

    def check(self, spec: DomainSpec) -> None:
        celery = celery_spec(spec)
        if celery is not None and celery.path:
            if not os.path.isdir(celery.path):
                raise ValueError(f"celery.path: {celery.path!r} is not a directory")
            safe_code_dir(celery.path)

    def services(self) -> list[DomainService]:
        return []

    def node(self, env: Mapping[str, str]) -> NodeSide:
        return NodeSide(command=[sys.executable, "-m", "pool.workloads.celery_worker"])

    def cli(self) -> Any:
        return None  # Celery users keep their own tools (producers, `celery inspect`)
