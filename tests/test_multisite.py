"""Several sites per domain: placement, overflow when a site is full, pacing, overprovisioning, scale."""

from __future__ import annotations

import pytest

from pool.core.model import NodeState
from pool.sim.fleet import Fleet
from pool.sites.config import OperatorConfig
from pool.sites.sim import parse_profile

S = NodeState
LIVE = (S.REQUESTED, S.PENDING, S.STARTED, S.JOINED)


def domain(size: int, *, sites: list[dict], placement: str = "overflow", **extra: object) -> dict:
    return {"name": "fleet", "deployable_type": "celery-worker", "celery": {"app": "tasks"}, "min": size,
            "max": 20_000, "policy": {"name": "fixed", "size": size}, "sites": sites, "placement": placement,
            "sensor": {"name": "sim_queue", "queue": "none"},
            "timeouts": {"heartbeat_interval": 5, "heartbeat_timeout": 30, "boot": 120, "terminate_grace": 5},
            **extra}


def test_overflow_fills_in_rank_order_and_shrinks_from_the_top() -> None:
    fleet = Fleet(domain(7, sites=[{"name": "home", "max": 4}, {"name": "cloud", "rank": 1}]),
                  profiles={"home": "local", "cloud": "local"})
    assert fleet.run_until(lambda f: f.count() == 7, limit=120) is not None
    assert fleet.count(site="home") == 4 and fleet.count(site="cloud") == 3
    fleet.store.set_override("fleet", 5)
    assert fleet.run_until(lambda f: f.count(*LIVE) == 5, limit=300) is not None
    assert fleet.count(*LIVE, site="home") == 4 and fleet.count(*LIVE, site="cloud") == 1


def test_a_full_site_overflows_to_the_next_for_the_capacity_ttl() -> None:
    fleet = Fleet(domain(6, sites=[{"name": "a"}, {"name": "b", "rank": 1}], capacity_ttl=600),
                  profiles={"a": parse_profile("local:capacity=2"), "b": "local"})
    assert fleet.run_until(lambda f: f.count() == 6, limit=200) is not None
    assert fleet.count(site="a") == 2 and fleet.count(site="b") == 4
    errors = [e for e in fleet.store.events("fleet", 500, kind="launch_error")]
    assert errors and "capacity" in errors[-1]["error"]
    assert not fleet.provisioner.available("a", fleet.now)  # skipped until the TTL passes


def test_spot_first_falls_back_to_on_demand_and_spread_follows_weights() -> None:
    spot = Fleet(domain(5, placement="spot_first", sites=[
        {"name": "od", "price": 0.10}, {"name": "spot", "spot": True, "price": 0.03, "max": 3}]),
        profiles={"od": "local", "spot": "local"})
    assert spot.run_until(lambda f: f.count() == 5, limit=120) is not None
    assert spot.count(site="spot") == 3 and spot.count(site="od") == 2
    spread = Fleet(domain(9, placement="spread", sites=[{"name": "x", "weight": 2}, {"name": "y"}]),
                   profiles={"x": "local", "y": "local"})
    assert spread.run_until(lambda f: f.count() == 9, limit=120) is not None
    assert spread.count(site="x") == 6 and spread.count(site="y") == 3


@pytest.mark.parametrize("allowed, why", [
    ((), "is not among the credential references the operator allows"),  # the operator allows none by default
    (("env:EP_TEST_*",), "EP_TEST_UNSET_KEY is not set"),
])
def test_a_broken_site_is_not_hammered_and_the_others_take_the_load(allowed: tuple[str, ...], why: str) -> None:
    fleet = Fleet(domain(4, sites=[{"name": "bad", "provider": "ec2", "key": "env:EP_TEST_UNSET_KEY",
                                    "secret": "env:EP_TEST_UNSET_SECRET"}, {"name": "good", "rank": 1}]),
                  profiles={"good": "local"})
    fleet.provisioner.config = OperatorConfig(credentials=allowed)
    assert fleet.run_until(lambda f: f.count() == 4, limit=120) is not None
    assert fleet.count(site="good") == 4
    assert why in fleet.provisioner.broken["bad"]


def test_pacing_keeps_launch_requests_within_the_site_bucket() -> None:
    """EC2's RunInstances bucket (5, refill 2/s): paced at 2/s with burst 5, the site never throttles."""
    fleet = Fleet(domain(60, sites=[{"name": "ec2", "rate": 2, "burst": 5}]),
                  profiles={"ec2": parse_profile("ec2:boot_median=20")})
    assert fleet.run_until(lambda f: f.count() == 60, limit=600) is not None
    calls = fleet.sites["ec2"].ex_events()
    run = [c for c in calls if c.api == "RunInstances"]
    assert len(run) == 60 and all(c.accepted for c in run)


def test_overprovisioning_covers_machines_that_never_boot_and_is_trimmed() -> None:
    fleet = Fleet(domain(40, sites=[{"name": "s"}], overprovision=25),
                  profiles={"s": parse_profile("local:never_boot=0.1")}, seed=3)
    t = fleet.run_until(lambda f: f.count() >= 40, limit=100)
    assert t is not None and t < 100  # reached before the boot timeout (120 s) could replace anything
    assert fleet.run_until(lambda f: f.count(*LIVE) == 40, limit=400) is not None  # the margin is trimmed


def test_booting_machines_are_kept_until_the_target_joined_then_the_surplus_is_trimmed() -> None:
    """EC2 limits, 10 % never boot: no booting machine is scaled in before the target has joined, a
    machine silent past `boot_replace` is replaced before the boot timeout, and once the target has
    joined the rest (margin, presumed dead) is terminated: one call per machine that reached the site."""
    n = 300
    spec = domain(n, sites=[{"name": "ec2", "rate": 2, "burst": 5, "batch": 100}], overprovision=12,
                  timeouts={"heartbeat_interval": 30, "heartbeat_timeout": 120, "boot": 90, "boot_replace": 65,
                            "terminate_grace": 5})
    fleet = Fleet(spec, profiles={"ec2": parse_profile("ec2:never_boot=0.1")}, seed=4)
    t = fleet.run_until(lambda f: f.joined() >= n, limit=600)
    assert t is not None and t < 90  # before any boot timeout: the margin covered the machines that never boot
    records = fleet.store.nodes("fleet")
    for rec in records:  # nothing that had reached the site was scaled in before the target joined
        ends = [when for state, when, detail in rec.history if detail.startswith("scale-in")]
        assert all(when >= t for when in ends), (rec.node_id, rec.history)
    view = lambda f: f.manager.last_plans["fleet"].view  # noqa: E731
    assert fleet.run_until(lambda f: view(f).actual == n and view(f).joined == n, limit=t + 300) is not None
    fleet.run_until(lambda f: False, limit=fleet.now + 10)  # the site's listing catches up
    site = fleet.sites["ec2"]
    launched = sum(c.instances for c in site.ex_events() if c.api == "RunInstances" and c.accepted)
    assert launched > n  # the margin
    ended = [m for m in site.machines.values() if m.ended is not None]
    terminate = [c for c in site.ex_events() if c.api == "TerminateInstances"]
    assert len(ended) == launched - n and len(terminate) == len(ended)  # one call per surplus machine


def test_launch_records_withdrawn_before_their_launch_cost_no_terminate_call() -> None:
    """Paced at 2 requests/s, one machine each: scaled from 60 to 5 at once, the records still waiting
    for their launch are retired without a call; only machines that exist are terminated."""
    fleet = Fleet(domain(60, sites=[{"name": "s", "rate": 2, "burst": 5}]), profiles={"s": "local"})
    fleet.run_until(lambda f: False, limit=2.0)
    fleet.store.set_override("fleet", 5)
    assert fleet.run_until(lambda f: f.count(*LIVE) == 5, limit=120) is not None
    site = fleet.sites["s"]
    launched = sum(c.instances for c in site.ex_events() if c.api == "RunInstances" and c.accepted)
    assert 5 < launched < 20
    terminate = [c for c in site.ex_events() if c.api == "TerminateInstances"]
    assert len(terminate) == launched - 5  # none for the ~50 records that never reached the site
    withdrawn = [r for r in fleet.store.nodes("fleet") if r.history[-1][2] == "scale-in: withdrawn before launch"]
    assert len(withdrawn) == 60 - launched and all(r.state is S.TERMINATED for r in withdrawn)


def test_a_thousand_node_scale_up_reaches_its_size() -> None:
    fleet = Fleet(domain(1000, sites=[{"name": "ec2", "rate": 2, "burst": 5}], overprovision=12),
                  profiles={"ec2": parse_profile("ec2:never_boot=0.1")}, seed=1)
    t = fleet.run_until(lambda f: f.count() >= 1000, limit=3600)
    assert t is not None
    assert fleet.count(*LIVE) >= 1000


def test_a_cached_listing_does_not_condemn_nodes_launched_after_it() -> None:
    """With a listing fetched every 30 s, nodes that boot and join in between are not taken for gone."""
    from pool.control.manager import Manager
    from pool.core.model import parse_domain_spec
    from pool.sites.provisioner import Provisioner
    from pool.sites.sim import SimNodeDriver
    from pool.state.store import MemoryStore

    clock = {"t": 0.0}
    store = MemoryStore()
    driver = SimNodeDriver(ex_clock=lambda: clock["t"], ex_profile="local")
    m = Manager(store=store, provisioner=Provisioner({"sim": driver}), redis_url="memory://",
                clock=lambda: clock["t"], wakeups=False, list_interval=30.0)
    store.put_domain(parse_domain_spec({
        "name": "d", "site": "sim", "deployable_type": "celery-worker", "min": 0, "max": 5,
        "policy": {"name": "fixed", "size": 0}, "sensor": {"name": "sim_queue", "queue": "none"},
        "scaling": {"fallback": "fixed", "fallback_size": 0}, "celery": {"app": "x"}}))
    m.tick(0.0)  # lists the empty site: kept for 30 s
    store.set_override("d", 3)
    for t in range(1, 12):
        clock["t"] = float(t)
        for node in driver.ex_booted(clock["t"]):
            store.beat("d", node.extra["tags"]["elastic-pool/node"], time=clock["t"], ready=True)
        for n in store.nodes("d"):
            if n.state in (S.STARTED, S.JOINED):
                store.beat("d", n.node_id, time=clock["t"])
        m.tick(clock["t"])
    assert [n.state for n in store.nodes("d")] == [S.JOINED] * 3


# -- batched launches: several machines per RunInstances request, each with its own identity --------


def test_batched_launches_give_each_machine_its_own_identity() -> None:
    fleet = Fleet(domain(120, sites=[{"name": "sim", "batch": 50}]), profiles={"sim": "local"})
    assert fleet.run_until(lambda f: f.count() == 120, limit=120) is not None
    run = [c for c in fleet.sites["sim"].ex_events() if c.api == "RunInstances"]
    assert [c.instances for c in run] == [50, 50, 20]  # three requests for 120 machines
    records = fleet.store.nodes("fleet")
    machines = [fleet.sites["sim"].ex_machine(r.provider_id or "") for r in records]
    assert all(m is not None for m in machines)
    assert len({r.provider_id for r in records}) == 120  # one machine per record, none shared
    for rec, m in zip(records, machines):
        assert m is not None and m.name == rec.node_id
        assert m.tags["elastic-pool/node"] == rec.node_id and m.tags["elastic-pool/launch"] == rec.launch_id


def test_a_throttled_batch_falls_back_to_one_machine_per_request() -> None:
    """A site whose instance bucket (here 30, refilled 2/s) is spent throttles a batch once; then
    the pool launches one machine per request, which its pacing keeps within the site's limits."""
    profile = parse_profile("ec2:run_instances=30,boot_median=5,boot_sigma=0")
    fleet = Fleet(domain(50, sites=[{"name": "ec2", "rate": 2, "burst": 5, "batch": 10}]),
                  profiles={"ec2": profile})
    assert fleet.run_until(lambda f: f.count() == 50, limit=300) is not None
    run = [c for c in fleet.sites["ec2"].ex_events() if c.api == "RunInstances"]
    assert [c.instances for c in run[:3]] == [10, 10, 10] and all(c.accepted for c in run[:3])
    throttled = [c for c in run if not c.accepted]
    assert throttled[0] == run[3] and throttled[0].instances == 10  # the fourth batch
    assert all(c.instances == 1 for c in run[4:])
    # the request pacing's leftover burst may meet the empty instance bucket once more; then no throttling
    assert len(throttled) <= 2 and all(c.accepted for c in run if c.time >= 2)
    assert sum(c.instances for c in run if c.accepted) == 50
    since = throttled[0].time  # the batch grows back: doubled each minute after the throttled batch
    limit = fleet.provisioner.batch_limit
    assert [limit("ec2", since + 59), limit("ec2", since + 60), limit("ec2", since + 600)] == [1, 2, 1000]


def test_a_tracked_launch_budget_sizes_batches_to_what_the_cloud_refilled() -> None:
    """With the site's instance bucket configured (30 machines, refilled 2/s, as the sim site's),
    batches never exceed what is left of it: no launch is throttled, and batches after the first
    30 machines carry what refilled since the last one instead of one machine per request."""
    profile = parse_profile("ec2:run_instances=30,boot_median=5,boot_sigma=0")
    site = {"name": "ec2", "rate": 2, "burst": 5, "batch": 10, "instance_rate": 2, "instance_burst": 30}
    fleet = Fleet(domain(50, sites=[site]), profiles={"ec2": profile})
    assert fleet.run_until(lambda f: f.count() == 50, limit=300) is not None
    run = [c for c in fleet.sites["ec2"].ex_events() if c.api == "RunInstances"]
    assert all(c.accepted for c in run)
    assert [c.instances for c in run[:3]] == [10, 10, 10]
    assert max(c.instances for c in run[3:]) > 1  # refilled machines go out together
    assert sum(c.instances for c in run) == 50
    budget = fleet.provisioner
    assert budget.batch_limit("ec2", run[-1].time) < 10 and budget.budget_wait("ec2", run[-1].time) >= 0


def test_a_batch_on_a_nearly_full_site_launches_what_fits_and_overflows() -> None:
    fleet = Fleet(domain(8, sites=[{"name": "a", "batch": 8}, {"name": "b", "rank": 1}], capacity_ttl=600),
                  profiles={"a": parse_profile("local:capacity=5"), "b": "local"})
    assert fleet.run_until(lambda f: f.count() == 8, limit=120) is not None
    assert fleet.count(site="a") == 5 and fleet.count(site="b") == 3
    first = [c for c in fleet.sites["a"].ex_events() if c.api == "RunInstances"][0]
    assert first.accepted and first.instances == 5  # one request: the five that fit


def test_a_repeated_batch_gets_the_same_machines() -> None:
    from pool.core.model import NodeRecord
    from pool.sites.provisioner import Provisioner
    from pool.sites.sim import SimNodeDriver

    driver = SimNodeDriver(ex_clock=lambda: 0.0, ex_profile="local")
    provisioner = Provisioner({"sim": driver})
    records = [NodeRecord.new(node_id=f"n{i}", domain="d", launch_id=f"launch-{i}", site="sim",
                              deployable_type="celery-worker", now=0.0) for i in range(4)]
    tags = [{"elastic-pool/node": r.node_id} for r in records]
    first = provisioner.launch_many(records, userdata=["#!"] * 4, tags=tags, now=0.0)
    again = provisioner.launch_many(records, userdata=["#!"] * 4, tags=tags, now=0.0)
    assert first == again and len(set(first)) == 4 and driver.ex_alive() == 4
    other = provisioner.launch_many(records[:3], userdata=["#!"] * 3, tags=tags[:3], now=0.0)
    assert set(other).isdisjoint(first)  # another batch is another request
