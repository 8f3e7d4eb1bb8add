"""`pool watch` as a user runs it (the real CLI in a subprocess) on a real Redis with a real manager
ticking; and `pool ls`/`pool show -o json` saying intended, actual and pause alike.

Also the harness the dashboard's tests share: :func:`sim_pool`, a manager ticking on the simulated
site (no worker processes) with the machines' agents played by a thread that heartbeats them.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest
import redis

from pool.control.manager import Manager
from pool.core.model import NodeState, parse_domain_spec
from pool.sites.provisioner import Provisioner
from pool.sites.sim import SimNodeDriver
from pool.state.redisserver import broker_url_for
from pool.state.store import Store
from tests.conftest import wait

ROOT = Path(__file__).resolve().parent.parent
POOL = [sys.executable, "-m", "pool.cli"]
S = NodeState


def sim_spec(name: str, *, queue: str, max_size: int = 6) -> dict:
    """A Celery domain on the simulated site, sized by the depth of ``queue`` on the test broker."""
    return {"name": name, "site": "sim", "deployable_type": "celery-worker", "min": 0, "max": max_size,
            "policy": {"name": "queue_depth", "tasks_per_worker": 5}, "scaling": {"stabilization": 2},
            "celery": {"app": "tasks", "queue": queue},
            "timeouts": {"heartbeat_interval": 0.5, "heartbeat_timeout": 5, "boot": 60, "drain": 10,
                         "terminate_grace": 1}}


class SimPool:
    """A manager ticking on the simulated site; its machines' agents beat from a thread of their own."""

    def __init__(self, store: Store, redis_url: str) -> None:
        self.store = store
        self.fake: float | None = None  # while the past is lived again (:meth:`replay`): the time then
        self.driver = SimNodeDriver(ex_clock=self.now, ex_profile="local")
        self.manager = Manager(store=store, provisioner=Provisioner({"sim": self.driver}), redis_url=redis_url,
                               clock=self.now)
        self.broker = redis.Redis.from_url(broker_url_for(redis_url))
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.manager.run, kwargs={"interval": 0.2, "stop": self.stop},
                                         daemon=True),
                        threading.Thread(target=self._agents, daemon=True)]

    def now(self) -> float:
        return time.time() if self.fake is None else self.fake

    def _agents(self) -> None:
        while not self.stop.wait(0.25):
            self.beat(time.time())

    def beat(self, now: float) -> None:
        """What each machine's agent would say: joined a second after its launch; drained when asked."""
        for spec in self.store.domains():
            for n in self.store.nodes(spec.name):
                if n.state in (S.PENDING, S.STARTED, S.JOINED) and now - n.created > 1.0:
                    self.store.beat(spec.name, n.node_id, time=now, ready=True)
                elif n.state == S.DRAINING:
                    self.store.beat(spec.name, n.node_id, time=now, draining=True, drained=True)

    def replay(self, queue: str, depth: Callable[[float], int], *, span: float = 3600.0, step: float = 20.0) -> None:
        """Live the last ``span`` seconds again, fast, before the threads start: every ``step`` the queue
        holds ``depth(seconds since the start)`` messages, the manager ticks and the agents beat, on a
        clock that runs ahead (the events and the readings history get the times of then)."""
        start = time.time() - span
        self.fake = start
        try:
            while self.fake < time.time() - step:
                self.queue(queue, depth(self.fake - start))
                self.beat(self.fake)  # the agents beat between ticks, as often as their interval says
                self.manager.tick(self.fake)
                self.beat(self.fake)
                self.fake += step
        finally:
            self.fake = None
            self.beat(time.time())  # the agents carry on in real time

    def queue(self, name: str, depth: int) -> None:
        """Make the broker's queue ``name`` hold ``depth`` messages (what the Celery sensor reads)."""
        self.broker.delete(name)
        if depth:
            self.broker.lpush(name, *[json.dumps({"n": i}) for i in range(depth)])

    def live(self, domain: str) -> int:
        return sum(n.state in (S.REQUESTED, S.PENDING, S.STARTED, S.JOINED) for n in self.store.nodes(domain))


@contextlib.contextmanager
def sim_pool(store: Store, redis_url: str, *, before: Callable[[SimPool], None] | None = None) -> Iterator[SimPool]:
    """A :class:`SimPool` ticking (``before`` runs first, on the pool that does not tick yet)."""
    pool = SimPool(store, redis_url)
    try:
        if before is not None:
            before(pool)
        for t in pool.threads:
            t.start()
        yield pool
    finally:
        pool.stop.set()
        pool.manager.wake.set()
        for t in pool.threads:
            if t.ident is not None:
                t.join(10)
        pool.manager.close()
        pool.broker.close()


@pytest.fixture
def pool(store: Store, redis_url: str) -> Iterator[SimPool]:
    with sim_pool(store, redis_url) as p:
        yield p


def run(args: list[str], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(POOL + args, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"pool {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


@pytest.fixture
def env(store: Store, redis_url: str, pool_home: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "POOL_NAMESPACE")}
    e.update(REDIS_URL=redis_url, POOL_NAMESPACE=store.ns, POOL_HOME=str(pool_home), COLUMNS="160",
             NO_COLOR="1")
    return e


def test_watch_shows_every_domain_live_and_says_who_paused(pool: SimPool, env: dict[str, str]) -> None:
    q = f"q-{uuid.uuid4().hex[:6]}"
    pool.store.put_domain(parse_domain_spec(sim_spec("web", queue=q)))
    pool.store.put_domain(parse_domain_spec(sim_spec("batch", queue=q + "b")))
    pool.queue(q, 7)  # 7 tasks at 5 per worker: 2 workers
    wait(lambda: pool.store.get_state("web").intended == 2 and pool.live("web") == 2, 20, "web at 2 workers")
    pool.store.set_paused("batch", "alice", time.time())
    out = run(["watch", "--once"], env).stdout
    rows = {line.split()[0]: line for line in out.splitlines() if line.split()[:1] in (["web"], ["batch"])}
    assert set(rows) == {"web", "batch"}, out
    assert "2 / 2" in rows["web"] and "queue_depth" in rows["web"] and "7" in rows["web"], rows["web"]
    assert "paused by alice" in rows["batch"] and "0 / 0" in rows["batch"], rows["batch"]
    assert "decision log" in out and "queue_depth" in out  # the newest decisions of every domain, with reasons
    assert out.count("pool watch ") == 1  # one frame, then it exited


def test_watch_name_plots_the_last_hour_nodes_and_escaped_reasons(pool: SimPool, env: dict[str, str]) -> None:
    q = f"q-{uuid.uuid4().hex[:6]}"
    pool.store.put_domain(parse_domain_spec(sim_spec("web", queue=q)))
    pool.queue(q, 12)  # 3 workers
    wait(lambda: sum(n.state == S.JOINED for n in pool.store.nodes("web")) == 3, 20, "3 joined workers")
    # untrusted text in the event log: shown as text, never as markup or terminal escapes
    pool.store.record("web", "note", time.time(), said="[bold red]boom[/] \x1b[2J\x1b]0;owned\x07 redis://:hunter2@h/0")
    proc = run(["watch", "web", "--count", "2", "--interval", "0.3"], env)
    out = proc.stdout
    assert out.count("pool watch ") == 2, out  # two frames, then it exited
    frame = out.split("pool watch ")[-1]
    assert "last hour" in frame
    spark = {line.split()[0]: line for line in frame.splitlines() if line.split()[:1] in (["reading"], ["actual"])}
    assert spark["reading"].rstrip().endswith("..12"), spark  # the sensor's values as the history kept them
    assert spark["actual"].rstrip().endswith("..3"), spark
    assert frame.count("│ JOINED │") == 3 and "joined 3" in frame, frame  # the nodes, by state
    assert "[bold red]boom[/]" in frame and "\x1b" not in out and "\x07" not in out  # literal, no escapes
    assert "hunter2" not in out
    assert "target 3" in frame  # a decision with its reason


def test_watch_unknown_domain_is_one_line(pool: SimPool, env: dict[str, str]) -> None:
    pool.store.put_domain(parse_domain_spec(sim_spec("web", queue="q-x")))
    proc = run(["watch", "nope", "--once"], env, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "no domain 'nope'; domains: web" in proc.stderr


def test_ls_and_show_json_agree_on_intended_actual_and_pause(pool: SimPool, env: dict[str, str]) -> None:
    q = f"q-{uuid.uuid4().hex[:6]}"
    pool.store.put_domain(parse_domain_spec(sim_spec("web", queue=q)))
    pool.queue(q, 6)  # 2 workers
    wait(lambda: pool.live("web") == 2, 20, "web at 2 workers")
    pool.store.set_paused("web", "bob", time.time())
    row = json.loads(run(["ls", "-o", "json"], env).stdout)[0]
    shown = json.loads(run(["show", "web", "-o", "json"], env).stdout)
    for doc in (row, shown):
        assert (doc["intended"], doc["actual"], doc["paused"], doc["paused_by"]) == (2, 2, True, "bob"), doc
        assert doc["override"] is None
    assert "paused" in run(["ls"], env).stdout
    pool.store.set_paused("web", None, time.time())
    assert json.loads(run(["ls", "--json"], env).stdout)[0]["paused"] is False
