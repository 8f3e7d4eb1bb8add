"""The live event stream (`GET /events/stream`, server-sent events).

Each client's stream waits on every domain's event log at once (XREAD, blocking a short time, in a
worker thread), and sends each event as ``event: KIND`` with its JSON (``domain`` included); after each
wait it compares every domain's summary with what it last sent and sends ``event: summary`` for those
whose intended or actual size, pause, override or deletion changed (all of them when it starts); a
``: keepalive`` comment goes out when nothing else did for a while. A domain that appears is read
from the stream's start; one that went away is read a few seconds more (its ``deleted`` event).

Imports ``pool.api.views`` and ``pool.state``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any, AsyncIterator

import redis
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from pool.api import views
from pool.state.store import Store

log = logging.getLogger("elastic_pool.api")

#: seconds a domain that went away is still read (for the events recorded as it went)
GONE_READ = 5.0
_KIND_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def sse(kind: str, data: dict[str, Any]) -> str:
    """One server-sent event (the kind checked: anything read back from Redis is untrusted)."""
    name = kind if _KIND_RE.fullmatch(kind) else "event"
    return f"event: {name}\ndata: {json.dumps(views.clean(data), separators=(',', ':'))}\n\n"


def _summaries(cache: views.SummaryCache, max_age: float, last: dict[str, tuple[Any, ...]]) -> list[str]:
    """The ``summary`` events of the domains whose watched fields changed since ``last`` (updated)."""
    out = []
    current = cache.get(max_age)
    for summary in current:
        key = tuple(summary[f] for f in views.WATCHED)
        if last.get(summary["name"]) != key:
            last[summary["name"]] = key
            out.append(sse("summary", summary))
    names = {s["name"] for s in current}
    for gone in [n for n in last if n not in names]:
        del last[gone]
    return out


def _follow(store: Store, positions: dict[str, str], gone: dict[str, float], names: set[str], start: str,
            now: float) -> None:
    """Positions for domains that appeared (from the stream's start); domains gone for a while dropped."""
    for name in names:
        gone.pop(name, None)
        positions.setdefault(name, start)
    for name in [n for n in positions if n not in names]:
        if now - gone.setdefault(name, now) > GONE_READ:
            del positions[name]
            del gone[name]


async def event_stream(request: Request) -> AsyncIterator[str]:
    """The stream of one client, until it goes away or the server stops."""
    app = request.app
    store: Store = app.state.store
    cache: views.SummaryCache = app.state.summaries
    poll, keepalive, stopping = float(app.state.poll), float(app.state.keepalive), app.state.stopping
    start = f"{int(time.time() * 1000)}-0"
    last: dict[str, tuple[Any, ...]] = {}
    gone: dict[str, float] = {}
    positions = await run_in_threadpool(lambda: store.event_positions(s.name for s in store.domains()))
    yield ": connected\n\n" + "".join(await run_in_threadpool(_summaries, cache, 0.0, last))
    said = time.monotonic()
    while not stopping.is_set():
        out: list[str] = []
        try:
            events = await run_in_threadpool(lambda: store.read_events(positions, block=poll))
            out += [sse(str(e.get("kind", "")), e) for e in events]
            out += await run_in_threadpool(_summaries, cache, min(0.25, poll / 2), last)
            _follow(store, positions, gone, set(last), start, time.monotonic())
        except redis.RedisError as exc:
            log.warning("event stream: the store failed: %s", exc)
            out.append(": store unavailable\n\n")
            await asyncio.sleep(poll)
        if not out and time.monotonic() - said >= keepalive:
            out.append(": keepalive\n\n")
        if out:
            said = time.monotonic()
            yield "".join(out)
        if not positions:
            await asyncio.sleep(poll)  # no domain: nothing to wait on in the store
