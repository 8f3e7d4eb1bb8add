"""Runs the user's Celery app as a durable worker and reports busy/idle to the pool's store.

The user's tasks import nothing from this project: this module loads their app by name, sets the
durable defaults (late acks, reject on worker loss, prefetch 1, a short Redis unacked-restore
sweep) and connects Celery signals that count running tasks in the node's heartbeat hash.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import redis
from celery import signals
from celery.app.utils import find_app

_client: tuple[int, redis.Redis] | None = None


def _hb() -> tuple[redis.Redis, str]:
    """A Redis client for this process (one per forked pool child) and the heartbeat key."""
    global _client
    if _client is None or _client[0] != os.getpid():
        _client = (os.getpid(), redis.Redis.from_url(os.environ["POOL_REDIS_URL"], socket_timeout=5))
    key = f"{os.environ['POOL_NAMESPACE']}:d:{os.environ['POOL_DOMAIN']}:hb:{os.environ['POOL_NODE_ID']}"
    return _client[1], key


def _on_prerun(**_: Any) -> None:
    try:
        client, key = _hb()
        client.pipeline(transaction=False).hincrby(key, "active", 1).hset(key, "idle_since", "").execute()
    except redis.RedisError:
        pass  # reporting must never fail a task


def _on_postrun(**_: Any) -> None:
    try:
        client, key = _hb()
        left = client.hincrby(key, "active", -1)
        if int(left) <= 0:
            client.hset(key, mapping={"active": 0, "idle_since": repr(time.time())})
    except redis.RedisError:
        pass


def _on_ready(**_: Any) -> None:
    client, key = _hb()
    client.hset(key, mapping={"ready": 1, "idle_since": repr(time.time()), "active": 0})


def durable_settings(*, broker: str, visibility_timeout: float, existing: dict[str, Any]) -> dict[str, Any]:
    """Settings that make a killed worker lose nothing (merged over the app's transport options)."""
    options = dict(existing or {})
    if broker.startswith(("redis", "rediss")):
        options.update(
            visibility_timeout=visibility_timeout,
            unacked_restore_interval=1,
            unacked_restore_throttle=1,
        )
    return {
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
    signals.task_prerun.connect(_on_prerun, weak=False)
    signals.task_postrun.connect(_on_postrun, weak=False)
    signals.worker_ready.connect(_on_ready, weak=False)
    app.worker_main(
        argv=[
            "worker",
            "-Q", env.get("POOL_QUEUE", "celery"),
            "-c", env.get("POOL_CONCURRENCY", "1"),
            "-P", env.get("POOL_CELERY_POOL", "prefork"),
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
