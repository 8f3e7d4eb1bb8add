"""The REST API against a real Redis and a real manager ticking (on a simulated cloud behind the `local`
site name, so no worker process starts): the role matrix of every mutating route, resize and pause as
the manager sees them, deletion by drain, the event stream, errors as JSON naming the field, no secret in
any answer; and `pool up --api` as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from pool.api.app import create_app
from pool.api.auth import create_token, digest
from pool.api.server import ApiServer, BindRefused, serve
from pool.control.manager import Manager
from pool.sites.provisioner import Provisioner
from pool.sites.sim import SimNodeDriver, parse_profile
from pool.state.store import Store
from tests.conftest import RunningManager, celery_spec, wait

ROOT = Path(__file__).resolve().parent.parent
POOL = [sys.executable, "-m", "pool.cli"]
SECRET = "s3cret-broker-pw"


class Api:
    """A served API and a client per role (tokens named after their role)."""

    def __init__(self, server: ApiServer, tokens: dict[str, str]) -> None:
        self.server = server
        self.tokens = tokens
        self.url = server.url

    def as_(self, role: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)


@pytest.fixture
def api(store: Store, redis_url: str, pool_home: Path) -> Iterator[Api]:
    now = time.time()
    tokens = {role: create_token(store, role, role, now=now) for role in ("viewer", "operator", "admin")}
    server = serve(create_app(store=Store.from_url(redis_url, namespace=store.ns), keepalive=1.0, poll=0.2))
    try:
        yield Api(server, tokens)
    finally:
        server.stop()


@pytest.fixture
def manager(store: Store, redis_url: str) -> Iterator[Any]:
    """A manager ticking every 0.25 s; its `local` site is a simulated cloud (machines that never run)."""
    driver = SimNodeDriver(ex_clock=time.time, ex_profile=parse_profile("local"), ex_seed=1)
    m = Manager(store=Store.from_url(redis_url, namespace=store.ns), provisioner=Provisioner({"local": driver}),
                redis_url=redis_url, wakeups=False)
    rm = RunningManager(m, driver)  # type: ignore[arg-type]
    rm.thread.start()
    try:
        yield rm
    finally:  # the simulated machines are no processes: nothing to kill
        rm.stop.set()
        m.wake.set()
        rm.thread.join(10)
        m.close()


def spec(name: str, size: int = 0, **overrides: Any) -> dict[str, Any]:
    base = celery_spec(name, policy={"name": "fixed", "size": size}, timeouts={"terminate_grace": 0})
    base.pop("name")
    return {**base, **overrides}


def put(api: Api, name: str, body: dict[str, Any]) -> dict[str, Any]:
    with api.as_("admin") as c:
        r = c.put(f"/domains/{name}", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def get(api: Api, path: str, role: str = "viewer") -> Any:
    with api.as_(role) as c:
        r = c.get(path)
    assert r.status_code == 200, r.text
    return r.json()


# -- access control -----------------------------------------------------------------------------

#: every route that changes something: (method, path, body, the weakest role allowed)
MUTATING = [
    ("PUT", "/domains/{name}", spec("d", 1), "admin"),
    ("POST", "/domains/{name}/resize", {"size": 1}, "operator"),
    ("POST", "/domains/{name}/pause", None, "operator"),
    ("POST", "/domains/{name}/resume", None, "operator"),
    ("POST", "/tokens", {"name": "extra", "role": "viewer"}, "admin"),
    ("DELETE", "/tokens/{token_name}", None, "admin"),
    ("DELETE", "/domains/{name}", None, "admin"),
]
WEAKER = {"operator": "viewer", "admin": "operator"}


def test_every_mutating_route_is_in_the_role_matrix(api: Api) -> None:
    document = httpx.get(api.url + "/openapi.json").json()
    routes = {(method.upper(), path) for path, item in document["paths"].items() for method in item
              if method in ("put", "post", "delete", "patch")}
    assert routes == {(method, path) for method, path, _, _ in MUTATING}


def test_role_matrix_no_token_401_weaker_role_403_allowed_role_acts(api: Api, store: Store) -> None:
    put(api, "d", spec("d", 1))
    store.put_token("extra", role="viewer", digest=digest("pool_unused"), now=time.time())
    for method, path, body, needed in MUTATING:
        url = path.format(name="d", token_name="extra")
        kwargs: dict[str, Any] = {"json": body} if body is not None else {}
        with api.as_(None) as c:
            r = c.request(method, url, **kwargs)
            assert r.status_code == 401 and "authorization" in r.json()["error"], (method, url, r.text)
            r = c.request(method, url, headers={"Authorization": "Bearer pool_not-a-token"}, **kwargs)
            assert r.status_code == 401 and "unknown" in r.json()["error"], (method, url, r.text)
        with api.as_(WEAKER[needed]) as c:
            r = c.request(method, url, **kwargs)
            assert r.status_code == 403, (method, url, r.text)
            assert f"needs {needed}" in r.json()["error"]
        if method == "POST" and path == "/tokens":
            store.delete_token("extra")  # the allowed call makes it anew
        with api.as_(needed) as c:
            r = c.request(method, url, **kwargs)
            assert r.status_code in (200, 201, 202), (method, url, r.text)
    assert "extra" not in store.tokens()  # removed by the admin
    assert store.marks().deleting["d"]["by"] == "admin"
    with api.as_("viewer") as c:
        assert c.get("/whoami").json() == {"name": "viewer", "role": "viewer"}
        assert c.get("/domains").status_code == 200
        assert c.get("/tokens").status_code == 403
    assert httpx.get(api.url + "/healthz").json() == {"ok": True}
    assert httpx.get(api.url + "/openapi.json").status_code == 200


# -- resize, pause, delete with a manager ticking -------------------------------------------------

def test_resize_changes_intended_and_records_who(api: Api, manager: Any) -> None:
    put(api, "rs", spec("rs", 0, max=4))
    assert get(api, "/domains")["domains"][0]["override"] is None
    with api.as_("operator") as c:
        r = c.post("/domains/rs/resize", json={"size": 2})
        assert r.status_code == 200 and r.json()["override"] == 2
        assert get(api, "/domains")["domains"][0]["override"] == 2  # the list shows a change at once
        wait(lambda: get(api, "/domains/rs")["intended"] == 2, 10, "the manager to take the override")
        r = c.post("/domains/rs/resize", json={"delta": 1})
        assert r.json()["override"] == 3
        r = c.post("/domains/rs/resize", json={"size": 9})
        assert r.status_code == 422 and r.json()["error"] == "size: size 9 is outside the domain's bounds [0, 4]"
        r = c.post("/domains/rs/resize", json={"delta": -4})
        assert r.status_code == 422 and "delta" in r.json()["error"] and "[0, 4]" in r.json()["error"]
        wait(lambda: get(api, "/domains/rs")["intended"] == 3, 10, "the manager to take the step")
        r = c.post("/domains/rs/resize", json={"size": "auto"})
        assert r.json()["override"] is None
    wait(lambda: get(api, "/domains/rs")["intended"] == 0, 10, "the policy to size the domain again")
    resizes = get(api, "/domains/rs/events?kind=resize")["events"]
    assert [(e["size"], e["by"]) for e in resizes] == [("auto", "operator"), (3, "operator"), (2, "operator")]
    assert all(e["domain"] == "rs" and e["id"] for e in resizes)
    reasons = [e["reason"] for e in get(api, "/domains/rs/events?kind=decision&count=100")["events"]]
    assert "operator override 2" in reasons and "operator override 3" in reasons
    points = get(api, "/domains/rs/readings")["points"]
    assert {p["intended"] for p in points} >= {0, 2, 3}  # every change of the intended size is a point
    assert points == sorted(points, key=lambda p: p["time"])


def test_deltas_sent_at_once_all_count(api: Api) -> None:
    from concurrent.futures import ThreadPoolExecutor

    put(api, "many", spec("many", 0, max=40))

    def step(_: int) -> int:
        with api.as_("operator") as c:
            return c.post("/domains/many/resize", json={"delta": 1}).status_code

    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(step, range(24)))
    assert codes == [200] * 24
    assert get(api, "/domains/many")["override"] == 24  # read and written in one step: none lost


def test_pause_holds_the_size_through_ticks_replaces_the_dead_and_resume_hands_it_back(api: Api, manager: Any) -> None:
    put(api, "pz", spec("pz", 2))
    wait(lambda: get(api, "/domains/pz")["intended"] == 2, 10, "the policy's size")
    with api.as_("operator") as c:
        summary = c.post("/domains/pz/pause").json()
    assert summary["paused"] is True and summary["paused_by"] == "operator"
    put(api, "pz", spec("pz", 3))  # the policy now wants 3
    seen = get(api, "/domains/pz")["updated"]
    wait(lambda: get(api, "/domains/pz")["updated"] > seen + 1.0, 10, "more than a second of ticks")
    held = get(api, "/domains/pz")
    assert held["intended"] == 2 and held["last_decision"]["reason"] == "paused by operator"
    before = {n["id"] for n in get(api, "/domains/pz/nodes")["nodes"]}
    manager.driver.ex_preempt(manager.driver.list_nodes()[0])  # a worker dies while paused: it is replaced

    def replaced() -> bool:
        nodes = get(api, "/domains/pz/nodes")["nodes"]
        live = [n for n in nodes if n["state"] in ("REQUESTED", "PENDING", "STARTED", "JOINED")]
        return len(live) == 2 and bool({n["id"] for n in live} - before)

    wait(replaced, 15, "the dead worker to be replaced while paused")
    assert get(api, "/domains/pz")["intended"] == 2
    with api.as_("operator") as c:
        assert c.post("/domains/pz/resume").json()["paused"] is False
    wait(lambda: get(api, "/domains/pz")["intended"] == 3, 10, "the policy to size the domain after resume")
    kinds = [(e["kind"], e.get("by")) for e in get(api, "/domains/pz/events?count=200")["events"]]
    assert ("pause", "operator") in kinds and ("resume", "operator") in kinds and ("applied", "admin") in kinds


def test_delete_drains_the_workers_then_removes_the_domain(api: Api, manager: Any, store: Store) -> None:
    put(api, "gone", spec("gone", 2, min=1))
    wait(lambda: get(api, "/domains/gone")["actual"] == 2, 10, "two workers launched")
    with api.as_("admin") as c:
        r = c.delete("/domains/gone")
        assert r.status_code == 202 and r.json() == {"deleting": True}
        r = c.put("/domains/gone", json=spec("gone", 2, min=1))
        assert r.status_code == 409 and "being deleted" in r.json()["error"]
        wait(lambda: c.get("/domains/gone").status_code == 404, 20, "the domain to go")
        wait(lambda: all(d["name"] != "gone" for d in c.get("/domains").json()["domains"]), 2,
             "the shared list (at most 0.25 s old) to lose it")
    events = store.event_log("gone", 200)  # kept a while after the domain went
    assert events[0]["kind"] == "deleted" and events[0]["by"] == "admin"
    assert any(e["kind"] == "decision" and e["target"] == 0 and "deleting (by admin)" in e["reason"] for e in events)
    assert not [n for n in store.nodes("gone")]
    assert not [n for n in manager.driver.list_nodes() if n.extra.get("tags", {}).get("domain") == "gone"]


# -- the event stream ---------------------------------------------------------------------------

def test_event_stream_delivers_events_and_summaries(api: Api) -> None:
    put(api, "live", spec("live", 0, max=3))
    got: list[tuple[str, dict[str, Any]]] = []
    opened = threading.Event()

    def listen() -> None:
        with api.as_("viewer") as c, c.stream("GET", "/events/stream", timeout=15) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            kind = ""
            for line in r.iter_lines():
                opened.set()
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    got.append((kind, json.loads(line[6:])))
                    if kind == "summary" and got[-1][1]["override"] == 1:
                        return

    reader = threading.Thread(target=listen, daemon=True)
    reader.start()
    assert opened.wait(10)
    with api.as_("operator") as c:
        assert c.post("/domains/live/resize", json={"size": 1}).status_code == 200
    reader.join(15)
    assert not reader.is_alive(), f"no summary with the new override on the stream; got {got}"
    resize = [data for kind, data in got if kind == "resize"]
    assert resize[0]["by"] == "operator" and resize[0]["size"] == 1 and resize[0]["domain"] == "live"
    summaries = [data for kind, data in got if kind == "summary"]
    assert summaries[0]["name"] == "live" and summaries[0]["override"] is None  # each domain as the stream starts


def test_event_stream_needs_a_token(api: Api) -> None:
    r = httpx.get(api.url + "/events/stream")
    assert r.status_code == 401 and r.json()["error"].startswith("authorization")


# -- bad requests, secrets --------------------------------------------------------------------------

@pytest.mark.parametrize("body, field", [
    ({"size": "x"}, "body.size"),
    ({"size": -1}, "body.size"),
    ({"size": 1.5}, "body.size"),
    ({"delta": "up"}, "body.delta"),
    ({"size": 1, "delta": 1}, "exactly one of size"),
    ({}, "exactly one of size"),
    ({"size": 1, "speed": 2}, "body.speed"),
    ([1, 2], "body"),
])
def test_bad_resize_bodies_are_422_naming_the_field(api: Api, body: Any, field: str) -> None:
    put(api, "bad", spec("bad", 0))
    with api.as_("operator") as c:
        r = c.post("/domains/bad/resize", json=body)
    assert r.status_code == 422 and field in r.json()["error"], r.text
    assert list(r.json()) == ["error"]


def test_bad_requests_are_4xx_json_never_500(api: Api) -> None:
    with api.as_("admin") as c:
        cases = [
            (c.put("/domains/x1", json={**spec("x1"), "min": "many"}), 422, "min"),
            (c.put("/domains/x1", json={**spec("x1"), "sites": "nowhere"}), 422, "sites"),
            (c.put("/domains/x1", json={**spec("x1"), "name": "other"}), 422, "name"),
            (c.put("/domains/Bad_Name", json=spec("x1")), 422, "name"),
            (c.put("/domains/x1", content=b"{not json", headers={"content-type": "application/json"}), 422, "body"),
            (c.get("/domains/nope"), 404, "no domain 'nope'"),
            (c.get("/domains/nope/events?count=0"), 422, "count"),
            (c.get("/domains/nope/readings?since=nan"), 422, "since"),
            (c.post("/domains/nope/pause"), 404, "no domain"),
            (c.post("/tokens", json={"name": "t", "role": "root"}), 422, "role"),
            (c.post("/tokens", json={"name": "Not Valid", "role": "viewer"}), 422, "name"),
            (c.post("/tokens", json={"name": "cli", "role": "viewer"}), 422, "reserved"),
            (c.delete("/tokens/nobody"), 404, "no token"),
            (c.get("/no/such/route"), 404, "no route"),
            (c.put("/domains/x1", content=b"x" * (2 << 20), headers={"content-type": "application/json"}), 413, "body"),
        ]
    for r, status, words in cases:
        assert r.status_code == status and words in r.json()["error"], (r.request.method, r.request.url, r.text)
        assert "Traceback" not in r.text


def test_no_secret_in_any_answer(api: Api, store: Store) -> None:
    body = spec("sec", 0, broker=f"redis://:{SECRET}@127.0.0.1:1/1")
    put(api, "sec", body)
    store.record("sec", "note", time.time(), detail=f"connecting to redis://:{SECRET}@127.0.0.1:1/1")
    texts = []
    with api.as_("admin") as c:
        for path in ("/domains", "/domains/sec", "/domains/sec/events?count=100", "/domains/sec/nodes",
                     "/domains/sec/readings", "/tokens", "/queue", "/managers"):
            r = c.get(path)
            assert r.status_code == 200, (path, r.text)
            texts.append(r.text)
        texts.append(c.post("/domains/sec/pause").text)
    assert "***" in texts[1] and "redis://:***@127.0.0.1:1/1" in texts[1]
    for text in texts:
        assert SECRET not in text
        for token in api.tokens.values():
            assert token not in text and digest(token) not in text
    raw = json.dumps(store.r.hgetall(f"{store.ns}:tokens"))
    assert all(token not in raw and digest(token) in raw for token in api.tokens.values())  # hashes only


# -- serving ----------------------------------------------------------------------------------------

def test_serve_refuses_a_non_loopback_address_without_tls(store: Store) -> None:
    app = create_app(store=store)
    with pytest.raises(BindRefused, match="needs TLS"):
        serve(app, host="0.0.0.0", port=0)
    with pytest.raises(BindRefused, match="go together"):
        serve(app, host="127.0.0.1", port=0, tls_cert="cert.pem")
    server = serve(app, host="0.0.0.0", port=0, insecure=True)  # told to: served
    try:
        assert httpx.get(f"http://127.0.0.1:{server.port}/healthz").json() == {"ok": True}
    finally:
        server.stop()
    assert not server.thread.is_alive()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_pool_up_api_serves_tokens_from_the_cli(redis_url: str, pool_home: Path) -> None:
    env = {**os.environ, "POOL_HOME": str(pool_home), "REDIS_URL": redis_url, "POOL_NAMESPACE": "apiup"}

    def pool(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(POOL + list(args), env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)

    refused = pool("up", "--api", "0.0.0.0:8080")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "needs TLS" in refused.stderr
    made = pool("token", "create", "ops", "--role", "operator")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    listed = pool("token", "ls")
    assert "ops" in listed.stdout and "operator" in listed.stdout and token not in listed.stdout + listed.stderr
    port = _free_port()
    up = subprocess.Popen(POOL + ["up", "--api", f"127.0.0.1:{port}", "--interval", "0.3", "--quiet"], env=env,
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            try:
                return httpx.get(url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait(answers, 30, "`pool up --api` to answer")
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(url + "/whoami", headers=headers).json() == {"name": "ops", "role": "operator"}
        wait(lambda: any(m["roles"] for m in httpx.get(url + "/managers", headers=headers).json()["managers"]),
             10, "the manager to hold its roles")
        managers = httpx.get(url + "/managers", headers=headers).json()["managers"]
        assert managers[0]["pid"] == up.pid and set(managers[0]["roles"]) == {"decider", "doctor", "provisioner"}
        admin = pool("token", "create", "boss", "--role", "admin").stdout.strip()
        boss = {"Authorization": f"Bearer {admin}"}
        assert httpx.put(url + "/domains/held", json=spec("held", 0), headers=boss).status_code == 200
        assert pool("pause", "held").returncode == 0
        assert httpx.get(url + "/domains/held", headers=headers).json()["paused_by"] == "cli"
        assert pool("resume", "held").returncode == 0
        assert httpx.get(url + "/domains/held", headers=headers).json()["paused"] is False
        kinds = [(e["kind"], e.get("by")) for e in httpx.get(url + "/domains/held/events", headers=headers).json()["events"]]
        assert [k for k in kinds if k[1]][:3] == [("resume", "cli"), ("pause", "cli"), ("applied", "boss")]
        missing = pool("pause", "nope")
        assert missing.returncode != 0 and "no domain 'nope'" in missing.stderr
        assert pool("token", "rm", "ops").returncode == 0
        assert httpx.get(url + "/whoami", headers=headers).status_code == 401
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            out, _ = up.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            up.kill()
            out, _ = up.communicate()
    assert up.returncode == 0, out
    assert f"API http://127.0.0.1:{port}" in out and token not in out and admin not in out


def test_a_failure_inside_is_a_json_503_not_a_500(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis as redis_lib

    put(api, "br", spec("br", 0))
    served: Store = api.server.app.state.store

    def broken() -> Any:
        raise RuntimeError(f"bug with redis://:{SECRET}@h:1/0 in it")

    def away() -> Any:
        raise redis_lib.ConnectionError("Connection refused")

    with api.as_("operator") as c:
        monkeypatch.setattr(served, "marks", broken)
        r = c.post("/domains/br/pause")
        assert r.status_code == 503 and r.json() == {"error": "internal: RuntimeError; the request was not carried out"}
        monkeypatch.setattr(served, "marks", away)
        r = c.get("/domains/br")
        assert r.status_code == 503 and r.json()["error"].startswith("store: the pool's Redis failed")
        assert SECRET not in r.text


def _self_signed(where: Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pool-api-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = where / "api.crt", where / "api.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_with_tls_a_non_loopback_address_is_served_over_https(store: Store, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    token = create_token(store, "tls", "viewer", now=time.time())
    server = serve(create_app(store=store), host="0.0.0.0", port=0, tls_cert=cert, tls_key=key)
    try:
        assert server.url.startswith("https://")
        r = httpx.get(f"https://127.0.0.1:{server.port}/whoami", verify=ssl.create_default_context(cafile=cert),
                      headers={"Authorization": f"Bearer {token}"})
        assert r.json() == {"name": "tls", "role": "viewer"}
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on the TLS port
            httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=3)
    finally:
        server.stop()


def test_a_domain_sized_by_its_schedulers_requests_cannot_be_paused(api: Api, store: Store) -> None:
    from pool.core.model import parse_domain_spec

    store.put_domain(parse_domain_spec({"name": "hpc", "deployable_type": "slurm-node", "max": 2,
                                        "slurm": {"controller": "ctl.example.org"}}))
    with api.as_("operator") as c:
        r = c.post("/domains/hpc/pause")
    assert r.status_code == 409 and "sized by its scheduler's requests" in r.json()["error"]
    assert get(api, "/domains/hpc")["paused"] is False
