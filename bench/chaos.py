"""Chaos suite: real managers, workers and broker under faults; every scenario ends with an audit."""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import redis

from bench.common import (
    DEMO_APP,
    ROOT,
    demo_tasks,
    enqueue,
    median,
    row,
    wait_until,
    write_result,
)
from pool.core.model import NodeState, parse_domain_spec
from pool.sites.local import LocalNodeDriver
from pool.state.leases import Leases
from pool.state.redisserver import RedisServer, broker_url_for, write_private
from pool.state.store import Store

LIVE = (NodeState.REQUESTED, NodeState.PENDING, NodeState.STARTED, NodeState.JOINED)


@dataclass
class Audit:
    scenario: str
    broker: str
    submitted: int
    completed: int
    lost: int
    duplicates: int
    double_launches: int
    records_lost: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.double_launches == 0 and self.records_lost == 0


class Cluster:
    """A private Redis, manager processes (`pool up`) and the local site, under one directory."""

    def __init__(self, *, broker_url: str | None = None, lease_ttl: float = 2.0, interval: float = 0.25) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="ep-chaos-"))
        self.redis_dir = self.home / "redis"
        self.server = RedisServer.start(self.redis_dir)
        self.url = self.server.url
        self.broker = broker_url or broker_url_for(self.url)
        # the demo app counts completions in Redis: the broker itself, or DEMO_RESULTS for AMQP
        self.results_url = self.broker if self.broker.startswith("redis") else broker_url_for(self.url, 2)
        self.results = redis.Redis.from_url(self.results_url, decode_responses=True)
        self.store = Store.from_url(self.url, namespace="ep")
        self.driver = LocalNodeDriver(ex_state_dir=str(self.home / "sites" / "local"))
        self.lease_ttl = lease_ttl
        self.interval = interval
        self.managers: list[subprocess.Popen[bytes]] = []
        self.env = dict(os.environ, REDIS_URL=self.url, POOL_HOME=str(self.home), C_FORCE_ROOT="1",
                        DEMO_RESULTS=self.results_url)
        # the operator lets the managers' workers see the demo app's settings
        write_private(self.home / "config.yaml", "worker_env: [\"DEMO_*\"]\n")

    # -- processes ---------------------------------------------------------------------
    def start_manager(self) -> subprocess.Popen[bytes]:
        log = open(self.home / f"manager{len(self.managers)}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "pool.cli", "up", "--interval", str(self.interval),
                                 "--lease-ttl", str(self.lease_ttl)], env=self.env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.managers.append(proc)
        return proc

    def leader(self) -> subprocess.Popen[bytes] | None:
        holder = Leases(self.store.r, namespace="ep", holder="-").holders()["decider"]["holder"]
        for proc in self.managers:
            if holder and holder.endswith(f"-{proc.pid}"):
                return proc
        return None

    def restart_redis(self, down_for: float = 1.0) -> float:
        """Stop the server by its pid (append-only file flushed) and start it again on the same port."""
        port = self.server.port
        started = time.monotonic()
        self.server.stop()
        time.sleep(down_for)
        self.server = RedisServer.start(self.redis_dir, port=port, password=self.server.password)
        return time.monotonic() - started

    def close(self) -> None:
        for proc in self.managers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGCONT)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        for node in self.driver.list_nodes():
            self.driver.ex_preempt(node)
        deadline = time.monotonic() + 10
        while self.driver.list_nodes() and time.monotonic() < deadline:
            time.sleep(0.1)
        # a manager killed between starting a machine and recording it leaves a process no listing knows
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.server.stop()
        shutil.rmtree(self.home, ignore_errors=True)  # (its logs are read before close)

    def processes(self) -> list[int]:
        """Every live process started for this cluster (its environment names the cluster's home)."""
        return [pid for pid, _, _ in self._ours()]

    def _ours(self) -> Iterator[tuple[int, bytes, dict[bytes, bytes]]]:
        """(pid, command line, environment) of each live process whose POOL_HOME is this cluster's, from /proc."""
        home = str(self.home).encode()
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as fh:
                    env = dict(e.split(b"=", 1) for e in fh.read().split(b"\0") if b"=" in e)
                if env.get(b"POOL_HOME") != home:
                    continue
                with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                    cmdline = fh.read()
            except OSError:
                continue
            yield int(entry.name), cmdline, env

    # -- workload ----------------------------------------------------------------------
    def apply(self, name: str, **kw: Any) -> None:
        spec: dict[str, Any] = {
            "name": name, "min": 0, "max": kw.pop("max_size", 6), "broker": self.broker,
            "policy": kw.pop("policy", {"name": "queue_depth", "tasks_per_worker": 2}),
            "scaling": {"stabilization": 3},
            "celery": {"app": "tasks", "path": str(DEMO_APP), "queue": name, "visibility_timeout": 8},
            "timeouts": {"heartbeat_interval": 0.5, "heartbeat_timeout": 3, "boot": 90, "drain": 60},
        }
        spec.update(kw)
        self.store.put_domain(parse_domain_spec(spec))

    def submit(self, queue: str, ids: range, seconds: float) -> None:
        tasks = demo_tasks(self.broker)
        enqueue(tasks, self.broker, queue, [(i, seconds) for i in ids])

    def live(self, domain: str) -> list[Any]:
        return [n for n in self.store.nodes(domain) if n.state in LIVE]

    def busy_nodes(self, domain: str) -> list[str]:
        joined = [n.node_id for n in self.store.nodes(domain) if n.state == NodeState.JOINED]
        return [k for k, hb in self.store.heartbeats(domain, joined).items() if hb.active > 0]

    def done(self) -> int:
        return int(self.results.hlen("demo:done"))

    def agent_processes(self) -> collections.Counter[str]:
        """Live agents of this cluster per launch id, read from /proc (what really runs)."""
        return collections.Counter(env[b"POOL_LAUNCH_ID"].decode() for _, cmdline, env in self._ours()
                                   if b"pool.node.agent" in cmdline and b"POOL_LAUNCH_ID" in env)

    def audit(self, scenario: str, domain: str, ids: range, broker: str, **extra: Any) -> Audit:
        counts = {int(k): int(v) for k, v in self.results.hgetall("demo:done").items()}
        completed = len(set(counts) & set(ids))
        machines = self.driver.list_nodes(ex_include_gone=True)
        per_launch = collections.Counter(n.extra.get("client_token") for n in machines if n.extra.get("client_token"))
        running = self.agent_processes()  # a second machine for a launch id would show here too
        for launch, count in running.items():
            per_launch[launch] = max(per_launch[launch], count)
        known = {n.node_id for n in self.store.nodes(domain)}
        ours = [n for n in machines if (n.extra.get("tags") or {}).get("elastic-pool/domain") == domain]
        return Audit(scenario=scenario, broker=broker, submitted=len(ids), completed=completed,
                     lost=len(ids) - completed, duplicates=sum(counts.values()) - completed,
                     double_launches=sum(c - 1 for c in per_launch.values() if c > 1),
                     records_lost=sum(1 for n in ours if n.id not in known), extra=extra)


def wait_done(c: Cluster, n: int, timeout: float) -> None:
    """Wait for ``n`` completions; a task that never completes is reported by the audit as lost."""
    try:
        wait_until(lambda: c.done() >= n, timeout, f"{n} tasks to complete", poll=0.2)
    except TimeoutError as exc:
        print(f"chaos: {exc}; auditing what completed", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# scenarios
# ---------------------------------------------------------------------------


def kill_busy_workers(*, tasks: int = 2000, seconds: float = 0.05, fraction: float = 0.3, max_size: int = 6,
                      broker_url: str | None = None, broker: str = "redis", seed: int = 1,
                      sensor: dict[str, Any] | None = None) -> Audit:
    """SIGKILL a fraction of the busy workers at random while a backlog drains."""
    rng = random.Random(seed)
    c = Cluster(broker_url=broker_url)
    try:
        c.start_manager()
        extra = {"sensor": sensor} if sensor else {}
        c.apply("drain", max_size=max_size, policy={"name": "queue_depth", "tasks_per_worker": 20}, **extra)
        ids = range(tasks)
        c.submit("drain", ids, seconds)
        killed: set[str] = set()
        seen_busy: set[str] = set()
        deadline = time.monotonic() + 600
        while c.done() < tasks and time.monotonic() < deadline:
            busy = c.busy_nodes("drain")
            seen_busy.update(busy)
            fresh = [b for b in busy if b not in killed]
            want = max(1, round(fraction * len(seen_busy))) - len(killed)
            if fresh and want > 0 and c.done() < tasks * 0.8:
                victim = rng.choice(fresh)
                for node in c.driver.list_nodes():
                    if node.id == victim:
                        c.driver.ex_preempt(node)
                        killed.add(victim)
            time.sleep(0.3)
        wait_done(c, tasks, 120)
        return c.audit("kill 30% of busy workers", "drain", ids, broker, killed=len(killed), busy_seen=len(seen_busy))
    finally:
        c.close()


def kill_busy_workers_rabbitmq(**kw: Any) -> Audit:
    """The same on a private RabbitMQ node (own name, ports, epmd), started and stopped here."""
    from tests.rabbitmq import RabbitNode, ensure_installed

    why = ensure_installed()
    if why:
        raise RuntimeError(f"RabbitMQ unavailable: {why}")
    node = RabbitNode.start(Path(tempfile.mkdtemp(prefix="ep-chaos-rabbit-")))
    try:
        return kill_busy_workers(broker_url=node.amqp_url, broker="rabbitmq",
                                 sensor={"name": "celery", "management_url": node.management_url}, **kw)
    finally:
        node.stop()


def kill_decider(*, size: int = 20) -> Audit:
    """SIGKILL the manager holding the decider role during a scale-up from 0 to ``size``; 2 managers."""
    c = Cluster(lease_ttl=2.0)
    try:
        c.start_manager()
        c.start_manager()
        c.apply("up", max_size=size, policy={"name": "queue_depth", "tasks_per_worker": 1})
        wait_until(lambda: c.leader() is not None, 30, "a decider")
        ids = range(size * 4)
        c.submit("up", ids, 2.0)
        wait_until(lambda: len(c.live("up")) >= size // 4, 60, "the scale-up to start", poll=0.05)
        leader = c.leader()
        assert leader is not None
        killed_at = time.monotonic()
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait(10)
        wait_until(lambda: c.leader() is not None and c.leader() is not leader, 30, "a new decider", poll=0.05)
        failover = time.monotonic() - killed_at
        wait_done(c, len(ids), 300)
        peak = max((e["target"] for e in c.store.events("up", 2000, kind="decision")), default=0)
        return c.audit("SIGKILL the decider's manager during 0 -> 20", "up", ids, "redis", failover_s=failover,
                       peak_target=peak)
    finally:
        c.close()


def pause_decider(*, tasks: int = 60) -> Audit:
    """SIGSTOP the decider's manager past its lease, let another take over, SIGCONT it: no late writes."""
    c = Cluster(lease_ttl=2.0)
    try:
        c.start_manager()
        c.start_manager()
        c.apply("pause", max_size=4)
        wait_until(lambda: c.leader() is not None, 30, "a decider")
        old = c.leader()
        assert old is not None
        token_before = Leases(c.store.r, namespace="ep", holder="-").holders()["decider"]["token"]
        ids = range(tasks)
        c.submit("pause", ids, 0.3)
        wait_until(lambda: len(c.live("pause")) >= 1, 60, "workers", poll=0.05)
        os.killpg(old.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        wait_until(lambda: c.leader() not in (None, old), 30, "another manager to take over", poll=0.05)
        failover = time.monotonic() - stopped_at
        time.sleep(1.0)
        os.killpg(old.pid, signal.SIGCONT)
        wait_done(c, tasks, 300)
        time.sleep(2 * c.interval + 1)
        holders = Leases(c.store.r, namespace="ep", holder="-").holders()["decider"]
        log = (c.home / f"manager{c.managers.index(old)}.log").read_text()
        return c.audit("SIGSTOP the decider past its lease, then SIGCONT", "pause", ids, "redis",
                       failover_s=failover, token_before=token_before, token_after=holders["token"],
                       old_still_leader=c.leader() is old, old_refused="lost the decider role" in log or None)
    finally:
        c.close()


def restart_redis(*, tasks: int = 400, seconds: float = 0.1) -> Audit:
    """Restart the Redis server (control plane and broker) mid-drain."""
    c = Cluster()
    try:
        c.start_manager()
        c.apply("restart", max_size=4, policy={"name": "queue_depth", "tasks_per_worker": 10})
        ids = range(tasks)
        c.submit("restart", ids, seconds)
        wait_until(lambda: c.done() >= tasks // 4, 120, "a quarter of the tasks", poll=0.1)
        nodes_before = {n.node_id for n in c.store.nodes("restart")}
        outage = c.restart_redis(down_for=1.0)
        wait_done(c, tasks, 300)
        nodes_after = {n.node_id for n in c.store.nodes("restart")}
        return c.audit("restart Redis mid-drain", "restart", ids, "redis", outage_s=outage,
                       node_records_kept=nodes_before <= nodes_after)
    finally:
        c.close()


def cut_heartbeats() -> Audit:
    """Pause one node's agent: it is replaced; when it resumes it is terminated."""
    c = Cluster()
    try:
        c.start_manager()
        c.apply("hb", min=1, max_size=2, policy={"name": "fixed", "size": 1})
        wait_until(lambda: any(n.state == NodeState.JOINED for n in c.store.nodes("hb")), 60, "a joined worker")
        first = next(n for n in c.store.nodes("hb") if n.state == NodeState.JOINED)
        machine = next(n for n in c.driver.list_nodes() if n.id == first.node_id)
        paused_at = time.monotonic()
        os.kill(machine.extra["pid"], signal.SIGSTOP)  # the agent freezes; its worker may still run
        wait_until(lambda: any(n.node_id != first.node_id and n.state in LIVE for n in c.store.nodes("hb")), 30,
                   "a replacement request", poll=0.05)
        ttr_request = time.monotonic() - paused_at
        wait_until(lambda: any(n.node_id != first.node_id and n.state == NodeState.JOINED
                               for n in c.store.nodes("hb")), 60, "the replacement to join", poll=0.05)
        ttr_joined = time.monotonic() - paused_at
        try:  # the doctor kills an unhealthy node at once; if it still exists, it resumes now
            os.kill(machine.extra["pid"], signal.SIGCONT)
            resumed = True
        except ProcessLookupError:
            resumed = False
        wait_until(lambda: first.node_id not in {n.id for n in c.driver.list_nodes()}, 30,
                   "the paused node to be terminated")
        ids = range(10)
        c.submit("hb", ids, 0.05)
        wait_done(c, len(ids), 60)
        return c.audit("heartbeats cut for one node", "hb", ids, "redis", ttr_request_s=ttr_request,
                       ttr_joined_s=ttr_joined, heartbeat_timeout_s=3.0,
                       terminated_before_resuming=not resumed)
    finally:
        c.close()


SCENARIOS: dict[str, Callable[..., Audit]] = {
    "kill-busy": kill_busy_workers,
    "kill-busy-rabbitmq": kill_busy_workers_rabbitmq,
    "kill-decider": kill_decider,
    "pause-decider": pause_decider,
    "restart-redis": restart_redis,
    "cut-heartbeats": cut_heartbeats,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--repeat-kills", type=int, default=1, metavar="N",
                        help="run the kill-busy scenarios N times (seeds 1..N)")
    args = parser.parse_args()
    audits: list[Audit] = []
    for name, fn in SCENARIOS.items():
        if args.only and name not in args.only:
            continue
        for seed in range(1, (args.repeat_kills if name.startswith("kill-busy") else 1) + 1):
            if name.startswith("kill-busy"):
                audit = fn(seed=seed)
                audit.extra["seed"] = seed
            else:
                audit = fn()
            print(json.dumps(asdict(audit)), flush=True)
            audits.append(audit)
    failovers = [a.extra["failover_s"] for a in audits if "failover_s" in a.extra]
    ttrs = [a.extra["ttr_request_s"] for a in audits if "ttr_request_s" in a.extra]
    result: dict[str, Any] = {
        "scenarios": [{k: v for k, v in asdict(a).items()} for a in audits],
        "failover_s": median(failovers) if failovers else None,
        "ttr_s": median(ttrs) if ttrs else None,
        "lease_ttl_s": 2.0,
        "heartbeat_timeout_s": 3.0,
    }
    table = [row(f"{a.scenario} ({a.broker}{', seed ' + str(a.extra['seed']) if 'seed' in a.extra else ''}): "
                 "lost / duplicates / double launches",
                 a.lost, "lost 0, double launches 0", a.ok,
                 f"submitted {a.submitted}, completed {a.completed}, duplicates {a.duplicates}, "
                 f"double launches {a.double_launches}, records lost {a.records_lost}") for a in audits]
    if failovers:
        table.append(row("failover: decider lost -> new decider (median)", round(median(failovers), 2),
                         "<= lease TTL + 1 s = 3 s", median(failovers) <= 3.0))
    if ttrs:
        table.append(row("time to repair: heartbeats stop -> replacement requested", round(median(ttrs), 2),
                         "<= heartbeat timeout + 1 s = 4 s", median(ttrs) <= 4.0))
    print(write_result("chaos", result, table))


if __name__ == "__main__":
    main()
