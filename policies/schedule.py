"""Scheduled minimum sizes per weekly time window, combined with a queue-depth target."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from policies import primary
from policies.common import ceil_, check_number
from pool.core.model import Decision, DomainView, Reading

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WINDOW_KEYS = ("days", "start", "end", "min")


@dataclass(frozen=True)
class Window:
    """One parsed window: weekdays (0 = Monday) and minutes of the day ``[start, end)``."""

    days: frozenset[int]
    start: int
    end: int
    min: int

    def covers(self, weekday: int, minute: int) -> bool:
        if self.start < self.end:
            return weekday in self.days and self.start <= minute < self.end
        # overnight window: from start on one of its days until end on the next day
        return (weekday in self.days and minute >= self.start) or (
            (weekday - 1) % 7 in self.days and minute < self.end
        )


def _parse_days(spec: Any, where: str) -> frozenset[int]:
    parts = spec if isinstance(spec, (list, tuple)) else str(spec).split(",")
    days: set[int] = set()
    for part in (str(p).strip().lower() for p in parts):
        if part in ("*", "daily", "all"):
            days.update(range(7))
            continue
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(
                f"{where}: days {spec!r}: expected names {', '.join(DAYS)}, ranges like "
                f"'mon-fri', lists like 'sat,sun', or '*'"
            )
        a, b = DAYS.index(first), DAYS.index(last or first)
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days)


def _parse_time(text: Any, where: str) -> int:
    try:
        hours, minutes = (int(x) for x in str(text).split(":"))
    except ValueError:
        hours, minutes = -1, 0
    if not (0 <= hours <= 24 and 0 <= minutes < 60 and hours * 60 + minutes <= 1440):
        raise ValueError(f"{where}: time {text!r}: expected 'HH:MM' between 00:00 and 24:00")
    return hours * 60 + minutes


def parse_windows(windows: Sequence[Mapping[str, Any]]) -> tuple[Window, ...]:
    """Validate the ``windows`` parameter; every error names the window and the field."""
    if not isinstance(windows, (list, tuple)):
        raise ValueError(
            f"windows must be a list of {{days, start, end, min}} mappings, got {windows!r}"
        )
    parsed = []
    for i, w in enumerate(windows):
        where = f"windows[{i}]"
        if not isinstance(w, Mapping) or set(w) != set(WINDOW_KEYS):
            raise ValueError(
                f"{where}: expected exactly the keys {', '.join(WINDOW_KEYS)}, got {w!r}"
            )
        start, end = _parse_time(w["start"], where), _parse_time(w["end"], where)
        if start == 1440:
            raise ValueError(
                f"{where}: start 24:00 is the next day's 00:00; write 00:00 and the next day"
            )
        if start == end:
            raise ValueError(
                f"{where}: start and end are both {w['start']!r}; use 00:00-24:00 for a whole day"
            )
        if isinstance(w["min"], bool) or not isinstance(w["min"], int) or w["min"] < 0:
            raise ValueError(f"{where}: min must be a whole number >= 0, got {w['min']!r}")
        parsed.append(Window(_parse_days(w["days"], where), start, end % 1440 or 1440, w["min"]))
    return tuple(parsed)


@dataclass(frozen=True)
class Schedule:
    """``target = max(scheduled minimum, ceil(backlog / tasks_per_worker))``.

    A cron-like floor for known busy hours (office hours, nightly batches), with a queue-depth
    target on top so unexpected load is still served. The time of day comes only from ``now``
    (epoch seconds) shifted by ``utc_offset_hours``; no clock is read and no time zone database
    is used, so daylight-saving changes mean changing the offset. A window whose end is before
    its start runs overnight into the next day (``22:00``-``06:00`` on ``fri`` covers Friday
    night until Saturday 06:00). Where windows overlap the largest ``min`` wins; outside every
    window the scheduled minimum is 0 (the domain's own ``min`` still applies).

    Parameters:
        windows: list of ``{days, start, end, min}``: ``days`` like ``mon-fri``, ``sat,sun``,
            ``*`` or a list of day names; ``start``/``end`` as ``HH:MM`` (``end`` may be
            ``24:00``); ``min`` the floor in workers while the window is open.
        utc_offset_hours: local time = UTC + this many hours (-14 to 14; may be fractional).
        tasks_per_worker: backlog one worker is meant to absorb for the queue-depth part (> 0).
        sensor: which reading is the backlog (default: the first).
    """

    windows: Sequence[Mapping[str, Any]] = ()
    utc_offset_hours: float = 0.0
    tasks_per_worker: float = 1.0
    sensor: str | None = None
    parsed: tuple[Window, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_number("utc_offset_hours", self.utc_offset_hours, at_least=-14, at_most=14)
        check_number("tasks_per_worker", self.tasks_per_worker, above=0)
        object.__setattr__(self, "parsed", parse_windows(self.windows))

    def scheduled_min(self, now: float) -> int:
        local = dt.datetime.fromtimestamp(now, dt.UTC) + dt.timedelta(hours=self.utc_offset_hours)
        weekday, minute = local.weekday(), local.hour * 60 + local.minute
        return max((w.min for w in self.parsed if w.covers(weekday, minute)), default=0)

    def decide(self, view: DomainView, readings: Mapping[str, Reading], now: float) -> Decision:
        floor = self.scheduled_min(now)
        reading = primary(readings, self.sensor)
        if reading is None or not reading.ok or reading.value is None:
            target = max(floor, view.intended)
            return Decision(
                target,
                f"no backlog reading: hold {view.intended}, scheduled min {floor} -> {target}",
                {"scheduled_min": floor},
            )
        backlog = max(0.0, reading.value)
        demand = ceil_(backlog / self.tasks_per_worker)
        target = max(floor, demand)
        return Decision(
            target,
            f"scheduled min {floor}, backlog {backlog:g} / {self.tasks_per_worker:g} per worker"
            f" = {demand} -> {target}",
            {"scheduled_min": floor, "backlog": backlog},
            activation=demand >= target,  # a scheduled minimum above the demand is no queue reading
        )
