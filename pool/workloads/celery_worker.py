"""Runs the user's Celery app as a durable worker and reports busy/idle to the pool's store.

The user's tasks import nothing from this project: this module loads their app by name, sets the
durable defaults (late acks, reject on worker loss, prefetch 1, a short Redis unacked-restore
sweep, and on Redis the atomic pop of ``pool.workloads.reliable_redis``) and reports running tasks to the
node's heartbeat hash from the worker's main process.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

import redis
from celery import signals
from celery.app.utils import find_app

from pool.core.keys import heartbeat_changes_key, heartbeat_key


class BusyReporter:
    """Samples the worker's running tasks (Celery's own ``active_requests``) in the main process.

    Writes ``active`` and ``idle_since`` to the node's heartbeat hash only when they change, so a
    task costs nothing extra however short it is. ``ready`` is written once the worker consumes.
    Each write also names the node in the domain's stream of heartbeat changes (in one
    transaction), so that managers read the hash again (see ``Store.heartbeats``).
    """

    #: entries kept in the stream of heartbeat changes (``pool.state.store.HEARTBEAT_CHANGES_LENGTH``)
    CHANGES_LENGTH = 20000

    def __init__(self, *, redis_url: str, namespace: str, domain: str, node_id: str, interval: float = 0.2) -> None:
        self.client = redis.Redis.from_url(redis_url, socket_timeout=5)
        self.key = heartbeat_key(namespace, domain, node_id)
        self.node_id = node_id
        self.changes = heartbeat_changes_key(namespace, domain)
        self.interval = interval
        self.stopped = threading.Event()

    def write(self, fields: dict[str | bytes, Any]) -> None:
        """Set ``fields`` in the heartbeat hash and tell the readers, in one transaction."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.key, mapping=fields)
        pipe.xadd(self.changes, {"n": self.node_id}, maxlen=self.CHANGES_LENGTH, approximate=True)
        pipe.execute()

    def start(self, **_: Any) -> None:
        from celery.worker import state

        def loop() -> None:
            last: int | None = None
            while not self.stopped.wait(self.interval):
                active = len(state.active_requests)
                if active == last:
                    continue
                fields: dict[str | bytes, Any] = {"active": active}
                if active == 0:
                    fields["idle_since"] = repr(time.time())
                elif not last:
                    fields["idle_since"] = ""
                try:
                    self.write(fields)
                    last = active
                except redis.RedisError:
                    pass  # the store may be restarting; try again next sample

        self.write({"ready": 1, "active": 0, "idle_since": repr(time.time())})
        threading.Thread(target=loop, name="busy-reporter", daemon=True).start()


def worker_pool(pool: str, concurrency: int, *, broker: str = "") -> str:
    """``auto``: for one task at a time no forked child (faster boot, less memory): the solo pool
    on Redis, the threads pool on AMQP. The solo pool runs the task inside kombu's event loop, so
    on AMQP it sends no heartbeats during a task, and the late ack it queues there may wait for
    the loop's next timer (seen: up to 10 s idle with messages ready, and a worker drained in that
    window never acked, so its last task ran twice)."""
    if pool == "auto":
        if concurrency > 1:
            return "prefork"
        return "threads" if broker.startswith(("amqp", "pyamqp")) else "solo"
    return pool


RELIABLE_REDIS = "pool.workloads.reliable_redis:Transport"


def durable_settings(*, broker: str, visibility_timeout: float, existing: dict[str, Any]) -> dict[str, Any]:
    """Settings that make a killed worker lose nothing (merged over the app's transport options)."""
    options = dict(existing or {})
    extra: dict[str, Any] = {}
    if broker.startswith("redis"):
        options.update(
            visibility_timeout=visibility_timeout,
            unacked_restore_interval=1,
            unacked_restore_throttle=1,
        )
    if broker.startswith(("redis://", "rediss://")):  # kombu picks the transport of redis+socket:// itself
        extra["broker_transport"] = RELIABLE_REDIS  # a killed worker cannot take a popped message with it
    return {
        **extra,
        "broker_url": broker,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": options,
        "broker_connection_retry_on_startup": True,
        "task_create_missing_queues": True,
    }


def main() -> None:
    env = os.environ
    if env.get("POOL_CELERY_PATH"):
        sys.path.insert(0, env["POOL_CELERY_PATH"])
    app = find_app(env["POOL_CELERY_APP"])
    broker = env["POOL_BROKER_URL"]
    app.conf.update(
        durable_settings(
            broker=broker,
            visibility_timeout=float(env.get("POOL_VISIBILITY_TIMEOUT", "30")),
            existing=app.conf.broker_transport_options,
        )
    )
    reporter = BusyReporter(
        redis_url=env["POOL_REDIS_URL"],
        namespace=env.get("POOL_NAMESPACE", "ep"), domain=env["POOL_DOMAIN"], node_id=env["POOL_NODE_ID"],
    )
    signals.worker_ready.connect(reporter.start, weak=False)
    app.worker_main(
        argv=[
            "worker",
            "-Q", env.get("POOL_QUEUE", "celery"),
            "-c", env.get("POOL_CONCURRENCY", "1"),
            "-P", worker_pool(env.get("POOL_CELERY_POOL", "auto"), int(env.get("POOL_CONCURRENCY", "1")),
                              broker=broker),
            "-n", f"{env['POOL_NODE_ID']}@%h",
            "-l", env.get("POOL_LOGLEVEL", "WARNING"),
            "-O", "fair",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


if __name__ == "__main__":
    main()
