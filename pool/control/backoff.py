"""Boot-failure backoff: a domain whose workers keep failing before they join stops launching for a
while, longer each time, and says why (instead of a crash loop of launches).

A boot failure is a node whose workload exited before it joined
(:data:`~pool.control.draft.BOOT_FAILURE`). After one, the domain is degraded: it launches one
worker at a time (a probe), and only once the wait after the last failure has passed, doubling
from :data:`BOOT_BACKOFF_BASE` up to :data:`BOOT_BACKOFF_CAP` with each further failure; a worker
that joins ends the streak. Pure: imports ``pool.core`` and ``pool.control.draft``.
"""

from __future__ import annotations

from pool.control.draft import BOOT_FAILURE, Draft
from pool.core.model import DomainState

#: Seconds launches wait after the first boot failure of a streak; doubled by each further one.
BOOT_BACKOFF_BASE = 5.0
#: The longest wait between launches of a failing domain.
BOOT_BACKOFF_CAP = 300.0


def backoff_wait(failures: int) -> float:
    """Seconds between launches after ``failures`` consecutive boot failures."""
    if failures <= 0:
        return 0.0
    return min(BOOT_BACKOFF_CAP, BOOT_BACKOFF_BASE * 2.0 ** min(failures - 1, 32))


def boot_backoff(state: DomainState, now: float) -> float:
    """Seconds left before the domain may launch again (0: it may)."""
    if state.boot_failures <= 0 or state.boot_failed_at is None:
        return 0.0
    return max(0.0, state.boot_failed_at + backoff_wait(state.boot_failures) - now)


def launches_allowed(state: DomainState, wanted: int, *, booting: int, now: float) -> int:
    """How many of ``wanted`` launches go now: all while no streak runs; during one, a single probe
    once the wait has passed and nothing else boots."""
    if state.boot_failures <= 0:
        return wanted
    return min(wanted, 1) if booting == 0 and boot_backoff(state, now) <= 0 else 0


def note_boot_failures(d: Draft, state: DomainState) -> None:
    """Count this tick's boot failures into ``state`` (a join ends the streak), each with an event
    that says how long launches wait and why the node failed."""
    for kind, data in list(d.events):
        if kind != "node":
            continue
        if data.get("to") == "JOINED":
            state.boot_failures, state.boot_failed_at, state.boot_error = 0, None, ""
        elif data.get("to") == "FAILED" and str(data.get("detail", "")).startswith(BOOT_FAILURE):
            state.boot_failures += 1
            state.boot_failed_at = d.now
            state.boot_error = str(data.get("detail", ""))
            d.events.append(("boot_failure", {"node": data.get("node"), "failures": state.boot_failures,
                                              "launches_wait": backoff_wait(state.boot_failures),
                                              "error": state.boot_error}))
