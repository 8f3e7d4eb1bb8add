"""Celery queue depth: ready plus in-flight (unacked) messages, on a Redis or AMQP broker."""

from __future__ import annotations

import base64
import json
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable

import redis

from pool.model import Reading
from sensors import error_text

#: kombu's Redis transport keeps priority sub-queues as ``queue + sep + step``.
KOMBU_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (3, 6, 9)


@dataclass
class CeleryQueueSensor:
    """Backlog of one Celery queue.

    Redis broker: ``LLEN`` of the queue and its priority sub-queues, plus the messages in kombu's
    ``unacked`` hash whose routing key is this queue (delivered, not yet acknowledged: running,
    with ``task_acks_late``). AMQP broker: ready messages by a passive queue declare (real time);
    with ``management_url`` also the unacked count from the RabbitMQ management API.

    Parameters:
        broker: broker URL (``redis://``, ``amqp://``).
        queue: queue name.
        management_url: RabbitMQ management base URL (``http://user:pass@127.0.0.1:15672``).
        key_prefix: kombu ``global_keyprefix`` transport option, if the app sets one.
        timeout: seconds before a read gives up.
    """

    broker: str
    queue: str = "celery"
    management_url: str | None = None
    key_prefix: str = ""
    timeout: float = 2.0
    name: str = "celery"
    _client: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        scheme = self.broker.split("://", 1)[0]
        if scheme not in ("redis", "rediss", "redis+socket", "amqp", "amqps", "pyamqp"):
            raise ValueError(f"broker {self.broker!r}: expected a redis:// or amqp:// URL")

    @property
    def is_redis(self) -> bool:
        return self.broker.startswith(("redis", "rediss"))

    def read(self, now: float) -> Reading:
        try:
            if self.is_redis:
                ready, unacked = self._read_redis()
            else:
                ready, unacked = self._read_amqp()
        except Exception as exc:  # a sensor reports, never raises
            return Reading(self.name, None, now, error=error_text(exc))
        return Reading(
            self.name, float(ready + unacked), now, detail={"ready": ready, "unacked": unacked}
        )

    # -- redis ---------------------------------------------------------------------------
    def _redis(self) -> redis.Redis:
        if self._client is None:
            url = self.broker.replace("redis+socket://", "unix://", 1)
            self._client = redis.Redis.from_url(
                url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
            )
        return self._client

    def queue_keys(self) -> list[str]:
        base = self.key_prefix + self.queue
        return [base] + [f"{base}{KOMBU_SEP}{step}" for step in KOMBU_PRIORITY_STEPS]

    def _read_redis(self) -> tuple[int, int]:
        client = self._redis()
        pipe = client.pipeline(transaction=False)
        for key in self.queue_keys():
            pipe.llen(key)
        ready = sum(int(n) for n in pipe.execute())
        unacked = 0
        for _tag, payload in client.hscan_iter(self.key_prefix + "unacked", count=500):
            try:
                _msg, _exchange, routing_key = json.loads(payload)
            except (ValueError, TypeError):
                continue
            if routing_key == self.queue:
                unacked += 1
        return ready, unacked

    # -- amqp ----------------------------------------------------------------------------
    def _read_amqp(self) -> tuple[int, int]:
        from kombu import Connection

        with Connection(self.broker, connect_timeout=self.timeout) as conn:
            channel = conn.channel()
            try:
                _, ready, _consumers = channel.queue_declare(queue=self.queue, passive=True)
            except conn.channel_errors as exc:  # NOT_FOUND: nobody declared it, nothing waits
                if "NOT_FOUND" in str(exc) or "404" in str(exc):
                    return 0, 0
                raise
        unacked = self._management_unacked() if self.management_url else 0
        return int(ready), unacked

    def _management_unacked(self) -> int:
        assert self.management_url is not None
        parts = urllib.parse.urlsplit(self.management_url)
        vhost = urllib.parse.urlsplit(self.broker).path.lstrip("/") or "/"
        url = urllib.parse.urlunsplit(
            (
                parts.scheme,
                parts.hostname + (f":{parts.port}" if parts.port else ""),
                f"/api/queues/{urllib.parse.quote(vhost, safe='')}/{urllib.parse.quote(self.queue, safe='')}",
                "",
                "",
            )
        )
        req = urllib.request.Request(url)
        user = urllib.parse.unquote(parts.username or "guest")
        password = urllib.parse.unquote(parts.password or "guest")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            data = json.load(resp)
        return int(data.get("messages_unacknowledged", 0) or 0)

    def watch(self, wake: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``wake`` as soon as a message is pushed to the queue (Redis keyspace events).

        Turns on ``notify-keyspace-events`` list events (``El``) if the server allows CONFIG;
        returns a function that stops watching, or ``None`` where the broker cannot be watched
        (AMQP, or a managed Redis without CONFIG): the manager then just polls every tick.
        """
        if not self.is_redis:
            return None
        client = redis.Redis.from_url(self.broker.replace("redis+socket://", "unix://", 1),
                                      socket_connect_timeout=self.timeout)
        try:
            flags = str(client.config_get("notify-keyspace-events").get("notify-keyspace-events", ""))
            if "A" not in flags and "l" not in flags or "E" not in flags:
                client.config_set("notify-keyspace-events", "".join(sorted(set(flags + "El"))))
            db = int(client.connection_pool.connection_kwargs.get("db", 0))
            keys = set(self.queue_keys())

            def on_push(message: dict[str, Any]) -> None:
                data = message.get("data")
                key = data.decode() if isinstance(data, bytes) else str(data)
                if key in keys:
                    wake()

            pubsub = client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(**{f"__keyevent@{db}__:lpush": on_push, f"__keyevent@{db}__:rpush": on_push})
            thread = pubsub.run_in_thread(sleep_time=0.2, daemon=True)
        except (redis.RedisError, OSError):
            client.close()
            return None

        def stop() -> None:
            thread.stop()  # the thread closes its pubsub connection as it ends
            thread.join(timeout=2)
            client.close()

        return stop

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
