"""`make bench-api`: the operator API under load, on 100 domains of 100 nodes each.

The records, heartbeats, states and events are written straight into a private embedded Redis (no
machine runs: the API only reads them). The API server runs in a process of its own (``serve`` on
127.0.0.1 and a free port, as `pool up --api` serves it), the clients in this one:

- latency of ``GET /domains`` and ``GET /domains/{name}`` under 50 concurrent clients (median, p99):
  closed loop (each client sends its next request when its last one is answered; a minimal HTTP/1.1
  client on keep-alive connections, so the load generator costs the CPU a small fraction of what the
  server does), and open loop (50 clients each polling once a second, as dashboards do); the server's
  and the load generator's CPU per request, and one client alone;
- the time from ``POST /domains/{name}/resize`` to that change reaching a client of ``/events/stream``
  (the first event of that domain naming the new size: the ``resize`` event or the ``summary``);
- a longer Schemathesis run against ``/openapi.json`` (an admin token, valid and invalid cases on every
  operation but the stream): cases, server errors (5xx) and responses that break the schema;
- where the time goes: cProfile of a cold read of every summary and of warm requests (in process, ASGI).

Writes bench/results/api.json. ``--quick`` for a smaller run (a check that it works).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import ROOT, row, write_result
from pool.core.model import DomainState, NodeRecord, NodeState, parse_domain_spec
from pool.state.redisserver import RedisServer
from pool.state.store import Store

S = NodeState
NAMESPACE = "bench"
CLIENTS = 50


def populate(store: Store, *, domains: int, nodes: int, now: float) -> None:
    """``domains`` celery domains of ``nodes`` JOINED workers each, with fresh heartbeats, a decision in
    the state and a few events each."""
    for d in range(domains):
        name = f"d{d:03d}"
        store.put_domain(parse_domain_spec({
            "name": name, "max": nodes * 2, "min": 0, "sensor": {"name": "celery"}, "celery": {"app": "tasks"},
            "sites": [{"name": "local", "price": 0.1}]}))
        records = []
        for n in range(nodes):
            rec = NodeRecord.new(node_id=f"{name}-{n:04d}", domain=name, launch_id=f"l{d}-{n}", site="local",
                                 deployable_type="celery-worker", now=now - 600, detail="launch")
            rec.set_state(S.PENDING, now - 590, "local")
            rec.set_state(S.STARTED, now - 580, "agent heartbeat")
            rec.set_state(S.JOINED, now - 570, "workload pulling work")
            records.append(rec)
        store.put_nodes(records)
        pipe = store.r.pipeline(transaction=False)
        for rec in records:
            pipe.hset(store.heartbeat_key(name, rec.node_id),
                      mapping={"time": repr(now), "ready": "1", "active": "1", "workload_alive": "1"})
            pipe.zadd(store.heartbeat_times_key(name), {rec.node_id: now})
        pipe.execute()
        decision = {"target": nodes, "actual": nodes, "reason": "queue depth", "time": now - 1, "inputs": {}}
        store.put_state(name, DomainState(intended=nodes, last_decision=decision,
                                          readings={"celery": {"value": float(nodes), "time": now - 1}}))
        for i in range(5):
            store.record(name, "decision", now - 5 + i, **decision)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SERVER = """
import os, signal, threading
from pool.api.app import create_app
from pool.api.server import serve
from pool.state.store import Store
store = Store.from_url(os.environ["BENCH_REDIS_URL"], namespace=os.environ["BENCH_NAMESPACE"])
server = serve(create_app(store=store), host="127.0.0.1", port=int(os.environ["BENCH_PORT"]))
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
stop.wait()
server.stop()
"""


def start_api(redis_url: str, port: int) -> subprocess.Popen[bytes]:
    """The API in a process of its own (the Redis URL, which holds a password, through the environment)."""
    env = {**os.environ, "BENCH_REDIS_URL": redis_url, "BENCH_NAMESPACE": NAMESPACE, "BENCH_PORT": str(port),
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SERVER], env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"the API server exited with {proc.returncode}")
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("the API server did not answer /healthz within 30 s")


def percentiles(lat: list[float], *, wall: float | None = None) -> dict[str, float]:
    """Median, p99 and max in milliseconds (and requests per second over ``wall`` seconds)."""
    lat = sorted(lat)
    p99 = lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))]
    out = {"p50_ms": statistics.median(lat) * 1000, "p99_ms": p99 * 1000, "max_ms": lat[-1] * 1000,
           "requests": float(len(lat))}
    if wall:
        out["rps"] = len(lat) / wall
    return out


def _check(response: httpx.Response, path: str) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"{path}: {response.status_code} {response.text[:200]}")


class RawClient:
    """One keep-alive HTTP/1.1 connection that sends GETs and reads whole answers: a load generator that
    costs a small fraction of what the server spends per request (httpx costs several times more CPU per
    request than the server, which would make a closed loop measure the client)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, header: bytes) -> None:
        self.reader, self.writer, self.header = reader, writer, header

    @classmethod
    async def open(cls, url: str, token: str) -> "RawClient":
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        header = f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\nAccept: application/json\r\n\r\n"
        return cls(reader, writer, header.encode())

    async def get(self, path: str) -> tuple[int, bytes]:
        self.writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + self.header)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def _closed(url: str, token: str, paths: list[str], *, clients: int) -> tuple[list[float], float]:
    """Closed loop: ``clients`` clients (a connection each), each sending its next request as soon as its
    last one is answered, until every path was requested once. Latencies (s) and the wall time."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for path in paths:
        queue.put_nowait(path)
    latencies: list[float] = []
    conns = [await RawClient.open(url, token) for _ in range(clients)]

    async def one_client(conn: RawClient) -> None:
        while not queue.empty():
            path = queue.get_nowait()
            started = time.perf_counter()
            status, body = await conn.get(path)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                raise RuntimeError(f"{path}: {status} {body[:200]!r}")

    began = time.perf_counter()
    try:
        await asyncio.gather(*(one_client(c) for c in conns))
    finally:
        for conn in conns:
            await conn.close()
    return latencies, time.perf_counter() - began


async def _paced(url: str, token: str, paths: list[str], *, clients: int, rate: float, seconds: float
                 ) -> list[float]:
    """Open loop: ``clients`` clients (a connection each), each sending one request every ``1/rate`` seconds
    (a dashboard polling), at random phases, for ``seconds``. Latencies (s)."""
    latencies: list[float] = []
    rng = random.Random(1)
    conns = [await RawClient.open(url, token) for _ in range(clients)]

    async def one_client(i: int, conn: RawClient) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(rng.random() / rate)
        due, end, n = loop.time(), loop.time() + seconds, 0
        while due < end:
            path = paths[(i + n * clients) % len(paths)]
            started = time.perf_counter()
            status, body = await conn.get(path)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                raise RuntimeError(f"{path}: {status} {body[:200]!r}")
            n += 1
            due += 1.0 / rate
            await asyncio.sleep(max(0.0, due - loop.time()))

    try:
        await asyncio.gather(*(one_client(i, c) for i, c in enumerate(conns)))
    finally:
        for conn in conns:
            await conn.close()
    return latencies


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def closed_loop(url: str, token: str, paths: list[str], *, clients: int = CLIENTS, server: int | None = None
                ) -> dict[str, float]:
    """Latencies of a closed loop; with the server's pid, also the CPU time per request of the server and of
    this process (the load generator)."""
    before = (cpu_seconds(server), cpu_seconds(os.getpid())) if server else None
    latencies, wall = asyncio.run(_closed(url, token, paths, clients=clients))
    out = percentiles(latencies, wall=wall)
    if before is not None and server:
        out["server_cpu_ms"] = (cpu_seconds(server) - before[0]) / len(latencies) * 1000
        out["client_cpu_ms"] = (cpu_seconds(os.getpid()) - before[1]) / len(latencies) * 1000
    return out


def paced(url: str, token: str, paths: list[str], *, rate: float, seconds: float) -> dict[str, float]:
    return percentiles(asyncio.run(_paced(url, token, paths, clients=CLIENTS, rate=rate, seconds=seconds)))


def profile_summaries(store: Store, *, top: int = 8) -> list[str]:
    """Where one read of every domain's summary spends its time (cProfile, in this process, on a store that
    read nothing yet: what the API does when its summary cache is cold), as "function: cumulative ms" lines."""
    import cProfile
    import pstats

    from pool.api import views

    read = getattr(views, "read_summaries", None)
    if read is None:
        return []
    profiler = cProfile.Profile()
    profiler.enable()
    read(store)
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][3], reverse=True)  # type: ignore[attr-defined]
    out = []
    for (path, line, name), (_cc, calls, _tt, cum, _callers) in rows[:top]:
        where = path.split("/site-packages/")[-1].split("/work/main/")[-1]
        out.append(f"{where}:{line} {name}: {cum * 1000:.1f} ms, {calls} calls")
    return out


def resize_to_client(url: str, token: str, domain: str, *, rounds: int) -> list[float]:
    """Seconds from sending each resize to the first event of ``domain`` naming the new size on a stream client."""
    seen: dict[int, float] = {}
    ready = threading.Event()
    stop = threading.Event()

    def follow() -> None:
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        with httpx.stream("GET", f"{url}/events/stream", headers=headers, timeout=httpx.Timeout(10, read=60)) as r:
            ready.set()
            for line in r.iter_lines():
                if stop.is_set():
                    return
                if not line.startswith("data:"):
                    continue
                try:
                    data = json.loads(line[5:])
                except ValueError:
                    continue
                if not isinstance(data, dict) or data.get("domain") != domain:
                    continue
                for key in ("override", "size", "intended", "target"):
                    value = data.get(key)
                    if isinstance(value, int) and value not in seen:
                        seen[value] = time.perf_counter()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    ready.wait(10)
    time.sleep(0.5)
    out = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
        for i in range(rounds):
            size = 1 + i  # sizes no event of the domain named before (it was at `nodes`)
            sent = time.perf_counter()
            response = client.post(f"/domains/{domain}/resize", json={"size": size})
            if response.status_code != 200:
                raise RuntimeError(f"resize refused: {response.status_code} {response.text[:200]}")
            deadline = time.monotonic() + 10
            while size not in seen and time.monotonic() < deadline:
                time.sleep(0.002)
            if size not in seen:
                raise RuntimeError(f"resize to {size} never reached the stream client within 10 s")
            out.append(seen[size] - sent)
    stop.set()
    return out


#: operations not fuzzed: the event stream never ends (its first bytes are checked by the resize measure)
NOT_FUZZED = ("/events/stream",)


def fuzz(url: str, token: str, *, examples: int) -> dict[str, Any]:
    """Schemathesis against the live server: every operation, up to ``examples`` valid and ``examples``
    invalid cases each, called with an admin token; counts cases, 5xx answers and answers that break the
    schema (``response_schema_conformance``), and keeps a few examples of each failure."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.core.failures import FailureGroup
    from schemathesis.specs.openapi.checks import response_schema_conformance

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    headers = {"Authorization": f"Bearer {token}"}
    counts: dict[str, Any] = {"cases": 0, "server_errors": 0, "schema_violations": 0, "operations": 0,
                              "examples": []}

    def one(case: Any) -> None:
        response = case.call(base_url=url, headers=headers, timeout=30)
        counts["cases"] += 1
        bad = []
        if response.status_code >= 500:
            counts["server_errors"] += 1
            bad.append(f"{response.status_code}")
        try:
            case.validate_response(response, checks=[response_schema_conformance], headers=headers)
        except FailureGroup as exc:
            counts["schema_violations"] += 1
            bad.append(str(exc.exceptions[0]).splitlines()[0][:200])
        if bad and len(counts["examples"]) < 10:
            counts["examples"].append(f"{case.method} {case.formatted_path}: {'; '.join(bad)}")

    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an operation the schema cannot describe: raises
        if operation.path in NOT_FUZZED:
            continue
        counts["operations"] += 1
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            test = settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                            phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))(
                given(case=operation.as_strategy(generation_mode=mode))(one))
            try:
                test()
            except Unsatisfiable:  # no invalid input exists (an operation without parameters)
                continue
    return counts


def profile_request(store: Store, token: str, path: str, *, n: int = 200, top: int = 10) -> list[str]:
    """Where the server's time goes on a warm ``GET path``: the app driven in this process through
    ASGI (no sockets, no uvicorn), its thread-pool hops run inline so that cProfile sees them; the
    functions with the most time of their own, as "function: ms per request (share)" lines."""
    import cProfile
    import pstats

    import anyio.to_thread

    from pool.api.app import create_app

    async def inline(func: Any, *args: Any, **kwargs: Any) -> Any:
        return func(*args)

    app = create_app(store=store)
    profiler = cProfile.Profile()

    async def drive() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench",
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            for _ in range(20):
                _check(await client.get(path), path)
            profiler.enable()
            for _ in range(n):
                await client.get(path)
            profiler.disable()

    saved = anyio.to_thread.run_sync
    anyio.to_thread.run_sync = inline  # type: ignore[assignment]
    try:
        asyncio.run(drive())
    finally:
        anyio.to_thread.run_sync = saved  # type: ignore[assignment]
    stats = pstats.Stats(profiler)
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
    def where(file: str, line: int, name: str) -> str:
        return f"{file.split('/site-packages/')[-1].split(str(ROOT) + '/')[-1].split('/lib/python3.11/')[-1]}:{line} {name}"

    out = [f"{path}: {total / n * 1000:.2f} ms per request in the app (ASGI, in process)"]
    for (file, line, name), (_cc, calls, own, _cum, _callers) in rows[:top // 2]:
        out.append(f"own time: {where(file, line, name)}: {own / n * 1000:.3f} ms ({own / total:.0%}), "
                   f"{calls / n:.3g} calls")
    ours = [kv for kv in stats.stats.items() if f"{ROOT}/pool/" in kv[0][0]]  # type: ignore[attr-defined]
    for (file, line, name), (_cc, calls, _own, cum, _callers) in sorted(ours, key=lambda kv: kv[1][3],
                                                                         reverse=True)[:top]:
        out.append(f"with callees: {where(file, line, name)}: {cum / n * 1000:.3f} ms ({cum / total:.0%}), "
                   f"{calls / n:.3g} calls")
    return out


def measure(redis_url: str, data: dict[str, Any], *, domains: int, nodes: int, requests: int, examples: int,
            rounds: int, seconds: float) -> tuple[str, list[str]]:
    """Populate, serve the API in a process of its own, measure (into ``data``); the admin token and the
    domains' paths."""
    store = Store.from_url(redis_url, namespace=NAMESPACE)
    started = time.perf_counter()
    populate(store, domains=domains, nodes=nodes, now=time.time())
    data["setup_s"] = time.perf_counter() - started
    from pool.api.auth import create_token

    admin = create_token(store, "bench", "admin", now=time.time())
    port = free_port()
    api = start_api(redis_url, port)
    url = f"http://127.0.0.1:{port}"
    names = [f"/domains/d{d:03d}" for d in range(domains)]
    gets = [names[i % domains] for i in range(requests)]
    try:
        closed_loop(url, admin, ["/domains"] * 50)  # warm up: the server's first reads of every record
        data["list_one_client"] = closed_loop(url, admin, ["/domains"] * (requests // 10), clients=1)
        data["get_one_client"] = closed_loop(url, admin, gets[:requests // 10], clients=1)
        data["list"] = closed_loop(url, admin, ["/domains"] * requests, server=api.pid)
        data["get"] = closed_loop(url, admin, gets, server=api.pid)
        data["list_paced"] = paced(url, admin, ["/domains"], rate=1.0, seconds=seconds)
        data["get_paced"] = paced(url, admin, names, rate=1.0, seconds=seconds)
        data["resize"] = resize_to_client(url, admin, names[0].rsplit("/", 1)[1], rounds=rounds)
        data.update(fuzz(url, admin, examples=examples))
    finally:
        api.terminate()
        try:
            api.wait(15)
        except subprocess.TimeoutExpired:
            api.kill()
            api.wait(5)
    return admin, names


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a small run (10 domains of 10 nodes, few requests), "
                        "printed, not written")
    args = parser.parse_args()
    domains, nodes = (10, 10) if args.quick else (100, 100)
    requests, examples, rounds, seconds = (200, 5, 3, 3.0) if args.quick else (2000, 100, 20, 20.0)
    data: dict[str, Any] = {"domains": domains, "nodes_per_domain": nodes, "clients": CLIENTS}
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer.start(Path(tmp) / "redis")
        try:
            admin, names = measure(server.url, data, domains=domains, nodes=nodes, requests=requests,
                                   examples=examples, rounds=rounds, seconds=seconds)
            data["profile_summaries"] = profile_summaries(Store.from_url(server.url, namespace=NAMESPACE))
            warm = Store.from_url(server.url, namespace=NAMESPACE)
            data["profile_list"] = profile_request(warm, admin, "/domains")
            data["profile_get"] = profile_request(warm, admin, names[1])
        finally:
            server.stop()
    report(data, write=not args.quick)


def explain(data: dict[str, Any]) -> str:
    """Where the time goes, from this run's own numbers and profiles (for BENCHMARKS.md)."""
    queue_ms = CLIENTS / data["list_rps"] * 1000 if data["list_rps"] else float("nan")
    lines = [
        f"Where the time goes. The load generator is a minimal HTTP/1.1 client on {CLIENTS} keep-alive "
        f"connections: {data['list_client_cpu_ms']} ms of CPU per `GET /domains` against the server's "
        f"{data['list_server_cpu_ms']} ms ({data['get_server_cpu_ms']} ms per `GET /domains/{{name}}`), so the "
        f"closed loop measures the server. One `GET /domains` alone takes {data['list_one_client_p50_ms']} ms "
        f"(one client, median). With {CLIENTS} clients back to back the server answered {data['list_rps']} "
        f"requests/s; by Little's law each request then waits {CLIENTS} / rate = {queue_ms:.0f} ms on average: "
        "the server runs its Python on one core at a time (the GIL), on 2 cores it shares with the load "
        "generator and whatever else runs. The paced rows are 50 clients each polling once a second (open "
        "loop), as dashboards do.",
        "", "Profiles of warm requests, the app driven in process through ASGI (the totals include the "
        "in-process client's share; `with callees` lists the pool's own functions):", "",
        *[f"- `{line}`" for line in data.get("profile_list", [])[:12]], "",
        *[f"- `{line}`" for line in data.get("profile_get", [])[:12]],
        "", "A cold read of every summary (the API's cache empty, e.g. after a restart):", "",
        *[f"- `{line}`" for line in data.get("profile_summaries", [])[:6]],
    ]
    return "\n".join(lines)


def report(raw: dict[str, Any], *, write: bool = True) -> None:
    """The result file and its BENCHMARKS.md rows (``write=False``, a quick run: printed only)."""
    def ms(v: float) -> float:
        return round(v, 2)

    listed, got, one, one_get = raw["list"], raw["get"], raw["list_one_client"], raw["get_one_client"]
    lp, gp, resize = raw["list_paced"], raw["get_paced"], raw["resize"]
    counts = {k: raw[k] for k in ("cases", "server_errors", "schema_violations", "operations", "examples")}
    data = {
        "domains": raw["domains"], "nodes_per_domain": raw["nodes_per_domain"], "clients": CLIENTS,
        "setup_s": round(raw["setup_s"], 2),
        "list_p50_ms": ms(listed["p50_ms"]), "list_p99_ms": ms(listed["p99_ms"]),
        "get_p50_ms": ms(got["p50_ms"]), "get_p99_ms": ms(got["p99_ms"]),
        "list_rps": round(listed["rps"], 1), "get_rps": round(got["rps"], 1),
        "list_server_cpu_ms": round(listed.get("server_cpu_ms", float("nan")), 2),
        "list_client_cpu_ms": round(listed.get("client_cpu_ms", float("nan")), 2),
        "get_server_cpu_ms": round(got.get("server_cpu_ms", float("nan")), 2),
        "list_requests": int(listed["requests"]), "get_requests": int(got["requests"]),
        "list_one_client_p50_ms": ms(one["p50_ms"]), "list_one_client_p99_ms": ms(one["p99_ms"]),
        "get_one_client_p50_ms": ms(one_get["p50_ms"]),
        "list_paced_p50_ms": ms(lp["p50_ms"]), "list_paced_p99_ms": ms(lp["p99_ms"]),
        "get_paced_p50_ms": ms(gp["p50_ms"]), "get_paced_p99_ms": ms(gp["p99_ms"]),
        "resize_to_client_s": round(statistics.median(resize), 4), "resize_to_client_max_s": round(max(resize), 4),
        "resize_rounds": len(resize), **counts, "profile_summaries": raw.get("profile_summaries", []),
        "profile_list": raw.get("profile_list", []), "profile_get": raw.get("profile_get", []),
    }
    shape = f"{data['domains']} domains x {data['nodes_per_domain']} nodes"
    table = [
        row("GET /domains median (ms)", data["list_p50_ms"], "", None,
            f"{CLIENTS} clients back to back (closed loop), {data['list_rps']} req/s; {shape}"),
        row("GET /domains p99 (ms)", data["list_p99_ms"], "<= 100", data["list_p99_ms"] <= 100, "closed loop"),
        row("GET /domains/{name} median (ms)", data["get_p50_ms"], "", None,
            f"closed loop, {data['get_rps']} req/s"),
        row("GET /domains/{name} p99 (ms)", data["get_p99_ms"], "<= 100", data["get_p99_ms"] <= 100, "closed loop"),
        row("GET /domains, one client: median (ms)", data["list_one_client_p50_ms"], "", None,
            f"p99 {data['list_one_client_p99_ms']} ms: the time one request costs the server"),
        row("GET /domains p99, 50 clients polling 1/s (ms)", data["list_paced_p99_ms"], "<= 100",
            data["list_paced_p99_ms"] <= 100, f"open loop (dashboards); median {data['list_paced_p50_ms']} ms"),
        row("GET /domains/{name} p99, 50 clients polling 1/s (ms)", data["get_paced_p99_ms"], "<= 100",
            data["get_paced_p99_ms"] <= 100, f"open loop; median {data['get_paced_p50_ms']} ms"),
        row("resize -> event-stream client, median (s)", data["resize_to_client_s"], "<= 1",
            data["resize_to_client_s"] <= 1, f"max {data['resize_to_client_max_s']} s over {len(resize)} resizes"),
        row("schemathesis cases", counts["cases"], "", None, f"{counts['operations']} operations, admin token"),
        row("schemathesis server errors", counts["server_errors"], "0", counts["server_errors"] == 0, ""),
        row("schemathesis schema violations", counts["schema_violations"], "0", counts["schema_violations"] == 0,
            ""),
    ]
    data["markdown"] = explain(data)
    if not write:
        print(json.dumps({k: v for k, v in data.items() if not isinstance(v, (dict, str))}, indent=2))
        return
    path = write_result("api", data, table)
    print(json.dumps({k: v for k, v in data.items() if not isinstance(v, dict)}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
