"""Shaping the manager applies to every policy's target: bounds, activation, ramp, stabilization."""

from __future__ import annotations

from typing import Sequence

from pool.core.model import Decision, DomainView, ScalingSpec


def shape(
    raw: Decision,
    *,
    view: DomainView,
    scaling: ScalingSpec,
    value: float | None,
    recent: Sequence[tuple[float, int]],
    now: float,
) -> Decision:
    """Turn a policy's raw target into the intended size.

    ``recent`` holds ``(time, bounded raw target)`` pairs of earlier ticks (oldest first); the
    scale-down stabilization window keeps the highest of them seen within ``scaling.stabilization``
    seconds, as Kubernetes' HPA does. Pure: the same inputs give the same answer.
    """
    steps: list[str] = [raw.reason]
    target = max(view.min_size, min(view.max_size, raw.target))
    if target != raw.target:
        steps.append(f"bounded to [{view.min_size}, {view.max_size}] -> {target}")

    if raw.activation and view.actual == 0 and target > 0 and view.min_size == 0 and value is not None:
        if value <= scaling.activation:
            steps.append(f"value {value:g} <= activation {scaling.activation:g}: stay at 0")
            target = 0

    if target < view.actual and scaling.stabilization > 0:
        window = [t for (when, t) in recent if now - when <= scaling.stabilization]
        highest = max(window, default=target)
        if highest > target:
            held = min(highest, view.actual)
            if held > target:
                steps.append(f"stabilization {scaling.stabilization:g}s holds {held}")
                target = held

    if target > view.actual:
        room = target - view.actual
        if scaling.scale_up_limit:
            room = min(room, scaling.scale_up_limit)
        if scaling.max_in_flight:
            room = min(room, max(0, scaling.max_in_flight - view.booting))
        if view.actual + room < target:
            steps.append(f"ramp limit: +{room} this tick")
            target = view.actual + room

    return Decision(target, "; ".join(steps), dict(raw.inputs))
