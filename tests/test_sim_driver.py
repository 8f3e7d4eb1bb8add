"""The `sim` site: token buckets, idempotency, capacity, boots, lag and determinism on an injected clock."""

from __future__ import annotations

import dataclasses
import statistics

import pytest
from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError
from libcloud.compute.types import NodeState

from pool.sites.provisioner import CapacityError, RetryableError, classify
from pool.sites.registry import BUILTIN_SITES, make_driver
from pool.sites.sim import (
    DESCRIBE,
    PROFILES,
    RUN,
    TERMINATE,
    IdempotentParameterMismatch,
    SimCloudProfile,
    SimNodeDriver,
    parse_profile,
)


class Clock:
    """Simulated seconds, moved by hand."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def driver(clock: Clock, profile: SimCloudProfile | str = "ec2", seed: int = 0) -> SimNodeDriver:
    return SimNodeDriver(ex_clock=clock, ex_profile=profile, ex_seed=seed)


UNTHROTTLED = PROFILES["local"]


def test_registered_with_libcloud_as_the_sim_site() -> None:
    assert BUILTIN_SITES["sim"] == "elastic_sim"
    d = make_driver("sim", ex_clock=Clock(), ex_profile="local")
    assert isinstance(d, SimNodeDriver)
    node = d.create_node("n1", ex_client_token="tok")
    assert node.name == "n1"


def test_run_instances_request_bucket_throttles_then_refills_on_the_clock() -> None:
    clock = Clock()
    d = driver(clock)  # EC2: 5 RunInstances calls, refill 2/s
    for i in range(5):
        d.create_node(f"n{i}")
    with pytest.raises(RateLimitReachedError) as info:
        d.create_node("n5")
    assert info.value.code == 503 and "RequestLimitExceeded" in str(info.value)
    assert isinstance(classify(info.value, delay=1.0), RetryableError)
    clock.now = 0.4  # 0.8 tokens: still empty
    with pytest.raises(RateLimitReachedError):
        d.create_node("n5")
    clock.now = 0.5  # one token
    d.create_node("n5")
    with pytest.raises(RateLimitReachedError):
        d.create_node("n6")
    clock.now = 100.0  # refilled, but never above the bucket size
    for i in range(5):
        d.create_node(f"m{i}")
    with pytest.raises(RateLimitReachedError):
        d.create_node("m5")
    assert len(d.machines) == 11
    rates = d.ex_request_rates()[RUN]
    assert rates["accepted"] == 11 and rates["throttled"] == 4
    assert rates["max_per_second"] <= rates["bound_per_second"]


def test_resource_bucket_limits_instances_not_calls() -> None:
    clock = Clock()
    d = driver(clock)  # EC2: 1000 instances, refill 2/s
    assert len(d.create_node("big", ex_count=1000)) == 1000
    clock.now = 1.0  # 2 instance tokens back
    with pytest.raises(RateLimitReachedError, match="resource"):
        d.create_node("more", ex_count=5)
    assert len(d.create_node("two", ex_count=2)) == 2
    clock.now = 4.0
    assert len(d.create_node("six", ex_count=6)) == 6


def test_terminate_and_describe_buckets() -> None:
    clock = Clock()
    d = driver(clock, dataclasses.replace(PROFILES["ec2"], run_requests=1e9, run_instances=1e9))
    nodes = [d.create_node(f"n{i}") for i in range(150)]
    done = 0
    with pytest.raises(RateLimitReachedError):
        for node in nodes:
            d.destroy_node(node)
            done += 1
    assert done == 100  # TerminateInstances: 100 calls
    for _ in range(100):
        d.list_nodes()
    with pytest.raises(RateLimitReachedError):
        d.list_nodes()  # Describe: 100 calls
    clock.now = 1.0
    d.list_nodes()  # 20 back
    assert d.ex_request_rates()[TERMINATE]["accepted"] == 100
    assert d.ex_request_rates()[DESCRIBE]["throttled"] == 1


def test_client_token_makes_launches_idempotent() -> None:
    clock = Clock()
    d = driver(clock, UNTHROTTLED)
    first = d.create_node("a", ex_client_token="launch-1", ex_tags={"elastic-pool/node": "a"})
    again = d.create_node("a", ex_client_token="launch-1")
    assert again.id == first.id and len(d.machines) == 1
    batch = d.create_node("b", ex_client_token="launch-2", ex_count=3)
    assert isinstance(batch, list) and len(batch) == 3
    assert [n.id for n in d.create_node("b", ex_client_token="launch-2", ex_count=3)] == [n.id for n in batch]
    assert len(d.machines) == 4
    with pytest.raises(IdempotentParameterMismatch):
        d.create_node("b", ex_client_token="launch-2", ex_count=2)
    assert first.extra["tags"] == {"elastic-pool/node": "a"}


def test_capacity_refuses_with_insufficient_instance_capacity() -> None:
    clock = Clock()
    d = driver(clock, dataclasses.replace(UNTHROTTLED, capacity=3))
    nodes = [d.create_node(f"n{i}") for i in range(3)]
    with pytest.raises(BaseHTTPError) as info:
        d.create_node("n3")
    assert "InsufficientInstanceCapacity" in str(info.value)
    assert isinstance(classify(info.value, delay=1.0), CapacityError)
    d.destroy_node(nodes[0])  # not booted yet: ends at once, room again
    d.create_node("n3")
    d.destroy_node(nodes[1])
    d.destroy_node(nodes[2])
    part = d.create_node("batch", ex_count=5, ex_min_count=1)  # as many as fit
    assert len(part) == 2
    with pytest.raises(BaseHTTPError, match="InsufficientInstanceCapacity"):
        d.create_node("none", ex_count=2, ex_min_count=1)


def test_boot_times_are_log_normal_around_the_median_and_some_never_boot() -> None:
    clock = Clock()
    profile = dataclasses.replace(UNTHROTTLED, boot_median=40.0, boot_sigma=0.3, never_boot=0.3)
    d = driver(clock, profile, seed=7)
    d.create_node("n", ex_count=2000)
    clock.now = 10_000.0
    booted = d.ex_booted(clock.now)
    assert d.ex_booted(clock.now) == []  # each boot is reported once
    assert 0.65 * 2000 < len(booted) < 0.75 * 2000
    durations = [n.extra["boot_at"] - n.extra["launched"] for n in booted]
    assert 37.0 < statistics.median(durations) < 43.0
    assert min(durations) < 30.0 and max(durations) > 50.0  # a spread, not a constant
    never = [m for m in d.machines.values() if m.boot_at is None]
    assert len(never) == 2000 - len(booted)
    listed = {n.id: n.state for n in d.list_nodes()}
    assert all(listed[m.id] == NodeState.RUNNING for m in never)  # running, but never heartbeats


def test_ex_booted_reports_each_boot_at_its_time() -> None:
    clock = Clock()
    d = driver(clock, dataclasses.replace(UNTHROTTLED, boot_median=10.0, boot_sigma=0.0))
    d.create_node("n")
    assert d.ex_next_event_time() == 10.0
    assert d.ex_booted(9.9) == []
    assert [n.name for n in d.ex_booted(10.0)] == ["n"]
    assert d.ex_next_event_time() is None


def test_listing_lags_by_the_profile_lag() -> None:
    clock = Clock()
    d = driver(clock, dataclasses.replace(UNTHROTTLED, lag=5.0, terminated_visible=30.0))
    node = d.create_node("n")
    clock.now = 2.0
    assert d.list_nodes() == []  # launched, not listed yet
    clock.now = 5.0
    assert [n.state for n in d.list_nodes()] == [NodeState.RUNNING]
    clock.now = 10.0
    d.destroy_node(node)
    clock.now = 12.0
    assert [n.state for n in d.list_nodes()] == [NodeState.RUNNING]  # still, as of 7 s
    clock.now = 15.0
    assert [n.state for n in d.list_nodes()] == [NodeState.TERMINATED]
    clock.now = 46.0
    assert d.list_nodes() == []  # ended instances leave the listing


def test_destroy_is_idempotent_and_a_booted_machine_gets_its_grace() -> None:
    clock = Clock()
    d = driver(clock, dataclasses.replace(UNTHROTTLED, boot_median=5.0, boot_sigma=0.0))
    a, b = d.create_node("a"), d.create_node("b")
    clock.now = 6.0
    assert len(d.ex_booted(clock.now)) == 2
    assert d.destroy_node(a, ex_grace=30.0) and d.destroy_node(a, ex_grace=30.0)
    assert d.destroy_node(b, ex_grace=30.0)
    requests = d.ex_shutdown_requests()
    assert [r.node.name for r in requests] == ["a", "b"] and d.ex_shutdown_requests() == []
    d.ex_shutdown_complete(a, 10.0)  # a's agent finished its warm shutdown
    assert d.machines[a.id].ended == 10.0
    assert d.ex_next_event_time() == 36.0  # b's grace runs out
    ended = d.ex_ended(36.0)
    assert [n.name for n in ended] == ["b"] and d.machines[b.id].end_reason.startswith("killed")
    assert d.destroy_node(b) and d.ex_alive() == 0
    clock.now = 100.0
    assert d.ex_billed_seconds(clock.now) == pytest.approx((10.0 - 0.0) + (36.0 - 0.0))


def test_spot_preemption_ends_machines_and_reports_them() -> None:
    clock = Clock()
    d = driver(clock, dataclasses.replace(UNTHROTTLED, preemption_rate=3600.0 / 100.0, boot_median=1.0,
                                          boot_sigma=0.0))
    d.create_node("n", ex_count=200)
    clock.now = 1.0
    d.ex_booted(1.0)
    clock.now = 100.0
    ended = d.ex_ended(100.0)
    reasons = {m.end_reason for m in d.machines.values() if m.ended is not None}
    assert reasons == {"preempted"}
    # mean lifetime 100 s: about 1 - e^-1 = 63 % gone after 100 s
    assert 0.5 * 200 < len([m for m in d.machines.values() if m.ended is not None]) < 0.75 * 200
    assert len(ended) >= 0.5 * 200 - 5  # the booted ones among them were reported


def test_same_seed_same_cloud_and_another_seed_another() -> None:
    def boots(seed: int) -> list[float]:
        clock = Clock()
        d = driver(clock, dataclasses.replace(UNTHROTTLED, never_boot=0.1), seed=seed)
        d.create_node("n", ex_count=50)
        return [m.boot_at if m.boot_at is not None else -1.0 for m in d.machines.values()]

    assert boots(3) == boots(3)
    assert boots(3) != boots(4)


def test_request_counters_per_api_per_second() -> None:
    clock = Clock()
    d = driver(clock)
    for t in (0.0, 0.1, 0.2, 1.5, 2.9):
        clock.now = t
        d.list_nodes()
    assert d.ex_calls_per_second(DESCRIBE) == {0: 3, 1: 1, 2: 1}
    assert [c.api for c in d.ex_events()] == [DESCRIBE] * 5


def test_profiles_parse_and_reject_bad_values_in_one_line() -> None:
    assert parse_profile("ec2") == PROFILES["ec2"]
    p = parse_profile("ec2:never_boot=0.05,capacity=10,lag=3")
    assert (p.never_boot, p.capacity, p.lag) == (0.05, 10, 3.0)
    assert parse_profile("local").boot_median == 2.0
    with pytest.raises(ValueError, match="valid: ec2, local"):
        parse_profile("gcp")
    with pytest.raises(ValueError, match="allowed: .*boot_median"):
        parse_profile("ec2:bogus=1")
    with pytest.raises(ValueError, match="never_boot must be a fraction"):
        parse_profile("ec2:never_boot=2")
    with pytest.raises(ValueError, match="not a number"):
        parse_profile("ec2:lag=soon")
    with pytest.raises(ValueError, match="ex_clock"):
        SimNodeDriver()
