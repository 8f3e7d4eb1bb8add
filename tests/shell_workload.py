"""A workload that exists only in the tests: each worker pops shell commands from a Redis list and
runs them. It is registered through the workload and sensor registries at test time (no change to
the pool's own packages) and driven end to end by the real manager (tests/test_workload_plugin.py).

Also ``python -m tests.shell_workload``: the worker process itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import redis
from pydantic import Field

from pool.core.model import DomainSpec, Reading, SpecBlock, WorkloadSpec
from pool.workloads.base import DomainService, NodeSide
from pool.workloads.images import AGENT_PREAMBLE, DeployableType

SHELL_WORKER = DeployableType(
    name="shell-worker",
    required=("workload", "python", "redis_url", "namespace", "domain", "node_id", "launch_id",
              "heartbeat_interval", "shell_list", "shell_redis"),
    template="""#!/bin/bash
# contextualization: shell-worker (a test workload)
""" + AGENT_PREAMBLE + """export SHELL_LIST=${shell_list}
export SHELL_REDIS=${shell_redis}
exec ${python} -m pool.node.agent
""",
)
STATUS = "shell-status.json"


class ShellSpec(WorkloadSpec):
    """The `shell:` block of a shell-worker domain (a spec block the workload owns)."""

    list: str = Field("jobs", min_length=1, max_length=100, pattern=r"^[a-z][a-z0-9:_-]*$")


def shell_list(spec: DomainSpec) -> str:
    return spec.block.list if isinstance(spec.block, ShellSpec) else "jobs"


class Shell:
    """Workers that run shell commands popped from the Redis list named in the spec's `shell:` block."""

    name = "shell"
    deployable_type = SHELL_WORKER
    spec_block = SpecBlock(key="shell", model=ShellSpec, reserved=SHELL_WORKER.placeholders)

    def attributes(self, spec: DomainSpec) -> dict[str, str]:
        return {"shell_list": shell_list(spec), "shell_redis": spec.broker or ""}

    def check(self, spec: DomainSpec) -> None:
        return None

    def sensor_defaults(self, spec: DomainSpec, *, broker: str) -> dict[str, Any]:
        if spec.sensor.name != "shell_list":
            return {}
        return {"url": broker, "key": shell_list(spec)}

    def services(self) -> list[DomainService]:
        return []

    def node(self, env: Mapping[str, str]) -> NodeSide:
        status = Path.cwd() / STATUS

        def probe() -> Mapping[str, object]:
            try:
                data = json.loads(status.read_text())
            except (OSError, ValueError):
                return {}
            return {"ready": True, "active": int(data["active"]), "idle_since": data.get("idle_since") or ""}

        return NodeSide(command=[sys.executable, "-m", "tests.shell_workload"], probe=probe)

    def cli(self) -> Any:
        return None


@dataclass
class ListLength:
    """Commands waiting in the list plus commands running (the ``shell_list`` sensor)."""

    url: str
    key: str = "jobs"
    name: str = "shell_list"

    def read(self, now: float) -> Reading:
        try:
            client = redis.Redis.from_url(self.url, socket_timeout=1)
            waiting, running = client.llen(self.key), client.scard(f"{self.key}:running")
            client.close()
        except redis.RedisError as exc:
            return Reading(self.name, None, now, error=str(exc))
        return Reading(self.name, float(waiting + running), now)

    def close(self) -> None:
        pass


def main() -> None:
    """Pop a command, run it, count it done; finish the running command on SIGTERM, then exit."""
    client = redis.Redis.from_url(os.environ["SHELL_REDIS"], decode_responses=True)
    key, node = os.environ["SHELL_LIST"], os.environ["POOL_NODE_ID"]
    stopping = False

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    status = Path(STATUS)
    status.write_text(json.dumps({"active": 0, "idle_since": time.time()}))
    while not stopping:
        popped = client.brpop([key], timeout=1)
        if popped is None:
            continue
        command = popped[1]
        client.sadd(f"{key}:running", command)
        status.write_text(json.dumps({"active": 1}))
        subprocess.run(["bash", "-c", command], check=False)
        client.rpush(f"{key}:done", f"{node} {command}")
        client.srem(f"{key}:running", command)
        status.write_text(json.dumps({"active": 0, "idle_since": time.time()}))


if __name__ == "__main__":
    main()
