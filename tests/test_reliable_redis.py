"""The reliable Redis transport: a consumer killed right after its pop loses nothing."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue

from pool.state.redisserver import broker_url_for
from pool.workloads.reliable_redis import Transport

OPTIONS = {"visibility_timeout": 1, "unacked_restore_interval": 1, "unacked_restore_throttle": 1}


def queue(name: str = "work") -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name, max_priority=9)


def publish(url: str, *bodies: dict[str, Any], priority: int | None = None) -> None:
    with Connection(url) as conn:  # producers use kombu's stock transport
        producer = Producer(conn.channel())
        for body in bodies:
            producer.publish(body, exchange=queue().exchange, routing_key="work", declare=[queue()],
                             priority=priority)


def pop_and_die(url: str, transport: Any) -> None:
    """Send the consumer's pop, let the server run it, then drop the socket unread: a SIGKILL."""
    conn = Connection(url, transport=transport, transport_options=OPTIONS)
    channel = conn.channel()
    Consumer(channel, [queue()], callbacks=[lambda body, message: None]).consume()
    conn.transport.cycle._register_BRPOP(channel)
    time.sleep(0.3)
    channel.client.connection.disconnect()


def consume(url: str, *, limit: int, timeout: float, no_ack: bool = False) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []

    def on_message(body: dict[str, Any], message: Any) -> None:
        got.append(body)
        if not no_ack:
            message.ack()

    with Connection(url, transport=Transport, transport_options=OPTIONS) as conn:
        with Consumer(conn.channel(), [queue()], callbacks=[on_message], no_ack=no_ack):
            deadline = time.monotonic() + timeout
            while len(got) < limit and time.monotonic() < deadline:
                try:
                    conn.drain_events(timeout=0.5)
                except TimeoutError:
                    pass
    return got


def held(url: str) -> tuple[int, int]:
    client = redis.Redis.from_url(url)
    try:
        return int(client.llen("work")), int(client.hlen("unacked"))
    finally:
        client.close()


@pytest.fixture
def broker(redis_url: str) -> str:
    return broker_url_for(redis_url)


def test_stock_transport_loses_a_message_popped_by_a_consumer_that_dies(broker: str) -> None:
    """The window this transport closes, shown on kombu's own Redis transport."""
    publish(broker, {"n": 1})
    pop_and_die(broker, "redis")
    assert held(broker) == (0, 0)
    assert consume(broker, limit=1, timeout=3) == []


def test_a_message_popped_by_a_consumer_that_dies_comes_back(broker: str) -> None:
    publish(broker, {"n": 1})
    pop_and_die(broker, Transport)
    assert held(broker) == (0, 1)  # out of the queue, but in unacked
    assert consume(broker, limit=1, timeout=10) == [{"n": 1}]  # restored after the visibility timeout
    assert held(broker) == (0, 0)


def test_acked_messages_leave_nothing_behind_and_keep_their_order(broker: str) -> None:
    publish(broker, *({"n": i} for i in range(50)))
    got = consume(broker, limit=50, timeout=20)
    assert [body["n"] for body in got] == list(range(50))
    assert held(broker) == (0, 0)


def test_a_consumer_without_acks_leaves_nothing_to_redeliver(broker: str) -> None:
    publish(broker, {"n": 1}, {"n": 2})
    assert consume(broker, limit=2, timeout=10, no_ack=True) == [{"n": 1}, {"n": 2}]
    assert held(broker) == (0, 0)


def test_priority_sub_queues_are_consumed(broker: str) -> None:
    publish(broker, {"n": "high"}, priority=9)
    publish(broker, {"n": "plain"})
    got = consume(broker, limit=2, timeout=10)
    assert sorted(body["n"] for body in got) == ["high", "plain"]
    assert held(broker) == (0, 0)


def test_an_idle_consumer_wakes_for_a_new_message(broker: str) -> None:
    import threading

    timer = threading.Timer(1.5, publish, args=(broker, {"n": "late"}))
    timer.start()
    try:
        assert consume(broker, limit=1, timeout=10) == [{"n": "late"}]
    finally:
        timer.cancel()


def test_pool_workers_use_it_on_redis_only() -> None:
    from celery import Celery

    from pool.workloads.celery_worker import durable_settings

    app = Celery("t")
    app.conf.update(durable_settings(broker="redis://127.0.0.1:1/1", visibility_timeout=30, existing={}))
    assert app.connection_for_read().get_transport_cls() is Transport
    amqp = durable_settings(broker="amqp://127.0.0.1:1//", visibility_timeout=30, existing={})
    assert "broker_transport" not in amqp
