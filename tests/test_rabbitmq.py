"""RabbitMQ broker: the AMQP queue-depth sensor and a real Celery domain, on a private node."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from kombu import Connection, Exchange, Queue
from kombu.message import Message

from pool.core.model import NodeState, Reading, parse_domain_spec
from pool.state.redisserver import broker_url_for, free_port
from sensors import load_sensor
from sensors.celery import CeleryQueueSensor
from tests.conftest import RunningManager, celery_spec, demo_producer
from tests.rabbitmq import RabbitNode

S = NodeState


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> float:
    """Seconds until ``predicate`` held; fails the test after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def declared_queue(name: str) -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name, durable=True)


def publish(url: str, queue: Queue, n: int) -> None:
    """Publish with publisher confirms: every message is in the queue when this returns."""
    with Connection(url, transport_options={"confirm_publish": True}) as conn:
        producer = conn.Producer()
        for i in range(n):
            producer.publish({"i": i}, exchange=queue.exchange, routing_key=queue.routing_key,
                             declare=[queue], delivery_mode=2)


@contextlib.contextmanager
def holder(url: str, queue: Queue, prefetch: int) -> Iterator[tuple[Connection, list[Message]]]:
    """A consumer that takes up to ``prefetch`` messages and never acknowledges them."""
    conn = Connection(url)
    channel = conn.channel()
    channel.basic_qos(0, prefetch, False)
    held: list[Message] = []
    consumer = conn.Consumer(queue, channel=channel, callbacks=[lambda _body, msg: held.append(msg)])
    consumer.consume()
    try:
        yield conn, held
    finally:
        conn.release()


def take(conn: Connection, held: list[Message], n: int) -> None:
    deadline = time.monotonic() + 10
    while len(held) < n and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError, OSError):
            conn.drain_events(timeout=0.2)
    assert len(held) == n


def counts(r: Reading) -> tuple[float | None, float | None, float | None]:
    return r.value, r.detail.get("ready"), r.detail.get("unacked")


# -- parameters, no broker needed -------------------------------------------------------------


def test_bad_parameters_name_what_is_wrong() -> None:
    url = "amqp://guest:guest@127.0.0.1:1//"
    with pytest.raises(ValueError, match="unacked_source 'nope': expected one of auto, management"):
        CeleryQueueSensor(broker=url, unacked_source="nope")
    with pytest.raises(ValueError, match="needs management_url"):
        CeleryQueueSensor(broker=url, unacked_source="management")
    with pytest.raises(ValueError, match="prefetch must be an integer >= 0"):
        CeleryQueueSensor(broker=url, prefetch=-1)
    assert CeleryQueueSensor(broker=url).resolved_unacked_source == "consumers"
    assert CeleryQueueSensor(broker=url, rabbitmq_node="rabbit@h").resolved_unacked_source == "rabbitmqctl"
    assert CeleryQueueSensor(broker=url, management_url="http://h:1").resolved_unacked_source == "management"


def test_unreachable_amqp_broker_is_a_reading_with_an_error() -> None:
    sensor = CeleryQueueSensor(broker=f"amqp://guest:guest@127.0.0.1:{free_port()}//", queue="q",
                               timeout=0.5, management_url=f"http://127.0.0.1:{free_port()}")
    for now in (1.0, 2.0):  # the second read tries again (no connection was kept)
        r = sensor.read(now)
        assert not r.ok and r.value is None and r.time == now
        assert r.error is not None and "refused" in r.error.lower() and "\n" not in r.error
    sensor.close()


# -- the sensor on a real node ----------------------------------------------------------------


@pytest.mark.slow
def test_sensor_counts_ready_and_unacked_from_every_source(rabbitmq: RabbitNode) -> None:
    name = f"depth-{uuid.uuid4().hex[:6]}"
    queue = declared_queue(name)
    url = rabbitmq.amqp_url
    sensors = {
        "management": CeleryQueueSensor(broker=url, queue=name, management_url=rabbitmq.management_url,
                                        prefetch=2),
        "rabbitmqctl": CeleryQueueSensor(broker=url, queue=name, rabbitmq_node=rabbitmq.nodename,
                                         rabbitmqctl=rabbitmq.ctl_command()[0],
                                         rabbitmqctl_env=rabbitmq.env(), prefetch=2),
        "consumers": CeleryQueueSensor(broker=url, queue=name, unacked_source="consumers", prefetch=2),
    }
    assert {k: s.resolved_unacked_source for k, s in sensors.items()} == {k: k for k in sensors}
    # a queue nobody declared yet: nothing waits
    for sensor in sensors.values():
        assert counts(sensor.read(0.0)) == (0.0, 0, 0)
    publish(url, queue, 5)
    for sensor in sensors.values():
        assert counts(sensor.read(1.0)) == (5.0, 5, 0)
    with holder(url, queue, prefetch=2) as (first, held_first):
        take(first, held_first, 2)
        # with a backlog, every source is right at once: ready and consumers are real time,
        # although the management API has not seen the deliveries yet
        for sensor in sensors.values():
            r = sensor.read(2.0)
            assert counts(r) == (5.0, 3, 2) and r.detail["consumers"] == 1
        with holder(url, queue, prefetch=2) as (second, held_second):
            take(second, held_second, 2)
            # 4 in flight on 2 consumers, none ready: exact from rabbitmqctl now ...
            r = sensors["rabbitmqctl"].read(3.0)
            assert counts(r) == (5.0, 1, 4)
            second.release()  # ... a consumer goes: its 2 messages are ready again at once
            for key, sensor in sensors.items():
                r = sensor.read(4.0)
                assert counts(r) == (5.0, 3, 2), (key, r)
        for m in held_first:
            m.ack()  # 2 done; the consumer takes the next 2 of the 3 ready
        take(first, held_first, 4)
        # ready 1, unacked 2: with a backlog the management reading is right at once again
        for key, sensor in sensors.items():
            r = sensor.read(5.0)
            assert counts(r) == (3.0, 1, 2), (key, r)
    # the holder went: everything is ready again, nothing in flight
    for key, sensor in sensors.items():
        assert counts(sensor.read(6.0)) == (3.0, 3, 0), key
    for sensor in sensors.values():
        sensor.close()


@pytest.mark.slow
def test_management_counts_catch_up_while_the_queue_is_idle(rabbitmq: RabbitNode) -> None:
    """Without a backlog the management count may be one or two statistics intervals old; it is
    bounded by the consumers (real time) meanwhile, and then catches up."""
    name = f"idle-{uuid.uuid4().hex[:6]}"
    queue = declared_queue(name)
    publish(rabbitmq.amqp_url, queue, 3)
    sensor = CeleryQueueSensor(broker=rabbitmq.amqp_url, queue=name, management_url=rabbitmq.management_url,
                               prefetch=4)
    with holder(rabbitmq.amqp_url, queue, prefetch=4) as (conn, held):
        take(conn, held, 3)
        r = sensor.read(1.0)
        assert r.detail["ready"] == 0 and 0 <= r.detail["unacked"] <= 4  # never above consumers x prefetch
        lag = wait_for(lambda: sensor.read(2.0).value == 3, 30, "the management count to catch up", 0.25)
        print(f"\nmanagement unacked count caught up after {lag:.2f}s (statistics interval 5 s)")
        r = sensor.read(3.0)
        assert counts(r) == (3.0, 0, 3) and r.detail["unacked_reported"] == 3
        for message in held:  # the queue's own counters: what wait_target reads as arrivals and completions
            message.ack()
        wait_for(lambda: sensor.read(4.0).detail.get("completions") == 3, 30, "the acks in the queue's counters", 0.25)
        # the publisher's connection closed at once: its publish count may never reach the statistics,
        # and the acknowledged plus queued messages stand in as the floor
        assert sensor.read(5.0).detail.get("arrivals") == 3
    sensor.close()


@pytest.mark.slow
def test_sensor_errors_are_one_line_readings(rabbitmq: RabbitNode) -> None:
    bad_management = CeleryQueueSensor(broker=rabbitmq.amqp_url, queue="x", timeout=0.5,
                                       management_url=f"http://guest:guest@127.0.0.1:{free_port()}")
    wrong_password = CeleryQueueSensor(broker=rabbitmq.amqp_url, queue="x", timeout=1,
                                       management_url=rabbitmq.management_url.replace("guest@", "nope@"))
    bad_node = CeleryQueueSensor(broker=rabbitmq.amqp_url, queue="x", rabbitmq_node="nobody@localhost",
                                 rabbitmqctl=rabbitmq.ctl_command()[0], rabbitmqctl_env=rabbitmq.env())
    for sensor, expected in ((bad_management, "refused"), (wrong_password, "401"),
                             (bad_node, "rabbitmqctl list_queues exited")):
        r = sensor.read(1.0)
        assert not r.ok and r.value is None, r
        assert r.error is not None and expected in r.error and "\n" not in r.error, r.error
        sensor.close()
    via_registry = load_sensor("celery", {"broker": rabbitmq.amqp_url, "queue": "x",
                                          "management_url": rabbitmq.management_url})
    assert via_registry.read(2.0).ok
    via_registry.close()


@pytest.mark.slow
def test_quorum_queue_depth_and_delivery_limit_for_a_poison_message(rabbitmq: RabbitNode) -> None:
    """A message whose consumer dies every time (connection closed with it unacknowledged) is
    dropped once it passes the quorum queue's x-delivery-limit; the passive declare sees it go."""
    name = f"quorum-{uuid.uuid4().hex[:6]}"
    queue = Queue(name, Exchange(name, type="direct"), routing_key=name, durable=True,
                  queue_arguments={"x-queue-type": "quorum", "x-delivery-limit": 2})
    publish(rabbitmq.amqp_url, queue, 1)
    sensor = CeleryQueueSensor(broker=rabbitmq.amqp_url, queue=name, unacked_source="consumers")
    assert counts(sensor.read(0.0)) == (1.0, 1, 0)
    seen: list[int] = []
    for _ in range(4):
        with holder(rabbitmq.amqp_url, queue, prefetch=1) as (conn, held):
            with contextlib.suppress(AssertionError):
                take(conn, held, 1)
            if held:
                seen.append(int(held[0].headers.get("x-delivery-count", 0)))
                r = sensor.read(1.0)  # in flight: not ready, held by the one consumer
                assert r.detail["ready"] == 0 and r.detail["consumers"] == 1
        # the consumer's connection closed with the message unacknowledged: a failed delivery
    assert seen == [0, 1, 2]  # the fourth delivery would pass the limit: the message is dropped
    assert counts(sensor.read(2.0)) == (0.0, 0, 0)
    sensor.close()


# -- a real Celery domain on RabbitMQ ---------------------------------------------------------


def results_of(url: str, key: str = "demo:done") -> dict[int, float]:
    client = redis.Redis.from_url(url)
    try:
        return {int(k): float(v) for k, v in client.hgetall(key).items()}
    finally:
        client.close()


def enqueue(broker: str, queue: str, n: int, seconds: float) -> None:
    with demo_producer(broker) as tasks, Connection(broker) as conn:
        for i in range(n):
            tasks.work.apply_async((i, seconds), queue=queue, connection=conn)  # type: ignore[attr-defined]


def rabbit_spec(name: str, rabbitmq: RabbitNode, *, max_size: int, policy: dict) -> dict:
    """A celery domain on the RabbitMQ node; the sensor reads in-flight counts from its management API."""
    return celery_spec(name, max_size=max_size, policy=policy, broker=rabbitmq.amqp_url,
                       sensor={"name": "celery", "management_url": rabbitmq.management_url})


@pytest.fixture
def results(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The demo tasks count completions in the test Redis (the broker is RabbitMQ)."""
    url = broker_url_for(redis_url)
    monkeypatch.setenv("DEMO_RESULTS", url)
    return url


@pytest.mark.slow
def test_burst_on_rabbitmq_grows_from_zero_completes_and_shrinks(
        running_manager: RunningManager, rabbitmq: RabbitNode, results: str) -> None:
    rm = running_manager
    spec = parse_domain_spec(rabbit_spec("rburst", rabbitmq, max_size=3,
                                         policy={"name": "queue_depth", "tasks_per_worker": 5}))
    rm.store.put_domain(spec)
    time.sleep(1.0)
    assert rm.live("rburst") == []  # nothing waits: nothing runs
    enqueue(rabbitmq.amqp_url, "q-rburst", 40, 0.2)
    rm.wait(lambda: len(rm.live("rburst", S.JOINED)) >= 2, 90, "workers to join")
    rm.wait(lambda: len(results_of(results)) == 40, 120, "all 40 tasks to complete")
    rm.wait(lambda: rm.live("rburst") == [] and all(n.state == S.TERMINATED for n in rm.store.nodes("rburst")),
            90, "the domain to shrink back to 0")
    assert results_of(results) == {i: 1.0 for i in range(40)}  # each exactly once: nothing redelivered
    decisions = rm.store.events("rburst", 300, kind="decision")
    assert max(e["target"] for e in decisions) == 3  # 40 / 5 = 8, bounded by max 3
    queue = rabbitmq.management_get("/api/queues/%2F/q-rburst")
    assert isinstance(queue, dict) and queue["durable"] is True
    assert rm.driver.list_nodes() == []


@pytest.mark.slow
def test_sigkill_of_a_busy_worker_on_rabbitmq_loses_nothing(
        running_manager: RunningManager, rabbitmq: RabbitNode, results: str) -> None:
    rm = running_manager
    spec = parse_domain_spec(rabbit_spec("rkill", rabbitmq, max_size=3,
                                         policy={"name": "queue_depth", "tasks_per_worker": 4}))
    rm.store.put_domain(spec)
    enqueue(rabbitmq.amqp_url, "q-rkill", 30, 0.5)
    rm.wait(lambda: any(hb.active > 0 for hb in rm.store.heartbeats(
        "rkill", [n.node_id for n in rm.live("rkill", S.JOINED)]).values()), 90, "a busy worker")
    joined = rm.live("rkill", S.JOINED)
    hbs = rm.store.heartbeats("rkill", [n.node_id for n in joined])
    victim = next(n for n in joined if hbs[n.node_id].active > 0)
    node = next(n for n in rm.driver.list_nodes() if n.id == victim.node_id)
    with Connection(rabbitmq.amqp_url) as conn:
        channel = conn.channel()
        _, _, consumers_before = channel.queue_declare(queue="q-rkill", passive=True)
        started = results_of(results, "demo:started")
        in_flight = set(started) - set(results_of(results, "demo:finished"))
        assert rm.driver.ex_preempt(node)  # SIGKILL to the whole process group, mid-task
        # the broker sees the connection close: the consumer goes and its message is ready again
        # measured, not asserted: a worker joining meanwhile can hide the drop in the count
        returned: float | None = None
        with contextlib.suppress(AssertionError):
            returned = wait_for(lambda: channel.queue_declare(queue="q-rkill", passive=True)[2] < consumers_before,
                                10, "the killed worker's consumer to go", step=0.002)
    restarted = None
    with contextlib.suppress(AssertionError):
        restarted = wait_for(lambda: any(results_of(results, "demo:started").get(i, 0) > started[i]
                                         for i in in_flight), 20, "the held task to start again", 0.01)
    rm.wait(lambda: next(n for n in rm.store.nodes("rkill") if n.node_id == victim.node_id).state == S.TERMINATED,
            30, "the killed node to be noticed")
    rm.wait(lambda: len(results_of(results)) == 30, 120, "every task to complete at least once")
    done = results_of(results)
    assert sorted(done) == list(range(30))
    # the broker redelivered what the killed worker held (its statistics may lag an interval)
    wait_for(lambda: _redeliveries(rabbitmq, "q-rkill") >= 1, 30, "the broker to count the redelivery", 0.5)
    again = f"{restarted * 1000:.0f} ms" if restarted is not None else "n/a"
    gone = f"{returned * 1000:.0f} ms" if returned is not None else "n/a (another consumer joined)"
    print(f"\nSIGKILL -> consumer gone and its message ready again after {gone} "
          f"(broker view, polled every 2 ms); the held task started again on another worker after "
          f"{again}; redeliveries {_redeliveries(rabbitmq, 'q-rkill')}; "
          f"tasks run twice {sum(1 for v in done.values() if v > 1)}")


def _redeliveries(rabbitmq: RabbitNode, queue: str) -> int:
    data = rabbitmq.management_get(f"/api/queues/%2F/{queue}")
    assert isinstance(data, dict)
    return int((data.get("message_stats") or {}).get("redeliver", 0))
