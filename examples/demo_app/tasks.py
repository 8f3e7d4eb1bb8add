"""A small Celery app for the demo and the tests: it imports nothing from elastic-pool."""

import os
import time

import redis
from celery import Celery

app = Celery("demo", broker=os.environ.get("DEMO_BROKER", "redis://127.0.0.1:6379/1"))
app.conf.task_default_queue = os.environ.get("DEMO_QUEUE", "celery")

_clients: dict = {}


def _redis() -> redis.Redis:
    """Where completions are counted: ``DEMO_RESULTS`` (a Redis URL) if set, else the broker
    (which must then be Redis; set ``DEMO_RESULTS`` when the broker is RabbitMQ)."""
    pid = os.getpid()
    if pid not in _clients:
        _clients.clear()
        _clients[pid] = redis.Redis.from_url(os.environ.get("DEMO_RESULTS") or app.conf.broker_url)
    return _clients[pid]


@app.task(name="demo.work")
def work(i: int, seconds: float = 0.3) -> int:
    """Sleep like a small I/O-bound job, then count the completion (duplicates show as counts > 1)."""
    r = _redis()
    r.hset("demo:started", i, time.time())
    time.sleep(seconds)
    r.hincrby("demo:done", i, 1)
    r.hset("demo:finished", i, time.time())
    return i


@app.task(name="demo.noop")
def noop(i: int) -> int:
    return i
