"""Golden recordings: the planner's decisions and the simulator's reports must not change.

``tests/golden/plans.jsonl.gz`` holds observation -> plan pairs recorded from the live manager,
the simulator, the simulated fleet and hand-built corner cases; each observation is replayed
through today's ``plan_domain`` (the policy rebuilt from its stored name and parameters, the
same deterministic ids) and the plan must equal the stored one exactly (canonical JSON, see
``tests/golden/codec.py``). ``tests/golden/simulate.json`` holds ``pool simulate`` report numbers,
recomputed here and compared exactly. Re-record only on purpose: ``python -m tests.golden.record``
(see ``tests/golden/README.md``).
"""

from __future__ import annotations

import functools
import gzip
import json
from collections import defaultdict
from typing import Any

import pytest

from tests.golden.codec import dumps
from tests.golden.record import HERE, PLANS, SIMULATE, replay, report_numbers

#: Mismatching pairs described in full in one failure message (the rest are counted).
SHOWN = 3


@functools.cache
def _pairs() -> dict[str, list[dict[str, Any]]]:
    by_scenario: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with gzip.open(HERE / PLANS, "rt", encoding="utf-8") as fh:
        for line in fh:
            entry = json.loads(line)
            by_scenario[entry["scenario"]].append(entry)
    return dict(by_scenario)


@functools.cache
def _reports() -> dict[str, Any]:
    return json.loads((HERE / SIMULATE).read_text())


def _short(value: Any, limit: int = 600) -> str:
    text = dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _state(record: dict[str, Any]) -> str:
    return f" ({record['state']})" if "state" in record else ""


def _diff(path: str, want: Any, got: Any, out: list[str], limit: int = 12) -> None:
    """Lines naming each differing leaf (by canonical text: 1 and 1.0 differ, NaN equals NaN)."""
    if len(out) >= limit or dumps(want) == dumps(got):
        return
    if isinstance(want, dict) and isinstance(got, dict):
        if "node_id" in want and "node_id" in got and want["node_id"] != got["node_id"]:  # another record
            out.append(f"  {path}: recorded node {want['node_id']}{_state(want)}, now node {got['node_id']}{_state(got)}")
            return
        for key in sorted(set(want) | set(got)):
            if key not in got:
                out.append(f"  {path}.{key}: missing now (recorded {_short(want[key])})")
            elif key not in want:
                out.append(f"  {path}.{key}: not in the recording (now {_short(got[key])})")
            else:
                _diff(f"{path}.{key}", want[key], got[key], out, limit)
        return
    if isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            out.append(f"  {path}: {len(want)} recorded, {len(got)} now")
        for i, (w, g) in enumerate(zip(want, got)):
            _diff(f"{path}[{i}]", w, g, out, limit)
        for i in range(len(got), len(want)):
            out.append(f"  {path}[{i}]: missing now (recorded {_short(want[i])})")
        for i in range(len(want), len(got)):
            out.append(f"  {path}[{i}]: extra now: {_short(got[i])}")
        return
    out.append(f"  {path}: recorded {_short(want)}, now {_short(got)}")


def _scenarios() -> list[str]:
    try:
        return sorted(_pairs())
    except FileNotFoundError:  # reported by test_recordings_exist
        return []


def test_recordings_exist() -> None:
    pairs = _pairs()
    assert sum(len(v) for v in pairs.values()) > 1000, "plans.jsonl.gz holds too few pairs"
    for prefix in ("sim/", "fleet/", "direct/"):
        assert any(name.startswith(prefix) for name in pairs), f"no {prefix} scenario recorded"
    assert _reports()["cases"], "simulate.json holds no case"


@pytest.mark.parametrize("scenario", _scenarios())
def test_plan_domain_replays_the_recorded_plans(scenario: str) -> None:
    failures: list[str] = []
    count = 0
    for entry in _pairs()[scenario]:
        got = replay(entry)
        want = entry["plan"]
        if dumps(got) == dumps(want):
            continue
        count += 1
        if len(failures) < SHOWN:
            fields = sorted(f for f in set(want) | set(got) if dumps(want.get(f)) != dumps(got.get(f)))
            lines = [f"  differs in: {', '.join(fields)}"]
            _diff("plan", want, got, lines)
            policy = entry["policy"]["name"] if entry["policy"] else f"none ({entry['policy_error']})"
            failures.append(f"{scenario} pair #{entry['seq']} (tick t={entry['now']!r}, policy {policy}, "
                            f"roles {','.join(entry['roles']) or 'none'}): the plan differs\n" + "\n".join(lines))
    total = len(_pairs()[scenario])
    assert not count, (f"{count} of {total} recorded plans of {scenario} differ now; first ones:\n\n"
                       + "\n\n".join(failures))


def _report_cases() -> list[str]:
    try:
        return sorted(_reports()["cases"])
    except FileNotFoundError:
        return []


def _by_policy(report: dict[str, Any]) -> dict[str, Any]:
    """The report with its results keyed by policy label (so a difference names the policy)."""
    results = report.get("results", [])
    labels = [r.get("policy") for r in results]
    if len(set(labels)) != len(labels):
        return report
    return {**report, "results": {f"{i}:{label}": r for i, (label, r) in enumerate(zip(labels, results))}}


@pytest.mark.parametrize("case", _report_cases())
def test_simulate_report_numbers_are_unchanged(case: str) -> None:
    recorded = _reports()["cases"][case]
    got = report_numbers(recorded["trace"], recorded["seed"])
    # round-trip through JSON as the recording did (tuples become lists; the floats are exact)
    got = json.loads(json.dumps(got, allow_nan=True))
    lines: list[str] = []
    _diff("report", _by_policy(recorded["report"]), _by_policy(got), lines, limit=30)
    assert not lines, f"pool simulate {recorded['trace']} seed {recorded['seed']}: the report differs\n" + "\n".join(lines)
