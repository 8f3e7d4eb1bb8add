"""An example workload whose workers serve requests pushed to them: each worker runs a tiny HTTP
service and advertises its address, so push-style clients find it through the endpoint registry
(`GET /domains/{name}/endpoints`, ``pool.api.client.EndpointPool``).

Registered under the name ``echo`` (deployable type ``echo-service``) through the workload registry, as
any third party's workload is (an ``elastic_pool.workloads`` entry point, or the alias table in a test);
its workers import it as ``echo_service`` (this directory on their ``PYTHONPATH``).

A worker answers ``GET /`` with ``{"node": <its node id>, "served": <requests it served>}``. It binds a
free port on ``ECHO_BIND`` (default 127.0.0.1), writes the port to ``echo-port`` in its directory, and
advertises ``http://ECHO_BIND:PORT``. ``python -m echo_service`` is the worker's process itself.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Mapping

from pool.core.model import DomainSpec
from pool.workloads.base import DomainService, NodeSide
from pool.workloads.images import AGENT_PREAMBLE, DeployableType

ECHO_SERVICE = DeployableType(
    name="echo-service",
    required=("workload", "python", "redis_url", "namespace", "domain", "node_id", "launch_id",
              "heartbeat_interval"),
    template="""#!/bin/bash
# contextualization: echo-service (an example workload serving pushed requests)
""" + AGENT_PREAMBLE + """exec ${python} -m pool.node.agent
""",
)
#: the file in the worker's directory that holds the port it serves on
PORT_FILE = "echo-port"


class Echo:
    """Workers that each serve a tiny HTTP service and advertise its address as their endpoint."""

    name = "echo"
    deployable_type = ECHO_SERVICE
    spec_block = None

    def attributes(self, spec: DomainSpec) -> dict[str, str]:
        return {}

    def check(self, spec: DomainSpec) -> None:
        return None

    def sensor_defaults(self, spec: DomainSpec, *, broker: str) -> dict[str, Any]:
        """A service is sized by hand or by a fixed policy; a queue sensor, if named, reads the pool's broker."""
        return {"broker": broker} if spec.sensor.name == "celery" else {}

    def services(self) -> list[DomainService]:
        return []

    def node(self, env: Mapping[str, str]) -> NodeSide:
        port_file = Path.cwd() / PORT_FILE
        host = env.get("ECHO_BIND", "127.0.0.1")

        def endpoint() -> str | None:
            try:
                port = int(port_file.read_text())
            except (OSError, ValueError):
                return None  # not listening yet
            return f"http://{host}:{port}"

        def probe() -> Mapping[str, object]:
            return {"ready": port_file.exists()}

        return NodeSide(command=[sys.executable, "-m", "echo_service"], probe=probe, endpoint=endpoint)

    def cli(self) -> Any:
        return None


def main() -> None:
    """Serve until SIGTERM: requests in flight finish, then the process exits."""
    node = os.environ.get("POOL_NODE_ID", "?")
    served = 0
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802  (the name http.server calls)
            nonlocal served
            with lock:
                served += 1
                count = served
            body = json.dumps({"node": node, "served": count}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((os.environ.get("ECHO_BIND", "127.0.0.1"), 0), Handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: threading.Thread(target=server.shutdown).start())
    tmp = Path(PORT_FILE + ".tmp")
    tmp.write_text(str(server.server_address[1]))
    tmp.replace(PORT_FILE)
    print(f"echo {node}: serving on port {server.server_address[1]}", flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()


if __name__ == "__main__":
    main()
