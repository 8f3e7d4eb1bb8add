"""Control-plane state in Redis: domains, nodes, heartbeats and a bounded event log per domain."""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable, Mapping, Sequence

import redis

from pool.core import keys
from pool.core.model import (
    ID_RE,
    DomainSpec,
    DomainState,
    Heartbeat,
    InvalidRecord,
    NodeRecord,
    SpecError,
    parse_domain_spec,
)
from pool.core.secrets import redact, redact_text
from pool.state.memqueue import MemoryWorkQueue
from pool.state.workqueue import RECLAIM_AFTER, QueueLike, WorkItem, WorkQueue

log = logging.getLogger("elastic_pool.store")

EVENT_LOG_LENGTH = 2000
#: most tries of an atomic shift of the operator's size while other writers change it
OVERRIDE_RETRIES = 50
#: entries kept (about) in a domain's readings history (an hour at one point every few seconds, and changes)
READINGS_LENGTH = 4000
#: seconds a deleted domain's event log is kept (so that readers see its ``deleted`` event)
DELETED_EVENTS_TTL = 24 * 3600
#: the roles a token may have, weakest first (each may do what the ones before it may)
TOKEN_ROLES = ("viewer", "operator", "admin")
_HASH_RE = re.compile(r"[0-9a-f]{64}")
#: seconds a node's heartbeat hash outlives its last beat
HEARTBEAT_TTL = 24 * 3600
#: entries kept (about) in a domain's stream of heartbeat changes (one node per entry)
HEARTBEAT_CHANGES_LENGTH = 20000
#: entries kept (about) in a domain's stream of record changes (up to RECORD_IDS_PER_CHANGE ids per entry)
RECORD_CHANGES_LENGTH = 2000
RECORD_IDS_PER_CHANGE = 256
#: more unread changes than this in one stream: the reader reads everything again instead
CHANGES_READ_AT_MOST = 4096

#: A heartbeat: writes the fields and the time into the node's hash, the time into the domain's
#: sorted set of beat times, the domain's next beat number into its sorted set of beat numbers, and
#: appends the node to the domain's change stream when a field other than the time changed or the
#: hash had no time yet (HSET counts the fields it adds). KEYS: hash, times, changes, numbers,
#: counter; ARGV: node, ttl, stream length, time, field, value, ...
_BEAT = """
local changed = false
if #ARGV > 4 then
  local fields = {}
  for i = 5, #ARGV, 2 do
    fields[#fields + 1] = ARGV[i]
  end
  local old = redis.call('HMGET', KEYS[1], unpack(fields))
  for j = 1, #old do
    if old[j] ~= ARGV[4 + 2 * j] then
      changed = true
      break
    end
  end
end
if redis.call('HSET', KEYS[1], 'time', ARGV[4], unpack(ARGV, 5)) > 0 then
  changed = true
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[4], redis.call('INCR', KEYS[5]), ARGV[1])
if changed then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'n', ARGV[1])
end
return changed and 1 or 0
"""

#: The beat times written after beat number ARGV[1] (every beat time when it is ''), as one flat
#: list: the last beat number, how many nodes have a beat time, then node, time, node, time, ...
#: (no small list per node for the reader's garbage collector). KEYS: numbers, times, counter.
_BEATS_SINCE = """
local out = {redis.call('GET', KEYS[3]) or '0', redis.call('ZCARD', KEYS[2])}
if ARGV[1] == '' then
  local all = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  for i = 1, #all do
    out[i + 2] = all[i]
  end
  return out
end
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')) do
  local t = redis.call('ZSCORE', KEYS[2], node)
  if t then
    out[#out + 1] = node
    out[#out + 1] = t
  end
end
return out
"""

#: The heartbeat hashes among KEYS that have a time, as flat (index, HGETALL) pairs: for nodes
#: that are missing from the sorted set of beat times (an agent that writes only the hash).
_HASH_BEATS = """
local out = {}
for i = 1, #KEYS do
  if redis.call('HEXISTS', KEYS[i], 'time') == 1 then
    out[#out + 1] = i - 1
    out[#out + 1] = redis.call('HGETALL', KEYS[i])
  end
end
return out
"""


#: Runs a batch of commands only if every fencing token is still the newest for its role
#: (KEYS are the roles' fence counters, ARGV starts with one token per key).
_FENCED = """
for k = 1, #KEYS do
  local cur = redis.call('GET', KEYS[k])
  if cur ~= ARGV[k] then return redis.error_reply('FENCED newest token ' .. tostring(cur) .. ' for ' .. KEYS[k]) end
end
local i = #KEYS + 1
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return 'OK'
"""


class FencedWrite(RuntimeError):
    """A write refused because a newer fencing token exists for the writer's role."""


class Store:
    """All keys live under ``{namespace}:``; per-domain keys under ``{namespace}:d:{domain}:``.

    A copy made with :meth:`fenced` carries a leader role's fencing token: every write it makes
    runs in one Lua script that first checks the token is still the newest, so a deposed leader's
    late writes are refused with :class:`FencedWrite`.

    Reads of a domain's records and heartbeats are incremental: every record write appends the
    record ids to ``d:{domain}:nx`` and every heartbeat that changes more than its time appends the
    node to ``d:{domain}:hbx`` (capped streams, in the same commit as the write); each beat also
    goes to the sorted sets ``d:{domain}:hbt`` (its time) and ``d:{domain}:hbs`` (its number, from
    the counter ``d:{domain}:hbn``). A reader keeps what it read, its position in each stream and
    the last beat number it saw, and reads again only what changed (everything, when its position
    was trimmed away or the keys were deleted). Copies made with :meth:`fenced` share what was read.
    """

    fence: tuple[tuple[str, int], ...] | None = None

    def __init__(self, client: redis.Redis, *, namespace: str = "ep") -> None:
        self.r = client
        self.ns = namespace
        self._fenced_script: Any = None
        self._beat_script: Any = None
        self._hash_beats_script: Any = None
        self._beats_since_script: Any = None
        self._reading = threading.Lock()  # one incremental read at a time (the caches are shared)
        self._records: dict[str, _Records] = {}
        self._beats: dict[str, _Beats] = {}
        self._specs: dict[str, tuple[str, DomainSpec | None]] = {}
        #: stored specs that did not validate: name -> one-line reason (redacted)
        self.refused: dict[str, str] = {}
        #: stored node records that did not validate: (domain, node id) -> one-line reason
        self.refused_records: dict[tuple[str, str], str] = {}

    def fenced(self, role: str, token: int) -> "Store":
        """A view of this store whose writes carry ``token`` for ``role``."""
        return self.fenced_roles({role: token})

    def fenced_roles(self, tokens: "dict[str, int]") -> "Store":
        """A view whose writes are refused unless every ``role: token`` is still the newest."""
        view = copy.copy(self)
        view.fence = tuple(sorted(tokens.items())) or None
        return view

    def _commit(self, pipe: Any) -> None:
        if self.fence is None:
            pipe.execute()
            return
        args: list[Any] = [token for _, token in self.fence]
        for command, _options in pipe.command_stack:
            args += [len(command), *command]
        pipe.reset()
        if self._fenced_script is None:
            self._fenced_script = self.r.register_script(_FENCED)
        try:
            self._fenced_script(keys=[self._k("fence", role) for role, _ in self.fence], args=args)
        except redis.ResponseError as exc:
            if "FENCED" in str(exc):
                held = ", ".join(f"{role} token {token}" for role, token in self.fence)
                raise FencedWrite(f"write refused: {held} no longer the newest ({exc})") from None
            raise

    @classmethod
    def from_url(cls, url: str, *, namespace: str = "ep", timeout: float = 5.0) -> "Store":
        client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=10,
            decode_responses=True,
        )
        return cls(client, namespace=namespace)

    # -- keys -------------------------------------------------------------------------
    def _k(self, *parts: str) -> str:
        return keys.key(self.ns, *parts)

    def _d(self, domain: str, *parts: str) -> str:
        return keys.domain_key(self.ns, domain, *parts)

    def heartbeat_key(self, domain: str, node_id: str) -> str:
        return keys.heartbeat_key(self.ns, domain, node_id)

    def heartbeat_times_key(self, domain: str) -> str:
        """Sorted set: node id -> time of its last heartbeat."""
        return self._d(domain, "hbt")

    def heartbeat_numbers_key(self, domain: str) -> str:
        """Sorted set: node id -> number of its last heartbeat (from the counter ``d:{domain}:hbn``)."""
        return self._d(domain, "hbs")

    def heartbeat_changes_key(self, domain: str) -> str:
        """Stream: nodes whose heartbeat hash was created or changed more than its time (field ``n``)."""
        return keys.heartbeat_changes_key(self.ns, domain)

    def record_changes_key(self, domain: str) -> str:
        """Stream: ids of the records written or deleted (field ``ids``, a JSON list)."""
        return self._d(domain, "nx")

    # -- domains ----------------------------------------------------------------------
    def put_domain(self, spec: DomainSpec) -> bool:
        """Create or replace a domain spec; True if it was new."""
        return bool(self.r.hset(self._k("domains"), spec.name, spec.model_dump_json()))

    def get_domain(self, name: str) -> DomainSpec | None:
        """The domain's spec, validated again as read (``None`` when absent or refused)."""
        raw = self.r.hget(self._k("domains"), name)
        return self._spec(name, raw) if raw else None

    def domains(self) -> list[DomainSpec]:
        """Every domain whose stored spec validates; the others are left out (see :attr:`refused`)."""
        raw = self.r.hgetall(self._k("domains"))
        specs = [self._spec(name, text) for name, text in sorted(raw.items())]
        return [spec for spec in specs if spec is not None]

    def _spec(self, name: str, text: str) -> DomainSpec | None:
        """Validate a stored spec as if it were applied anew: anything in Redis is untrusted input."""
        hit = self._specs.get(name)
        if hit is not None and hit[0] == text:
            return hit[1]
        spec: DomainSpec | None = None
        try:
            data = json.loads(text)
            if isinstance(data, dict) and data.get("name") != name:
                raise SpecError(f"stored under {name[:64]!r} but named {str(data.get('name'))[:64]!r}")
            spec = parse_domain_spec(data)
            self.refused.pop(name, None)
        except (ValueError, RecursionError, TypeError) as exc:
            reason = redact_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[:300]
            if self.refused.get(name) != reason:
                log.warning("domain %r in the store refused: %s", name[:64], reason)
            self.refused[name] = reason
        if len(self._specs) > 10_000:
            self._specs.clear()
        self._specs[name] = (text, spec)
        return spec

    def delete_domain(self, name: str, *, keep_events: bool = False) -> None:
        """Remove the domain and everything kept of it (its event log stays a day with ``keep_events``)."""
        parts = ["state", "override", "nodes", "nx", "hbt", "hbs", "hbn", "hbx", "wanted", "readings"]
        keys = [self._d(name, k) for k in parts + ([] if keep_events else ["events"])]
        keys += list(self.r.scan_iter(match=self._d(name, "hb", "*"), count=1000))
        pipe = self.r.pipeline()
        pipe.hdel(self._k("domains"), name)
        pipe.hdel(self._k("paused"), name)
        pipe.hdel(self._k("deleting"), name)
        pipe.delete(*keys)
        if keep_events:
            pipe.expire(self._d(name, "events"), DELETED_EVENTS_TTL)
        pipe.execute()

    def get_state(self, domain: str) -> DomainState:
        """The manager's memory of the domain; a malformed one is started anew (logged)."""
        raw, override = self.r.mget(self._d(domain, "state"), self._d(domain, "override"))
        try:
            state = DomainState.from_json(raw)
        except (ValueError, TypeError, RecursionError):
            log.warning("domain %s: stored state malformed; starting from an empty one", domain)
            state = DomainState()
        state.override = int(override) if override and override.isdigit() and len(override) < 10 else None
        return state

    def put_state(self, domain: str, state: DomainState, *, reading: "ReadingPoint | None" = None) -> None:
        """The manager's memory (the operator's override lives in a key of its own); with ``reading``,
        a point of the domain's readings history in the same commit."""
        pipe = self.r.pipeline(transaction=False)
        pipe.set(self._d(domain, "state"), state.to_json())
        if reading is not None:
            pipe.xadd(self._d(domain, "readings"), reading.fields(), maxlen=READINGS_LENGTH, approximate=True)
        self._commit(pipe)

    def set_override(self, domain: str, size: int | None) -> None:
        """The operator's manual size (``None`` hands the domain back to its policy)."""
        if size is None:
            self.r.delete(self._d(domain, "override"))
        else:
            self.r.set(self._d(domain, "override"), str(size))

    def shift_override(self, domain: str, delta: int, *, low: int, high: int) -> int:
        """Add ``delta`` to the operator's size (to the intended size when none is set), atomically: two
        shifts at once both count. ValueError naming the size when it would leave ``[low, high]``."""
        key = self._d(domain, "override")
        with self.r.pipeline() as pipe:
            for _ in range(OVERRIDE_RETRIES):
                try:
                    pipe.watch(key)
                    raw: Any = pipe.get(key)  # (watched: answered at once)
                    base = int(raw) if raw and raw.isdigit() and len(raw) < 10 else self.get_state(domain).intended
                    size = base + delta
                    if not low <= size <= high:
                        raise ValueError(f"size {size} is outside the domain's bounds [{low}, {high}]")
                    pipe.multi()
                    pipe.set(key, str(size))
                    pipe.execute()
                    return size
                except redis.WatchError:
                    continue
        raise RuntimeError(f"domain {domain}: the size changed {OVERRIDE_RETRIES} times while it was being shifted")

    # -- named nodes (a Slurm domain: the nodes slurmctld asked to power up) ------------------
    def want(self, domain: str, names: Iterable[str], now: float) -> None:
        """Ask for a worker under each of ``names`` (kept if already asked); durable once this returns."""
        mapping = {n: repr(now) for n in names}
        if mapping:
            pipe = self.r.pipeline()
            for name, value in mapping.items():
                pipe.hsetnx(self._d(domain, "wanted"), name, value)
            pipe.execute()

    def unwant(self, domain: str, names: Iterable[str]) -> None:
        """No worker is wanted under ``names`` any more (powered down, or given up)."""
        names = list(names)
        if names:
            self.r.hdel(self._d(domain, "wanted"), *names)

    def wanted(self, domain: str) -> dict[str, float]:
        """The names a worker is wanted under, and since when; malformed entries are left out."""
        return _wanted(self.r.hgetall(self._d(domain, "wanted")))

    # -- nodes ------------------------------------------------------------------------
    def nodes(self, domain: str) -> list[NodeRecord]:
        """Every record of the domain, oldest first. Treat them as read-only (as with
        :class:`MemoryStore`): a record whose JSON did not change is the object returned last time.

        Only the records named in the domain's change stream since the last call are read again.
        """
        key, changes = self._d(domain, "nodes"), self.record_changes_key(domain)
        with self._reading:
            cache = self._records.get(domain)
            if cache is None:
                cache = self._records[domain] = _Records()
            position = cache.position
            pipe = self.r.pipeline(transaction=True)
            _queue_changes(pipe, changes, position)
            if position is None:
                pipe.hgetall(key)
            replies = pipe.execute()
            entries, cache.position = _changes_since(replies, position)
            if entries is None:
                raw = replies[-1] if position is None else self.r.hgetall(key)
                before = cache.parsed
                parsed: dict[str, tuple[str, NodeRecord | None]] = {}
                for node_id, text in raw.items():
                    hit = before.get(node_id)
                    parsed[node_id] = hit if hit is not None and hit[0] == text else (
                        text, self._record(domain, node_id, text))
                cache.parsed = parsed
                cache.ordered = None
            elif entries:
                ids = list(dict.fromkeys(i for _, fields in entries for i in _changed_ids(fields)))
                parsed = cache.parsed
                for node_id, text in zip(ids, self.r.hmget(key, ids)) if ids else ():
                    if text is None:
                        parsed.pop(node_id, None)
                        continue
                    hit = parsed.get(node_id)
                    if hit is None or hit[0] != text:
                        parsed[node_id] = (text, self._record(domain, node_id, text))
                cache.ordered = None
            if cache.ordered is None:
                cache.ordered = sorted((rec for _, rec in cache.parsed.values() if rec is not None), key=_created)
            return list(cache.ordered)

    def _record(self, domain: str, node_id: str, text: str) -> NodeRecord | None:
        """A stored record, validated; ``None`` (and a note in :attr:`refused_records`) if it is not one
        the pool could have written: a record that is refused is never acted on."""
        try:
            rec = NodeRecord.from_json(text)
            if rec.domain != domain or rec.node_id != node_id:
                raise InvalidRecord("node record: stored under another domain or node id")
        except InvalidRecord as exc:
            if (domain, node_id) not in self.refused_records:
                log.warning("domain %s: node record %r refused: %s", domain, node_id[:64], exc)
            if len(self.refused_records) < 10_000:
                self.refused_records[(domain, node_id[:128])] = str(exc)
            return None
        self.refused_records.pop((domain, node_id), None)
        return rec

    def node(self, domain: str, node_id: str) -> NodeRecord | None:
        raw = self.r.hget(self._d(domain, "nodes"), node_id)
        return self._record(domain, node_id, raw) if raw else None

    def put_nodes(self, records: Iterable[NodeRecord], *, work: Iterable[WorkItem] = ()) -> None:
        """Write records, and queue the provisioning work that acts on them in the same commit."""
        pipe = self.r.pipeline(transaction=True)
        n = 0
        written: dict[str, list[str]] = {}
        for rec in records:
            pipe.hset(self._d(rec.domain, "nodes"), rec.node_id, rec.to_json())
            written.setdefault(rec.domain, []).append(rec.node_id)
            n += 1
        for domain, ids in written.items():
            self._note_records(pipe, domain, ids)
        for item in work:
            pipe.xadd(self._k("work"), item.fields())
            n += 1
        if n:
            self._commit(pipe)

    def _note_records(self, pipe: Any, domain: str, ids: Sequence[str]) -> None:
        """Queue the entries that tell readers these records changed (in the writer's commit)."""
        for at in range(0, len(ids), RECORD_IDS_PER_CHANGE):
            pipe.xadd(self.record_changes_key(domain),
                      {"ids": json.dumps(list(ids[at:at + RECORD_IDS_PER_CHANGE]), separators=(",", ":"))},
                      maxlen=RECORD_CHANGES_LENGTH, approximate=True)

    def update_node(self, domain: str, node_id: str, change: Callable[[NodeRecord], bool],
                    *, attempts: int = 20) -> NodeRecord | None:
        """Read-modify-write one record without losing a concurrent write (optimistic, bounded).

        ``change`` edits the record in place and returns whether to write it. Returns the record
        as written (or as found), ``None`` if it does not exist.
        """
        key = self._d(domain, "nodes")
        for attempt in range(attempts):
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(key)
                    raw = pipe.hget(key, node_id)
                    if not raw:
                        return None
                    rec = NodeRecord.from_json(raw)  # type: ignore[arg-type]  # immediate mode after WATCH
                    if not change(rec):
                        return rec
                    pipe.multi()
                    pipe.hset(key, node_id, rec.to_json())
                    self._note_records(pipe, domain, [node_id])
                    pipe.execute()
                    return rec
                except redis.WatchError:
                    time.sleep(min(0.2, 0.005 * 2 ** attempt))
        raise RuntimeError(f"node {node_id}: record kept changing; gave up after {attempts} attempts")

    def forget_nodes(self, domain: str, node_ids: Iterable[str], *, usage: Mapping[str, float] | None = None) -> None:
        """Delete ended records; ``usage`` (``pool.core.usage.bank``) is added to the running usage totals in
        the same commit (``since`` kept as the smallest value ever given)."""
        ids = list(node_ids)
        if not ids:
            return
        pipe = self.r.pipeline(transaction=True)
        pipe.hdel(self._d(domain, "nodes"), *ids)
        pipe.delete(*(self.heartbeat_key(domain, i) for i in ids))
        pipe.zrem(self.heartbeat_times_key(domain), *ids)
        pipe.zrem(self.heartbeat_numbers_key(domain), *ids)
        self._note_records(pipe, domain, ids)
        for member, amount in (usage or {}).items():
            if member == "since":
                pipe.zadd(self._k("usage"), {member: amount}, lt=True)
            else:
                pipe.zincrby(self._k("usage"), amount, member)
        self._commit(pipe)

    def usage_totals(self) -> dict[str, float]:
        """The running usage totals banked when records were forgotten (raw: validate before use)."""
        return {str(member): float(score) for member, score in self.r.zrange(self._k("usage"), 0, -1, withscores=True)}

    # -- heartbeats (written by agents and by the worker's task signals) -------------------
    def heartbeats(self, domain: str, node_ids: Iterable[str]) -> dict[str, Heartbeat]:
        """The last heartbeat of each of ``node_ids`` that has one (as :class:`MemoryStore` does).

        Reads the beat times written since this reader's last call (by beat number, so agents'
        clocks do not matter); a node's other fields are read again only when the change stream
        names it (or it is new to this reader). A node that has a heartbeat hash but no beat time
        (an agent that writes only the hash) is read from its hash.
        """
        ids = list(node_ids)
        if not ids:
            return {}
        with self._reading:
            cache = self._beats.get(domain)
            if cache is None:
                cache = self._beats[domain] = _Beats()
            position = cache.position
            pipe = self.r.pipeline(transaction=True)
            self._beats_since(pipe, domain, cache.number)
            _queue_changes(pipe, self.heartbeat_changes_key(domain), position)
            replies = pipe.execute()
            if not cache.take_times(replies[0]):  # a node forgotten, or the counter started anew
                cache.take_times(self._beats_since(self.r, domain, None))
            entries, cache.position = _changes_since(replies[1:], position)
            beats, times = cache.beats, cache.times
            if entries is None:
                beats.clear()
            else:
                for _, fields in entries:
                    beats.pop(fields.get("n", ""), None)
            get = beats.get
            out = {i: hb for i in ids if (hb := get(i)) is not None}
            if len(out) == len(ids):
                return out
            unread: list[str] = []  # beat times known, fields not read yet
            hash_only: list[str] = []  # no beat time: an agent that writes only the hash
            for i in ids:
                if i not in out:
                    (unread if i in times else hash_only).append(i)
            pipe = self.r.pipeline(transaction=False)
            for i in unread:
                pipe.hgetall(self.heartbeat_key(domain, i))
            if hash_only:
                if self._hash_beats_script is None:
                    self._hash_beats_script = self.r.register_script(_HASH_BEATS)
                self._hash_beats_script(keys=[self.heartbeat_key(domain, i) for i in hash_only], client=pipe)
            replies = pipe.execute()
            for i, raw in zip(unread, replies):
                when = _number(str(times[i]))
                if raw and "time" in raw and when is not None:
                    out[i] = beats[i] = _heartbeat(_as_dict(raw), when)
            if hash_only:
                found = replies[-1]
                for at in range(0, len(found), 2):
                    raw = _as_dict(found[at + 1])
                    when = _number(raw.get("time"))
                    if when is not None:  # a beat whose time is not a number is no sign of life
                        out[hash_only[int(found[at])]] = _heartbeat(raw, when)
            return {i: out[i] for i in ids if i in out}  # in the order asked

    def _beats_since(self, client: Any, domain: str, number: str | None) -> Any:
        """Run (or queue on a pipeline) the read of the beat times written after beat ``number``."""
        if self._beats_since_script is None:
            self._beats_since_script = self.r.register_script(_BEATS_SINCE)
        return self._beats_since_script(
            keys=[self.heartbeat_numbers_key(domain), self.heartbeat_times_key(domain), self._d(domain, "hbn")],
            args=["" if number is None else number], client=client)

    def beat(self, domain: str, node_id: str, **fields: Any) -> None:
        """An agent's heartbeat: ``time`` plus whatever else it reports.

        One atomic script: the hash, the domain's beat times and numbers, and (when a field other
        than the time changed, or the hash is new) the domain's change stream.
        """
        mapping = {k: ("1" if v is True else "0" if v is False else str(v)) for k, v in fields.items()}
        when = mapping.pop("time", None) or repr(time.time())
        float(when)  # a time the sorted set takes, or ValueError before anything is written
        if self._beat_script is None:
            self._beat_script = self.r.register_script(_BEAT)
        args: list[str | int] = [node_id, HEARTBEAT_TTL, HEARTBEAT_CHANGES_LENGTH, when]
        for k, v in mapping.items():
            args += [k, v]
        self._beat_script(keys=[self.heartbeat_key(domain, node_id), self.heartbeat_times_key(domain),
                                self.heartbeat_changes_key(domain), self.heartbeat_numbers_key(domain),
                                self._d(domain, "hbn")], args=args)

    # -- events -----------------------------------------------------------------------
    def record(self, domain: str, kind: str, now: float, **data: Any) -> None:
        """Append to the domain's bounded event log (secrets masked)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.xadd(
            self._d(domain, "events"),
            {"kind": kind, "time": repr(now), "data": _event_data(data)},
            maxlen=EVENT_LOG_LENGTH,
            approximate=True,
        )
        self._commit(pipe)

    def events(self, domain: str, count: int = 20, kind: str | None = None) -> list[dict[str, Any]]:
        """Newest first."""
        out = []
        for _id, fields in self.r.xrevrange(self._d(domain, "events"), count=count * (5 if kind else 1)):
            if kind and fields.get("kind") != kind:
                continue
            event = _event(fields)
            if event is None:
                continue
            out.append(event)
            if len(out) >= count:
                break
        return out

    # -- managers ---------------------------------------------------------------------
    def register_manager(self, manager_id: str, info: dict[str, Any]) -> None:
        self.r.hset(self._k("managers"), manager_id, json.dumps(info))

    def unregister_manager(self, manager_id: str) -> None:
        self.r.hdel(self._k("managers"), manager_id)

    def managers(self) -> dict[str, dict[str, Any]]:
        """Registered managers; an entry that is not a JSON object is left out."""
        out: dict[str, dict[str, Any]] = {}
        for k, v in self.r.hgetall(self._k("managers")).items():
            try:
                info = json.loads(v)
            except (ValueError, RecursionError):
                continue
            if isinstance(info, dict):
                out[k[:128]] = info
        return out

    def request_shutdown(self, timeout: float | None = None) -> None:
        """Ask every manager to drain and stop (within ``timeout`` seconds, when given)."""
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self._k("control", "shutdown"), repr(time.time()))
        if timeout is not None:
            pipe.set(self._k("control", "shutdown", "timeout"), repr(timeout), ex=int(timeout) + 3600)
        pipe.execute()

    def shutdown_requested(self) -> bool:
        return bool(self.r.exists(self._k("control", "shutdown")))

    def shutdown_timeout(self, default: float) -> float:
        """The drain timeout `pool down` asked for (``default`` when none, or not a finite number)."""
        try:
            value = float(self.r.get(self._k("control", "shutdown", "timeout")) or default)
        except (TypeError, ValueError):
            return default
        return value if math.isfinite(value) and value >= 0 else default

    def clear_shutdown(self) -> None:
        self.r.delete(self._k("control", "shutdown"), self._k("control", "shutdown", "timeout"))

    # -- what operators set beside the spec: pause, deletion, access tokens -----------------
    def set_paused(self, domain: str, by: str | None, now: float) -> None:
        """Hold the domain's intended size (``by``: who asked), or hand it back to its policy (``None``)."""
        if by is None:
            self.r.hdel(self._k("paused"), domain)
        else:
            self.r.hset(self._k("paused"), domain, json.dumps({"by": by[:128], "time": now}))

    def mark_deleting(self, domain: str, by: str, now: float) -> None:
        """Ask the manager to drain the domain's workers and then delete it."""
        self.r.hset(self._k("deleting"), domain, json.dumps({"by": by[:128], "time": now}))

    def marks(self) -> "Marks":
        """Every paused domain and every domain being deleted, in one round trip (read once per tick)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(self._k("paused"))
        pipe.hgetall(self._k("deleting"))
        paused, deleting = pipe.execute()
        return Marks(paused=_marks(paused), deleting=_marks(deleting))

    def put_token(self, name: str, *, role: str, digest: str, now: float) -> bool:
        """Store a token's hash under ``name`` (never the token); False if the name is taken."""
        return bool(self.r.hsetnx(self._k("tokens"), name, json.dumps({"role": role, "hash": digest, "created": now})))

    def delete_token(self, name: str) -> bool:
        return bool(self.r.hdel(self._k("tokens"), name))

    def tokens(self) -> dict[str, dict[str, Any]]:
        """Tokens by name: ``{role, hash, created}``; entries that are not ones the pool wrote are left out."""
        return _tokens(self.r.hgetall(self._k("tokens")))

    # -- readings history and events as the API reads them ---------------------------------
    def readings(self, domain: str, since: float, *, count: int = READINGS_LENGTH) -> list[dict[str, float | None]]:
        """The domain's readings history from ``since`` on, oldest first: ``{time, value, intended, actual}``."""
        start = f"{max(0, int(since * 1000))}-0"
        return [p for _, f in self.r.xrange(self._d(domain, "readings"), start, "+", count=count)
                if (p := _point(f)) is not None]

    def event_log(self, domain: str, count: int = 20, kind: str | None = None) -> list[dict[str, Any]]:
        """Newest first, each with its ``id`` (the stream entry's) and ``domain``."""
        out = []
        for entry_id, fields in self.r.xrevrange(self._d(domain, "events"), count=count * (5 if kind else 1)):
            if kind and fields.get("kind") != kind:
                continue
            event = _event(fields)
            if event is not None:
                out.append({**event, "id": entry_id, "domain": domain})
                if len(out) >= count:
                    break
        return out

    def event_positions(self, domains: Iterable[str]) -> dict[str, str]:
        """The newest event id of each domain's log ("0-0" when it has none): where a reader starts."""
        names = list(domains)
        pipe = self.r.pipeline(transaction=False)
        for name in names:
            pipe.xrevrange(self._d(name, "events"), count=1)
        return {name: (last[0][0] if last else "0-0") for name, last in zip(names, pipe.execute())}

    def read_events(self, positions: dict[str, str], *, block: float = 0.0,
                    count: int = 500) -> list[dict[str, Any]]:
        """Events recorded after ``positions`` (domain -> last id read), oldest first, waiting up to
        ``block`` seconds for one; ``positions`` is moved past what is returned."""
        if not positions:
            return []
        streams = {self._d(name, "events"): pos for name, pos in positions.items()}
        by_key = {self._d(name, "events"): name for name in positions}
        replies = self.r.xread(streams, count=count, block=max(1, int(block * 1000)) if block > 0 else None)
        out = []
        for key, entries in replies or []:
            name = by_key[key]
            for entry_id, fields in entries:
                positions[name] = entry_id
                event = _event(fields)
                if event is not None:
                    out.append({**event, "id": entry_id, "domain": name})
        return out

    def queued_work(self, count: int = 100) -> list[dict[str, Any]]:
        """The oldest ``count`` provisioning work items waiting or being done (entries not the pool's left out)."""
        out = []
        for entry_id, fields in self.r.xrange(self._k("work"), count=count):
            try:
                item = WorkItem.from_entry(entry_id, fields)
            except (ValueError, TypeError):
                continue
            out.append(_work_view(item))
        return out

    # -- the pieces built on this store's client ------------------------------------------
    def ping(self) -> bool:
        return bool(self.r.ping())

    def leases(self, *, holder: str, ttl: float = 5.0) -> Any:
        """The leader leases of this namespace, held as ``holder``."""
        from pool.state.leases import Leases

        return Leases(self.r, namespace=self.ns, holder=holder, ttl=ttl)

    def work_queue(self, *, reclaim_after: float = RECLAIM_AFTER) -> QueueLike:
        """The durable launch/terminate work queue of this namespace (a :class:`WorkQueue`)."""
        return WorkQueue(self.r, namespace=self.ns, reclaim_after=reclaim_after)


class MemoryStore(Store):
    """The same store in Python dicts, for the simulator: no Redis, one process, simulated time.

    Public methods match :class:`Store`. Differences: :meth:`beat` needs an explicit ``time=``
    (there is no wall clock in a simulation); node records and domain specs are kept as objects,
    not serialized, so a record returned by :meth:`nodes` is the stored one and must be treated
    as read-only (the manager's ``plan_domain`` works on copies; :meth:`update_node` stores a changed
    copy). ``on_record``, when given, sees every event as it is recorded, so a caller can count what
    the bounded log forgets. The work queue is a :class:`~pool.state.memqueue.MemoryWorkQueue`:
    ``put_nodes(..., work=...)`` queues items on it, :meth:`work_queue` returns it.
    """

    def __init__(self, *, namespace: str = "ep", event_log_length: int = EVENT_LOG_LENGTH,
                 on_record: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.ns = namespace
        self.event_log_length = event_log_length
        self.on_record = on_record
        self._domains: dict[str, DomainSpec] = {}
        self._states: dict[str, DomainState] = {}
        self._overrides: dict[str, int] = {}
        self._shift_lock = threading.Lock()
        self._wanted: dict[str, dict[str, float]] = {}
        self._nodes: dict[str, dict[str, NodeRecord]] = {}
        self._ordered: dict[str, bool] = {}  # False once a record arrives out of creation order
        self._last_created: dict[str, float] = {}
        self._hb: dict[str, dict[str, Heartbeat]] = {}
        self._events: dict[str, deque[dict[str, Any]]] = {}
        self._managers: dict[str, dict[str, Any]] = {}
        self._shutdown: float | None = None
        self._work = MemoryWorkQueue()
        self._paused: dict[str, dict[str, Any]] = {}
        self._deleting: dict[str, dict[str, Any]] = {}
        self._tokens: dict[str, dict[str, Any]] = {}
        self._readings: dict[str, deque[ReadingPoint]] = {}
        self._recorded: dict[str, int] = {}  # events ever recorded per domain (their ids: 1, 2, ...)
        self._usage: dict[str, float] = {}  # usage banked by forget_nodes
        self.refused: dict[str, str] = {}  # nothing is serialized here, so nothing is ever refused
        self.refused_records: dict[tuple[str, str], str] = {}

    @classmethod
    def from_url(cls, url: str, *, namespace: str = "ep", timeout: float = 5.0) -> MemoryStore:
        return cls(namespace=namespace)

    # -- domains ----------------------------------------------------------------------
    def put_domain(self, spec: DomainSpec) -> bool:
        new = spec.name not in self._domains
        self._domains[spec.name] = spec
        return new

    def get_domain(self, name: str) -> DomainSpec | None:
        return self._domains.get(name)

    def domains(self) -> list[DomainSpec]:
        return [self._domains[name] for name in sorted(self._domains)]

    def delete_domain(self, name: str, *, keep_events: bool = False) -> None:
        tables: list[dict[str, Any]] = [self._domains, self._states, self._overrides, self._nodes,
                                        self._ordered, self._last_created, self._hb, self._wanted,
                                        self._paused, self._deleting, self._readings]
        for table in tables if keep_events else [*tables, self._events, self._recorded]:
            table.pop(name, None)

    def get_state(self, domain: str) -> DomainState:
        stored = self._states.get(domain)
        state = DomainState() if stored is None else copy.copy(stored)
        state.recent = list(state.recent)
        state.override = self._overrides.get(domain)
        return state

    def put_state(self, domain: str, state: DomainState, *, reading: ReadingPoint | None = None) -> None:
        self._states[domain] = state
        if reading is not None:
            points = self._readings.get(domain)
            if points is None:
                points = self._readings[domain] = deque(maxlen=READINGS_LENGTH)
            points.append(reading)

    def set_override(self, domain: str, size: int | None) -> None:
        if size is None:
            self._overrides.pop(domain, None)
        else:
            self._overrides[domain] = int(size)

    def shift_override(self, domain: str, delta: int, *, low: int, high: int) -> int:
        with self._shift_lock:
            current = self._overrides.get(domain)
            size = (current if current is not None else self.get_state(domain).intended) + delta
            if not low <= size <= high:
                raise ValueError(f"size {size} is outside the domain's bounds [{low}, {high}]")
            self._overrides[domain] = size
            return size

    def want(self, domain: str, names: Iterable[str], now: float) -> None:
        table = self._wanted.setdefault(domain, {})
        for name in names:
            table.setdefault(name, float(now))

    def unwant(self, domain: str, names: Iterable[str]) -> None:
        for name in names:
            self._wanted.get(domain, {}).pop(name, None)

    def wanted(self, domain: str) -> dict[str, float]:
        return dict(self._wanted.get(domain, {}))

    # -- nodes ------------------------------------------------------------------------
    def nodes(self, domain: str) -> list[NodeRecord]:
        records = list(self._nodes.get(domain, {}).values())
        if not self._ordered.get(domain, True):
            records.sort(key=lambda n: n.created)
        return records

    def node(self, domain: str, node_id: str) -> NodeRecord | None:
        return self._nodes.get(domain, {}).get(node_id)

    def put_nodes(self, records: Iterable[NodeRecord], *, work: Iterable[WorkItem] = ()) -> None:
        """Write records, then queue ``work`` (one process: nothing runs in between)."""
        for rec in records:
            table = self._nodes.setdefault(rec.domain, {})
            if rec.node_id not in table:
                if rec.created < self._last_created.get(rec.domain, float("-inf")):
                    self._ordered[rec.domain] = False
                self._last_created[rec.domain] = max(rec.created, self._last_created.get(rec.domain, rec.created))
            table[rec.node_id] = rec
        if work:
            self._work.add_to(None, work)

    def update_node(self, domain: str, node_id: str, change: Callable[[NodeRecord], bool],
                    *, attempts: int = 20) -> NodeRecord | None:
        """``change`` edits a copy of the record; the copy is stored if it returns True (as :meth:`Store.update_node`)."""
        table = self._nodes.get(domain)
        rec = table.get(node_id) if table is not None else None
        if table is None or rec is None:
            return None
        twin = rec.copy()
        if not change(twin):
            return rec
        table[node_id] = twin
        return twin

    def forget_nodes(self, domain: str, node_ids: Iterable[str], *, usage: Mapping[str, float] | None = None) -> None:
        table = self._nodes.get(domain, {})
        hbs = self._hb.get(domain, {})
        for node_id in node_ids:
            table.pop(node_id, None)
            hbs.pop(node_id, None)
        totals = self._usage
        for member, amount in (usage or {}).items():
            totals[member] = min(totals.get(member, amount), amount) if member == "since" else \
                totals.get(member, 0.0) + amount

    def usage_totals(self) -> dict[str, float]:
        return dict(self._usage)

    # -- heartbeats -------------------------------------------------------------------
    def heartbeats(self, domain: str, node_ids: Iterable[str]) -> dict[str, Heartbeat]:
        hbs = self._hb.get(domain)
        if not hbs:
            return {}
        return {i: hbs[i] for i in node_ids if i in hbs}

    def beat(self, domain: str, node_id: str, *, time: float | str | None = None, **fields: Any) -> None:
        """A heartbeat at simulated ``time`` (required) plus whatever else the worker reports.

        Fields not given keep their last value, as with the Redis hash; fields a
        :class:`Heartbeat` does not have are accepted and dropped.
        """
        if time is None:
            raise ValueError("MemoryStore.beat needs time= (simulated seconds); there is no wall clock here")
        hbs = self._hb.get(domain)
        if hbs is None:
            hbs = self._hb[domain] = {}
        prev = hbs.get(node_id) or _NO_BEAT
        if not fields:
            hbs[node_id] = Heartbeat(time=float(time), ready=prev.ready, active=prev.active,
                                     idle_since=prev.idle_since, workload_alive=prev.workload_alive,
                                     draining=prev.draining, preempt_notice=prev.preempt_notice,
                                     drained=prev.drained)
            return
        get = fields.get
        idle = get("idle_since", prev.idle_since)
        notice = get("preempt_notice", prev.preempt_notice)
        hbs[node_id] = Heartbeat(
            time=float(time),
            ready=_flag(get("ready"), prev.ready),
            active=max(0, int(get("active", prev.active) or 0)),
            idle_since=float(idle) if idle not in (None, "") else None,
            workload_alive=_flag(get("workload_alive"), prev.workload_alive),
            draining=_flag(get("draining"), prev.draining),
            preempt_notice=float(notice) if notice not in (None, "") else None,
            drained=_flag(get("drained"), prev.drained),
        )

    # -- events -----------------------------------------------------------------------
    def record(self, domain: str, kind: str, now: float, **data: Any) -> None:
        log = self._events.get(domain)
        if log is None:
            log = self._events[domain] = deque(maxlen=self.event_log_length)
        event = {"kind": kind, "time": float(now), **data}
        log.append(event)
        self._recorded[domain] = self._recorded.get(domain, 0) + 1
        if self.on_record is not None:
            self.on_record(domain, event)

    def events(self, domain: str, count: int = 20, kind: str | None = None) -> list[dict[str, Any]]:
        """Newest first."""
        out = []
        for event in reversed(self._events.get(domain, ())):
            if kind and event["kind"] != kind:
                continue
            out.append(dict(event))
            if len(out) >= count:
                break
        return out

    def _numbered(self, domain: str) -> list[tuple[int, dict[str, Any]]]:
        """The domain's kept events, oldest first, with their numbers (the ids of this store)."""
        log = self._events.get(domain, ())
        first = self._recorded.get(domain, 0) - len(log) + 1
        return [(first + i, event) for i, event in enumerate(log)]

    def event_log(self, domain: str, count: int = 20, kind: str | None = None) -> list[dict[str, Any]]:
        out = []
        for number, event in reversed(self._numbered(domain)):
            if not kind or event["kind"] == kind:
                out.append({**event, "id": f"{number}-0", "domain": domain})
                if len(out) >= count:
                    break
        return out

    def event_positions(self, domains: Iterable[str]) -> dict[str, str]:
        return {name: f"{self._recorded.get(name, 0)}-0" for name in domains}

    def read_events(self, positions: dict[str, str], *, block: float = 0.0,
                    count: int = 500) -> list[dict[str, Any]]:
        """As :meth:`Store.read_events`, without waiting (one process: nothing records while this runs)."""
        out: list[dict[str, Any]] = []
        for name, pos in positions.items():
            after = _sid(pos)[0]
            for number, event in self._numbered(name):
                if number > after and len(out) < count:
                    out.append({**event, "id": f"{number}-0", "domain": name})
                    positions[name] = f"{number}-0"
        return out

    def readings(self, domain: str, since: float, *, count: int = READINGS_LENGTH) -> list[dict[str, float | None]]:
        return [p.as_dict() for p in self._readings.get(domain, ()) if p.time >= since][:count]

    def set_paused(self, domain: str, by: str | None, now: float) -> None:
        if by is None:
            self._paused.pop(domain, None)
        else:
            self._paused[domain] = {"by": by[:128], "time": float(now)}

    def mark_deleting(self, domain: str, by: str, now: float) -> None:
        self._deleting[domain] = {"by": by[:128], "time": float(now)}

    def marks(self) -> Marks:
        return Marks(paused=dict(self._paused), deleting=dict(self._deleting))

    def put_token(self, name: str, *, role: str, digest: str, now: float) -> bool:
        if name in self._tokens:
            return False
        self._tokens[name] = {"role": role, "hash": digest, "created": float(now)}
        return True

    def delete_token(self, name: str) -> bool:
        return self._tokens.pop(name, None) is not None

    def tokens(self) -> dict[str, dict[str, Any]]:
        return {name: dict(entry) for name, entry in self._tokens.items()}

    def queued_work(self, count: int = 100) -> list[dict[str, Any]]:
        return []  # the in-memory queue is drained within the tick that fills it

    # -- managers ---------------------------------------------------------------------
    def register_manager(self, manager_id: str, info: dict[str, Any]) -> None:
        self._managers[manager_id] = dict(info)

    def unregister_manager(self, manager_id: str) -> None:
        self._managers.pop(manager_id, None)

    def managers(self) -> dict[str, dict[str, Any]]:
        return {k: dict(v) for k, v in self._managers.items()}

    def request_shutdown(self, timeout: float | None = None) -> None:
        self._shutdown = 0.0 if timeout is None else timeout

    def shutdown_timeout(self, default: float) -> float:
        return default if not self._shutdown else self._shutdown

    def shutdown_requested(self) -> bool:
        return self._shutdown is not None

    def clear_shutdown(self) -> None:
        self._shutdown = None

    def work_queue(self, *, reclaim_after: float = RECLAIM_AFTER) -> QueueLike:
        """The store's in-memory work queue (the one ``put_nodes(..., work=...)`` queues on)."""
        self._work.reclaim_after = reclaim_after
        return self._work


_NO_BEAT = Heartbeat(0.0)


def _flag(value: Any, default: bool) -> bool:
    """A heartbeat flag as an agent writes it (True, 1 or "1") or as Redis returns it."""
    if value is None or value == "":
        return default
    if isinstance(value, str):
        return value == "1" or value.lower() == "true"
    return bool(value)


class _Records:
    """What one reader knows of a domain's records."""

    __slots__ = ("position", "parsed", "ordered")

    def __init__(self) -> None:
        self.position: str | None = None  # last change read; None: read every record next time
        self.parsed: dict[str, tuple[str, NodeRecord | None]] = {}  # node id -> (its JSON as read, the record; None: refused)
        self.ordered: list[NodeRecord] | None = None  # by creation; None: sort again


class _Beats:
    """What one reader knows of a domain's heartbeats."""

    __slots__ = ("position", "number", "times", "beats")

    def __init__(self) -> None:
        self.position: str | None = None  # in the change stream
        self.number: str | None = None  # the last beat number read; None: read every beat time next time
        self.times: dict[str, str] = {}  # node -> its beat time as Redis gave it
        self.beats: dict[str, Heartbeat] = {}  # node -> its heartbeat (fields as last read, time from times)

    def take_times(self, reply: list[Any]) -> bool:
        """Apply a :data:`_BEATS_SINCE` reply; False if it does not add up (then read every time)."""
        number, count = str(reply[0]), int(reply[1])
        flat = iter(reply)
        next(flat), next(flat)
        times, beats, last = self.times, self.beats, self.number
        full = last is None
        if last is None:
            times.clear()
        elif int(number) < int(last):  # the counter started anew: the domain's keys were deleted
            self.number = None
            return False
        get = beats.get
        for node, t in zip(flat, flat):  # each node that beat since the last read, and its time
            times[node] = t
            hb = get(node)
            if hb is not None:  # the same heartbeat at its new time
                beats[node] = Heartbeat(float(t), hb.ready, hb.active, hb.idle_since, hb.workload_alive,
                                        hb.draining, hb.preempt_notice, hb.drained)
        if len(times) != count:  # nodes left the sorted set (forgotten): read every time again
            if full:
                raise RuntimeError("beat times changed while read")  # one script: cannot happen
            self.number = None
            return False
        if full:
            for gone in [i for i in beats if i not in times]:
                del beats[gone]
        self.number = number
        return True


def _created(rec: NodeRecord) -> float:
    return rec.created


def _sid(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _queue_changes(pipe: Any, key: str, position: str | None) -> None:
    """The stream's first and last entries and, past ``position``, what was added since."""
    pipe.xrange(key, "-", "+", count=1)
    pipe.xrevrange(key, "+", "-", count=1)
    if position is not None:
        pipe.xrange(key, "(" + position, "+", count=CHANGES_READ_AT_MOST)


def _changes_since(replies: list[Any], position: str | None,
                   ) -> tuple[list[tuple[str, dict[str, str]]] | None, str | None]:
    """(entries added after ``position``, or None: read everything; the new position) from
    the replies queued by :func:`_queue_changes` (in one transaction).

    Everything is read again when there is no position yet, when the stream is gone (deleted, or
    never written), when its first entry is past the position (the position was trimmed away, or
    the stream was made anew) or when more changes wait than :data:`CHANGES_READ_AT_MOST`.
    """
    first, last = replies[0], replies[1]
    if not last:
        return None, None
    newest = last[0][0]
    if position is None or _sid(first[0][0]) > _sid(position):
        return None, newest
    entries = list(replies[2])
    if len(entries) >= CHANGES_READ_AT_MOST:
        return None, newest
    return entries, newest


def _changed_ids(fields: dict[str, str]) -> list[str]:
    """The record ids a change-stream entry names (none, if the entry is not one the store wrote)."""
    try:
        ids = json.loads(fields.get("ids", "[]"))
    except (ValueError, RecursionError):
        return []
    return [i for i in ids if isinstance(i, str)][:RECORD_IDS_PER_CHANGE] if isinstance(ids, list) else []


def _event_data(data: dict[str, Any]) -> str:
    """An event's fields as stored: JSON with secrets masked, long values cut."""
    clean = redact(json.loads(json.dumps(data, default=str)))
    for k, v in clean.items():
        if isinstance(v, str) and len(v) > 2000:
            clean[k] = v[:2000] + "..."
    return json.dumps(clean, default=str)


def _event(fields: dict[str, str]) -> dict[str, Any] | None:
    """An event as read back (``None`` when it is not one the store wrote)."""
    try:
        data = json.loads(fields.get("data", "{}"))
        when = float(fields.get("time", "nan"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not math.isfinite(when):
        return None
    data.pop("kind", None)
    data.pop("time", None)
    return {"kind": str(fields.get("kind", ""))[:64], "time": when, **data}


def _number(raw: str | None, default: float | None = None) -> float | None:
    """A finite float from a heartbeat field written by a worker, else ``default``."""
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        return default
    return value if math.isfinite(value) else default


def _as_dict(raw: Any) -> dict[str, str]:
    if isinstance(raw, dict):
        return raw
    it = iter(raw)
    return dict(zip(it, it))


def _heartbeat(raw: dict[str, str], when: float) -> Heartbeat:
    """A heartbeat hash as read (``when``: its time)."""
    active = _number(raw.get("active"), 0.0) or 0.0
    return Heartbeat(
        time=when,
        ready=raw.get("ready") == "1",
        active=int(min(max(active, 0.0), 1e6)),
        idle_since=_number(raw.get("idle_since")),
        workload_alive=raw.get("workload_alive", "1") == "1",
        draining=raw.get("draining") == "1",
        preempt_notice=_number(raw.get("preempt_notice")),
        drained=raw.get("drained") == "1",
    )


def _wanted(raw: Mapping[Any, Any]) -> dict[str, float]:
    """Wanted names read back from Redis: only names a node may have and finite times (untrusted input)."""
    out: dict[str, float] = {}
    for key, value in raw.items():
        name = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        try:
            since = float(value)
        except (TypeError, ValueError):
            continue
        if ID_RE.fullmatch(name) and math.isfinite(since):
            out[name] = since
    return out


class Marks:
    """What operators set on domains beside their specs: who paused which, and which are being deleted."""

    __slots__ = ("paused", "deleting")

    def __init__(self, *, paused: dict[str, dict[str, Any]] | None = None,
                 deleting: dict[str, dict[str, Any]] | None = None) -> None:
        self.paused = paused or {}  # domain -> {"by", "time"}
        self.deleting = deleting or {}  # domain -> {"by", "time"}

    def paused_by(self, domain: str) -> str | None:
        mark = self.paused.get(domain)
        return None if mark is None else str(mark.get("by") or "?")


class ReadingPoint:
    """One point of a domain's readings history."""

    __slots__ = ("time", "value", "intended", "actual")

    def __init__(self, *, time: float, value: float | None, intended: int, actual: int) -> None:
        self.time, self.value, self.intended, self.actual = time, value, intended, actual

    def fields(self) -> dict[str, str]:
        return {"t": repr(self.time), "v": "" if self.value is None else repr(self.value),
                "i": str(self.intended), "a": str(self.actual)}

    def as_dict(self) -> dict[str, float | None]:
        return {"time": self.time, "value": self.value, "intended": self.intended, "actual": self.actual}

    def same(self, other: "ReadingPoint | None") -> bool:
        """Whether ``other`` says the same (apart from the time)."""
        return (other is not None and other.value == self.value and other.intended == self.intended
                and other.actual == self.actual)


def _point(fields: Mapping[str, str]) -> dict[str, float | None] | None:
    """A readings-history point as read back (``None`` when it is not one the manager wrote)."""
    when = _number(fields.get("t"))
    intended, actual = _number(fields.get("i")), _number(fields.get("a"))
    if when is None or intended is None or actual is None:
        return None
    return {"time": when, "value": _number(fields.get("v")), "intended": int(intended), "actual": int(actual)}


def _marks(raw: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Pause or deletion marks read back: a domain's name and ``{by, time}`` (others left out)."""
    out: dict[str, dict[str, Any]] = {}
    for name, text in raw.items():
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            continue
        when = _number(str(data.get("time"))) if isinstance(data, dict) else None
        if when is not None and isinstance(data.get("by"), str) and len(name) <= 63:
            out[name] = {"by": data["by"][:128], "time": when}
    return out


def _tokens(raw: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Token entries read back: a role the pool knows, a SHA-256 hex digest, a creation time."""
    out: dict[str, dict[str, Any]] = {}
    for name, text in raw.items():
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            continue
        if not isinstance(data, dict) or data.get("role") not in TOKEN_ROLES:
            continue
        digest, created = data.get("hash"), _number(str(data.get("created")))
        if isinstance(digest, str) and _HASH_RE.fullmatch(digest) and created is not None and ID_RE.fullmatch(name):
            out[name] = {"role": data["role"], "hash": digest, "created": created}
    return out


def _work_view(item: WorkItem) -> dict[str, Any]:
    """A work item as shown: what, for which node, where, why (reasons may quote an error: redacted)."""
    return {"id": item.entry_id, "op": item.op, "domain": item.domain, "node": item.node_id, "site": item.site,
            "reason": redact_text(item.reason)[:300]}
