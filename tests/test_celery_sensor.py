"""The Celery queue-depth sensor against a real Redis broker, with real kombu messages."""

from __future__ import annotations

import time

from kombu import Connection, Exchange, Queue

from pool.state.redisserver import broker_url_for, free_port
from sensors import load_sensor
from sensors.celery import CeleryQueueSensor


def test_counts_ready_priority_and_unacked(redis_url: str) -> None:
    broker = broker_url_for(redis_url)
    queue = Queue("etl", Exchange("etl"), routing_key="etl", max_priority=9)
    other = Queue("other", Exchange("other"), routing_key="other")
    with Connection(broker) as conn:
        producer = conn.Producer()
        for i in range(5):
            producer.publish({"i": i}, exchange=queue.exchange, routing_key="etl", declare=[queue], priority=i * 2)
        producer.publish({"x": 1}, exchange=other.exchange, routing_key="other", declare=[other])
        sensor = CeleryQueueSensor(broker=broker, queue="etl")
        r = sensor.read(1.0)
        assert r.ok and r.value == 5 and r.detail == {"ready": 5, "unacked": 0}
        # take two without acknowledging: they leave the lists for kombu's unacked hash
        channel = conn.channel()
        held = [channel.basic_get("etl", no_ack=False) for _ in range(2)]
        assert all(m is not None for m in held)
        r = sensor.read(2.0)
        assert r.value == 5 and r.detail == {"ready": 3, "unacked": 2}
        for m in held:
            m.ack()
        r = sensor.read(3.0)
        assert r.value == 3 and r.detail == {"ready": 3, "unacked": 0}
        assert CeleryQueueSensor(broker=broker, queue="other").read(3.0).value == 1
        channel.close()
    sensor.close()


def test_celery_tasks_are_counted(redis_url: str, demo_app_env: str) -> None:
    from tests.conftest import demo_producer

    with demo_producer(demo_app_env) as tasks:
        for i in range(7):
            tasks.work.apply_async((i, 0.01), queue="counted")  # type: ignore[attr-defined]
    reading = load_sensor("celery", {"broker": demo_app_env, "queue": "counted"}).read(time.time())
    assert reading.value == 7


def test_unreachable_broker_is_a_reading_with_an_error() -> None:
    sensor = CeleryQueueSensor(broker=f"redis://127.0.0.1:{free_port()}/1", queue="q", timeout=0.5)
    r = sensor.read(5.0)
    assert not r.ok and r.value is None and r.time == 5.0
    assert r.error is not None and "ConnectionError" in r.error and "\n" not in r.error
    amqp = CeleryQueueSensor(broker=f"amqp://guest:guest@127.0.0.1:{free_port()}//", queue="q", timeout=0.5)
    r = amqp.read(6.0)
    assert not r.ok and r.error


def test_watch_wakes_on_push_to_its_queue_only(redis_url: str) -> None:
    import threading

    broker = broker_url_for(redis_url)
    woke = threading.Event()
    sensor = CeleryQueueSensor(broker=broker, queue="watched")
    stop = sensor.watch(woke.set)
    assert stop is not None
    try:
        time.sleep(0.3)
        with Connection(broker) as conn:
            q = Queue("elsewhere", Exchange("elsewhere"), routing_key="elsewhere")
            conn.Producer().publish({"x": 1}, exchange=q.exchange, routing_key="elsewhere", declare=[q])
            assert not woke.wait(0.7)  # another queue's push does not wake this domain
            w = Queue("watched", Exchange("watched"), routing_key="watched")
            conn.Producer().publish({"x": 1}, exchange=w.exchange, routing_key="watched", declare=[w])
        assert woke.wait(5)
    finally:
        stop()
