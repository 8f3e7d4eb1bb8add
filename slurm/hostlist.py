"""Slurm hostlists (``cloud[1-3,07],gpu5``) expanded to names and folded back, as ``scontrol show
hostnames`` and ``scontrol show hostlist`` do. Imports the standard library only (no I/O).
"""

from __future__ import annotations

import re

#: At most this many names from one hostlist: slurmctld never asks for more at once; a hostile one
#: (``n[0-999999999]``) is refused instead of expanded.
MAX_NAMES = 100_000
_PART = re.compile(r"([^,\[]*)(?:\[([^\]]*)\])?([^,\[]*)")


class HostlistError(ValueError):
    """Not a hostlist (one line saying what is wrong)."""


def expand(hostlist: str) -> list[str]:
    """``cloud[1-3,7]`` -> ``['cloud1', 'cloud2', 'cloud3', 'cloud7']``; ranges keep their zero padding."""
    names: list[str] = []
    for part in _split(hostlist.strip()):
        match = _PART.fullmatch(part)
        if match is None or not (match.group(1) or match.group(2)):
            raise HostlistError(f"{part!r} is not a host name or prefix[ranges]")
        prefix, ranges, suffix = match.group(1), match.group(2), match.group(3)
        if ranges is None:
            names.append(prefix + suffix)
            continue
        for item in ranges.split(","):
            lo, _, hi = item.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                raise HostlistError(f"{item!r} in {part!r} is not a number or a range lo-hi")
            first, last = int(lo), int(hi or lo)
            if last < first or len(names) + last - first + 1 > MAX_NAMES:
                raise HostlistError(f"range {item!r} in {part!r} is reversed or too large")
            width = len(lo) if lo.startswith("0") else 0
            names.extend(f"{prefix}{n:0{width}d}{suffix}" for n in range(first, last + 1))
    return names


def _split(hostlist: str) -> list[str]:
    """Top-level commas only (those inside brackets belong to a range)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(hostlist):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(hostlist[start:i])
            start = i + 1
        if depth not in (0, 1):
            raise HostlistError(f"unbalanced brackets in {hostlist!r}")
    parts.append(hostlist[start:])
    if depth:
        raise HostlistError(f"unbalanced brackets in {hostlist!r}")
    return [p for p in parts if p]


def fold(names: list[str]) -> str:
    """Names sharing a prefix and numbered without padding folded to ``prefix[lo-hi,...]``."""
    groups: dict[str, list[int]] = {}
    plain: list[str] = []
    for name in names:
        match = re.fullmatch(r"(.*?)([1-9]\d*|0)", name)
        if match is None:
            plain.append(name)
        else:
            groups.setdefault(match.group(1), []).append(int(match.group(2)))
    out = list(plain)
    for prefix, numbers in groups.items():
        numbers = sorted(set(numbers))
        spans: list[str] = []
        start = prev = numbers[0]
        for n in numbers[1:] + [None]:  # type: ignore[list-item]
            if n is not None and n == prev + 1:
                prev = n
                continue
            spans.append(f"{start}" if start == prev else f"{start}-{prev}")
            if n is not None:
                start = prev = n
        out.append(f"{prefix}[{','.join(spans)}]" if len(numbers) > 1 else f"{prefix}{numbers[0]}")
    return ",".join(out)
