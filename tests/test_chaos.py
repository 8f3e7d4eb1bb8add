"""A reduced chaos run (the full one is `make chaos`): real managers, workers and Redis under faults."""

from __future__ import annotations

import pytest

from bench import chaos

pytestmark = pytest.mark.slow


def test_kill_busy_workers_loses_nothing() -> None:
    audit = chaos.kill_busy_workers(tasks=200, seconds=0.1, max_size=3)
    assert audit.extra["killed"] >= 1
    assert audit.lost == 0 and audit.double_launches == 0 and audit.records_lost == 0, audit


def test_killing_the_deciders_manager_fails_over() -> None:
    audit = chaos.kill_decider(size=4)
    assert audit.lost == 0 and audit.double_launches == 0 and audit.records_lost == 0, audit
    assert audit.extra["failover_s"] > 0


def test_a_paused_decider_is_refused_after_it_resumes() -> None:
    audit = chaos.pause_decider(tasks=30)
    assert audit.lost == 0 and audit.double_launches == 0 and audit.records_lost == 0, audit
    assert audit.extra["token_after"] > audit.extra["token_before"]
    assert audit.extra["old_still_leader"] is False


def test_redis_restart_mid_drain() -> None:
    audit = chaos.restart_redis(tasks=120)
    assert audit.lost == 0 and audit.double_launches == 0 and audit.records_lost == 0, audit
    assert audit.extra["node_records_kept"]


def test_cut_heartbeats_replace_the_node() -> None:
    audit = chaos.cut_heartbeats()
    assert audit.lost == 0 and audit.records_lost == 0, audit
    assert audit.extra["ttr_joined_s"] >= audit.extra["ttr_request_s"]
