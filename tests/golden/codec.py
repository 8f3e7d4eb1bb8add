"""The canonical JSON form of an :class:`Observation` and a :class:`Plan`, and the golden id scheme.

Canonical form (what ``plans.jsonl.gz`` stores and what the replay test compares):

* text: ``json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)``: keys
  sorted, no spaces; a float is written as ``repr(float)`` (the shortest text that reads back
  to the same float, so ``1.0`` stays a float and ``1`` an int), ``inf``/``-inf``/``nan`` as
  ``Infinity``/``-Infinity``/``NaN`` (Python's JSON extension);
* ``NodeRecord``: the object its ``to_json()`` writes; ``DomainSpec``: ``model_dump(mode="json")``;
  ``DomainState``, ``Decision``, ``DomainView``, ``Termination``, ``Heartbeat``, ``Reading``,
  ``SiteNode``: an object of their dataclass fields (every field, so a field added later shows);
  an enum: its value; tuples and lists: arrays in their order; frozensets and sets: sorted arrays;
* the observation's mappings whose order the planner may see (``heartbeats``, ``site_nodes``,
  ``readings``) are arrays of ``[key, value]`` pairs in their iteration order: the order of a
  listing decides, e.g., the order of zombie terminations, and ``readings``' first entry is the
  primary reading. Every other mapping is an object (key order is not data there), including
  ``site_available`` (a bool, or an object of site -> bool): the planner only looks sites up in
  it, and the manager builds it from a ``set`` of site names, so its order changes with
  ``PYTHONHASHSEED``. A mapping key that is not a string is refused (JSON would turn it into one
  silently).

Ids: ``plan_domain`` takes ``new_ids``; the recorder and the replay both pass
:func:`golden_ids` of the pair's ``seq`` (its index among the scenario's calls), so a launch's
node id is ``{domain}-{seq:05x}{k:03x}`` and its launch id ``{seq:016x}{k:016x}`` (k: the k-th
launch of that call): the shapes of the real ids (8 and 32 hex digits), the same on every run.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Callable, Mapping
from typing import Any

from tests.golden.adapter import (
    DomainSpec,
    DomainState,
    Heartbeat,
    NodeRecord,
    Observation,
    Plan,
    Reading,
    SiteNode,
)


def dumps(value: Any) -> str:
    """The canonical text of an already plain value (see the module's docstring)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)


def plain(value: Any) -> Any:
    """JSON-ready data: dataclasses as objects of their fields, enums by value, sets sorted."""
    if value is None or isinstance(value, (bool, int, str)):
        return value.value if isinstance(value, enum.Enum) else value
    if isinstance(value, float):
        return float(value)
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, NodeRecord):
        return json.loads(value.to_json())
    if isinstance(value, DomainSpec):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"mapping key {key!r} is not a string: JSON would change it")
            out[key] = plain(item)
        return out
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return sorted(plain(item) for item in value)
    raise TypeError(f"no canonical form for {type(value).__name__}: {value!r}")


def _pairs(mapping: Mapping[str, Any]) -> list[list[Any]]:
    return [[key, plain(item)] for key, item in mapping.items()]


# ---------------------------------------------------------------------------
# Observation
# ---------------------------------------------------------------------------


def observation_to_data(obs: Observation) -> dict[str, Any]:
    fields = {f.name for f in dataclasses.fields(obs)}
    known = {"spec", "state", "nodes", "heartbeats", "site_nodes", "site_available", "readings", "now",
             "store_back_at", "unlisted", "listed_at", "wanted", "ahead"}
    if fields != known:  # a field this codec does not know would be lost in the recording
        raise TypeError(f"Observation fields changed: {sorted(fields ^ known)}")
    sa = obs.site_available
    return {
        "spec": plain(obs.spec),
        "state": plain(obs.state),
        "nodes": [plain(n) for n in obs.nodes],
        "heartbeats": _pairs(obs.heartbeats),
        "site_nodes": None if obs.site_nodes is None else _pairs(obs.site_nodes),
        "site_available": sa if isinstance(sa, bool) else plain(sa),
        "readings": _pairs(obs.readings),
        "now": plain(obs.now),
        "store_back_at": plain(obs.store_back_at),
        "unlisted": plain(obs.unlisted),
        "listed_at": plain(obs.listed_at),
        # a named domain's fields only when set, so that recordings made before they existed still match
        **({"wanted": _pairs(obs.wanted)} if obs.wanted is not None else {}),
        **({"ahead": True} if obs.ahead else {}),
    }


def _state(data: Mapping[str, Any]) -> DomainState:
    data = dict(data)
    data["recent"] = [tuple(r) for r in data.get("recent", [])]
    return DomainState(**data)


def observation_from_data(data: Mapping[str, Any]) -> Observation:
    sa = data["site_available"]
    return Observation(
        spec=DomainSpec.model_validate(data["spec"]),
        state=_state(data["state"]),
        nodes=tuple(NodeRecord.from_json(json.dumps(n)) for n in data["nodes"]),
        heartbeats={k: Heartbeat(**v) for k, v in data["heartbeats"]},
        site_nodes=None if data["site_nodes"] is None else {k: SiteNode(**v) for k, v in data["site_nodes"]},
        site_available=sa if isinstance(sa, bool) else dict(sa),
        readings={k: Reading(**v) for k, v in data["readings"]},
        now=data["now"],
        store_back_at=data["store_back_at"],
        unlisted=frozenset(data["unlisted"]),
        listed_at=data["listed_at"],
        wanted=None if data.get("wanted") is None else dict(data["wanted"]),
        ahead=bool(data.get("ahead", False)),
    )


# ---------------------------------------------------------------------------
# Plan
# ---------------------------------------------------------------------------


def plan_to_data(plan: Plan) -> dict[str, Any]:
    """Every field of the plan (a field added to :class:`Plan` shows up here, and so in a diff)."""
    return {f.name: plain(getattr(plan, f.name)) for f in dataclasses.fields(plan)}


# ---------------------------------------------------------------------------
# Ids and policies
# ---------------------------------------------------------------------------


def golden_ids(seq: int) -> Callable[[str], tuple[str, str]]:
    """The deterministic ``new_ids`` of the pair numbered ``seq`` in its scenario."""
    k = 0

    def new_ids(domain: str) -> tuple[str, str]:
        nonlocal k
        k += 1
        return f"{domain}-{seq:05x}{k:03x}", f"{seq:016x}{k:016x}"

    return new_ids

