"""Celery queue depth: ready plus in-flight (unacked) messages, on a Redis or AMQP broker."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shlex
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import redis

from pool.core.model import Reading
from sensors import error_text

#: kombu's Redis transport keeps priority sub-queues as ``queue + sep + step``.
KOMBU_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (3, 6, 9)

#: Where an AMQP sensor reads in-flight (unacknowledged) messages from; see CeleryQueueSensor.
UNACKED_SOURCES = ("auto", "management", "rabbitmqctl", "consumers")


@dataclass
class CeleryQueueSensor:
    """Backlog of one Celery queue: ready plus in-flight (delivered, not yet acknowledged) messages.

    Redis broker: ``LLEN`` of the queue and its priority sub-queues, plus the messages in kombu's
    ``unacked`` hash whose routing key is this queue (delivered, not yet acknowledged: running,
    with ``task_acks_late``).

    AMQP broker (RabbitMQ): ready messages and consumers by a passive queue declare, answered by
    the queue itself (real time, one round trip on a kept connection). In-flight (unacked)
    messages come from ``unacked_source``:

    - ``management``: the management API (a few ms), but its counts lag by the broker's
      ``collect_statistics_interval`` (5 s by default) and are absent for a queue's first
      interval. The lag is bounded by what the passive declare says in real time: with a backlog
      every consumer holds its full ``prefetch`` (so in-flight is exactly consumers x prefetch),
      and never more than that; only an idle queue's in-flight count can be one or two intervals
      old, which the domain's scale-down stabilization window (30 s by default) absorbs.
    - ``rabbitmqctl``: ``rabbitmqctl list_queues`` asks a classic queue's process (exact and
      fresh; a quorum queue answers from counters it publishes every few seconds), but each call
      boots an Erlang VM (about 1 s) and needs the node's Erlang cookie: only for a manager on
      the broker's host.
    - ``consumers``: no extra source; consumers x prefetch with a backlog, else 0.
    - ``auto`` (default): ``management`` when ``management_url`` is given, else ``rabbitmqctl``
      when ``rabbitmq_node`` is given, else ``consumers``.

    Parameters:
        broker: broker URL (``redis://``, ``amqp://``).
        queue: queue name.
        management_url: RabbitMQ management base URL (``http://user:pass@127.0.0.1:15672``).
        key_prefix: kombu ``global_keyprefix`` transport option, if the app sets one (Redis).
        timeout: seconds before a read gives up.
        name: the reading's name.
        unacked_source: AMQP in-flight source: ``auto``, ``management``, ``rabbitmqctl``, ``consumers``.
        prefetch: most messages one consumer holds unacknowledged (pool-managed workers: their
            concurrency, as the prefetch multiplier is 1); 0 when unknown (no bound is applied).
        rabbitmqctl: the ``rabbitmqctl`` command (may carry arguments, shell-split).
        rabbitmq_node: the broker's Erlang node name (``rabbit@host``), passed as ``-n``.
        rabbitmqctl_env: extra environment for ``rabbitmqctl`` (``HOME`` holding the cookie,
            ``ERL_EPMD_PORT``, ...).
        rabbitmqctl_timeout: seconds before a ``rabbitmqctl`` call gives up.
    """

    #: parameters a domain spec may not set: they choose a program (and its environment) the manager runs
    OPERATOR_ONLY: ClassVar[frozenset[str]] = frozenset({"rabbitmqctl", "rabbitmqctl_env"})

    broker: str
    queue: str = "celery"
    management_url: str | None = None
    key_prefix: str = ""
    timeout: float = 2.0
    name: str = "celery"
    unacked_source: str = "auto"
    prefetch: int = 1
    rabbitmqctl: str = "rabbitmqctl"
    rabbitmq_node: str | None = None
    rabbitmqctl_env: dict[str, str] = field(default_factory=dict)
    rabbitmqctl_timeout: float = 15.0
    _client: Any = field(default=None, init=False, repr=False)
    _connection: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        scheme = self.broker.split("://", 1)[0]
        if scheme not in ("redis", "rediss", "redis+socket", "amqp", "amqps", "pyamqp"):
            raise ValueError(f"broker {self.broker!r}: expected a redis:// or amqp:// URL")
        if self.unacked_source not in UNACKED_SOURCES:
            raise ValueError(f"unacked_source {self.unacked_source!r}: "
                             f"expected one of {', '.join(UNACKED_SOURCES)}")
        if self.unacked_source == "management" and not self.management_url:
            raise ValueError("unacked_source 'management' needs management_url (http://user:pass@host:15672)")
        if isinstance(self.prefetch, bool) or not isinstance(self.prefetch, int) or self.prefetch < 0:
            raise ValueError(f"prefetch must be an integer >= 0 (0: unknown), got {self.prefetch!r}")

    @property
    def is_redis(self) -> bool:
        return self.broker.startswith(("redis", "rediss"))

    def read(self, now: float) -> Reading:
        try:
            extra: dict[str, float] = {}
            if self.is_redis:
                ready, unacked = self._read_redis()
            else:
                ready, unacked, extra = self._read_amqp()
        except Exception as exc:  # noqa: BLE001 (a sensor reports, never raises)
            return Reading(self.name, None, now, error=error_text(exc))
        return Reading(
            self.name, float(ready + unacked), now, detail={"ready": ready, "unacked": unacked, **extra}
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
    @property
    def resolved_unacked_source(self) -> str:
        """``auto`` resolved: management when its URL is given, else rabbitmqctl when a node is named."""
        if self.unacked_source != "auto":
            return self.unacked_source
        if self.management_url:
            return "management"
        if self.rabbitmq_node:
            return "rabbitmqctl"
        return "consumers"

    def _amqp(self) -> Any:
        """The sensor's AMQP connection, opened on first use and after any failure (one try: the
        next read is the retry)."""
        from kombu import Connection

        if self._connection is None:
            conn = Connection(
                self.broker,
                connect_timeout=self.timeout,
                transport_options={"read_timeout": self.timeout, "write_timeout": self.timeout},
            )
            try:
                conn.ensure_connection(max_retries=0)
            except BaseException:
                conn.release()
                raise
            self._connection = conn
        return self._connection

    def _declare_passive(self) -> tuple[int, int]:
        """Ready messages and consumers of the queue, from the broker itself (real time)."""
        conn = self._amqp()
        try:
            channel = conn.channel()
        except Exception:
            self._drop_connection()
            raise
        try:
            _, ready, consumers = channel.queue_declare(queue=self.queue, passive=True)
        except conn.channel_errors as exc:  # NOT_FOUND: nobody declared it, nothing waits
            if getattr(exc, "code", None) == 404 or "NOT_FOUND" in str(exc):
                return 0, 0  # the server closed the channel; the connection stays usable
            self._drop_connection()
            raise
        except Exception:
            self._drop_connection()
            raise
        with contextlib.suppress(Exception):
            channel.close()
        return int(ready), int(consumers)

    def _read_amqp(self) -> tuple[int, int, dict[str, float]]:
        ready, consumers = self._declare_passive()
        source = self.resolved_unacked_source
        detail: dict[str, float] = {"consumers": consumers}
        if source == "rabbitmqctl":
            return ready, self._rabbitmqctl_unacked(), detail  # exact and fresh
        # with a backlog every consumer holds its full prefetch; without one, at most that
        most = consumers * self.prefetch if self.prefetch else None
        least = most if (most is not None and ready > 0) else 0
        if source == "consumers":
            return ready, least, detail
        reported, counters = self._management_unacked()  # lags by the statistics interval
        detail["unacked_reported"] = reported
        unacked = max(reported, least)
        if most is not None:
            unacked = min(unacked, most)
        if "completions" in counters:
            # a publisher that closes its channel within a statistics interval may never have its
            # publishes counted (a script that sends tasks and exits); every acknowledged or queued
            # message arrived, so that sum is a floor under the publish count (the unacked count of the
            # same statistics as the acks: a message is in at most one of them)
            counters["arrivals"] = max(counters.get("arrivals", 0.0), counters["completions"] + ready + reported)
        detail.update(counters)
        return ready, unacked, detail

    def _management_unacked(self) -> tuple[int, dict[str, float]]:
        """``messages_unacknowledged`` from the management API (0 before the queue's first stats), and
        the queue's ``arrivals`` / ``completions`` counters (messages published / acknowledged since
        the queue began, from its ``message_stats``) when the broker reports them."""
        assert self.management_url is not None
        from kombu import Connection

        parts = urllib.parse.urlsplit(self.management_url)
        vhost = Connection(self.broker).virtual_host or "/"
        path = (f"{parts.path.rstrip('/')}/api/queues/{urllib.parse.quote(vhost, safe='')}/"
                f"{urllib.parse.quote(self.queue, safe='')}")
        netloc = (parts.hostname or "127.0.0.1") + (f":{parts.port}" if parts.port else "")
        req = urllib.request.Request(urllib.parse.urlunsplit((parts.scheme, netloc, path, "", "")))
        user = urllib.parse.unquote(parts.username or "guest")
        password = urllib.parse.unquote(parts.password or "guest")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = json.load(resp)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return 0, {}  # no such queue: nothing in flight
            raise
        stats = data.get("message_stats") if isinstance(data, dict) else None
        counters = {name: float(stats[key]) for name, key in (("arrivals", "publish"), ("completions", "ack"))
                    if isinstance(stats, dict) and isinstance(stats.get(key), int) and stats[key] >= 0}
        return int(data.get("messages_unacknowledged", 0) or 0), counters

    def rabbitmqctl_command(self) -> list[str]:
        """The ``rabbitmqctl list_queues`` call the ``rabbitmqctl`` source runs."""
        from kombu import Connection

        node = ["-n", self.rabbitmq_node] if self.rabbitmq_node else []
        vhost = Connection(self.broker).virtual_host or "/"
        return [*shlex.split(self.rabbitmqctl), *node, "list_queues", "-q", "-p", vhost,
                "--formatter", "json", "name", "messages_ready", "messages_unacknowledged"]

    def _rabbitmqctl_unacked(self) -> int:
        """``messages_unacknowledged`` asked of the queue itself (fresh for classic queues)."""
        env = {**os.environ, **{str(k): str(v) for k, v in self.rabbitmqctl_env.items()}}
        try:
            proc = subprocess.run(self.rabbitmqctl_command(), env=env, capture_output=True, text=True,
                                  timeout=self.rabbitmqctl_timeout, check=False)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"rabbitmqctl list_queues took over {self.rabbitmqctl_timeout:g}s") from None
        if proc.returncode != 0:
            lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
            raise RuntimeError(f"rabbitmqctl list_queues exited {proc.returncode}: "
                               f"{lines[0] if lines else 'no output'}")
        for row in json.loads(proc.stdout or "[]"):
            if row.get("name") == self.queue:
                return int(row.get("messages_unacknowledged") or 0)
        return 0

    def _drop_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.release()
            self._connection = None

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
        self._drop_connection()
