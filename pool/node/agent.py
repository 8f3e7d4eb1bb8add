"""The agent on every worker: heartbeats to the store and supervises the workload process.

Scale-in is a handshake through the store, never a signal: when its node record says DRAINING (and
the drain was sent), the agent stops the workload taking work (Celery's warm shutdown, Spark's
decommission), waits for what it holds, and reports ``drained``; the manager ends the machine only
then, or at the drain deadline. A workload that dies before it joined is reported with the last
lines it wrote (a boot failure the manager backs off from).

Imports ``pool.core``, ``pool.state`` and ``pool.workloads``.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from types import FrameType
from typing import IO

from pool.core.model import NodeState, clean_text
from pool.state.store import Store
from pool.workloads.base import check_endpoint, from_import_path, load_workload

#: Lines of the workload's output the agent keeps for a boot failure's report.
LAST_LINES = 20


class Agent:
    """Starts the workload, heartbeats every interval, drains it when the store asks (or on SIGTERM).

    Heartbeat fields: ``time``, ``workload_alive``, ``draining`` and ``drained`` (written here),
    ``ready``, ``active`` and ``idle_since`` (written by the workload's task signals, or returned by
    ``probe`` every interval for a workload that is watched from outside, like a Spark worker).
    ``drain`` replaces the plain SIGTERM of a warm shutdown when the workload has its own. ``endpoint``
    (a workload that serves requests) gives the worker's address, beaten as ``endpoint`` while the workload
    runs and cleared when it drains, so that no client is sent to a worker on its way out.
    """

    def __init__(self, *, store: Store, domain: str, node_id: str, command: list[str],
                 interval: float, env: dict[str, str] | None = None,
                 probe: Callable[[], Mapping[str, object]] | None = None,
                 drain: Callable[[subprocess.Popen[bytes], Callable[..., None]], None] | None = None,
                 endpoint: Callable[[], str | None] | None = None,
                 ) -> None:
        self.store = store
        self.domain = domain
        self.node_id = node_id
        self.command = command
        self.interval = interval
        self.env = env
        self.probe = probe
        self.drain = drain
        self.endpoint = endpoint
        self.endpoint_error: str | None = None
        self.stopping = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self.draining = False
        self.asked = False  # the drain was asked through the store (not by a signal)
        self.last_lines: collections.deque[str] = collections.deque(maxlen=LAST_LINES)
        self.output = threading.Thread()  # copies the workload's output (started with it)

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
        self._beat(workload_alive=True, agent_pid=os.getpid(), ready=False, active=0, drained=False)
        self.proc = self._start()
        code = self._serve()
        self._drain()
        self._beat(workload_alive=False, draining=True, drained=True, active=0)
        while self.asked and not self.stopping.wait(self.interval):  # the manager ends the machine
            self._beat()
        return code

    def _start(self) -> subprocess.Popen[bytes]:
        """The workload, its output copied to the console and its last lines kept."""
        proc = subprocess.Popen(self.command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        self.output = threading.Thread(target=self._copy, args=(proc.stdout,), daemon=True, name="workload-output")
        self.output.start()
        return proc

    def _copy(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            sys.stdout.buffer.write(raw)
            sys.stdout.flush()
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.last_lines.append(line)

    def _serve(self) -> int:
        """Beat every interval until a signal or the store asks for a drain; the workload's exit code."""
        assert self.proc is not None
        code = 0
        reported = False
        while not self.stopping.wait(self.interval):
            alive = self.proc.poll() is None
            if not alive and not reported:  # said before the beat that makes the manager end the machine
                reported = True
                code = self.proc.returncode or 1
                self._report_exit(self.proc.returncode)
            self._beat(workload_alive=alive, **{**(self._probe() if alive else {}), **self._endpoint(alive)})
            if self._drain_requested():
                self.asked = True
                break
        return code

    def _drain(self) -> None:
        """Warm shutdown: the workload takes no more work and finishes what it holds; unacked work
        returns to the queue. Beats ``draining`` until the workload has exited."""
        assert self.proc is not None
        self._beat(draining=True, workload_alive=self.proc.poll() is None, **({"endpoint": ""} if self.endpoint else {}))
        if self.drain is not None:
            self.drain(self.proc, self._beat)
        elif self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        while self.proc.poll() is None:
            try:
                self.proc.wait(timeout=self.interval)
            except subprocess.TimeoutExpired:
                self._beat(draining=True)

    def _drain_requested(self) -> bool:
        """Whether the manager asked this node to drain: its record is DRAINING with the drain sent."""
        try:
            rec = self.store.node(self.domain, self.node_id)
        except Exception:  # noqa: BLE001  (the store may be restarting: asked again next beat)
            return False
        return rec is not None and rec.state is NodeState.DRAINING and rec.drain_sent

    def _report_exit(self, returncode: int | None) -> None:
        """The workload ended on its own: said on the console, and as an event with its last lines."""
        print(f"agent {self.node_id}: workload exited with {returncode}", file=sys.stderr, flush=True)
        self.output.join(2.0)  # its output ends with it: the last lines are all read
        lines = [clean_text(line, 300) for line in list(self.last_lines)[-LAST_LINES:]]
        try:
            self.store.record(self.domain, "workload_exit", time.time(), node=self.node_id, code=returncode,
                              last_lines=lines)
        except Exception as exc:  # noqa: BLE001
            print(f"agent {self.node_id}: cannot report the exit: {exc}", file=sys.stderr, flush=True)

    def _endpoint(self, alive: bool) -> dict[str, str]:
        """The ``endpoint`` heartbeat field: the workload's address while it runs (empty: none, or not valid)."""
        if self.endpoint is None:
            return {}
        try:
            address = self.endpoint() if alive else None
        except Exception as exc:  # noqa: BLE001  (no address this beat)
            print(f"agent {self.node_id}: endpoint failed: {exc}", file=sys.stderr, flush=True)
            address = None
        wrong = check_endpoint(address) if address is not None else None
        if wrong is not None and wrong != self.endpoint_error:  # said once, not every beat
            print(f"agent {self.node_id}: {wrong}", file=sys.stderr, flush=True)
        self.endpoint_error = wrong
        return {"endpoint": address if address is not None and wrong is None else ""}

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
                  env=side.env, probe=side.probe, drain=side.drain, endpoint=side.endpoint)
    try:
        sys.exit(agent.run())
    finally:
        if side.cleanup is not None:
            side.cleanup()

if __name__ == "__main__":
    main()
