"""The work queue in memory, for the in-memory store: the interface of :class:`~pool.state.workqueue.WorkQueue`
(items are queued by the store's ``put_nodes(..., work=...)``, then ``take``, ``done``, ``touch``,
``give_back``, ``depth``), in one process. Entry ids grow in queueing order, as a stream's do.

Imports ``pool.state.workqueue`` (the item type) and the standard library only.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import replace
from typing import Any, Iterable

from pool.state.workqueue import RECLAIM_AFTER, WorkItem


class MemoryWorkQueue:
    """Queued items in order, and taken ones until a consumer acknowledges them.

    As with the Redis stream: an item taken and neither done nor touched for ``reclaim_after``
    seconds (of the monotonic clock: a thread that died with it) goes to the next consumer that
    takes, before any new item; ``depth`` counts taken items among the queued, as ``XLEN`` does.
    """

    def __init__(self, *, reclaim_after: float = RECLAIM_AFTER) -> None:
        self.reclaim_after = reclaim_after
        self._queued: deque[WorkItem] = deque()
        #: entry id -> (consumer, since, item), oldest ``since`` first (each change moves an entry to the end)
        self._taken: dict[str, tuple[str, float, WorkItem]] = {}
        self._seq = 0
        self._ready = threading.Condition()

    def add_to(self, pipe: Any, items: Iterable[WorkItem]) -> int:
        """Queue ``items`` now (there is no transaction to join in memory: ``pipe`` is not used)."""
        with self._ready:
            n = 0
            for item in items:
                self._seq += 1
                self._queued.append(_stamped(item, f"{self._seq}-0", 1))
                n += 1
            if n:
                self._ready.notify_all()
            return n

    def put(self, items: Iterable[WorkItem]) -> None:
        self.add_to(None, items)

    def take(self, consumer: str, *, count: int = 16, block: float = 1.0) -> list[WorkItem]:
        """Items for ``consumer``: abandoned ones first, then new ones (waiting up to ``block`` s for one)."""
        deadline = time.monotonic() + max(0.0, block)
        with self._ready:
            while True:
                now = time.monotonic()
                out = self._reclaim(consumer, count, now)
                if out:
                    return out
                while self._queued and len(out) < count:
                    item = self._queued.popleft()
                    self._taken[item.entry_id] = (consumer, now, item)
                    out.append(item)
                if out or now >= deadline:
                    return out
                self._ready.wait(deadline - now)

    def _reclaim(self, consumer: str, count: int, now: float) -> list[WorkItem]:
        if not self._taken or self.reclaim_after == float("inf"):
            return []
        expired: list[str] = []
        for entry_id, (_owner, since, _item) in self._taken.items():
            if now - since < self.reclaim_after or len(expired) >= count:
                break  # the rest were taken or touched later
            expired.append(entry_id)
        out: list[WorkItem] = []
        for entry_id in expired:
            item = self._taken.pop(entry_id)[2]
            item = _stamped(item, entry_id, item.deliveries + 1)
            self._taken[entry_id] = (consumer, now, item)
            out.append(item)
        return out

    def done(self, items: Iterable[WorkItem]) -> None:
        ids = {i.entry_id for i in items if i.entry_id}
        if not ids:
            return
        with self._ready:
            for entry_id in ids:
                self._taken.pop(entry_id, None)
            if any(i.entry_id in ids for i in self._queued):  # acknowledged before it was taken
                self._queued = deque(i for i in self._queued if i.entry_id not in ids)

    def touch(self, consumer: str, items: Iterable[WorkItem]) -> None:
        """Reset the idle time of items ``consumer`` still holds, so nobody takes them over."""
        now = time.monotonic()
        with self._ready:
            for item in items:
                held = self._taken.pop(item.entry_id, None)
                if held is not None:
                    self._taken[item.entry_id] = (consumer, now, held[2])

    def give_back(self, items: Iterable[WorkItem]) -> None:
        """Hand held items to other consumers now: queued again (new entries), the old ones dropped."""
        items = list(items)
        if not items:
            return
        self.done(items)
        self.put(replace(i, entry_id="") for i in items)

    def depth(self) -> dict[str, int]:
        """Entries queued or taken (as the stream's length counts them) and entries taken but not yet done."""
        with self._ready:
            return {"queued": len(self._queued) + len(self._taken), "in_progress": len(self._taken)}


def _stamped(item: WorkItem, entry_id: str, deliveries: int) -> WorkItem:
    """``replace(item, entry_id=..., deliveries=...)``, without its cost (one per queued item in a simulation)."""
    new = object.__new__(WorkItem)
    fields = new.__dict__
    fields.update(item.__dict__)
    fields["entry_id"], fields["deliveries"] = entry_id, deliveries
    return new
