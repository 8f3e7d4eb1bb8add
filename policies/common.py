"""Small helpers shared by the policies: parameter checks and float-safe rounding."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: Products of decimal fractions land a hair above whole numbers (0.1 * 30 = 3.0000000000000004);
#: ``ceil_`` forgives that much so such a product is not rounded up to the next worker.
EPSILON = 1e-9


def ceil_(x: float) -> int:
    """``ceil`` that ignores float noise below :data:`EPSILON`."""
    return math.ceil(x - EPSILON)


def check_number(
    name: str,
    value: Any,
    *,
    above: float | None = None,
    at_least: float | None = None,
    at_most: float | None = None,
) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is a real number in the given range."""
    bounds = [
        f"> {above:g}" if above is not None else "",
        f">= {at_least:g}" if at_least is not None else "",
        f"<= {at_most:g}" if at_most is not None else "",
    ]
    wanted = " and ".join(b for b in bounds if b)
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok and (
        (above is not None and value <= above)
        or (at_least is not None and value < at_least)
        or (at_most is not None and value > at_most)
    ):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a number{' ' + wanted if wanted else ''}, got {value!r}")


def check_count(name: str, value: Any, *, at_least: int = 0) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is a whole number >= ``at_least``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < at_least:
        raise ValueError(f"{name} must be a whole number >= {at_least}, got {value!r}")


#: Key naming the policy that wrote a memory; a policy ignores memory another one left behind
#: (the manager keeps memory when a domain's ``policy:`` block changes).
MEMORY_OWNER = "policy"


def recall(memory: Mapping[str, Any], owner: str) -> Mapping[str, Any]:
    """``memory`` if ``owner`` wrote it (see :func:`remember`), else an empty mapping."""
    return memory if memory.get(MEMORY_OWNER) == owner else {}


def remember(owner: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as memory tagged with its ``owner``, for :func:`recall` on the next tick."""
    return {MEMORY_OWNER: owner, **values}


def split_backlog(busy: int, value: float, detail: Mapping[str, float], slots: float) -> tuple[float, float, float]:
    """A backlog reading split into (backlog, ready, running): ``ready`` from the sensor's detail when it
    gives it, else the backlog beyond what the busy workers' slots hold; both within [0, backlog]."""
    backlog = max(0.0, float(value))
    ready = min(backlog, max(0.0, float(detail.get("ready", backlog - busy * slots))))
    return backlog, ready, backlog - ready
