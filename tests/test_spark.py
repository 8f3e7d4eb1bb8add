"""Spark domains: real standalone master and workers from pyspark, on 127.0.0.1 and free ports."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from policies import load_policy
from pool.cli.commands import main as cli
from pool.control.manager import Manager
from pool.core.model import DomainView, NodeState, Reading, SpecError, parse_domain_spec
from pool.sites.local import LocalNodeDriver
from pool.sites.provisioner import Provisioner
from pool.state.redisserver import free_port
from pool.state.store import Store
from sensors.spark import SparkTasksSensor
from spark.master import SparkMasterService, read_master
from spark.rest import master_state
from spark.spec import SparkSpec
from tests.conftest import ROOT, RunningManager, with_overrides

pyspark = pytest.importorskip("pyspark")

JOB = ROOT / "examples" / "spark_job.py"
#: Jobs here are short: their JVMs start faster and use less CPU with the client compiler only.
SMALL_JVMS = [f"spark.{side}.extraJavaOptions=-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
              for side in ("driver", "executor")]
S = NodeState


def spark_spec(name: str, *, max_size: int = 2, **overrides: Any) -> dict[str, Any]:
    """A spark-worker domain tuned for this 2-core machine: 1 core and 512 MB per worker."""
    spec: dict[str, Any] = {
        "name": name,
        "deployable_type": "spark-worker",
        "min": 0,
        "max": max_size,
        "scaling": {"stabilization": 2, "idle_timeout": 4},
        "spark": {"worker_memory": "512m", "daemon_memory": "160m",
                  "decommission": {"migration_interval": 1}},
        "timeouts": {"heartbeat_interval": 1, "heartbeat_timeout": 10, "boot": 150, "drain": 120,
                     "terminate_grace": 5},
    }
    return with_overrides(spec, overrides)


def expected_result(items: int) -> int:
    """What examples/spark_job.py must answer: the sum of x² mod 1000003 over range(items)."""
    return sum((x * x) % 1_000_003 for x in range(items))


# ---------------------------------------------------------------------------
# fixtures: a manager with the Spark master service, jobs sent with `pool spark submit`
# ---------------------------------------------------------------------------


class SparkPool(RunningManager):
    """A running manager whose domains get a Spark master from :class:`SparkMasterService`."""

    def __init__(self, manager: Manager, driver: LocalNodeDriver, service: SparkMasterService) -> None:
        super().__init__(manager, driver)
        self.service = service
        self.jobs: list[subprocess.Popen[str]] = []

    def apply(self, spec: dict[str, Any]) -> str:
        parsed = parse_domain_spec(spec)
        self.store.put_domain(parsed)
        self.wait(lambda: (read_master(parsed.name) or {}).get("state") == "up", 120, "the Spark master")
        return parsed.name

    def submit(self, domain: str, *args: str, log: Path) -> subprocess.Popen[str]:
        """`pool spark submit` of the example job in a process group of its own."""
        cmd = [sys.executable, "-m", "pool.cli", "spark", "submit", "-d", domain, "--no-progress",
               *(f"--conf={c}" for c in SMALL_JVMS), str(JOB), *args]
        with open(log, "w") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                                    start_new_session=True, cwd=str(ROOT))
        self.jobs.append(proc)
        return proc

    def hb(self, domain: str) -> dict[str, Any]:
        nodes = self.live(domain, S.JOINED)
        return self.store.heartbeats(domain, [n.node_id for n in nodes])

    def busy(self, domain: str) -> list[str]:
        return [nid for nid, hb in self.hb(domain).items() if hb.active > 0]


@pytest.fixture
def spark_pool(store: Store, redis_url: str, pool_home: Path) -> Iterator[SparkPool]:
    """Like ``running_manager``, with ``services=[SparkMasterService()]``; stops the masters after."""
    driver = LocalNodeDriver(ex_state_dir=str(pool_home / "sites" / "local"))
    service = SparkMasterService()
    manager = Manager(store=store, provisioner=Provisioner({"local": driver}), redis_url=redis_url,
                      services=[service])
    pool = SparkPool(manager, driver, service)
    pool.thread.start()
    try:
        yield pool
    finally:
        pool.stop.set()
        manager.wake.set()
        pool.thread.join(15)
        for job in pool.jobs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.pid, signal.SIGKILL)
            job.wait(10)
        pool.kill_all()
        for spec in store.domains():
            service.stop(spec)
        deadline = time.monotonic() + 15
        while driver.list_nodes() and time.monotonic() < deadline:
            time.sleep(0.1)


def finish(proc: subprocess.Popen[str], log: Path, timeout: float) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"job did not finish in {timeout}s; log tail: {log.read_text()[-2000:]}") from None
    assert proc.returncode == 0, f"job failed ({proc.returncode}): {out}\n{log.read_text()[-3000:]}"
    return out


def result_of(out: str) -> dict[str, str]:
    line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, f"no RESULT line in {out!r}"
    return dict(part.split("=", 1) for part in line.split()[2:])


def history(pool: SparkPool, domain: str, node_id: str) -> list[tuple[str, float, str]]:
    rec = next(n for n in pool.store.nodes(domain) if n.node_id == node_id)
    return rec.history


# ---------------------------------------------------------------------------
# end to end (slow: real JVMs)
# ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_job_grows_the_domain_from_zero_and_it_returns_to_zero(spark_pool: SparkPool, tmp_path: Path) -> None:
    name = spark_pool.apply(spark_spec("grow", max_size=3))
    assert spark_pool.live(name) == []
    log = tmp_path / "job.log"
    items = 10_000
    job = spark_pool.submit(name, "--partitions", "100", "--items", str(items), "--task-ms", "40", log=log)
    most = 0
    while job.poll() is None:
        most = max(most, len(spark_pool.live(name, S.JOINED)))
        time.sleep(0.2)
    result = result_of(finish(job, log, 10))
    assert int(result["tasks"]) >= 200
    assert int(result["result"]) == expected_result(items)
    assert most >= 2, "the domain never grew past one worker"
    reading = next(iter(spark_pool.store.get_state(name).readings.values()))
    # the executors' finished tasks, kept after the application ended (wait_target's completion rate)
    assert int(result["tasks"]) // 2 <= reading["completions"] <= int(result["tasks"])
    assert reading["arrivals"] >= reading["completions"]
    decisions = spark_pool.store.events(name, 200, kind="decision")
    assert any("pending" in str(d.get("reason")) and (d.get("target") or 0) > 0 for d in decisions)
    # idle workers leave after the idle timeout: back to zero
    spark_pool.wait(lambda: not spark_pool.live(name), 60, "the domain to return to 0 workers")
    assert spark_pool.store.get_state(name).intended == 0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_worker_killed_mid_job_loses_no_work(spark_pool: SparkPool, tmp_path: Path) -> None:
    name = spark_pool.apply(spark_spec("kill", max_size=2))
    log = tmp_path / "job.log"
    items = 10_000
    job = spark_pool.submit(name, "--partitions", "100", "--items", str(items), "--task-ms", "100", log=log)
    spark_pool.wait(lambda: len(spark_pool.busy(name)) == 2 or job.poll() is not None, 150,
                    "two busy workers")
    assert job.poll() is None, "the job ended before both workers were busy"
    victim = spark_pool.busy(name)[0]
    node = next(n for n in spark_pool.driver.list_nodes() if n.id == victim)
    assert spark_pool.driver.ex_preempt(node)  # SIGKILL to the worker's whole process group
    result = result_of(finish(job, log, 180))
    assert int(result["result"]) == expected_result(items)
    states = [h[0] for h in history(spark_pool, name, victim)]
    assert "UNHEALTHY" in states and "DRAINING" not in states


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_scale_in_decommissions_a_busy_worker(spark_pool: SparkPool, tmp_path: Path) -> None:
    name = spark_pool.apply(spark_spec("shrink", max_size=2, scaling={"idle_timeout": 60}))
    master_ui = str(read_master(name)["ui"])  # type: ignore[index]
    log = tmp_path / "job.log"
    items = 10_000
    job = spark_pool.submit(name, "--partitions", "100", "--items", str(items), "--task-ms", "150", log=log)
    spark_pool.wait(lambda: len(spark_pool.busy(name)) == 2 or job.poll() is not None, 150,
                    "two busy workers")
    assert job.poll() is None, "the job ended before both workers were busy"
    spark_pool.store.set_override(name, 1)
    spark_pool.wait(lambda: bool(spark_pool.live(name, S.DRAINING)), 30, "a draining worker")
    drained = spark_pool.live(name, S.DRAINING)[0].node_id
    seen_decommissioned = False
    while any(n.node_id == drained for n in spark_pool.live(name, S.DRAINING)):
        with contextlib.suppress(Exception):
            workers = master_state(master_ui, timeout=1)["workers"]
            seen_decommissioned |= any(w.get("state") == "DECOMMISSIONED" for w in workers)
        time.sleep(0.2)
    result = result_of(finish(job, log, 180))
    assert int(result["result"]) == expected_result(items)
    assert seen_decommissioned, "the master never showed the worker DECOMMISSIONED"
    steps = history(spark_pool, name, drained)
    # the handshake: asked to drain, reported drained once its executors were gone, then ended
    assert [h[0] for h in steps][-3:] == ["DRAINING", "TERMINATING", "TERMINATED"], steps
    assert steps[-2][2] == "drained: holds no work", steps
    assert not any("deadline passed" in h[2] for h in steps), steps
    console = Path(spark_pool.driver.root / drained / "console.log").read_text()
    assert "decommissioned (" in console and "drain timeout" not in console


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_master_is_restarted_on_its_port_when_it_dies(pool_home: Path) -> None:
    spec = parse_domain_spec(spark_spec("super"))
    service = SparkMasterService()
    try:
        def until_up(limit: float) -> dict[str, str]:
            deadline = time.monotonic() + limit
            while time.monotonic() < deadline:
                try:
                    context = dict(service.ensure(spec, time.time()))
                except RuntimeError:
                    context = {}
                if context:
                    return context
                time.sleep(0.3)
            raise AssertionError("the master did not come up")

        first = until_up(90)
        assert first["master_url"].startswith("spark://127.0.0.1:")
        assert not first["master_url"].endswith(":7077") and not first["master_ui"].endswith(":8080")
        pid = int(read_master("super")["pid"])  # type: ignore[index]
        os.killpg(pid, signal.SIGKILL)
        time.sleep(0.5)
        with pytest.raises(RuntimeError, match="exited"):
            for _ in range(20):
                service.ensure(spec, time.time())
                time.sleep(0.2)
        again = until_up(90)
        assert again["master_url"] == first["master_url"]
        assert int(read_master("super")["pid"]) != pid  # type: ignore[index]
    finally:
        service.stop(spec)
    assert read_master("super") is None


# ---------------------------------------------------------------------------
# sensor errors: unreachable master, driver UI that does not answer (fast)
# ---------------------------------------------------------------------------


class _FakeMaster(http.server.BaseHTTPRequestHandler):
    """Answers like a standalone master's web UI: /json/ and an application page."""

    driver_ui = ""

    def do_GET(self) -> None:
        if self.path.startswith("/json"):
            body = json.dumps({"url": "spark://127.0.0.1:1", "workers": [], "aliveworkers": 0, "cores": 0,
                               "coresused": 0, "status": "ALIVE",
                               "activeapps": [{"id": "app-1-0000", "state": "RUNNING",
                                               "memoryperexecutor": 512}]})
        elif self.path.startswith("/app/"):
            link = f'<a href="{self.driver_ui}">Application Detail UI</a>' if self.driver_ui else ""
            body = f"<html><body><li>{link}</li></body></html>"
        else:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def fake_master(driver_ui: str) -> Iterator[str]:
    handler = type("Handler", (_FakeMaster,), {"driver_ui": driver_ui})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def test_unreachable_master_gives_an_error_reading() -> None:
    port = free_port()
    sensor = SparkTasksSensor(master_ui=f"http://127.0.0.1:{port}", timeout=0.5)
    reading = sensor.read(100.0)
    assert reading.value is None and not reading.ok
    assert reading.error == f"Spark master UI at http://127.0.0.1:{port} does not answer: connection refused"
    assert sensor.read(100.5) is reading  # read again within min_interval: the same reading
    assert sensor.read(101.5) is not reading
    assert SparkTasksSensor().read(1.0).error is not None  # no master known yet


def test_driver_ui_that_does_not_answer_gives_an_error_reading() -> None:
    with silent_port() as port, fake_master(f"http://127.0.0.1:{port}") as ui:
        reading = SparkTasksSensor(master_ui=ui, timeout=0.5).read(5.0)
    assert reading.value is None
    assert reading.error is not None and "\n" not in reading.error
    assert reading.error.startswith(f"driver UI of app-1-0000 at http://127.0.0.1:{port} does not answer")
    assert reading.detail["apps"] == 1
    with fake_master("") as ui:
        assert "shows no driver UI" in str(SparkTasksSensor(master_ui=ui).read(1.0).error)
    with fake_master("http://127.0.0.1:1") as ui:
        small = SparkTasksSensor(master_ui=ui, worker_memory="256m").read(1.0)
        assert "asks 512 MB per executor but workers offer 256 MB" in str(small.error)


def test_pool_ls_and_show_print_the_sensor_error(store: Store, redis_url: str, pool_home: Path) -> None:
    dead = free_port()
    spec = parse_domain_spec(spark_spec("dead", spark={"master_url": "spark://127.0.0.1:1",
                                                       "master_ui": f"http://127.0.0.1:{dead}"}))
    store.put_domain(spec)
    driver = LocalNodeDriver(ex_state_dir=str(pool_home / "sites"))
    manager = Manager(store=store, provisioner=Provisioner({"local": driver}), redis_url=redis_url,
                      services=[SparkMasterService()])
    plan = manager.tick()[0]
    assert plan.decision.target == 0 and "sensor failed" in plan.decision.reason
    env = {"REDIS_URL": redis_url, "POOL_NAMESPACE": store.ns}
    runner = CliRunner()
    shown = runner.invoke(cli, ["show", "dead"], env=env)
    assert shown.exit_code == 0, shown.output
    assert f"http://127.0.0.1:{dead} does not answer: connection refused" in " ".join(shown.output.split())
    listed = runner.invoke(cli, ["ls", "--json"], env=env)
    row = json.loads(listed.output)[0]
    assert row["error"].startswith("Spark master UI at") and row["value"] is None
    master = runner.invoke(cli, ["spark", "master", "dead"], env=env)
    assert master.output.strip() == "spark://127.0.0.1:1"


# ---------------------------------------------------------------------------
# spec and policy (pure, fast)
# ---------------------------------------------------------------------------


def test_spark_spec_defaults_and_errors() -> None:
    spec = parse_domain_spec({"name": "etl", "deployable_type": "spark-worker", "max": 4, "spark": {}})
    assert spec.sensor.name == "spark" and spec.policy.name == "spark_tasks"
    assert spec.scaling.idle_timeout == 60.0 and isinstance(spec.block, SparkSpec)
    assert spec.block.master_port is None and spec.block.ui_port is None  # free ports at start
    own = parse_domain_spec({"name": "etl", "deployable_type": "spark-worker", "max": 4,
                             "scaling": {"idle_timeout": 5}, "spark": {"idle_timeout": 30}})
    assert own.scaling.idle_timeout == 5
    with pytest.raises(SpecError, match="spark-worker needs a 'spark:' block"):
        parse_domain_spec({"name": "etl", "deployable_type": "spark-worker", "max": 4})
    with pytest.raises(SpecError, match=r"spark.worker_memory: must be a JVM memory size.*got 'lots'"):
        parse_domain_spec({"name": "e", "deployable_type": "spark-worker", "max": 1,
                           "spark": {"worker_memory": "lots"}})
    with pytest.raises(SpecError, match="expected spark://host:port"):
        parse_domain_spec({"name": "e", "deployable_type": "spark-worker", "max": 1,
                           "spark": {"master_url": "http://x:1", "master_ui": "http://x:2"}})
    with pytest.raises(SpecError, match="master_url needs master_ui"):
        parse_domain_spec({"name": "e", "deployable_type": "spark-worker", "max": 1,
                           "spark": {"master_url": "spark://x:1"}})


def view(actual: int, *, intended: int | None = None, memory: dict[str, Any] | None = None) -> DomainView:
    return DomainView(name="d", min_size=0, max_size=100, actual=actual, joined=actual, booting=0,
                      busy=actual, idle=0, draining=0, intended=actual if intended is None else intended,
                      memory=memory or {})


def reading(pending: float, running: float, slots: float = 1.0) -> dict[str, Reading]:
    return {"spark": Reading("spark", pending + running, 0.0,
                             detail={"pending": pending, "running": running, "slots_per_worker": slots})}


def test_spark_tasks_ramps_up_exponentially_and_follows_the_backlog_down() -> None:
    policy = load_policy("spark_tasks", {})
    actual, now, memory, targets = 0, 0.0, {}, []
    for _ in range(5):
        d = policy.decide(view(actual, memory=memory), reading(400, 0), now)
        targets.append(d.target)
        actual, memory, now = d.target, dict(d.memory or {}), now + 1.0
    assert targets == [1, 3, 7, 15, 31]
    # within the ramp interval no new round
    held = policy.decide(view(3, memory={"step": 4, "at": 10.0}), reading(400, 0), 10.5)
    assert held.target == 3
    # covered backlog: the target follows it at once, the ramp resets
    down = policy.decide(view(31, memory=memory), reading(3, 4), now)
    assert down.target == 7 and down.memory == {"step": 1, "at": None}
    # slots per worker from the sensor: 2 cores per worker halve the workers
    assert policy.decide(view(10), reading(6, 4, slots=2), 0.0).target == 5
    assert load_policy("spark_tasks", {"exponential_ramp": False}).decide(view(0), reading(9, 0), 0).target == 9
    assert policy.decide(view(2), {"spark": Reading("spark", None, 0.0, error="x")}, 0).target == 2


def test_spark_tasks_starts_workers_for_a_new_application_before_its_first_task() -> None:
    policy = load_policy("spark_tasks", {})

    def waiting(age: float, apps: int = 1) -> dict[str, Reading]:
        return {"spark": Reading("spark", 0.0, 0.0, detail={"pending": 0, "running": 0, "waiting_apps": apps,
                                                             "waiting_app_age": age})}

    assert policy.decide(view(0), waiting(3.0), 0.0).target == 1
    assert policy.decide(view(0), waiting(3.0, apps=2), 0.0).target == 1  # ramp: one per round
    assert policy.decide(view(0), waiting(600.0), 0.0).target == 0  # an old idle application
    assert load_policy("spark_tasks", {"initial_workers": 0}).decide(view(0), waiting(3.0), 0.0).target == 0


def test_spark_tasks_refuses_bad_parameters() -> None:
    from pool.core.model import PluginParamError

    with pytest.raises(PluginParamError, match=r"allocation_ratio must be a number in \(0, 1\]"):
        load_policy("spark_tasks", {"allocation_ratio": 2})
    with pytest.raises(PluginParamError, match="slots_per_worker must be a whole number >= 1"):
        load_policy("spark_tasks", {"slots_per_worker": 0})
