"""Hostile and mistyped domain specs through the real `pool apply`: each is refused with one bounded line.

The cases are generated: every float and int field of every spec model (found by walking the
pydantic models, so a new field is probed without touching this file) gets the values YAML can
smuggle in (``.inf``, ``.nan``, huge numbers, ``true``); every string field a trailing newline and
100 KB; then alias bombs, deep nesting, invalid UTF-8, duplicate keys, reserved attributes,
credentials in URLs. A spec that is accepted fails its case before any store is opened.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import time
import tracemalloc
import types
import typing
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from click.testing import CliRunner, Result
from pydantic import BaseModel

from pool.cli import commands as cli
from pool.core.model import (
    RESERVED_ATTRIBUTES,
    DomainSpec,
    NodeRecord,
    SpecError,
    parse_domain_spec,
)
from pool.specload import MAX_ALIASES, MAX_BYTES, MAX_DEPTH, MAX_NODES, load_yaml_documents
from pool.workloads.base import load_workload
from pool.workloads.celery import celery_spec
from pool.workloads.images import AGENT_PREAMBLE, deployable_type, deployable_types

DEPLOYABLE_TYPES = deployable_types()

CELERY_BASE: dict[str, Any] = {"name": "probe", "max": 4, "celery": {"app": "tasks"}, "sites": [{"name": "local"}]}
SPARK_BASE: dict[str, Any] = {"name": "probe", "max": 4, "deployable_type": "spark-worker", "spark": {},
                              "sites": [{"name": "local"}]}
CONDOR_BASE: dict[str, Any] = {"name": "probe", "max": 4, "deployable_type": "condor-startd", "condor": {},
                               "sites": [{"name": "local"}]}
SLURM_BASE: dict[str, Any] = {"name": "probe", "max": 4, "deployable_type": "slurm-node",
                              "slurm": {"controller": "ctl"}, "sites": [{"name": "local"}]}
SECRET = "s3cretPW-probe"
LINE_MAX = 600


# -- walking the models -----------------------------------------------------------------------

def _unwrap(ann: Any) -> Any:
    """``X`` of ``X | None`` and of ``Annotated[X, ...]``."""
    while True:
        if typing.get_origin(ann) is typing.Annotated:
            ann = typing.get_args(ann)[0]
            continue
        if typing.get_origin(ann) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if len(args) == 1:
                ann = args[0]
                continue
        return ann


def spec_fields(model: type[BaseModel] = DomainSpec, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any, Any]]:
    """(path, scalar type, field info) of every field of the spec models, nested models followed
    (a list of models through its first item)."""
    for name, info in model.model_fields.items():
        ann = _unwrap(info.annotation)
        path = prefix + (name,)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from spec_fields(ann, path)
        elif typing.get_origin(ann) is list and isinstance(_unwrap(typing.get_args(ann)[0]), type) \
                and issubclass(_unwrap(typing.get_args(ann)[0]), BaseModel):
            yield from spec_fields(_unwrap(typing.get_args(ann)[0]), path + (0,))
        else:
            yield path, ann, info


def spec_models(model: type[BaseModel] | None = None) -> set[type[BaseModel]]:
    if model is None:
        return spec_models(DomainSpec).union(*map(spec_models, BLOCKS.values()))
    found = {model}
    for _, info in model.model_fields.items():
        ann = _unwrap(info.annotation)
        inner = _unwrap(typing.get_args(ann)[0]) if typing.get_origin(ann) is list else ann
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            found |= spec_models(inner)
    return found


def base_for(path: tuple[Any, ...]) -> dict[str, Any]:
    return copy.deepcopy({"spark": SPARK_BASE, "condor": CONDOR_BASE, "slurm": SLURM_BASE}.get(path[0], CELERY_BASE))


def with_value(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    spec = base_for(path)
    node: Any = spec
    for part in path[:-1]:
        if isinstance(part, int):
            node = node[part]
        else:
            node = node.setdefault(part, {})
    node[path[-1]] = value
    return spec


def field_id(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path)


#: the blocks the built-in workloads own (`celery:`, `spark:`): validated by their models
BLOCKS = {w.spec_block.key: w.spec_block.model for w in map(load_workload, ("celery", "spark", "condor", "slurm"))
          if w.spec_block is not None}
FIELDS = list(spec_fields()) + [f for key, model in BLOCKS.items() for f in spec_fields(model, (key,))]
FLOATS = [(p, info) for p, ann, info in FIELDS if ann is float]
INTS = [(p, info) for p, ann, info in FIELDS if ann is int]
STRINGS = [(p, info) for p, ann, info in FIELDS if ann is str]


def _dump(spec: Any) -> bytes:
    return yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=10**9).encode()


def string_value(path: tuple[Any, ...], info: Any) -> str:
    base: Any = base_for(path)
    for part in path:
        base = base[part] if isinstance(base, (dict, list)) and (isinstance(part, int) or part in base) else None
    if isinstance(base, str):
        return base
    return info.default if isinstance(info.default, str) else "abc"


def _bomb(levels: int = 9) -> bytes:
    names = "abcdefghijklmnopqrstuvwxyz"
    lines = ["a: &a [" + ", ".join(['"lol"'] * 9) + "]"]
    for prev, cur in zip(names[: levels - 1], names[1:levels]):
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return ("\n".join(lines) + "\n").encode()


def _cases() -> Iterator[Any]:
    for path, _ in FLOATS:
        for label, value in (("inf", float("inf")), ("-inf", float("-inf")), ("nan", float("nan")),
                             ("huge", 1e300)):
            yield pytest.param(_dump(with_value(path, value)), field_id(path), id=f"{field_id(path)}={label}")
    for path, _ in INTS:
        for label, value in (("true", True), ("float", 2.5)):
            yield pytest.param(_dump(with_value(path, value)), field_id(path), id=f"{field_id(path)}={label}")
    for path, info in STRINGS:
        good = string_value(path, info)
        yield pytest.param(_dump(with_value(path, good + "\n")), field_id(path), id=f"{field_id(path)}=newline")
        yield pytest.param(_dump(with_value(path, good + "x" * 100_000)), field_id(path),
                           id=f"{field_id(path)}=100KB")
    yield pytest.param(_dump({**CELERY_BASE, "k" * 1_000_000: 1}), None, id="1MB-key")
    yield pytest.param(_dump({**CELERY_BASE, "attributes": {"k" * 1_000_000: "v"}}), "attributes",
                       id="1MB-attribute-name")
    yield pytest.param(b"name: probe\nmax: 4\ncelery: {app: tasks}\nbroker: \xff\xfe\n", "offset", id="invalid-utf8")
    yield pytest.param(b"\xc3\x28", "offset", id="invalid-utf8-start")
    yield pytest.param(_bomb(), "aliases", id="billion-laughs")
    yield pytest.param(b"name: probe\nmax: 4\ncelery: {app: tasks}\nattributes: " + b"[" * 10_000 + b"]" * 10_000,
                       None, id="deep-flow-list")
    yield pytest.param(b"name: probe\nmax: 4\ncelery: {app: tasks}\nattributes:\n  " + b"- " * 10_000 + b"x\n",
                       "nested deeper", id="deep-block-list")
    yield pytest.param(b"name: probe\nmax: 4\ncelery: {app: tasks}\nmax: 5\n", "duplicate key 'max'", id="duplicate-key")
    yield pytest.param(b"name: probe\nmax: 4\ncelery: {app: tasks, app: other}\n", "duplicate key 'app'",
                       id="duplicate-nested-key")
    yield pytest.param(b"a: &a [1, *a]\n", "alias", id="recursive-alias")
    for name in sorted(RESERVED_ATTRIBUTES):
        yield pytest.param(_dump({**CELERY_BASE, "attributes": {name: "x"}}), "reserved", id=f"attribute-{name}")
    for workload, base in (("celery", CELERY_BASE), ("spark", SPARK_BASE), ("condor", CONDOR_BASE),
                           ("slurm", SLURM_BASE)):
        block = load_workload(workload).spec_block
        assert block is not None
        for name in sorted(block.reserved - RESERVED_ATTRIBUTES):
            yield pytest.param(_dump({**base, "attributes": {name: "x"}}), "reserved", id=f"{workload}-attribute-{name}")
    yield pytest.param(_dump({**CELERY_BASE, "attributes": {"Bad-Name": "x"}}), "attribute name", id="attribute-pattern")
    for block in ("policy", "sensor"):
        bad: list[tuple[str, Any]] = [("nan", float("nan")), ("inf", float("inf")), ("-inf", float("-inf")),
                                      ("nested-nan", {"x": [float("nan")]})]
        for label, value in bad:
            yield pytest.param(_dump({**CELERY_BASE, block: {"tasks_per_worker": value}}), block,
                               id=f"{block}-param-{label}")
        yield pytest.param(_dump({**CELERY_BASE, block: {"Bad Name": 1}}), block, id=f"{block}-param-name")
        yield pytest.param(_dump({**CELERY_BASE, block: {"x": [[[[1]]]]}}), "nested", id=f"{block}-param-deep")
    yield pytest.param(_dump({**CELERY_BASE, "broker": f"http://user:{SECRET}@host:6379/0"}), "broker",
                       id="broker-password-bad-scheme")
    yield pytest.param(_dump({**CELERY_BASE, "broker": f"redis://:{SECRET}@host:6379/0\t"}), "broker",
                       id="broker-password-control-char")
    yield pytest.param(_dump({**CELERY_BASE, "broker": f"mysql://:{SECRET}/x@host/0"}), "broker",
                       id="broker-password-with-slash")
    yield pytest.param(_dump({**CELERY_BASE, "sensor": {"name": "celery", "broker": f"mysql://u:{SECRET}@h/0"}}),
                       "sensor", id="sensor-broker-password")
    yield pytest.param(_dump({**CELERY_BASE, "sites": [{"name": "e", "provider": "ec2", "secret": SECRET}]}),
                       "secret", id="literal-credential")
    yield pytest.param(_dump({**CELERY_BASE, "[/x]": 1, "attributes": {"[bold]": "x"}}), None,
                       id="console-markup-in-keys")
    yield pytest.param(_dump({**CELERY_BASE, "name": "a\u2028b"}), "name", id="line-separator")
    yield pytest.param(b"name: probe\nmax: " + b"9" * 5000 + b"\ncelery: {app: tasks}\n", "max", id="5000-digit-int")
    yield pytest.param(b"name: probe\nmax: 4\ncelery: {app: tasks}\nsites: [{name: local}]\nsite: 2001-13-45\n",
                       None, id="bad-timestamp")
    yield pytest.param(_dump({**CELERY_BASE, "celery": {"app": "tasks; rm -rf /"}}), "celery.app", id="celery-app")
    yield pytest.param(_dump({**CELERY_BASE, "celery": {"app": "tasks", "loglevel": "LOUD"}}), "loglevel",
                       id="celery-loglevel")
    yield pytest.param(_dump({**CELERY_BASE, "sites": [{"name": f"s{i}"} for i in range(40)]}), "sites",
                       id="too-many-sites")
    yield pytest.param(_dump({**CELERY_BASE, "attributes": {f"a{i}": "x" for i in range(100)}}), "attributes",
                       id="too-many-attributes")
    plugin_cases: list[tuple[str, dict[str, Any], str]] = [
            ("sensor-broker-int", {"sensor": {"name": "celery", "broker": 5}}, "parameter broker: must be a string"),
            ("sensor-interval-text", {"deployable_type": "spark-worker", "spark": {}, "celery": None,
                                      "sensor": {"name": "spark", "min_interval": "x"}}, "must be a number"),
            ("policy-param-bool", {"policy": {"name": "queue_depth", "tasks_per_worker": True}}, "must be a number"),
            ("policy-windows-text", {"policy": {"name": "schedule", "windows": "mon"}}, "must be a list"),
            ("policy-deep-formula", {"policy": {"name": "composite", "formula": "+".join(["1"] * 999)}}, "policy")]
    for label, change, expect in plugin_cases:
        spec = {k: v for k, v in {**CELERY_BASE, **change}.items() if v is not None}
        yield pytest.param(_dump(spec), expect, id=label)
    yield pytest.param(_dump({**SPARK_BASE, "celery": {"app": "tasks"}}), "celery: belongs to deployable_type "
                       "celery-worker", id="block-of-another-workload")
    yield pytest.param(b"x" * (MAX_BYTES + 1), "bytes", id="too-large")
    yield pytest.param(b"- 1\n- 2\n", "mapping", id="not-a-mapping")


@pytest.fixture
def apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    home = tmp_path / "pool-home"
    home.mkdir()

    opened: list[bool] = []

    def refuse_store(**kwargs: Any) -> Any:
        opened.append(True)  # no Redis is started: the case fails below
        raise SystemExit(99)

    monkeypatch.setattr(cli, "open_store", refuse_store)

    def run(data: bytes) -> tuple[Result, float, bool]:
        spec = tmp_path / "spec.yaml"
        spec.write_bytes(data)
        opened.clear()
        started = time.perf_counter()
        result = CliRunner().invoke(cli.main, ["apply", "-f", str(spec)],
                                    env={"POOL_HOME": str(home), "REDIS_URL": None})
        elapsed = time.perf_counter() - started
        assert not (home / "redis" / "server.json").exists()
        return result, elapsed, bool(opened)

    return run


@pytest.mark.parametrize("data, expect", list(_cases()))
def test_hostile_spec_is_refused_with_one_bounded_line(apply: Any, data: bytes, expect: str | None) -> None:
    tracemalloc.start()
    try:
        result, elapsed, accepted = apply(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not accepted, "the spec was accepted: apply went on to open the store"
    assert result.exit_code == 2, (result.exit_code, result.output[-1000:], result.exception)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[:2000]
    line = lines[0]
    assert line.startswith("error: ") and len(line) <= LINE_MAX, (len(line), line[:1000])
    if expect is not None:
        assert expect in line, line
    assert SECRET not in result.output
    assert elapsed < 5, elapsed
    assert peak < 10 * len(data) + 64 * 2**20, peak  # the bombs cost their text, not their expansion


def test_the_walk_finds_every_kind_of_field() -> None:
    paths = {field_id(p) for p, _, _ in FIELDS}
    assert {"timeouts.boot", "sensor.timeout", "sites.0.price", "spark.decommission.migration_interval",
            "scaling.stabilization", "overprovision"} <= {field_id(p) for p, _ in FLOATS}
    assert {"max", "sites.0.max", "celery.concurrency", "spark.master_port"} <= {field_id(p) for p, _ in INTS}
    assert {"name", "celery.app", "celery.queue", "broker", "sites.0.key", "spark.host"} <= paths
    assert 100 <= len(list(_cases())) <= 300


@pytest.mark.parametrize("path, info", FLOATS + INTS, ids=[field_id(p) for p, _ in FLOATS + INTS])
def test_every_number_field_has_an_upper_bound(path: tuple[Any, ...], info: Any) -> None:
    assert any(hasattr(m, "le") or hasattr(m, "lt") for m in info.metadata), f"{field_id(path)} is unbounded"


def test_every_spec_model_is_strict_and_bounded() -> None:
    for model in spec_models():
        config = model.model_config
        assert config.get("strict") is True and config.get("allow_inf_nan") is False, model.__name__
        assert config.get("str_max_length"), model.__name__
        assert config.get("frozen") is True, model.__name__


def test_reserved_attributes_cover_everything_the_pool_sets() -> None:
    assert set(re.findall(r"\$\{(\w+)\}", AGENT_PREAMBLE)) <= RESERVED_ATTRIBUTES  # every worker's
    for name in ("celery", "spark", "condor", "slurm"):
        workload = load_workload(name)
        assert workload.spec_block is not None
        reserved = RESERVED_ATTRIBUTES | workload.spec_block.reserved
        template = workload.deployable_type
        placeholders = set(re.findall(r"\$\{(\w+)\}", template.template))
        assert placeholders <= reserved, placeholders - reserved
        assert set(template.required) <= reserved
    from spark.master import worker_context

    spark = parse_domain_spec(SPARK_BASE)
    assert set(worker_context(spark)) <= RESERVED_ATTRIBUTES | (load_workload("spark").spec_block.reserved)  # type: ignore[union-attr]
    celery = parse_domain_spec(CELERY_BASE)
    assert set(load_workload("celery").attributes(celery)) <= RESERVED_ATTRIBUTES | (load_workload("celery").spec_block.reserved)  # type: ignore[union-attr]


def test_examples_and_defaults_round_trip_through_json() -> None:
    root = Path(__file__).resolve().parent.parent
    specs = [parse_domain_spec(d) for f in sorted((root / "examples").glob("*.yaml"))
             for d in yaml.safe_load_all(f.read_text()) if d]
    specs += [parse_domain_spec(CELERY_BASE), parse_domain_spec(SPARK_BASE), parse_domain_spec({
        **CELERY_BASE, "celery": {"app": "proj.celery:app", "loglevel": "info", "queue": "etl.high"},
        "policy": {"name": "schedule", "windows": [{"days": ["mon", "tue"], "start": "00:00", "end": "24:00",
                                                    "min": 3}]},
        "sensor": {"name": "celery", "rabbitmq_node": "rabbit@h", "prefetch": 2},
        "sites": [{"name": "ec2-eu", "provider": "ec2", "key": "env:AWS_KEY", "options": {"port": 443, "secure": True},
                   "images": {"celery-worker": "ami-1"}, "rate": 2, "price": 0.068}],
        "attributes": {"ssh_key": "ssh-ed25519 AAAA probe"}})]
    for spec in specs:
        stored = spec.model_dump_json()
        assert DomainSpec.model_validate_json(stored) == spec
        assert parse_domain_spec(json.loads(stored)) == spec  # how the store reads it back


def test_a_valid_spec_still_applies_up_to_the_store(apply: Any) -> None:
    result, _, accepted = apply(_dump(CELERY_BASE))
    assert accepted and result.exit_code == 99, result.output


# -- the boot script ------------------------------------------------------------------------------

def payloads(marker: Path) -> list[str]:
    return [f"$(touch {marker})", f"`touch {marker}`", f"'; touch {marker}; '", f"\"; touch {marker}; \"",
            f"\n touch {marker}", f"x\ntouch {marker}\n", f"${{IFS}}touch${{IFS}}{marker}", f"\\'; touch {marker} #"]


def attribute_bag(spec: DomainSpec, node: NodeRecord) -> dict[str, str]:
    """The shape of the bag the manager renders (``Manager.attributes``), with ``python`` harmless."""
    celery = celery_spec(spec)
    assert celery is not None
    attrs = {"workload": "celery", "python": "/bin/true", "redis_url": "redis://127.0.0.1:1/0", "namespace": "ep", "domain": spec.name,
             "node_id": node.node_id, "launch_id": node.launch_id, "broker": spec.broker or "redis://127.0.0.1:1/1",
             "heartbeat_interval": f"{spec.timeouts.heartbeat_interval:g}", "queue": celery.queue,
             "celery_app": celery.app, "celery_path": celery.path or "",
             "concurrency": str(celery.concurrency), "celery_pool": celery.pool,
             "visibility_timeout": f"{celery.visibility_timeout:g}", "loglevel": celery.loglevel}
    attrs.update(spec.attributes)
    return attrs


def run_boot_script(script: str, cwd: Path) -> None:
    proc = subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr


def test_payloads_in_accepted_strings_are_inert_in_the_boot_script(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    node = NodeRecord.new(node_id="probe-1", domain="probe", launch_id="L1", site="local",
                          deployable_type="celery-worker", now=0.0)
    for payload in payloads(marker):
        spec_data = {**CELERY_BASE, "celery": {"app": "tasks", "path": f"/srv/{payload}"},
                     "broker": f"redis://h/0{payload}", "attributes": {"note": payload, "other": payload}}
        try:
            spec = parse_domain_spec(spec_data)
        except SpecError as exc:
            assert "control character" in str(exc), exc  # only the newline payloads are refused
            continue
        run_boot_script(deployable_type("celery-worker").render(attribute_bag(spec, node)), tmp_path)
        assert not marker.exists(), payload
        with pytest.raises(SpecError):  # queue names are restricted
            parse_domain_spec({**spec_data, "celery": {"app": "tasks", "queue": payload}})


@pytest.mark.parametrize("kind", sorted(DEPLOYABLE_TYPES))
def test_payloads_in_every_placeholder_are_inert(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "MARKER"
    template = DEPLOYABLE_TYPES[kind]
    names = set(re.findall(r"\$\{(\w+)\}", template.template)) | set(template.required)
    for payload in payloads(marker):
        attrs = {name: payload for name in names}
        attrs["python"] = "/bin/true"
        run_boot_script(deployable_type(kind).render(attrs), tmp_path)
        assert not marker.exists(), payload


# -- the loader on its own --------------------------------------------------------------------

def test_loader_refuses_a_bomb_for_the_cost_of_its_text() -> None:
    started = time.perf_counter()
    tracemalloc.start()
    try:
        with pytest.raises(SpecError, match=f"more than {MAX_NODES} values once aliases are expanded"):
            load_yaml_documents(_bomb(), source="bomb.yaml")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 0.5 and peak < 4 * 2**20


@pytest.mark.parametrize("data, message", [
    (b"a: 1\n" * 2, "duplicate key 'a' at line 2 (first at line 1)"),
    (b"x: \xff", "not UTF-8 text: byte 0xff at byte offset 3"),
    (b"a: " + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), f"nested deeper than {MAX_DEPTH} levels"),
    (b"a: &a " + b"[" * 30 + b"]" * 30 + b"\nb: [[[[*a]]]]\n", "once the alias at line 2 is expanded"),
    (b"a: &a 1\nb: [" + b", ".join([b"*a"] * (MAX_ALIASES + 1)) + b"]\n", f"more than {MAX_ALIASES} aliases"),
    (b"a: &a [1, *a]\n", "is inside the node it names"),
    (b" " * (MAX_BYTES + 1), "larger than"),
    (b"a: [unclosed\n", "not valid YAML at line"),
    (b"a: !!python/object:os.system ls\n", "not valid YAML"),
    (b"a: " + b"9" * 5000, "a value cannot be read"),
    (b"a: !!float ''\n", "a value cannot be read"),
    (b"a: !!int _\n", "a value cannot be read"),
    (b"a: !!bool x\n", "a value cannot be read"),
    (b"a: !!timestamp abc\n", "a value cannot be read"),
    (b"a: !!timestamp 2001-02-30\n", "a value cannot be read"),
    (b"a: !!int 0x\n", "a value cannot be read"),
])
def test_loader_limits(data: bytes, message: str) -> None:
    with pytest.raises(SpecError) as err:
        load_yaml_documents(data, source="f.yaml")
    text = str(err.value)
    assert text.startswith("f.yaml: ") and message in text and "\n" not in text and len(text) <= 500, text


def test_loader_keeps_what_yaml_allows() -> None:
    docs = load_yaml_documents(b"\xef\xbb\xbfbase: &b {x: 1, y: 2}\nd:\n  <<: *b\n  x: 3\n---\n---\nz: 1\n",
                               source="f.yaml")
    assert docs == [{"base": {"x": 1, "y": 2}, "d": {"x": 3, "y": 2}}, None, {"z": 1}]


def test_stdin_is_read_with_the_same_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "open_store", lambda **kwargs: pytest.fail("the spec was accepted"))
    for data, expect in ((_bomb(), "stdin: more than"), (b"\xff", "stdin: not UTF-8"),
                         (b"x" * (MAX_BYTES + 10), "stdin: larger than")):
        result = CliRunner().invoke(cli.main, ["apply", "-f", "-"], input=data,
                                    env={"POOL_HOME": str(tmp_path), "REDIS_URL": None})
        assert result.exit_code == 2 and expect in result.stderr and result.stderr.count("\n") == 1, result.output
