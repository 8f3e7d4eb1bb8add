"""The endpoint registry: workers of a workload that serves pushed requests (examples/echo) advertise
their address; `GET /domains/{name}/endpoints` lists the healthy joined ones, and ``EndpointPool``
keeps that list from the event stream, hands it out round-robin and drops a worker that drains or dies.

The slow test runs real echo workers on the local site through a real manager, the real API server
(uvicorn on a port of its own) and real HTTP requests to the workers."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from pool.api.client import ApiError, Endpoint, EndpointPool, NoEndpoint, apply_event, sse_events
from pool.api.endpoints import advertised, endpoints, healthy_endpoints
from pool.control.manager import Manager
from pool.core.model import Heartbeat, NodeRecord, NodeState, parse_domain_spec
from pool.sites.local import LocalNodeDriver
from pool.sites.provisioner import Provisioner
from pool.state.store import Store
from pool.workloads import base
from pool.workloads.base import check_endpoint
from tests.conftest import RunningManager, run_manager, wait

ROOT = Path(__file__).resolve().parent.parent
ECHO = ROOT / "examples" / "echo"
S = NodeState


def joined(node_id: str, *, at: float = 0.0) -> NodeRecord:
    rec = NodeRecord.new(node_id=node_id, domain="web", launch_id=f"l-{node_id}", site="local",
                         deployable_type="echo-service", now=at)
    for state in (S.PENDING, S.STARTED, S.JOINED):
        rec.set_state(state, at)
    return rec


def test_only_healthy_joined_workers_with_a_valid_address_are_listed() -> None:
    recs = [joined(n) for n in ("ok", "stale", "dead", "draining", "noticed", "bad-address", "no-address")]
    recs.append(joined("drain-record"))
    recs[-1].set_state(S.DRAINING, 1.0)
    beats = {r.node_id: Heartbeat(time=100.0) for r in recs}
    beats["stale"] = Heartbeat(time=96.9)  # 3.1 s old, timeout 3
    beats["dead"] = Heartbeat(time=100.0, workload_alive=False)
    beats["draining"] = Heartbeat(time=100.0, draining=True)
    beats["noticed"] = Heartbeat(time=100.0, preempt_notice=99.0)
    addresses = {r.node_id: f"http://127.0.0.1:{8000 + i}" for i, r in enumerate(recs)}
    addresses["bad-address"] = "http://user:secret@127.0.0.1:80"
    del addresses["no-address"]
    out = healthy_endpoints(recs, beats, addresses, heartbeat_timeout=3.0, now=100.0)
    assert out == [{"node": "ok", "address": "http://127.0.0.1:8000"}]


def test_an_advertised_address_is_checked() -> None:
    assert check_endpoint("http://10.0.0.5:8080") is None
    assert check_endpoint("grpc://[::1]:50051/svc") is None
    assert "port" in str(check_endpoint("http://10.0.0.5"))
    assert "no credentials" in str(check_endpoint("http://u:p@10.0.0.5:80"))
    assert check_endpoint("x" * 300) is not None and check_endpoint(None) is not None


def test_the_agent_beats_only_a_valid_address_of_a_live_workload() -> None:
    from pool.node.agent import Agent
    from pool.state.store import MemoryStore

    address: list[str | None] = ["http://127.0.0.1:8080"]
    agent = Agent(store=MemoryStore(), domain="web", node_id="a", command=["true"], interval=1.0,
                  endpoint=lambda: address[0])
    assert agent._endpoint(True) == {"endpoint": "http://127.0.0.1:8080"}
    assert agent._endpoint(False) == {"endpoint": ""}  # the workload exited: no address
    address[0] = "http://user:secret@127.0.0.1:8080"
    assert agent._endpoint(True) == {"endpoint": ""}  # never published, never logged
    address[0] = None
    assert agent._endpoint(True) == {"endpoint": ""}
    assert Agent(store=MemoryStore(), domain="web", node_id="b", command=["true"], interval=1.0)._endpoint(True) == {}


def test_events_drop_leaving_workers_and_a_join_fetches_again() -> None:
    a, b = Endpoint("a", "http://h:1"), Endpoint("b", "http://h:2")
    assert apply_event((a, b), "node", {"node": "a", "from": "JOINED", "to": "DRAINING"}) == ((b,), False)
    assert apply_event((a, b), "node", {"node": "b", "to": "UNHEALTHY"}) == ((a,), False)
    assert apply_event((a, b), "drain", {"node": "a", "why": "scale-in"}) == ((b,), False)
    assert apply_event((a, b), "workload_exit", {"node": "b", "code": 1}) == ((a,), False)
    assert apply_event((a,), "node", {"node": "c", "from": "STARTED", "to": "JOINED"}) == ((a,), True)
    assert apply_event((a, b), "decision", {"target": 2}) == ((a, b), False)
    assert apply_event((a, b), "deleted", {"by": "ops"}) == ((), False)
    lines = [": keepalive", "", "event: node", 'data: {"node": "a",', 'data: "to": "JOINED"}', "", "data: x", ""]
    assert list(sse_events(iter(lines))) == [(":", "keepalive"), ("node", '{"node": "a",\n"to": "JOINED"}'),
                                             ("message", "x")]


# -- real workers, a real manager, the real API ------------------------------------------------------


@pytest.fixture
def echo_registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(base.registry.aliases, "echo", "echo_service:Echo")
    monkeypatch.syspath_prepend(str(ECHO))
    monkeypatch.setenv("PYTHONPATH", f"{ECHO}:{ROOT}")  # workers import the example workload from here
    yield
    base._by_name.pop("echo", None)
    base._by_type.pop("echo-service", None)
    sys.modules.pop("echo_service", None)


@pytest.fixture
def echo_manager(store: Store, redis_url: str, pool_home: Path, echo_registered: None) -> Iterator[RunningManager]:
    driver = LocalNodeDriver(ex_state_dir=str(pool_home / "sites" / "local"), ex_worker_env=("PYTHONPATH",))
    with run_manager(Manager(store=store, provisioner=Provisioner({"local": driver}), redis_url=redis_url),
                     driver) as rm:
        yield rm


@contextlib.contextmanager
def api_server(store: Store) -> Iterator[str]:
    """The API app served on 127.0.0.1 and a free port, in a thread; its base URL."""
    from pool.api.app import create_app
    from pool.api.server import serve

    server = serve(create_app(store=store), host="127.0.0.1", port=0)
    try:
        yield server.url
    finally:
        server.stop()


def served_by(address: str) -> str:
    return str(httpx.get(address, timeout=5).json()["node"])


@pytest.mark.slow
def test_endpoints_of_real_workers_follow_joins_drains_and_deaths(echo_manager: RunningManager, redis_url: str
                                                                  ) -> None:
    from pool.api.auth import create_token

    rm = echo_manager
    store = rm.store
    store.put_domain(parse_domain_spec({
        "name": "web", "deployable_type": "echo-service", "min": 0, "max": 3,
        "sensor": {"name": "celery", "params": {"queue": "unused"}}, "policy": {"name": "fixed", "size": 0},
        "scaling": {"stabilization": 0},
        "timeouts": {"heartbeat_interval": 0.5, "heartbeat_timeout": 3, "boot": 60, "drain": 20,
                     "terminate_grace": 5}}))
    token = create_token(store, "svc", "viewer", now=time.time())
    with api_server(Store.from_url(redis_url, namespace=store.ns)) as url, \
            EndpointPool(url, "web", token=token, refresh=60.0) as pool:
        with pytest.raises(NoEndpoint):
            pool.next()
        with pytest.raises(ApiError) as refused:
            EndpointPool(url, "web", token="pool_not-a-token").start()
        assert refused.value.status == 401
        with pytest.raises(ApiError) as unknown:
            EndpointPool(url, "nosuch", token=token).start()
        assert unknown.value.status == 404 and "nosuch" in unknown.value.reason
        store.set_override("web", 2)  # as `POST /domains/web/resize` does
        assert pool.wait_for(lambda eps: len(eps) == 2, 60), "two workers' endpoints in the pool"
        listed = {e["node"]: e["address"] for e in endpoints(store, "web")}
        assert set(listed) == {n.node_id for n in rm.live("web", S.JOINED)}
        assert {(e.node, e.address) for e in pool.endpoints()} == set(listed.items())
        # round-robin: four calls reach each worker twice, and each worker answers as itself
        reached = [served_by(pool.next().address) for _ in range(4)]
        assert sorted(reached) == sorted(list(listed) * 2) and reached[0] != reached[1]

        store.set_override("web", 1)  # scale-in: one worker drains
        wait(lambda: any(n.state is not S.JOINED for n in store.nodes("web") if n.node_id in listed), 30,
             "a worker to be drained")
        gone = next(n.node_id for n in store.nodes("web") if n.node_id in listed and n.state is not S.JOINED)
        assert pool.wait_for(lambda eps: gone not in {e.node for e in eps}, 2), "the draining worker dropped"
        assert gone not in {e["node"] for e in endpoints(store, "web")}
        wait(lambda: advertised(store, "web", [gone]) == {}, 10, "the draining worker's agent to clear its endpoint")
        kept = next(n for n in listed if n != gone)
        assert {served_by(pool.next().address) for _ in range(3)} == {kept}

        machine = next(n.provider_id for n in store.nodes("web") if n.node_id == kept)
        victim = next(n for n in rm.driver.list_nodes() if n.id == machine)
        rm.driver.ex_preempt(victim)  # the worker dies at once, as a spot loss
        assert pool.wait_for(lambda eps: kept not in {e.node for e in eps}, 15), "the dead worker dropped"
        assert kept not in {e["node"] for e in endpoints(store, "web")}
        # the manager replaces it (the override still says 1): the new worker comes into the pool
        assert pool.wait_for(lambda eps: len(eps) == 1 and eps[0].node not in listed, 60), "a replacement listed"
        assert served_by(pool.next().address) == pool.endpoints()[0].node
    assert pool.connections >= 1



def test_the_pool_catches_up_after_the_api_restarts(store: Store, redis_url: str) -> None:
    """Records and heartbeats written as the manager and agents write them (no worker runs): a join
    announced on the stream brings a worker in; what changed while the API was down is seen once the
    client reconnects."""
    from pool.api.app import create_app
    from pool.api.auth import create_token
    from pool.api.server import serve

    store.put_domain(parse_domain_spec({"name": "web", "max": 4, "sensor": {"name": "celery"},
                                        "celery": {"app": "tasks"}, "timeouts": {"heartbeat_timeout": 120}}))
    token = create_token(store, "svc", "viewer", now=time.time())

    def join(node_id: str, port: int) -> NodeRecord:
        rec = joined(node_id, at=time.time())
        store.put_nodes([rec])
        store.beat("web", node_id, time=repr(time.time()), ready=True, workload_alive=True,
                   endpoint=f"http://127.0.0.1:{port}")
        store.record("web", "node", time.time(), node=node_id, to="JOINED")
        return rec

    join("a", 8001)
    server = serve(create_app(store=Store.from_url(redis_url, namespace=store.ns)), host="127.0.0.1", port=0)
    port = server.port
    with EndpointPool(server.url, "web", token=token, refresh=60.0, retry=0.2) as pool:
        try:
            assert [e.node for e in pool.endpoints()] == ["a"]
            assert pool.wait_for(lambda eps: pool.connections == 1, 5)
            join("b", 8002)  # the JOINED event makes the pool fetch the list again
            assert pool.wait_for(lambda eps: {e.node for e in eps} == {"a", "b"}, 5), "b listed after its join"
            server.stop()
            def drain(rec: NodeRecord) -> bool:
                rec.set_state(S.DRAINING, time.time())
                return True

            store.update_node("web", "a", drain)
            store.record("web", "node", time.time(), node="a", to="DRAINING")  # recorded while nobody listens
            server = serve(create_app(store=Store.from_url(redis_url, namespace=store.ns)), host="127.0.0.1",
                           port=port)
            assert pool.wait_for(lambda eps: [e.node for e in eps] == ["b"], 10), "a dropped after the reconnect"
            assert pool.connections >= 2
            assert [pool.next().node for _ in range(2)] == ["b", "b"]
        finally:
            server.stop()
