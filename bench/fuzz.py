"""Fuzzing the spec loader: generated YAML and bytes through `load_yaml_documents` and `validate_spec`.

Every case is either accepted, or refused with a :class:`SpecError` of one bounded line; anything
else (another exception, an accepted spec that does not survive the store's JSON round trip, an
error of several lines) is a crash and is kept (the first few, with the input that made them).
The generators, each with its own share of the cases:

- ``bytes``: random bytes;
- ``text``: random text, and random text built from YAML's own punctuation;
- ``mutated``: valid specs (the examples and generated ones) with bytes flipped, cut, repeated, or
  YAML snippets (anchors, aliases, merges, tags, .inf, .nan, tabs, NULs) spliced in;
- ``nested``: random nested mappings keyed by the spec's own field names and plug-in parameters;
- ``field``: a valid spec with one field (found by walking the models) set to a random scalar of
  any type, or a small list or mapping;
- ``plugin``: a valid spec whose policy or sensor is a registered one with random parameters;
- ``aliases``: alias fans of random width and depth (small ones pass, bombs are refused).

`python -m bench.fuzz [--cases N]` writes bench/results/fuzz.json.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import time
import types
import typing
from pathlib import Path
from typing import Any, Callable

import yaml
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from bench.common import ROOT, row, write_result
from pool.cli.commands import validate_spec
from pool.core.model import ERROR_LINE_MAX, RESERVED_ATTRIBUTES, DomainSpec, SpecError, clean_text, parse_domain_spec
from pool.specload import load_yaml_documents

CELERY_BASE: dict[str, Any] = {"name": "fuzz", "max": 4, "celery": {"app": "tasks"}}
SPARK_BASE: dict[str, Any] = {"name": "fuzz", "max": 4, "deployable_type": "spark-worker", "spark": {}}
SHARES = {"bytes": 0.12, "text": 0.12, "mutated": 0.2, "nested": 0.14, "field": 0.2, "plugin": 0.17,
          "aliases": 0.05}
CRASHES_KEPT = 8


# -- what a spec is made of ---------------------------------------------------------------------

def _unwrap(ann: Any) -> Any:
    while True:
        if typing.get_origin(ann) is typing.Annotated:
            ann = typing.get_args(ann)[0]
        elif typing.get_origin(ann) in (typing.Union, types.UnionType) and \
                len([a for a in typing.get_args(ann) if a is not type(None)]) == 1:
            ann = next(a for a in typing.get_args(ann) if a is not type(None))
        else:
            return ann


def field_paths(model: type[BaseModel] = DomainSpec, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every field of the spec models (and every nested model itself), as a path from the top."""
    paths = []
    for name, info in model.model_fields.items():
        ann = _unwrap(info.annotation)
        path = prefix + (name,)
        paths.append(path)
        inner = _unwrap(typing.get_args(ann)[0]) if typing.get_origin(ann) is list else ann
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            paths += field_paths(inner, path + ((0,) if inner is not ann else ()))
    return paths


def plugin_params() -> dict[tuple[str, str], list[str]]:
    """(kind, name) -> the parameters of every registered policy and sensor."""
    from policies import registry as policies
    from sensors import registry as sensors

    found = {}
    for kind, registry in (("policy", policies), ("sensor", sensors)):
        for name in registry.names():
            cls = registry.resolve(name)
            found[(kind, name)] = ([f.name for f in dataclasses.fields(cls) if f.init]
                                   if dataclasses.is_dataclass(cls) else [])
    return found


PATHS = field_paths()
PLUGINS = plugin_params()
FIELD_NAMES = sorted({str(p[-1]) for p in PATHS if not isinstance(p[-1], int)}
                     | {p for params in PLUGINS.values() for p in params} | RESERVED_ATTRIBUTES)
STRINGS = ["", "x" * 70, "etl", "etl\n", "Bad Name", "local", "sim", "ec2", "celery-worker", "spark-worker",
           "queue_depth", "composite", "celery", "spark", "tasks", "proj.celery:app", "redis://:pw@h:6379/0",
           "amqp://u:pw@h//", "http://h:8080", "spark://h:7077", "env:AWS_KEY", "file:/run/s", "512m", "PWR",
           "$(touch /tmp/x)", "[/x]", "a\u2028b", "\x00", "\ud800", "00:00", "24:00", "mon-fri", "*",
           "celery + 1", "(" * 300 + "1" + ")" * 300, "+".join(["1"] * 999), "-" * 900 + "1", "nan", "inf",
           "1e999", "WARNING", "info", "auto", "prefork", "hold", "fixed", "overflow", "spot_first"]


def valid_texts() -> list[str]:
    texts = [p.read_text() for p in sorted((ROOT / "examples").glob("*.yaml"))]
    texts += [yaml.safe_dump(spec, sort_keys=False) for spec in (
        CELERY_BASE, SPARK_BASE,
        {**CELERY_BASE, "sites": [{"name": "local", "max": 3}, {"name": "e", "provider": "ec2", "rank": 1,
                                                                "key": "env:K", "secret": "file:/s",
                                                                "images": {"celery-worker": "ami-1"}}],
         "placement": "spread", "attributes": {"note": "x"}, "broker": "redis://127.0.0.1:6379/1",
         "policy": {"name": "schedule", "windows": [{"days": "mon-fri", "start": "08:00", "end": "18:00",
                                                     "min": 2}]},
         "timeouts": {"boot": 60, "boot_replace": 30}, "scaling": {"stabilization": 5}},
        {**CELERY_BASE, "policy": {"name": "composite", "formula": "celery / 2", "fallback": {"celery": 3}}},
    )]
    return texts


VALID = valid_texts()
SNIPPETS = ["&a ", "*a", "<<: *a\n", ": ", "\n- ", "{", "}", "[", "]", ".inf", "-.inf", ".nan", "!!binary ",
            "!!float ", "!!set ", "!!omap ", "!!timestamp ", "!!bool ", "!!int ", "!!null ", "!!str ", "!!map ",
            "!!seq ", "!!pairs ", "!!merge ", "!!value ", "!!yaml ", "''", "!<tag:yaml.org,2002:int> ", "!!python/name:os.system ", "? ", "---\n", "...\n", "\t", "\x00",
            "\ud800", "'", '"', "#", "|\n", ">\n", "&b [*a, *a, *a]\n", "true", "null", "1e400", "0x1F",
            "0o17", "1_000", "2001-13-45", "12:30:00", "~", "\xff", "\\", "%YAML 1.1\n", "!local "]


# -- strategies ---------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from([0, 1, -1, 2**31, 10**15, 10**16, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e-300, 1e300, 0.5]),
    st.text(max_size=40), st.sampled_from(STRINGS),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8)),
                                                 inner, max_size=5)), max_leaves=20)


def _set(spec: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    node: Any = spec
    for part in path[:-1]:
        if isinstance(part, int):
            if not isinstance(node, list) or not node:
                return spec
            node = node[part]
        else:
            nxt = node.get(part)
            if not isinstance(nxt, (dict, list)):
                nxt = [{"name": "local"}] if part == "sites" else {}
                node[part] = nxt
            node = nxt
    if isinstance(node, dict):
        node[path[-1]] = value
    return spec


def dump(data: Any) -> bytes:
    try:
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode("utf-8", "surrogatepass")
    except (yaml.YAMLError, ValueError):  # a value the emitter cannot write (an int of 5,000 digits)
        return b"{}"


@st.composite
def mutated(draw: Callable[..., Any]) -> bytes:
    text = draw(st.sampled_from(VALID))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["snippet", "delete", "repeat", "flip", "indent"]))
        if op == "snippet":
            text = text[:pos] + draw(st.sampled_from(SNIPPETS)) + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 20)):]
        elif op == "repeat":
            line_start = text.rfind("\n", 0, pos) + 1
            line_end = text.find("\n", pos)
            line = text[line_start:line_end if line_end >= 0 else len(text)]
            text = text[:line_start] + line + "\n" + text[line_start:]
        elif op == "indent":
            text = text[:pos] + " " * draw(st.integers(1, 4)) + text[pos:]
        elif text:
            i = min(pos, len(text) - 1)
            text = text[:i] + chr(draw(st.integers(0, 0x2FF))) + text[i + 1:]
    return text.encode("utf-8", "surrogatepass")


@st.composite
def yaml_text(draw: Callable[..., Any]) -> bytes:
    if draw(st.booleans()):
        text = draw(st.text(max_size=300))
    else:
        parts = draw(st.lists(st.one_of(st.sampled_from(SNIPPETS), st.sampled_from(FIELD_NAMES),
                                        st.sampled_from(["\n", "  ", "- ", ": ", "x", "1", "a"])), max_size=60))
        text = "".join(parts)
    return text.encode("utf-8", "surrogatepass")


@st.composite
def nested(draw: Callable[..., Any]) -> bytes:
    keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=6))
    data = draw(st.dictionaries(keys, values, max_size=8))
    if draw(st.booleans()):
        data = {**copy.deepcopy(CELERY_BASE), **data}
    return dump(data)


@st.composite
def one_field(draw: Callable[..., Any]) -> bytes:
    path = draw(st.sampled_from(PATHS))
    base = copy.deepcopy(SPARK_BASE if path[0] == "spark" else CELERY_BASE)
    return dump(_set(base, path, draw(values)))


@st.composite
def plugin(draw: Callable[..., Any]) -> bytes:
    (kind, name), params = draw(st.sampled_from(sorted(PLUGINS.items())))
    chosen = draw(st.lists(st.sampled_from(params), unique=True, max_size=len(params))) if params else []
    block: dict[str, Any] = {"name": name, **{p: draw(values) for p in chosen}}
    base = copy.deepcopy(SPARK_BASE if name.startswith("spark") and draw(st.booleans()) else CELERY_BASE)
    base[kind] = block
    return dump(base)


@st.composite
def aliases(draw: Callable[..., Any]) -> bytes:
    """A schedule whose windows are aliases of one window, fanned out ``depth`` times ``width`` wide:
    one level is a valid spec, more are lists the policy refuses, or bombs the loader refuses."""
    width, depth = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    items = ["&l0 {days: '*', start: '00:00', end: '24:00', min: 1}"] + ["*l0"] * (width - 1)
    for i in range(1, depth):
        items.append(f"&l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    lines = ["name: fuzz", "max: 4", "celery: {app: tasks}", "policy:", "  name: schedule",
             "  windows: [" + ", ".join(items) + "]"]
    return ("\n".join(lines) + "\n").encode()


STRATEGIES: dict[str, st.SearchStrategy[bytes]] = {
    "bytes": st.binary(max_size=600), "text": yaml_text(), "mutated": mutated(), "nested": nested(),
    "field": one_field(), "plugin": plugin(), "aliases": aliases(),
}


# -- running ------------------------------------------------------------------------------------

@dataclasses.dataclass
class Tally:
    cases: int = 0
    accepted: int = 0
    refused: int = 0
    crashed: int = 0
    max_error_raised: int = 0  # longest message as raised
    max_error_printed: int = 0  # longest line as `pool apply` prints it (bounded, escaped)
    multiline: int = 0
    max_seconds: float = 0.0
    slowest: str = ""
    crashes: list[dict[str, str]] = dataclasses.field(default_factory=list)
    by_strategy: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)


def run_case(data: bytes, tally: Tally, strategy: str) -> None:
    started = time.perf_counter()
    outcome = "accepted"
    try:
        docs = [doc for doc in load_yaml_documents(data, source="fuzz.yaml") if doc is not None]
        if not docs:  # as `pool apply` says of it
            raise SpecError("fuzz.yaml: no domain spec in the file")
        for doc in docs:
            spec = validate_spec(doc)
            stored = spec.model_dump_json()
            if DomainSpec.model_validate_json(stored) != spec or parse_domain_spec(json.loads(stored)) != spec:
                raise AssertionError("the spec does not survive the store's JSON round trip")
    except SpecError as exc:
        outcome = "refused"
        message = str(exc)
        tally.max_error_raised = max(tally.max_error_raised, len(message))
        printed = clean_text(message)
        tally.max_error_printed = max(tally.max_error_printed, len(printed))
        if "\n" in printed or "\r" in printed:
            tally.multiline += 1
    except Exception as exc:  # noqa: BLE001  (what the fuzz is looking for)
        outcome = "crashed"
        if len(tally.crashes) < CRASHES_KEPT:
            tb = exc.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else "?"
            tally.crashes.append({"strategy": strategy, "error": repr(exc)[:300], "where": where,
                                  "input": repr(data[:400])})
    elapsed = time.perf_counter() - started
    if elapsed > tally.max_seconds:
        tally.max_seconds, tally.slowest = elapsed, f"{strategy}: {data[:120]!r}"
    tally.cases += 1
    setattr(tally, outcome, getattr(tally, outcome) + 1)
    counts = tally.by_strategy.setdefault(strategy, {"cases": 0, "accepted": 0, "refused": 0, "crashed": 0})
    counts["cases"] += 1
    counts[outcome] += 1


def run(strategy: str, n: int, tally: Tally) -> None:
    @seed(20240601 + sorted(STRATEGIES).index(strategy))
    @settings(max_examples=n, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(STRATEGIES[strategy])
    def case(data: bytes) -> None:
        run_case(data, tally, strategy)

    case()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=24_000, help="cases in all, shared out over the generators")
    args = parser.parse_args()
    import logging

    logging.disable(logging.CRITICAL)
    run_case(dump(CELERY_BASE), Tally(), "warm-up")  # imports (libcloud, the plug-ins) are not a case's cost
    started = time.perf_counter()
    tally = Tally()
    for strategy in STRATEGIES:
        before = tally.cases
        run(strategy, max(1, math.ceil(args.cases * SHARES[strategy])), tally)
        print(f"{strategy:8s} {tally.cases - before:6d} cases, {time.perf_counter() - started:6.1f} s so far")
    wall = time.perf_counter() - started
    limit = ERROR_LINE_MAX
    result = {"cases": tally.cases, "accepted": tally.accepted, "refused": tally.refused, "crashed": tally.crashed,
              "max_error_raised": tally.max_error_raised, "max_error_printed": tally.max_error_printed,
              "multiline_errors": tally.multiline, "max_seconds_per_case": round(tally.max_seconds, 4),
              "slowest_case": tally.slowest, "wall_s": round(wall, 1), "by_strategy": tally.by_strategy, "crashes": tally.crashes,
              "markdown": markdown(tally)}
    table = [
        row("cases (generated specs and byte strings)", tally.cases, ">= 20000", tally.cases >= 20_000,
            f"{tally.accepted} accepted, {tally.refused} refused with a one-line SpecError"),
        row("crashed (any other exception, or an accepted spec that fails its JSON round trip)", tally.crashed,
            "0", tally.crashed == 0, "; ".join(f"{c['error'][:80]} at {Path(c['where']).name}"
                                               for c in tally.crashes[:3])),
        row("longest error line as `pool apply` prints it (characters)", tally.max_error_printed,
            f"<= {limit}", tally.max_error_printed <= limit,
            f"as raised by the loader and validate_spec: {tally.max_error_raised}"),
        row("errors of more than one line", tally.multiline, "0", tally.multiline == 0),
        row("slowest case (seconds)", round(tally.max_seconds, 4), "< 1", tally.max_seconds < 1,
            tally.slowest.split(":")[0]),
        row("wall time (seconds)", round(wall, 1), "< 300", wall < 300),
    ]
    print(f"{tally.cases} cases: {tally.accepted} accepted, {tally.refused} refused, {tally.crashed} crashed; "
          f"longest error {tally.max_error_printed} (raised {tally.max_error_raised}); slowest "
          f"{tally.max_seconds:.3f} s; {wall:.0f} s")
    for crash in tally.crashes:
        print("crash:", crash)
    print(write_result("fuzz", result, table))


def markdown(tally: Tally) -> str:
    lines = ["| generator | cases | accepted | refused | crashed |", "|---|---|---|---|---|"]
    for name, c in tally.by_strategy.items():
        lines.append(f"| {name} | {c['cases']} | {c['accepted']} | {c['refused']} | {c['crashed']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
