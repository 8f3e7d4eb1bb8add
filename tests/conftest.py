"""Test harness: a private Redis server per session (own port, own directory), managers in threads."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest
import redis

from pool.control.manager import Manager
from pool.core.model import NodeState
from pool.sites.local import LocalNodeDriver
from pool.sites.provisioner import Provisioner
from pool.state.redisserver import RedisServer, broker_url_for
from pool.state.store import Store

ROOT = Path(__file__).resolve().parent.parent
DEMO_APP = ROOT / "examples" / "demo_app"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server started for this test session on 127.0.0.1 and a free port."""
    server = RedisServer.start(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server, emptied for this test (db 0: control plane, db 1: broker)."""
    for db in (0, 1):
        client = redis.Redis.from_url(broker_url_for(redis_server.url, db))
        client.flushdb()
        client.close()
    return redis_server.url


@pytest.fixture
def pool_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "pool-home"
    home.mkdir()
    monkeypatch.setenv("POOL_HOME", str(home))
    monkeypatch.delenv("REDIS_URL", raising=False)
    return home


@pytest.fixture
def store(redis_url: str) -> Store:
    return Store.from_url(redis_url, namespace=f"t{uuid.uuid4().hex[:6]}")


def wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class RunningManager:
    """A manager ticking in a background thread, with helpers to wait on the domain."""

    def __init__(self, manager: Manager, driver: LocalNodeDriver) -> None:
        self.manager = manager
        self.driver = driver
        self.stop = threading.Event()
        self.thread = threading.Thread(target=manager.run, kwargs={"interval": 0.25, "stop": self.stop}, daemon=True)

    @property
    def store(self) -> Store:
        return self.manager.store

    def live(self, domain: str, *states: NodeState) -> list:
        wanted = states or (NodeState.REQUESTED, NodeState.PENDING, NodeState.STARTED, NodeState.JOINED)
        return [n for n in self.store.nodes(domain) if n.state in wanted]

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        wait(predicate, timeout, what)

    def kill_all(self) -> None:
        for node in self.driver.list_nodes():
            self.driver.ex_preempt(node)


@contextlib.contextmanager
def run_manager(manager: Manager, driver: LocalNodeDriver) -> Iterator[RunningManager]:
    """``manager`` ticking in a background thread; stopped, and every machine of ``driver`` killed, after."""
    rm = RunningManager(manager, driver)
    rm.thread.start()
    try:
        yield rm
    finally:
        rm.stop.set()
        manager.wake.set()
        rm.thread.join(10)
        manager.close()
        rm.kill_all()
        deadline = time.monotonic() + 10
        while driver.list_nodes() and time.monotonic() < deadline:
            time.sleep(0.1)


@contextlib.contextmanager
def local_manager(store: Store, redis_url: str, pool_home: Path, *, worker_env: tuple[str, ...]
                  ) -> Iterator[RunningManager]:
    """A manager on the local site under ``pool_home``, whose workers inherit ``worker_env`` (patterns)."""
    driver = LocalNodeDriver(ex_state_dir=str(pool_home / "sites" / "local"), ex_worker_env=worker_env)
    with run_manager(Manager(store=store, provisioner=Provisioner({"local": driver}), redis_url=redis_url),
                     driver) as rm:
        yield rm


@pytest.fixture
def running_manager(store: Store, redis_url: str, pool_home: Path) -> Iterator[RunningManager]:
    with local_manager(store, redis_url, pool_home, worker_env=("DEMO_*",)) as rm:
        yield rm


@pytest.fixture
def demo_app_env(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the bundled demo Celery app at the test broker; returns the broker URL."""
    broker = broker_url_for(redis_url)
    monkeypatch.setenv("DEMO_BROKER", broker)
    return broker


def celery_spec(name: str = "work", *, queue: str | None = None, max_size: int = 4, **overrides: object) -> dict:
    """A celery-worker domain spec on the bundled demo app, tuned for fast tests."""
    spec: dict = {
        "name": name,
        "min": 0,
        "max": max_size,
        "policy": {"name": "queue_depth", "tasks_per_worker": 1},
        "scaling": {"stabilization": 2},
        "celery": {"app": "tasks", "path": str(DEMO_APP), "queue": queue or f"q-{name}",
                   "visibility_timeout": 5},
        "timeouts": {"heartbeat_interval": 0.5, "heartbeat_timeout": 3, "boot": 60, "drain": 60,
                     "terminate_grace": 5},
    }
    return with_overrides(spec, overrides, replace=("policy",))


def with_overrides(spec: dict, overrides: dict, *, replace: tuple[str, ...] = ()) -> dict:
    """``spec`` with ``overrides``: a mapping merges into the spec's mapping of the same key (one level),
    except under the keys in ``replace``; anything else replaces."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict) and key not in replace:
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


@contextlib.contextmanager
def demo_producer(broker: str) -> Iterator[object]:
    """The demo app's Celery instance bound to ``broker``, for sending tasks."""
    import sys

    sys.path.insert(0, str(DEMO_APP))
    try:
        import tasks  # type: ignore[import-not-found]

        tasks.app.conf.broker_url = broker
        yield tasks
    finally:
        sys.path.remove(str(DEMO_APP))


os.environ.setdefault("C_FORCE_ROOT", "1")


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A private RabbitMQ node for this session (own name, ports, epmd, cookie and directories).

    Installs Debian's rabbitmq-server first when it is missing (scripts/ensure-rabbitmq.sh);
    skips, saying why, only where that is impossible.
    """
    from tests.rabbitmq import RabbitNode, ensure_installed

    why = ensure_installed()
    if why:
        pytest.skip(why)
    node = RabbitNode.start(tmp_path_factory.mktemp("rabbitmq"))
    try:
        yield node
    finally:
        node.stop()
