"""The durable control queue: launch and terminate work that any manager's provisioner workers take."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Iterable, Protocol

import redis

from pool.core.model import ID_RE, PROVIDER_ID_RE

log = logging.getLogger("elastic_pool.workqueue")

GROUP = "provisioners"
#: Work left un-acknowledged this long by a worker (it died, or its manager was killed) is taken
#: over by another worker. A live worker that holds an item (waiting out a site's backoff)
#: touches it well before that.
RECLAIM_AFTER = 30.0


@dataclass(frozen=True)
class WorkItem:
    """One provisioning action, decided by the decider or the doctor and carried out by any worker."""

    op: str  # "launch" | "terminate"
    domain: str
    node_id: str
    launch_id: str = ""
    grace: float = 0.0
    reason: str = ""
    #: for a zombie (a machine no record knows): the site's id and the site
    provider_id: str | None = None
    site: str = ""
    #: the stream entry this item was read from ("" before it is queued)
    entry_id: str = ""
    #: how many times a worker took it (1 on first delivery)
    deliveries: int = 1

    def fields(self) -> dict[str, str]:
        data = asdict(self)
        data.pop("entry_id")
        data.pop("deliveries")
        return {"item": json.dumps(data)}

    @classmethod
    def from_entry(cls, entry_id: str, fields: dict[str, str], deliveries: int = 1) -> WorkItem:
        """The item of a stream entry, every field checked; :class:`InvalidWorkItem` if it is not one
        the pool could have queued (anything in Redis is untrusted input)."""
        try:
            data = json.loads(fields.get("item", ""))
        except (ValueError, RecursionError):
            raise InvalidWorkItem("work item: not JSON") from None
        return cls(**_checked_item(data), entry_id=entry_id, deliveries=deliveries)


class InvalidWorkItem(ValueError):
    """A stream entry that is not a work item the pool wrote: acknowledged and dropped, never acted on."""


_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _checked_item(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict) or set(data) - _ITEM_FIELDS:
        raise InvalidWorkItem("work item: not an object of the work item's fields")
    if data.get("op") not in ("launch", "terminate"):
        raise InvalidWorkItem("work item: op must be launch or terminate")
    if not isinstance(data.get("domain"), str) or not _NAME.fullmatch(data["domain"]):
        raise InvalidWorkItem("work item: domain is not a domain name")
    for name in ("node_id", "site") + (("launch_id",) if data.get("launch_id") else ()):
        value = data.get(name, "")
        if not isinstance(value, str) or not (ID_RE.fullmatch(value) or (name == "site" and value == "")):
            raise InvalidWorkItem(f"work item: {name} is not an id")
    provider_id = data.get("provider_id")
    if provider_id is not None and not (isinstance(provider_id, str) and PROVIDER_ID_RE.fullmatch(provider_id)):
        raise InvalidWorkItem("work item: provider_id is not a machine id")
    grace = data.get("grace", 0.0)
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not 0 <= grace <= 7 * 86400:
        raise InvalidWorkItem("work item: grace must be seconds between 0 and a week")
    reason = data.get("reason", "")
    if not isinstance(reason, str):
        raise InvalidWorkItem("work item: reason must be text")
    return {**data, "grace": float(grace), "reason": reason[:500]}


_ITEM_FIELDS = {f.name for f in fields(WorkItem)} - {"entry_id", "deliveries"}


class QueueLike(Protocol):
    """What the actuator needs of a work queue: :class:`WorkQueue` (Redis) and
    :class:`~pool.state.memqueue.MemoryWorkQueue` (the in-memory store's)."""

    reclaim_after: float

    def put(self, items: Iterable[WorkItem]) -> None: ...

    def take(self, consumer: str, *, count: int = 16, block: float = 1.0) -> list[WorkItem]: ...

    def done(self, items: Iterable[WorkItem]) -> None: ...

    def touch(self, consumer: str, items: Iterable[WorkItem]) -> None: ...

    def give_back(self, items: Iterable[WorkItem]) -> None: ...

    def depth(self) -> dict[str, int]: ...


def entry_order(item: WorkItem) -> tuple[int, int]:
    """Where the item's entry stands in its queue (``ms-seq`` ids of a stream, ``n-0`` in memory): queueing order."""
    head, _, tail = item.entry_id.partition("-")
    try:
        return int(head or 0), int(tail or 0)
    except ValueError:
        return 0, 0


class WorkQueue:
    """A Redis stream with one consumer group: entries stay pending until a worker acknowledges them.

    A worker that dies leaves its entries pending; :meth:`take` claims entries idle longer than
    ``reclaim_after`` before reading new ones, so a restart loses no work. Every action is
    idempotent (launch ids, record state checks), so an item done twice does no harm.
    """

    def __init__(self, client: redis.Redis, *, namespace: str, reclaim_after: float = RECLAIM_AFTER) -> None:
        self.r = client
        self.key = f"{namespace}:work"
        self.reclaim_after = reclaim_after
        self._group_ready = False

    def ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.r.xgroup_create(self.key, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def add_to(self, pipe: Any, items: Iterable[WorkItem]) -> int:
        """Queue ``items`` as part of ``pipe`` (so they commit with the records they act on)."""
        n = 0
        for item in items:
            pipe.xadd(self.key, item.fields())
            n += 1
        return n

    def put(self, items: Iterable[WorkItem]) -> None:
        pipe = self.r.pipeline(transaction=False)
        if self.add_to(pipe, items):
            pipe.execute()

    def take(self, consumer: str, *, count: int = 16, block: float = 1.0) -> list[WorkItem]:
        """Items for ``consumer``: abandoned ones first, then new ones (blocking up to ``block`` s)."""
        self.ensure_group()
        out: list[WorkItem] = []
        try:
            res = self.r.xautoclaim(self.key, GROUP, consumer, min_idle_time=int(self.reclaim_after * 1000),
                                    start_id="0-0", count=count)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._group_ready = False
            self.ensure_group()
            res = [None, []]
        for entry_id, entry in res[1]:
            if entry:  # a deleted entry comes back empty
                self._take(out, entry_id, entry, deliveries=2)
        if out:
            log.info("%s took over %d abandoned work item(s)", consumer, len(out))
            return out
        streams = self.r.xreadgroup(GROUP, consumer, {self.key: ">"}, count=count,
                                    block=max(1, int(block * 1000)) if block > 0 else None)
        for _key, entries in streams or []:
            for entry_id, entry in entries:
                self._take(out, entry_id, entry)
        return out

    def _take(self, out: list[WorkItem], entry_id: str, entry: dict[str, str], deliveries: int = 1) -> None:
        """Append the entry's item to ``out``; an entry that is not a valid item is acknowledged and dropped."""
        try:
            out.append(WorkItem.from_entry(entry_id, entry, deliveries=deliveries))
        except InvalidWorkItem as exc:
            log.error("work queue entry %s refused and dropped: %s", entry_id, exc)
            self.done([WorkItem(op="", domain="", node_id="", entry_id=entry_id)])

    def done(self, items: Iterable[WorkItem]) -> None:
        ids = [i.entry_id for i in items if i.entry_id]
        if ids:
            pipe = self.r.pipeline(transaction=False)
            pipe.xack(self.key, GROUP, *ids)
            pipe.xdel(self.key, *ids)
            pipe.execute()

    def touch(self, consumer: str, items: Iterable[WorkItem]) -> None:
        """Reset the idle time of items ``consumer`` still holds, so nobody takes them over."""
        ids = [i.entry_id for i in items if i.entry_id]
        if ids:
            self.r.xclaim(self.key, GROUP, consumer, min_idle_time=0, message_ids=ids, justid=True)

    def give_back(self, items: Iterable[WorkItem]) -> None:
        """Hand held items to other workers now (a clean shutdown): re-queue, then acknowledge."""
        items = list(items)
        if not items:
            return
        pipe = self.r.pipeline(transaction=True)
        self.add_to(pipe, (replace(i, entry_id="") for i in items))
        ids = [i.entry_id for i in items if i.entry_id]
        if ids:
            pipe.xack(self.key, GROUP, *ids)
            pipe.xdel(self.key, *ids)
        pipe.execute()

    def depth(self) -> dict[str, int]:
        """Entries in the stream and entries taken but not yet done."""
        self.ensure_group()
        pending = self.r.xpending(self.key, GROUP)
        return {"queued": int(self.r.xlen(self.key)), "in_progress": int(pending.get("pending", 0) or 0)}
