"""`pool watch [NAME]`: the dashboard's view in a terminal, live (rich).

Every domain with its intended and actual size, pause and override, the sensor's reading and its
nodes by state; with a NAME, also the reading and the workers over the last hour (sparklines), the
domain's nodes and its decision log with reasons. It reads the store directly, as `pool ls` and
`pool show` do. :func:`observe` is the only I/O (one :class:`Frame` per refresh); :func:`render`
turns a frame into rich renderables and is pure. Everything read back from Redis is shown as text
(rich markup escaped, control characters replaced, secrets masked).

Imports click, rich, ``pool.core`` and the store's interface (passed in by ``pool.cli.commands``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pool.core.model import NodeState
from pool.core.secrets import redact, redact_text

#: States whose machine is wanted and counted in the actual size (as `pool ls` counts).
LIVE = ("REQUESTED", "PENDING", "STARTED", "JOINED")
#: How far back the sparklines reach (seconds).
WINDOW = 3600.0
#: Events in the decision log.
EVENTS_SHOWN = 12
#: Events read per domain to fill it (node moves, shown in the nodes table instead, left out).
EVENTS_READ = 100
#: Longest text of one cell.
CELL_MAX = 160
#: Characters of a sparkline.
SPARK_WIDTH = 60
_BARS = "▁▂▃▄▅▆▇█"
_STATE_STYLE = {"JOINED": "green", "STARTED": "cyan", "PENDING": "cyan", "REQUESTED": "cyan",
                "DRAINING": "yellow", "TERMINATING": "yellow", "UNHEALTHY": "red", "FAILED": "red",
                "TERMINATED": "dim"}


def clean(value: Any, limit: int = CELL_MAX) -> str:
    """A value from the store as one line of plain text: secrets masked, control characters as ``?``."""
    text = redact_text(str(value))
    text = "".join(ch if ch.isprintable() else "?" for ch in " ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class Point:
    """One moment of a domain's history: the sensor's value and the sizes then."""

    time: float
    value: float | None
    intended: int | None
    actual: int | None


@dataclass(frozen=True)
class Watched:
    """One domain as the watch shows it."""

    name: str
    workload: str
    policy: str
    min: int
    max: int
    intended: int
    actual: int
    override: int | None
    paused_by: str | None  # who paused the domain (None: not paused)
    nodes: dict[str, int]
    value: float | None
    error: str | None


@dataclass(frozen=True)
class Frame:
    """What one refresh read: every domain; for the focused one its history, nodes and events."""

    now: float
    domains: list[Watched]
    focus: str | None = None
    points: list[Point] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------------------
# reading the store (I/O)
# ---------------------------------------------------------------------------


def watched(store: Any, spec: Any, paused_by: str | None) -> Watched:
    """A domain's card: sizes, pause, reading and nodes by state, from its spec, state and records."""
    st = store.get_state(spec.name)
    counts: dict[str, int] = {}
    for n in store.nodes(spec.name):
        counts[n.state.value] = counts.get(n.state.value, 0) + 1
    reading: dict[str, Any] = next(iter(st.readings.values()), {})
    error = reading.get("error")
    return Watched(name=spec.name, workload=spec.deployable_type, policy=spec.policy.name, min=spec.min,
                   max=spec.max, intended=st.intended, actual=sum(counts.get(s, 0) for s in LIVE),
                   override=st.override, paused_by=paused_by, nodes=counts,
                   value=_finite(reading.get("value")), error=None if error is None else str(error))


def history(store: Any, name: str, since: float) -> list[Point]:
    """The domain's reading and sizes since ``since``, oldest first: the readings history the manager
    keeps, or, where it has none yet (a manager of an earlier version), the decision events (each
    says the value, the target and the actual size)."""
    kept = [p for p in (_point(r, "intended") for r in store.readings(name, since)) if p is not None]
    if kept:
        return sorted((p for p in kept if p.time >= since), key=lambda p: p.time)
    found = store.events(name, 2000, kind="decision")
    return sorted((p for p in (_point(e, "target") for e in found) if p is not None and p.time >= since),
                  key=lambda p: p.time)


def _point(raw: Any, intended_key: str) -> Point | None:
    if not isinstance(raw, dict):
        return None
    when = _finite(raw.get("time"))
    if when is None:
        return None
    intended, actual = _finite(raw.get(intended_key)), _finite(raw.get("actual"))
    return Point(time=when, value=_finite(raw.get("value")), intended=None if intended is None else int(intended),
                 actual=None if actual is None else int(actual))


def node_rows(store: Any, name: str, now: float, *, ended_shown: float = 300.0) -> list[dict[str, Any]]:
    """The domain's nodes in lifecycle order (those that ended more than ``ended_shown`` ago left out)."""
    order = {s: i for i, s in enumerate(NodeState)}
    found = [n for n in store.nodes(name) if n.state != NodeState.TERMINATED or now - n.since <= ended_shown]
    found.sort(key=lambda n: (order[n.state], n.created))
    return [{"id": n.node_id, "state": n.state.value, "site": n.site, "since": n.since} for n in found]


def _log(store: Any, name: str) -> list[dict[str, Any]]:
    """The domain's newest events but its nodes' moves (the nodes table shows where they are)."""
    return [e for e in store.events(name, EVENTS_READ) if e.get("kind") != "node"][:EVENTS_SHOWN]


def observe(store: Any, focus: str | None, now: float) -> Frame:
    """One refresh: every domain, and for ``focus`` (a domain's name) its history, nodes and events."""
    marks = store.marks()
    domains = [watched(store, spec, marks.paused_by(spec.name)) for spec in store.domains()]
    domains.sort(key=lambda w: w.name)
    if focus is None:
        events: list[dict[str, Any]] = []
        for w in domains[:50]:
            events += [{**e, "domain": w.name} for e in _log(store, w.name)]
        events.sort(key=lambda e: -(_finite(e.get("time")) or 0.0))
        return Frame(now=now, domains=domains, events=redact(events[:EVENTS_SHOWN]))
    points = history(store, focus, now - WINDOW)
    points += [Point(time=now, value=w.value, intended=w.intended, actual=w.actual) for w in domains if w.name == focus]
    return Frame(now=now, domains=domains, focus=focus, points=points,
                 nodes=node_rows(store, focus, now), events=redact(_log(store, focus)))


# ---------------------------------------------------------------------------
# drawing (pure)
# ---------------------------------------------------------------------------


def sparkline(points: Sequence[tuple[float, float | None]], *, start: float, end: float,
              width: int = SPARK_WIDTH) -> tuple[str, float | None, float | None]:
    """``(line, low, high)``: the series as ``width`` bars over ``[start, end]``, each bar the last
    value seen by then (carried forward; blank before the first), scaled between the lowest and the
    highest value shown."""
    if width <= 0 or end <= start:
        return "", None, None
    cells: list[float | None] = []
    series = sorted((t, v) for t, v in points if v is not None)
    i, last = 0, None
    for k in range(width):
        edge = start + (end - start) * (k + 1) / width
        while i < len(series) and series[i][0] <= edge:
            last = series[i][1]
            i += 1
        cells.append(last)
    seen = [c for c in cells if c is not None]
    if not seen:
        return " " * width, None, None
    low, high = min(seen), max(seen)
    span = high - low
    bars = [" " if c is None else _BARS[0 if span == 0 else round((c - low) / span * (len(_BARS) - 1))]
            for c in cells]
    return "".join(bars), low, high


def _size(w: Watched) -> Text:
    text = Text(f"{w.intended}", style="bold")
    text.append(f" / {w.actual}")
    return text


def _mode(w: Watched) -> Text:
    if w.paused_by is not None:
        return Text(f"paused by {clean(w.paused_by, 40)}", style="yellow")
    return Text("auto" if w.override is None else f"override {w.override}")


def _reading(w: Watched) -> Text:
    if w.error:
        return Text(f"error: {clean(w.error, 60)}", style="red")
    return Text("-" if w.value is None else f"{w.value:g}")


def _by_state(counts: dict[str, int]) -> Text:
    text = Text()
    for state in NodeState:
        n = counts.get(state.value, 0)
        if n:
            if text:
                text.append(" ")
            text.append(f"{state.value.lower()} {n}", style=_STATE_STYLE.get(state.value, ""))
    return text or Text("none", style="dim")


def domains_table(domains: Iterable[Watched]) -> Table:
    """One row per domain: the cards of the dashboard as a table."""
    table = Table(title="domains", title_justify="left", expand=False, show_edge=False, pad_edge=False)
    for header in ("DOMAIN", "WORKLOAD", "POLICY", "INTENDED / ACTUAL", "MIN/MAX", "MODE", "READING", "NODES"):
        table.add_column(header, overflow="fold")
    for w in domains:
        table.add_row(Text(clean(w.name)), Text(clean(w.workload)), Text(clean(w.policy)), _size(w),
                      f"{w.min}/{w.max}", _mode(w), _reading(w), _by_state(w.nodes))
    return table


def _stamp(when: Any) -> str:
    t = _finite(when)
    return time.strftime("%H:%M:%S", time.localtime(t)) if t is not None else "--:--:--"


def event_text(event: dict[str, Any]) -> str:
    """What an event says in one line: a decision's target and reason, else its fields."""
    rest = {k: v for k, v in event.items() if k not in ("id", "time", "kind", "domain", "by")}
    if event.get("kind") == "decision":
        said = f"target {rest.get('target')} (actual {rest.get('actual')}): {rest.get('reason', '')}"
    else:
        said = " ".join(f"{k}={v}" for k, v in rest.items() if k not in ("inputs", "history"))
    if event.get("by") is not None:
        said += f" [by {event['by']}]"
    return clean(said, 400)


def events_table(events: Iterable[dict[str, Any]], *, with_domain: bool) -> Table:
    table = Table(title="decision log (newest first)", title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("TIME", no_wrap=True)
    if with_domain:
        table.add_column("DOMAIN", overflow="fold")
    table.add_column("KIND", no_wrap=True)
    table.add_column("WHAT", overflow="fold")
    for e in events:
        kind = clean(e.get("kind", "?"), 32)
        table.add_row(_stamp(e.get("time")), *((Text(clean(e.get("domain", ""))),) if with_domain else ()),
                      Text(kind, style="bold" if kind == "decision" else ""), Text(event_text(e)))
    return table


def plot(points: Sequence[Point], now: float, width: int) -> Group:
    """The reading and the workers (intended, actual) over the last hour, one sparkline each."""
    start = now - WINDOW
    lines = [Text("last hour", style="bold")]
    for label, series, style in (
        ("reading ", [(p.time, p.value) for p in points], "magenta"),
        ("intended", [(p.time, None if p.intended is None else float(p.intended)) for p in points], "cyan"),
        ("actual  ", [(p.time, None if p.actual is None else float(p.actual)) for p in points], "green"),
    ):
        bars, low, high = sparkline(series, start=start, end=now, width=width)
        line = Text(f"{label} ")
        line.append(bars or "", style=style)
        line.append(" no data" if low is None else f" {low:g}..{high:g}")
        lines.append(line)
    return Group(*lines)


def nodes_table(nodes: Iterable[dict[str, Any]], now: float) -> Table:
    table = Table(title="nodes", title_justify="left", show_edge=False, pad_edge=False)
    for header in ("NODE", "STATE", "SITE", "FOR"):
        table.add_column(header, overflow="fold")
    for n in nodes:
        since = _finite(n.get("since"))
        table.add_row(Text(clean(n.get("id"))), Text(clean(n.get("state")), style=_STATE_STYLE.get(n.get("state", ""), "")),
                      Text(clean(n.get("site"))), "-" if since is None else f"{max(0, int(now - since))}s")
    return table


def render(frame: Frame, *, width: int = 100) -> RenderableType:
    """A frame as rich renderables: the domains, then the focused domain's plot and nodes, then the log."""
    head = Text(f"pool watch  {_stamp(frame.now)}  ", style="bold")
    head.append(f"{len(frame.domains)} domain(s)", style="dim")
    parts: list[RenderableType] = [head]
    if frame.focus is None:
        parts.append(domains_table(frame.domains) if frame.domains else
                     Text("no domains (create one with `pool apply -f SPEC.yaml`)"))
        parts.append(events_table(frame.events, with_domain=True))
        return Group(*parts)
    mine = [w for w in frame.domains if w.name == frame.focus]
    if not mine:
        parts.append(Text(f"no domain {clean(frame.focus)!r} (any more)", style="red"))
        return Group(*parts)
    parts.append(domains_table(mine))
    parts.append(plot(frame.points, frame.now, max(10, min(SPARK_WIDTH, width - 30))))
    parts.append(nodes_table(frame.nodes, frame.now) if frame.nodes else Text("no nodes", style="dim"))
    parts.append(events_table(frame.events, with_domain=False))
    return Group(*parts)


# ---------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------


def run(*, observe_frame: Callable[[float], Frame], console: Console, interval: float, count: int | None,
        clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
    """Refresh every ``interval`` seconds: in place on a terminal, else (and with ``count``) one frame
    after another; after ``count`` frames it returns (``None``: until Ctrl-C)."""
    width = console.size.width
    if count is not None or not console.is_terminal:
        shown = 0
        while count is None or shown < count:
            if shown:
                sleep(interval)
                console.rule()
            console.print(render(observe_frame(clock()), width=width), soft_wrap=False)
            shown += 1
        return
    with Live(render(observe_frame(clock()), width=width), console=console, auto_refresh=False,
              screen=False, transient=False) as live:
        while True:
            sleep(interval)
            live.update(render(observe_frame(clock()), width=console.size.width), refresh=True)
