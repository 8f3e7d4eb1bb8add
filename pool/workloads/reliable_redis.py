"""Kombu's Redis transport with an atomic pop: a message leaves its queue only into the unacked hash.

Kombu's own Redis consumer pops with ``BRPOP`` and writes the message to ``unacked`` only after
it has read the reply, so a worker killed between the two loses the message (celery/celery#7950,
celery/kombu#305). Here one Lua script pops from the queue's keys in priority order and, in the
same atomic step, records the message in ``unacked`` and ``unacked_index`` exactly as kombu's QoS
would. A worker killed at any point leaves the message either in its queue or in ``unacked``,
from where any live consumer's visibility sweep puts it back after ``visibility_timeout``.

Scripts cannot block, so an idle consumer waits with ``BLMOVE q q RIGHT RIGHT``: a pop that
pushes the element back onto the same list, i.e. a blocking look that takes nothing, on the
first queue's main key. Messages on other keys (priority sub-queues, a second queue) are found
by the next pop, at most ``brpop_timeout`` (1 s) later when the consumer is idle.

Celery workers started by the pool use it for ``redis://`` and ``rediss://`` brokers
(``pool.workloads.celery_worker``); producers need nothing: the queue layout is kombu's.
"""

from __future__ import annotations

from queue import Empty
from time import monotonic, time
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

# KEYS: unacked hash, unacked index, then the queue keys in the order to try; ARGV[1]: now.
# The unacked entry is kombu's own ``[message, exchange, routing_key]``, built by concatenation
# so the message's JSON is stored byte for byte as it was queued.
POP_TO_UNACKED = """
for i = 3, #KEYS do
  local item = redis.call('RPOP', KEYS[i])
  if item then
    local ok, message = pcall(cjson.decode, item)
    if ok and type(message) == 'table' and type(message['properties']) == 'table' then
      local props = message['properties']
      local tag = props['delivery_tag']
      local info = props['delivery_info'] or {}
      if tag then
        redis.call('ZADD', KEYS[2], ARGV[1], tag)
        redis.call('HSET', KEYS[1], tag, '[' .. item .. ',' .. cjson.encode(info['exchange'] or '') .. ','
                   .. cjson.encode(info['routing_key'] or '') .. ']')
        return {KEYS[i], item, tag}
      end
    end
    return {KEYS[i], item}
  end
end
return false
"""


class QoS(kombu_redis.QoS):
    """Skips the unacked write for messages the pop script has already recorded."""

    def append(self, message: Any, delivery_tag: str) -> None:
        recorded: set[str] = self.channel._recorded
        if delivery_tag in recorded:
            recorded.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)


class Channel(kombu_redis.Channel):
    """Consumes with the pop script; waits with a blocking look when every queue is empty."""

    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._recorded: set[str] = set()
        self._waiting = False  # the next command is the blocking look, not the pop
        self._sent = "EVAL"
        self._no_ack: set[str] = set()  # queues consumed without acknowledgements
        super().__init__(*args, **kwargs)

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if no_ack:
            self._no_ack.add(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def _key(self, key: str) -> str:
        return f"{self.global_keyprefix}{key}" if self.global_keyprefix else key

    def _brpop_start(self, timeout: float | None = None) -> None:
        if timeout is None:
            timeout = self.brpop_timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        keys = [self._key(self._q_for_pri(queue, pri)) for pri in self.priority_steps for queue in queues]
        connection = self.client.connection
        self._in_poll = connection
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]  # kombu declares it None
        if self._waiting:
            # never block for ever: the other keys are only looked at by the next pop
            wait = min(float(timeout or 1), 1.0)
            self._sent = "BLMOVE"
            connection.send_command("BLMOVE", keys[0], keys[0], "RIGHT", "RIGHT", wait)
        else:
            self._sent = "EVAL"
            connection.send_command("EVAL", POP_TO_UNACKED, 2 + len(keys), self._key(self.unacked_key),
                                    self._key(self.unacked_index_key), *keys, repr(time()))

    def _brpop_read(self, **options: Any) -> bool:
        try:
            try:
                reply = self.client.parse_response(self.client.connection, self._sent, **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if self._sent == "BLMOVE":
                self._waiting = False  # something arrived, or the wait timed out: pop next
                raise Empty()
            if not reply:
                self._waiting = True
                raise Empty()
            dest, item = bytes_to_str(reply[0]), reply[1]
            if self.global_keyprefix and dest.startswith(self.global_keyprefix):
                dest = dest[len(self.global_keyprefix):]
            dest = dest.rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            if len(reply) > 2:
                tag = bytes_to_str(reply[2])
                if dest in self._no_ack:  # nothing will acknowledge it: no unacked entry to sweep back
                    self.qos._remove_from_indices(tag).execute()
                else:
                    self._recorded.add(tag)
            self.connection._deliver(loads(bytes_to_str(item)), dest)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]  # kombu resets it to None
            self._flush_brpop_reauth()


class Transport(kombu_redis.Transport):
    """Kombu's Redis transport with :class:`Channel`."""

    Channel = Channel
