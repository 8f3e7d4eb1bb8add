"""Threshold rules over a sampled metric with a cooldown: the Nimbus Phantom sensor engine."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from policies import primary
from policies.common import check_count, check_number, recall, remember
from pool.core.model import Decision, DomainView, Reading

#: Sample functions over the values seen in the window.
SAMPLE_FUNCTIONS: dict[str, Callable[[list[float]], float]] = {
    "Average": lambda xs: sum(xs) / len(xs),
    "Sum": sum,
    "Max": max,
}
#: At most this many samples are kept in memory, however short the tick.
MAX_SAMPLES = 1000


@dataclass(frozen=True)
class Threshold:
    """Step the intended size by a fixed count when a sampled metric crosses a threshold.

    Re-implements Phantom's ``SensorEngine`` (Keahey et al., 2012; the ``epu`` decision engine
    ``epu.decisionengine.impls.sensor``): each tick the metric is reduced over the last ``window``
    seconds of samples with ``sample_function``; above ``scale_up_threshold`` the domain grows by
    ``scale_up_n``, below ``scale_down_threshold`` it shrinks by ``scale_down_n``, and a change
    starts a ``cooldown`` during which thresholds trigger nothing. Defaults are those of Phantom's
    example domain (2.0 / +1, 0.5 / -1, 60 s).

    Two bugs of the original are fixed. Its cooldown returned early from ``decide`` and so also
    skipped enforcing min/max and replacing failed VMs, and it stepped from the count of healthy
    VMs, so a dead VM shrank the domain. Here the step starts from the last intended size
    (``view.intended``), so the manager replaces dead workers (they drop out of ``view.actual``
    while the intended size stays), and cooldown gates only threshold-triggered steps. The
    result is kept in ``[min, max]`` at every tick, cooldown or not.

    Memory: ``samples`` (``[time, value]`` pairs inside the window, at most 1000) and
    ``last_action`` (time of the last threshold-triggered change).

    Parameters:
        metric: which reading to sample (default: the first reading).
        sample_function: ``Average``, ``Sum`` or ``Max`` of the samples in the window.
        window: seconds of past samples the function reduces (> 0; default 60).
        scale_up_threshold: grow when the sampled value is above this (default 2.0).
        scale_up_n: workers added per trigger (>= 0; default 1).
        scale_down_threshold: shrink when the sampled value is below this (default 0.5;
            must not exceed ``scale_up_threshold``).
        scale_down_n: workers removed per trigger (>= 0; default 1).
        cooldown: seconds after a triggered change during which thresholds are ignored (>= 0).
        per_worker: divide each sample by the live workers (at least 1) when taken, as Phantom
            averaged a per-VM metric; with a queue-depth sensor this makes it backlog per worker.
    """

    metric: str | None = None
    sample_function: str = "Average"
    window: float = 60.0
    scale_up_threshold: float = 2.0
    scale_up_n: int = 1
    scale_down_threshold: float = 0.5
    scale_down_n: int = 1
    cooldown: float = 60.0
    per_worker: bool = False

    def __post_init__(self) -> None:
        if self.sample_function not in SAMPLE_FUNCTIONS:
            raise ValueError(
                f"sample_function must be one of {', '.join(SAMPLE_FUNCTIONS)}, "
                f"got {self.sample_function!r}"
            )
        check_number("window", self.window, above=0)
        check_number("cooldown", self.cooldown, at_least=0)
        check_number("scale_up_threshold", self.scale_up_threshold)
        check_number("scale_down_threshold", self.scale_down_threshold)
        check_count("scale_up_n", self.scale_up_n)
        check_count("scale_down_n", self.scale_down_n)
        if self.scale_down_threshold > self.scale_up_threshold:
            raise ValueError(
                f"scale_down_threshold ({self.scale_down_threshold}) must not exceed "
                f"scale_up_threshold ({self.scale_up_threshold})"
            )

    def decide(self, view: DomainView, readings: Mapping[str, Reading], now: float) -> Decision:
        mem = recall(view.memory, "threshold")
        samples: list[list[float]] = [
            [float(t), float(v)] for t, v in mem.get("samples", []) if now - t < self.window
        ]
        reading = primary(readings, self.metric)
        if reading is not None and reading.ok and reading.value is not None:
            value = reading.value / max(view.actual, 1) if self.per_worker else reading.value
            samples.append([now, float(value)])
        samples = samples[-MAX_SAMPLES:]
        last_action: float | None = mem.get("last_action")
        inputs: dict[str, Any] = {"samples": len(samples)}

        step, why = 0, "no samples in window"
        if samples:
            stat = SAMPLE_FUNCTIONS[self.sample_function]([v for _, v in samples])
            inputs["sampled"] = stat
            label = f"{self.sample_function} {stat:g} over {self.window:g}s"
            if stat > self.scale_up_threshold:
                step, why = (
                    self.scale_up_n,
                    f"{label} > {self.scale_up_threshold:g}: +{self.scale_up_n}",
                )
            elif stat < self.scale_down_threshold:
                step, why = (
                    -self.scale_down_n,
                    f"{label} < {self.scale_down_threshold:g}: -{self.scale_down_n}",
                )
            else:
                why = f"{label} within [{self.scale_down_threshold:g}, {self.scale_up_threshold:g}]"
        if step and last_action is not None and now - last_action < self.cooldown:
            why += f" (cooldown: {self.cooldown - (now - last_action):.0f}s left)"
            step = 0

        def bounded(n: int) -> int:
            return max(view.min_size, min(view.max_size, n))

        target = bounded(view.intended + step)
        if step and target != bounded(view.intended):
            last_action = now
        memory = remember("threshold", {"samples": samples, "last_action": last_action})
        return Decision(target, f"{why} -> {target}", inputs, memory)
