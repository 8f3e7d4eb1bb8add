"""The node state machine and domain spec validation."""

from __future__ import annotations

import pytest

from pool.core.model import (
    TRANSITIONS,
    IllegalTransition,
    NodeRecord,
    NodeState,
    SpecError,
    parse_domain_spec,
)
from pool.workloads.celery import CelerySpec

S = NodeState


def node() -> NodeRecord:
    return NodeRecord.new(node_id="d-1", domain="d", launch_id="L1", site="local",
                          deployable_type="celery-worker", now=100.0, detail="launch")


def test_happy_path_keeps_history() -> None:
    rec = node()
    for i, state in enumerate([S.PENDING, S.STARTED, S.JOINED, S.DRAINING, S.TERMINATING, S.TERMINATED]):
        rec.set_state(state, 101.0 + i, f"step {i}")
    assert rec.state == S.TERMINATED
    assert [h[0] for h in rec.history] == ["REQUESTED", "PENDING", "STARTED", "JOINED", "DRAINING",
                                            "TERMINATING", "TERMINATED"]
    assert rec.entered(S.JOINED) == 103.0
    assert rec.since == 106.0


@pytest.mark.parametrize("start,bad", [(S.REQUESTED, S.JOINED), (S.TERMINATED, S.PENDING),
                                       (S.JOINED, S.STARTED), (S.UNHEALTHY, S.JOINED),
                                       (S.FAILED, S.JOINED), (S.DRAINING, S.JOINED)])
def test_illegal_moves_are_refused(start: NodeState, bad: NodeState) -> None:
    rec = node()
    rec.state = start
    before = list(rec.history)
    with pytest.raises(IllegalTransition, match=f"{start.value} -> {bad.value} is not allowed"):
        rec.set_state(bad, 200.0)
    assert rec.state == start and rec.history == before


def test_every_state_can_end() -> None:
    """From any state there is a path to TERMINATED, and TERMINATED is final."""
    assert TRANSITIONS[S.TERMINATED] == frozenset()
    for state in NodeState:
        seen, todo = {state}, [state]
        while todo:
            for nxt in TRANSITIONS[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert S.TERMINATED in seen


def test_record_round_trips_json() -> None:
    rec = node()
    rec.set_state(S.PENDING, 101.0, "ok")
    again = NodeRecord.from_json(rec.to_json())
    assert again == rec


GOOD = {"name": "etl", "max": 4, "celery": {"app": "tasks"}}


def test_minimal_spec_defaults() -> None:
    spec = parse_domain_spec(GOOD)
    assert spec.min == 0 and spec.max == 4 and spec.policy.name == "queue_depth"
    assert isinstance(spec.block, CelerySpec) and spec.block.queue == "celery"
    assert spec.site == "local" and [s.name for s in spec.sites] == ["local"] and spec.placement == "overflow"


def test_sites_list_and_credentials_by_reference() -> None:
    spec = parse_domain_spec({**GOOD, "placement": "spot_first", "sites": [
        {"name": "spot", "provider": "ec2", "key": "env:AWS_KEY", "secret": "file:/run/secret", "spot": True,
         "price": 0.01, "images": {"celery-worker": "ami-1"}, "size": "t3.micro", "max": 10},
        {"name": "local", "rank": 1}]})
    assert spec.site == "spot" and [s.name for s in spec.sites] == ["spot", "local"]
    spot = spec.site_spec("spot")
    assert spot.image_for("celery-worker") == "ami-1" and spot.size_for("celery-worker") == "t3.micro"
    assert spec.site_spec("gone").name == "gone"  # a site no longer configured still resolves
    with pytest.raises(SpecError) as err:
        parse_domain_spec({**GOOD, "sites": [{"name": "e", "provider": "ec2", "secret": "wJalrXUtnFEMI/K7MDENG"}]})
    assert "wJalrXUtnFEMI" not in str(err.value)  # a literal credential is refused without being echoed


@pytest.mark.parametrize(
    "change,expected",
    [
        ({"max": -1}, "max: Input should be greater than or equal to 0"),
        ({"min": 5, "max": 2}, "max (2) must be >= min (5)"),
        ({"colour": "blue"}, "colour: unknown field (allowed: name, deployable_type, site, sites, placement"),
        ({"sites": [{"name": "e", "provider": "ec2", "key": "AKIAXXXX"}]},
         "sites.0.key: must be a reference, env:NAME or file:/path"),
        ({"sites": [{"name": "local"}, {"name": "local"}]}, "sites: local listed more than once"),
        ({"site": "sim", "sites": [{"name": "local"}]}, "site: 'sim' is not the first of sites ('local')"),
        ({"placement": "random"}, "placement: Input should be 'overflow', 'spread', 'cheapest' or 'spot_first'"),
        ({"broker": "http://x"}, "broker: 'http://x' is not a broker URL; expected one of redis://"),
        ({"celery": {"app": "tasks", "qeue": "x"}}, "celery.qeue: unknown field (allowed: app, path, queue"),
        ({"name": "Bad Name"}, "name: must be lowercase letters"),
        ({"timeouts": {"heartbeat_interval": 5, "heartbeat_timeout": 2}}, "heartbeat_timeout (2.0) must be greater"),
    ],
)
def test_invalid_specs_give_one_line(change: dict, expected: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_domain_spec({**GOOD, **change})
    message = str(err.value)
    assert "\n" not in message
    assert expected in message, message


def test_not_a_mapping() -> None:
    with pytest.raises(SpecError, match="must be a mapping"):
        parse_domain_spec(["etl"])
