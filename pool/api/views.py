"""What the API shows of the store: domain summaries, nodes, managers and the work queue, as JSON-ready
values with secrets masked and every number finite (anything read back from Redis is untrusted).

:class:`SummaryCache` shares one read of every domain's summary between the requests and event streams
that arrive within a fraction of a second of each other. Imports ``pool.core`` and ``pool.state``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from typing import Any, Iterable

from pool.core.model import LIVE_STATES, DomainSpec, DomainState, NodeRecord, NodeState
from pool.core.secrets import redact, redact_text
from pool.state.store import Marks, Store

S = NodeState

#: the fields of a summary whose change the event stream announces
WATCHED = ("intended", "actual", "paused", "override", "deleting")


def finite(value: Any) -> float | None:
    """A finite float, or ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def clean(value: Any, depth: int = 0) -> Any:
    """A JSON-ready copy: secrets masked, non-finite numbers as ``None``, nesting bounded."""
    if depth > 20:
        return None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean(v, depth + 1) for k, v in redact(value).items()}
    if isinstance(value, (list, tuple)):
        return [clean(v, depth + 1) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def summary(spec: DomainSpec, state: DomainState, records: Iterable[NodeRecord], marks: Marks) -> dict[str, Any]:
    """A domain at a glance (the ``DomainSummary`` of the API)."""
    counts: Counter[str] = Counter()
    actual = 0
    for rec in records:
        counts[rec.state.value] += 1
        actual += rec.state in LIVE_STATES
    reading = state.readings.get(spec.sensor.name) or next(iter(state.readings.values()), {})
    error = reading.get("error")
    last = state.last_decision or {}
    return {
        "name": spec.name, "workload": spec.deployable_type, "policy": spec.policy.name,
        "min": spec.min, "max": spec.max, "intended": int(state.intended), "actual": actual,
        "override": state.override, "paused": spec.name in marks.paused, "paused_by": marks.paused_by(spec.name),
        "deleting": spec.name in marks.deleting, "nodes": dict(counts),
        "reading": {"value": finite(reading.get("value")), "error": redact_text(str(error))[:300] if error else None,
                    "time": finite(reading.get("time"))},
        "updated": finite(last.get("time")) or 0.0,
    }


def detail(spec: DomainSpec, state: DomainState, records: Iterable[NodeRecord], marks: Marks) -> dict[str, Any]:
    """A summary with the spec (secrets masked) and the manager's last decision."""
    return with_detail(summary(spec, state, records, marks), spec, state)


#: specs as shown, by the id of the spec object the store keeps while its stored text is unchanged
_shown_specs: dict[int, tuple[DomainSpec, dict[str, Any]]] = {}


def shown_spec(spec: DomainSpec) -> dict[str, Any]:
    """The spec as JSON with secrets masked; worked out once per spec the store parsed."""
    hit = _shown_specs.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1]
    if len(_shown_specs) > 10_000:
        _shown_specs.clear()
    shown = clean(json.loads(spec.model_dump_json()))
    _shown_specs[id(spec)] = (spec, shown)
    return shown


def with_detail(base: dict[str, Any], spec: DomainSpec, state: DomainState) -> dict[str, Any]:
    """``base`` (a summary) with the spec (secrets masked) and the manager's last decision."""
    return {**base, "spec": shown_spec(spec),
            "last_decision": clean(state.last_decision) if state.last_decision else None}


def read_summary(store: Store, name: str, *, full: bool = False) -> dict[str, Any] | None:
    """One domain's summary (or detail) read now; ``None`` if there is no such domain."""
    spec = store.get_domain(name)
    if spec is None:
        return None
    make = detail if full else summary
    return make(spec, store.get_state(name), store.nodes(name), store.marks())


def read_summaries(store: Store) -> list[dict[str, Any]]:
    """Every domain's summary, by name."""
    marks = store.marks()
    return [summary(spec, store.get_state(spec.name), store.nodes(spec.name), marks) for spec in store.domains()]


class SummaryCache:
    """Every domain's summary, read at most once per ``max_age`` whoever asks. One reader at a time:
    callers that arrive while it reads get the previous read at once (unless a change made it invalid:
    then they wait for the new one)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._at = -math.inf
        self._value: list[dict[str, Any]] = []
        self._body: bytes = b""
        self._valid = False  # False until the first read, and after a change
        self._changes = 0  # changes made (a read that saw fewer is not fresh)
        self._index: tuple[list[dict[str, Any]], dict[str, dict[str, Any]]] = ([], {})

    def get(self, max_age: float) -> list[dict[str, Any]]:
        return self._read(max_age)[0]

    def by_name(self, max_age: float) -> dict[str, dict[str, Any]]:
        """The same read, by domain name (indexed once per read)."""
        value = self._read(max_age)[0]
        index = self._index
        if index[0] is not value:
            index = self._index = (value, {s["name"]: s for s in value})
        return index[1]

    def body(self, max_age: float) -> bytes:
        """``{"domains": [...]}`` as JSON, rendered once per read."""
        return self._read(max_age)[1]

    def _read(self, max_age: float) -> tuple[list[dict[str, Any]], bytes]:
        asked = time.monotonic()
        if self._at >= asked - max_age:
            return self._value, self._body
        if self._valid:
            if not self._lock.acquire(blocking=False):
                return self._value, self._body  # being read again: the last read, a moment old
        else:
            self._lock.acquire()
        try:
            if self._at < asked - max_age:
                started, changes = time.monotonic(), self._changes
                value = read_summaries(self.store)
                body = json.dumps({"domains": value}, separators=(",", ":"), allow_nan=False).encode()
                self._value, self._body = value, body
                if changes == self._changes:  # no change while it read: fresh, and valid
                    self._at, self._valid = started, True
            return self._value, self._body
        finally:
            self._lock.release()

    def invalidate(self) -> None:
        """A change was made: the next caller reads anew, and callers meanwhile wait for that read."""
        self._changes += 1
        self._valid = False
        self._at = -math.inf


def node_view(rec: NodeRecord, *, active: int | None, endpoint: str | None) -> dict[str, Any]:
    """One node as the API lists it."""
    working = rec.state in (S.JOINED, S.DRAINING)
    return {"id": rec.node_id, "name": rec.name, "state": rec.state.value, "site": rec.site,
            "created": finite(rec.created) or 0.0, "joined": finite(rec.entered(S.JOINED)),
            "busy": (active > 0) if working and active is not None else None, "endpoint": endpoint}


def managers_view(store: Store) -> list[dict[str, Any]]:
    """Registered managers with the leader roles each holds now."""
    try:
        holders = store.leases(holder="-").holders()
    except (AttributeError, ValueError, TypeError):  # no leases in this store, or a malformed one
        holders = {}
    out = []
    for mid, info in sorted(store.managers().items()):
        pid = info.get("pid")
        out.append({"id": redact_text(str(mid)), "host": redact_text(str(info["host"]))[:255] if info.get("host") else None,
                    "pid": pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
                    "started": finite(info.get("started")), "seen": finite(info.get("seen")),
                    "roles": sorted(role for role, h in holders.items() if h.get("holder") == mid)})
    return out
