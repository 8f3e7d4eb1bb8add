"""The n-preserving policy: keep exactly ``size`` workers, replacing any that die."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from pool.core.model import Decision, DomainView, Reading


@dataclass(frozen=True)
class Fixed:
    """Intended size is ``size`` whatever the readings (default: the domain's minimum).

    Parameters:
        size: workers to keep; ``None`` means the domain's ``min``.
    """

    size: int | None = None

    def __post_init__(self) -> None:
        if self.size is not None and (not isinstance(self.size, int) or self.size < 0):
            raise ValueError(f"size must be a whole number >= 0, got {self.size!r}")

    def decide(self, view: DomainView, readings: Mapping[str, Reading], now: float) -> Decision:
        size = view.min_size if self.size is None else self.size
        return Decision(size, f"fixed size {size}", {"size": size}, activation=False)  # not read from a queue
