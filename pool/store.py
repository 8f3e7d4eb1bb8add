"""Control-plane state in Redis: domains, nodes, heartbeats and a bounded event log per domain."""

from __future__ import annotations

import json
import time
from typing import Any, Iterable

import redis

from pool.model import DomainSpec, DomainState, Heartbeat, NodeRecord

EVENT_LOG_LENGTH = 2000


class Store:
    """All keys live under ``{namespace}:``; per-domain keys under ``{namespace}:d:{domain}:``."""

    def __init__(self, client: redis.Redis, *, namespace: str = "ep") -> None:
        self.r = client
        self.ns = namespace

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
        self.r.set(self._d(domain, "state"), state.to_json())

    def set_override(self, domain: str, size: int | None) -> None:
        """The operator's manual size (``None`` hands the domain back to its policy)."""
        if size is None:
            self.r.delete(self._d(domain, "override"))
        else:
            self.r.set(self._d(domain, "override"), str(size))

    # -- nodes ------------------------------------------------------------------------
    def nodes(self, domain: str) -> list[NodeRecord]:
        raw = self.r.hgetall(self._d(domain, "nodes"))
        return sorted((NodeRecord.from_json(v) for v in raw.values()), key=lambda n: n.created)

    def put_nodes(self, records: Iterable[NodeRecord]) -> None:
        pipe = self.r.pipeline(transaction=False)
        n = 0
        for rec in records:
            pipe.hset(self._d(rec.domain, "nodes"), rec.node_id, rec.to_json())
            n += 1
        if n:
            pipe.execute()

    def forget_nodes(self, domain: str, node_ids: Iterable[str]) -> None:
        ids = list(node_ids)
        if not ids:
            return
        pipe = self.r.pipeline(transaction=False)
        pipe.hdel(self._d(domain, "nodes"), *ids)
        pipe.delete(*(self.heartbeat_key(domain, i) for i in ids))
        pipe.execute()

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
                )
        return out

    def beat(self, domain: str, node_id: str, **fields: Any) -> None:
        """An agent's heartbeat: ``time`` plus whatever else it reports."""
        mapping = {k: ("1" if v is True else "0" if v is False else str(v)) for k, v in fields.items()}
        mapping.setdefault("time", repr(time.time()))
        key = self.heartbeat_key(domain, node_id)
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(key, mapping=mapping)
        pipe.expire(key, 24 * 3600)
        pipe.execute()

    # -- events -----------------------------------------------------------------------
    def record(self, domain: str, kind: str, now: float, **data: Any) -> None:
        """Append to the domain's bounded event log."""
        self.r.xadd(
            self._d(domain, "events"),
            {"kind": kind, "time": repr(now), "data": json.dumps(data, default=str)},
            maxlen=EVENT_LOG_LENGTH,
            approximate=True,
        )

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
