"""The agent on every worker: heartbeats to the store and supervises the workload process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from types import FrameType

from pool.state.store import Store
from pool.workloads.base import from_import_path, load_workload


class Agent:
    """Starts the workload, heartbeats every interval, warm-shuts the workload down on SIGTERM.

    Heartbeat fields: ``time``, ``workload_alive`` and ``draining`` (written here), ``ready``,
    ``active`` and ``idle_since`` (written by the workload's task signals, or returned by
    ``probe`` every interval for a workload that is watched from outside, like a Spark worker).
    ``drain`` replaces the plain SIGTERM of a warm shutdown when the workload has its own.
    """

    def __init__(self, *, store: Store, domain: str, node_id: str, command: list[str],
                 interval: float, env: dict[str, str] | None = None,
                 probe: Callable[[], Mapping[str, object]] | None = None,
                 drain: Callable[[subprocess.Popen[bytes], Callable[..., None]], None] | None = None,
                 ) -> None:
        self.store = store
        self.domain = domain
        self.node_id = node_id
        self.command = command
        self.interval = interval
        self.env = env
        self.probe = probe
        self.drain = drain
        self.stopping = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self.draining = False

    def _beat(self, **fields: object) -> None:
        try:
            self.store.beat(self.domain, self.node_id, time=repr(time.time()), **fields)
        except Exception as exc:  # the store may be restarting: keep the workload running
            print(f"agent {self.node_id}: heartbeat failed: {exc}", file=sys.stderr, flush=True)

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        self.draining = True
        self.stopping.set()

    def _on_notice(self, signum: int, frame: FrameType | None) -> None:
        self._beat(preempt_notice=repr(time.time()))

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGUSR1, self._on_notice)
        self._beat(workload_alive=True, agent_pid=os.getpid(), ready=False, active=0)
        self.proc = subprocess.Popen(self.command, env=self.env)
        code = 0
        while True:
            if self.stopping.wait(self.interval):
                break
            alive = self.proc.poll() is None
            self._beat(workload_alive=alive, **(self._probe() if alive else {}))
            if not alive:
                code = self.proc.returncode or 1
                print(f"agent {self.node_id}: workload exited with {self.proc.returncode}",
                      file=sys.stderr, flush=True)
        # warm shutdown: the workload finishes what it runs, unacked work returns to the queue
        self._beat(draining=True, workload_alive=self.proc.poll() is None)
        if self.drain is not None:
            self.drain(self.proc, self._beat)
        elif self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        while self.proc.poll() is None:
            try:
                self.proc.wait(timeout=self.interval)
            except subprocess.TimeoutExpired:
                self._beat(draining=True)
        self._beat(workload_alive=False, draining=True)
        return code

    def _probe(self) -> Mapping[str, object]:
        if self.probe is None:
            return {}
        try:
            return self.probe()
        except Exception as exc:  # noqa: BLE001  (a failed probe reports nothing new this beat)
            print(f"agent {self.node_id}: probe failed: {exc}", file=sys.stderr, flush=True)
            return {}


def main() -> None:
    env = os.environ
    store = Store.from_url(env["POOL_REDIS_URL"], namespace=env.get("POOL_NAMESPACE", "ep"))
    domain, node_id = env["POOL_DOMAIN"], env["POOL_NODE_ID"]
    interval = float(env.get("POOL_HEARTBEAT_INTERVAL", "2"))
    name = env.get("POOL_WORKLOAD") or "celery"  # machines launched by an earlier version name no workload
    workload = from_import_path(name) if ":" in name else load_workload(name)
    side = workload.node(env)
    agent = Agent(store=store, domain=domain, node_id=node_id, command=side.command, interval=interval,
                  env=side.env, probe=side.probe, drain=side.drain)
    try:
        sys.exit(agent.run())
    finally:
        if side.cleanup is not None:
            side.cleanup()

if __name__ == "__main__":
    main()
