"""Control-plane state in Redis: domains, nodes, heartbeats and a bounded event log per domain."""

from __future__ import annotations

import copy
import json
import time
from collections import deque
from typing import Any, Callable, Iterable

import redis

from pool.model import DomainSpec, DomainState, Heartbeat, NodeRecord
from pool.workqueue import WorkItem

EVENT_LOG_LENGTH = 2000


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
    """

    fence: tuple[tuple[str, int], ...] | None = None

    def __init__(self, client: redis.Redis, *, namespace: str = "ep") -> None:
        self.r = client
        self.ns = namespace
        self._fenced_script: Any = None
        #: per domain, node id -> (its JSON as read, the record parsed from it): unchanged records are not parsed again
        self._parsed: dict[str, dict[str, tuple[str, NodeRecord]]] = {}

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
        return ":".join((self.ns, *parts))

    def _d(self, domain: str, *parts: str) -> str:
        return self._k("d", domain, *parts)

    def heartbeat_key(self, domain: str, node_id: str) -> str:
        return self._d(domain, "hb", node_id)

    # -- domains ----------------------------------------------------------------------
    def put_domain(self, spec: DomainSpec) -> bool:
        """Create or replace a domain spec; True if it was new."""
        return bool(self.r.hset(self._k("domains"), spec.name, spec.model_dump_json()))

    def get_domain(self, name: str) -> DomainSpec | None:
        raw = self.r.hget(self._k("domains"), name)
        return DomainSpec.model_validate_json(raw) if raw else None

    def domains(self) -> list[DomainSpec]:
        raw = self.r.hgetall(self._k("domains"))
        return [DomainSpec.model_validate_json(v) for _, v in sorted(raw.items())]

    def delete_domain(self, name: str) -> None:
        keys = [self._d(name, k) for k in ("state", "override", "nodes", "events")]
        keys += list(self.r.scan_iter(match=self._d(name, "hb", "*"), count=1000))
        pipe = self.r.pipeline()
        pipe.hdel(self._k("domains"), name)
        pipe.delete(*keys)
        pipe.execute()

    def get_state(self, domain: str) -> DomainState:
        raw, override = self.r.mget(self._d(domain, "state"), self._d(domain, "override"))
        state = DomainState.from_json(raw)
        state.override = int(override) if override not in (None, "") else None
        return state

    def put_state(self, domain: str, state: DomainState) -> None:
        """The manager's memory; the operator's override lives in a key of its own."""
        pipe = self.r.pipeline(transaction=False)
        pipe.set(self._d(domain, "state"), state.to_json())
        self._commit(pipe)

    def set_override(self, domain: str, size: int | None) -> None:
        """The operator's manual size (``None`` hands the domain back to its policy)."""
        if size is None:
            self.r.delete(self._d(domain, "override"))
        else:
            self.r.set(self._d(domain, "override"), str(size))

    # -- nodes ------------------------------------------------------------------------
    def nodes(self, domain: str) -> list[NodeRecord]:
        """Every record of the domain, oldest first. Treat them as read-only (as with
        :class:`MemoryStore`): a record whose JSON did not change is the object returned last time."""
        raw = self.r.hgetall(self._d(domain, "nodes"))
        before = self._parsed.get(domain, {})
        parsed: dict[str, tuple[str, NodeRecord]] = {}
        for node_id, text in raw.items():
            hit = before.get(node_id)
            parsed[node_id] = hit if hit is not None and hit[0] == text else (text, NodeRecord.from_json(text))
        self._parsed[domain] = parsed
        return sorted((rec for _, rec in parsed.values()), key=lambda n: n.created)

    def node(self, domain: str, node_id: str) -> NodeRecord | None:
        raw = self.r.hget(self._d(domain, "nodes"), node_id)
        return NodeRecord.from_json(raw) if raw else None

    def put_nodes(self, records: Iterable[NodeRecord], *, work: Iterable[WorkItem] = ()) -> None:
        """Write records, and queue the provisioning work that acts on them in the same commit."""
        pipe = self.r.pipeline(transaction=False)
        n = 0
        for rec in records:
            pipe.hset(self._d(rec.domain, "nodes"), rec.node_id, rec.to_json())
            n += 1
        for item in work:
            pipe.xadd(self._k("work"), item.fields())
            n += 1
        if n:
            self._commit(pipe)

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
                    pipe.execute()
                    return rec
                except redis.WatchError:
                    time.sleep(min(0.2, 0.005 * 2 ** attempt))
        raise RuntimeError(f"node {node_id}: record kept changing; gave up after {attempts} attempts")

    def forget_nodes(self, domain: str, node_ids: Iterable[str]) -> None:
        ids = list(node_ids)
        if not ids:
            return
        pipe = self.r.pipeline(transaction=False)
        pipe.hdel(self._d(domain, "nodes"), *ids)
        pipe.delete(*(self.heartbeat_key(domain, i) for i in ids))
        self._commit(pipe)

    # -- heartbeats (written by agents and by the worker's task signals) -------------------
    def heartbeats(self, domain: str, node_ids: Iterable[str]) -> dict[str, Heartbeat]:
        ids = list(node_ids)
        if not ids:
            return {}
        pipe = self.r.pipeline(transaction=False)
        for i in ids:
            pipe.hgetall(self.heartbeat_key(domain, i))
        out: dict[str, Heartbeat] = {}
        for node_id, raw in zip(ids, pipe.execute()):
            if raw and "time" in raw:
                out[node_id] = Heartbeat(
                    time=float(raw["time"]),
                    ready=raw.get("ready") == "1",
                    active=max(0, int(raw.get("active", 0))),
                    idle_since=float(raw["idle_since"]) if raw.get("idle_since") else None,
                    workload_alive=raw.get("workload_alive", "1") == "1",
                    draining=raw.get("draining") == "1",
                    preempt_notice=float(raw["preempt_notice"]) if raw.get("preempt_notice") else None,
                )
        return out

    def beat(self, domain: str, node_id: str, **fields: Any) -> None:
        """An agent's heartbeat: ``time`` plus whatever else it reports."""
        mapping: dict[str | bytes, str] = {
            k: ("1" if v is True else "0" if v is False else str(v)) for k, v in fields.items()
        }
        mapping.setdefault("time", repr(time.time()))
        key = self.heartbeat_key(domain, node_id)
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(key, mapping=mapping)
        pipe.expire(key, 24 * 3600)
        pipe.execute()

    # -- events -----------------------------------------------------------------------
    def record(self, domain: str, kind: str, now: float, **data: Any) -> None:
        """Append to the domain's bounded event log."""
        pipe = self.r.pipeline(transaction=False)
        pipe.xadd(
            self._d(domain, "events"),
            {"kind": kind, "time": repr(now), "data": json.dumps(data, default=str)},
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
            out.append({"kind": fields["kind"], "time": float(fields["time"]), **json.loads(fields["data"])})
            if len(out) >= count:
                break
        return out

    # -- managers ---------------------------------------------------------------------
    def register_manager(self, manager_id: str, info: dict[str, Any]) -> None:
        self.r.hset(self._k("managers"), manager_id, json.dumps(info))

    def unregister_manager(self, manager_id: str) -> None:
        self.r.hdel(self._k("managers"), manager_id)

    def managers(self) -> dict[str, dict[str, Any]]:
        return {k: json.loads(v) for k, v in self.r.hgetall(self._k("managers")).items()}

    def request_shutdown(self) -> None:
        self.r.set(self._k("control", "shutdown"), repr(time.time()))

    def shutdown_requested(self) -> bool:
        return bool(self.r.exists(self._k("control", "shutdown")))

    def clear_shutdown(self) -> None:
        self.r.delete(self._k("control", "shutdown"))


class MemoryStore(Store):
    """The same store in Python dicts, for the simulator: no Redis, one process, simulated time.

    Public methods match :class:`Store`. Differences: :meth:`beat` needs an explicit ``time=``
    (there is no wall clock in a simulation); node records and domain specs are kept as objects,
    not serialized, so a record returned by :meth:`nodes` is the stored one and must be treated
    as read-only (the manager's ``plan_domain`` works on copies). ``on_record``, when given, sees
    every event as it is recorded, so a caller can count what the bounded log forgets.
    """

    def __init__(self, *, namespace: str = "ep", event_log_length: int = EVENT_LOG_LENGTH,
                 on_record: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.ns = namespace
        self.event_log_length = event_log_length
        self.on_record = on_record
        self._domains: dict[str, DomainSpec] = {}
        self._states: dict[str, DomainState] = {}
        self._overrides: dict[str, int] = {}
        self._nodes: dict[str, dict[str, NodeRecord]] = {}
        self._ordered: dict[str, bool] = {}  # False once a record arrives out of creation order
        self._last_created: dict[str, float] = {}
        self._hb: dict[str, dict[str, Heartbeat]] = {}
        self._events: dict[str, deque[dict[str, Any]]] = {}
        self._managers: dict[str, dict[str, Any]] = {}
        self._shutdown: float | None = None

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

    def delete_domain(self, name: str) -> None:
        tables: list[dict[str, Any]] = [self._domains, self._states, self._overrides, self._nodes,
                                        self._ordered, self._last_created, self._hb, self._events]
        for table in tables:
            table.pop(name, None)

    def get_state(self, domain: str) -> DomainState:
        stored = self._states.get(domain)
        state = DomainState() if stored is None else copy.copy(stored)
        state.recent = list(state.recent)
        state.override = self._overrides.get(domain)
        return state

    def put_state(self, domain: str, state: DomainState) -> None:
        self._states[domain] = state

    def set_override(self, domain: str, size: int | None) -> None:
        if size is None:
            self._overrides.pop(domain, None)
        else:
            self._overrides[domain] = int(size)

    # -- nodes ------------------------------------------------------------------------
    def nodes(self, domain: str) -> list[NodeRecord]:
        records = list(self._nodes.get(domain, {}).values())
        if not self._ordered.get(domain, True):
            records.sort(key=lambda n: n.created)
        return records

    def node(self, domain: str, node_id: str) -> NodeRecord | None:
        return self._nodes.get(domain, {}).get(node_id)

    def put_nodes(self, records: Iterable[NodeRecord], *, work: Iterable[WorkItem] = ()) -> None:
        if list(work):
            raise ValueError("the in-memory store has no work queue: run provisioning inline")
        for rec in records:
            table = self._nodes.setdefault(rec.domain, {})
            if rec.node_id not in table:
                if rec.created < self._last_created.get(rec.domain, float("-inf")):
                    self._ordered[rec.domain] = False
                self._last_created[rec.domain] = max(rec.created, self._last_created.get(rec.domain, rec.created))
            table[rec.node_id] = rec

    def forget_nodes(self, domain: str, node_ids: Iterable[str]) -> None:
        table = self._nodes.get(domain, {})
        hbs = self._hb.get(domain, {})
        for node_id in node_ids:
            table.pop(node_id, None)
            hbs.pop(node_id, None)

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
                                     draining=prev.draining, preempt_notice=prev.preempt_notice)
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
        )

    # -- events -----------------------------------------------------------------------
    def record(self, domain: str, kind: str, now: float, **data: Any) -> None:
        log = self._events.get(domain)
        if log is None:
            log = self._events[domain] = deque(maxlen=self.event_log_length)
        event = {"kind": kind, "time": float(now), **data}
        log.append(event)
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

    # -- managers ---------------------------------------------------------------------
    def register_manager(self, manager_id: str, info: dict[str, Any]) -> None:
        self._managers[manager_id] = dict(info)

    def unregister_manager(self, manager_id: str) -> None:
        self._managers.pop(manager_id, None)

    def managers(self) -> dict[str, dict[str, Any]]:
        return {k: dict(v) for k, v in self._managers.items()}

    def request_shutdown(self) -> None:
        self._shutdown = 0.0

    def shutdown_requested(self) -> bool:
        return self._shutdown is not None

    def clear_shutdown(self) -> None:
        self._shutdown = None


_NO_BEAT = Heartbeat(0.0)


def _flag(value: Any, default: bool) -> bool:
    """A heartbeat flag as an agent writes it (True, 1 or "1") or as Redis returns it."""
    if value is None or value == "":
        return default
    if isinstance(value, str):
        return value == "1" or value.lower() == "true"
    return bool(value)
