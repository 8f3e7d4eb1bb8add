"""What a new user hits, replayed as a new user would: their own small Celery app (written here, not
the bundled demo), Redis and RabbitMQ, a Spark notebook's submit, their typos.

Each promise of issue #13 has a test that fails if it breaks: a busy worker is never killed on
scale-in (the handshake), a worker that fails on boot backs off and says why, and a job that can
never run is refused at once with the reason.
"""

from __future__ import annotations

import contextlib
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from click.testing import CliRunner

from pool.cli import main as cli
from pool.core.model import NodeState, SpecError, parse_domain_spec
from pool.state.redisserver import broker_url_for
from pool.state.store import Store
from spark.cli import _split
from spark.master import _write_master
from tests.conftest import RunningManager, local_manager

S = NodeState

#: A new user's own Celery app: not the bundled demo. It counts each task's starts and ends in a
#: ledger of its own, so a task run twice (a worker killed under it) shows.
MYAPP = """
import os, time
import redis
from celery import Celery

app = Celery("myapp")
ledger = redis.Redis.from_url(os.environ["MYAPP_LEDGER"])


@app.task(name="myapp.crunch")
def crunch(i, seconds):
    ledger.hincrby("myapp:starts", i, 1)
    time.sleep(seconds)
    ledger.hincrby("myapp:done", i, 1)
    return i
"""

# -- Spark: a job that can never run is refused at once, and the banner names the script ---------------


@pytest.fixture
def recorded_master(pool_home: Path) -> dict[str, str]:
    """A Spark domain's master as `pool up` records it (no Spark needed: the refusal comes first)."""
    _write_master("tut", {"url": "spark://127.0.0.1:7", "ui": "http://127.0.0.1:8", "host": "127.0.0.1",
                          "state": "up", "submit_conf": {"spark.executor.memory": "512m"},
                          "worker_memory": "512m", "worker_cores": 1, "max": 2})
    return {"POOL_HOME": str(pool_home)}


def test_spark_submit_refuses_an_executor_no_worker_can_hold(recorded_master: dict[str, str]) -> None:
    result = CliRunner().invoke(cli, ["spark", "submit", "-d", "tut", "--executor-memory", "64g", "job.py"],
                                env=recorded_master)
    assert result.exit_code == 2, result.output
    assert "executor memory 64g is more than a worker of tut offers (512m" in result.stderr
    assert "submitting" not in result.stderr
    cores = CliRunner().invoke(cli, ["spark", "submit", "-d", "tut", "--conf", "spark.executor.cores=4", "job.py"],
                               env=recorded_master)
    assert cores.exit_code == 2 and "executor cores 4 are more than a worker of tut offers (1" in cores.stderr


def test_spark_submit_refuses_a_domain_without_workers(recorded_master: dict[str, str]) -> None:
    _write_master("tut", {"url": "spark://127.0.0.1:7", "ui": "http://127.0.0.1:8", "host": "127.0.0.1",
                          "worker_memory": "1g", "worker_cores": 1, "max": 0})
    result = CliRunner().invoke(cli, ["spark", "submit", "-d", "tut", "job.py"], env=recorded_master)
    assert result.exit_code == 2 and "domain tut has max: 0" in result.stderr


def test_spark_submit_takes_spark_options_before_the_script() -> None:
    assert _split(("--executor-memory", "512m", "--name", "etl", "--verbose", "job.py", "--rows", "10")) == (
        ["--executor-memory", "512m", "--name", "etl", "--verbose"], "job.py", ["--rows", "10"])
    assert _split(("--executor-memory=512m", "job.py")) == (["--executor-memory=512m"], "job.py", [])


def test_a_spark_domain_with_max_0_is_refused_at_apply(tmp_path: Path, pool_home: Path) -> None:
    spec = tmp_path / "tut.yaml"
    spec.write_text("name: tut\ndeployable_type: spark-worker\nmax: 0\nspark: {}\n")
    result = CliRunner().invoke(cli, ["apply", "-f", str(spec)], env={"POOL_HOME": str(pool_home)})
    assert result.exit_code == 2 and "max: 0 would keep a Spark master with no worker" in result.stderr


def test_a_typo_in_a_block_names_the_field_and_what_is_allowed() -> None:
    with pytest.raises(SpecError, match=r"celery\.concurency: unknown field \(allowed: app, path, queue, "
                                        r"concurrency"):
        parse_domain_spec({"name": "mine", "max": 2, "celery": {"app": "myapp", "concurency": 2}})


# -- Celery: scale-in by handshake, on Redis and RabbitMQ -------------------------------------------


@pytest.fixture
def myapp(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, redis.Redis]:
    """The user's app in a directory of their own, and its ledger (the test Redis, db 2)."""
    code = tmp_path / "myapp"
    code.mkdir(mode=0o700)
    (code / "myapp.py").write_text(textwrap.dedent(MYAPP))
    ledger_url = broker_url_for(redis_url).rsplit("/", 1)[0] + "/2"
    monkeypatch.setenv("MYAPP_LEDGER", ledger_url)
    ledger = redis.Redis.from_url(ledger_url, decode_responses=True)
    ledger.delete("myapp:starts", "myapp:done")
    return code, ledger


def user_manager(store: Store, redis_url: str, pool_home: Path) -> contextlib.AbstractContextManager[RunningManager]:
    return local_manager(store, redis_url, pool_home, worker_env=("MYAPP_*",))


def user_spec(name: str, code: Path, *, broker: str | None, app: str = "myapp", **more: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name, "max": 3, "policy": {"name": "lookahead"}, "scaling": {"stabilization": 0},
        "celery": {"app": app, "path": str(code), "queue": f"q-{name}"},
        "timeouts": {"heartbeat_interval": 0.5, "heartbeat_timeout": 4, "boot": 60, "drain": 90,
                     "terminate_grace": 5}, **more}
    if broker is not None:
        spec["broker"] = broker
    return spec


def drain_kills(store: Store, domain: str) -> list[dict[str, Any]]:
    return store.events(domain, count=500, kind="drain_deadline")


@pytest.mark.parametrize("broker_kind", ["redis", "rabbitmq"])
def test_the_queue_end_with_long_tasks_kills_no_busy_worker(broker_kind: str, request: pytest.FixtureRequest,
                                                            myapp: tuple[Path, redis.Redis], store: Store,
                                                            redis_url: str, pool_home: Path) -> None:
    """The last long tasks are taken, the reading drops to 0, `lookahead` with `stabilization: 0`
    scales in at once: every worker is drained by handshake and each task runs exactly once."""
    code, ledger = myapp
    broker = request.getfixturevalue("rabbitmq").amqp_url if broker_kind == "rabbitmq" else None
    producer_url = broker or broker_url_for(redis_url)
    name = f"end-{broker_kind}"
    tasks = 3
    with user_manager(store, redis_url, pool_home) as rm:
        store.put_domain(parse_domain_spec(user_spec(name, code, broker=broker)))
        producer = Celery("producer", broker=producer_url)
        for i in range(tasks):
            producer.send_task("myapp.crunch", args=[i, 10.0], queue=f"q-{name}")
        rm.wait(lambda: len(ledger.hgetall("myapp:starts")) == tasks, 90, "every task to start")
        rm.wait(lambda: len(ledger.hgetall("myapp:done")) == tasks, 90, "every task to finish")
        rm.wait(lambda: rm.live(name) == [] and not rm.live(name, S.DRAINING), 60, "the domain back to 0")
    starts = {int(k): int(v) for k, v in ledger.hgetall("myapp:starts").items()}
    assert starts == {i: 1 for i in range(tasks)}, f"a task ran more than once: {starts}"
    assert drain_kills(store, name) == []
    drained = [n for n in store.nodes(name) if any(d == "drained: holds no work" for _, _, d in n.history)]
    assert drained, [n.history for n in store.nodes(name)]
    killed_busy = [n.node_id for n in store.nodes(name) if any("killed while holding work" in d for _, _, d in n.history)]
    assert killed_busy == []


def test_a_typo_in_the_app_backs_off_and_says_why(myapp: tuple[Path, redis.Redis], store: Store, redis_url: str,
                                                  pool_home: Path) -> None:
    """`celery.app: myap` (a typo): the workers die on boot. Launches back off to one probe at a time,
    the domain says why with the workload's own last lines, and the queued tasks stay queued."""
    code, _ = myapp
    name = "typo"
    broker = broker_url_for(redis_url)
    queued = redis.Redis.from_url(broker)
    queued.delete(f"q-{name}")
    producer = Celery("producer", broker=broker)
    for i in range(3):
        producer.send_task("myapp.crunch", args=[i, 1.0], queue=f"q-{name}")
    with user_manager(store, redis_url, pool_home) as rm:
        store.put_domain(parse_domain_spec(user_spec(name, code, broker=None, app="myap",
                                                     policy={"name": "queue_depth", "tasks_per_worker": 1})))
        started = time.monotonic()
        rm.wait(lambda: store.get_state(name).boot_failures >= 2, 60, "two boot failures")
        time.sleep(max(0.0, 30 - (time.monotonic() - started)))
        launches = len(store.nodes(name))
        state = store.get_state(name)
    assert launches <= 6, f"{launches} launches in 30 s: no backoff"
    assert state.boot_failures >= 2 and state.boot_error.startswith("boot failure")
    exits = store.events(name, count=50, kind="workload_exit")
    assert exits and any("myap" in line for line in exits[0]["last_lines"]), exits[:1]
    failures = store.events(name, count=50, kind="boot_failure")
    assert failures and failures[0]["launches_wait"] > 0
    assert queued.llen(f"q-{name}") == 3  # nothing taken, nothing lost
    env = {"REDIS_URL": redis_url, "POOL_HOME": str(pool_home), "POOL_NAMESPACE": store.ns, "COLUMNS": "200"}
    shown = CliRunner().invoke(cli, ["show", name], env=env)
    assert shown.exit_code == 0, shown.output
    assert "degraded:" in shown.output and "boot failure: the workload exited before joining" in shown.output
    assert "myap" in shown.output.split("the workload's last lines:", 1)[-1], shown.output  # its own words
    listed = CliRunner().invoke(cli, ["ls"], env=env)
    assert "degraded" in listed.output


def test_delete_drains_a_domain_whose_broker_is_unreachable(myapp: tuple[Path, redis.Redis], store: Store,
                                                          redis_url: str, pool_home: Path) -> None:
    """`pool delete` of a domain with `min: 1` whose broker cannot be reached: the worker is drained
    (through the store), then the domain goes; no `pool resize` first."""
    code, _ = myapp
    name = "gone"
    spec = user_spec(name, code, broker="redis://127.0.0.1:9/0", min=1, policy={"name": "queue_depth"})
    env = {"REDIS_URL": redis_url, "POOL_HOME": str(pool_home), "POOL_NAMESPACE": store.ns}
    with user_manager(store, redis_url, pool_home) as rm:
        store.put_domain(parse_domain_spec(spec))
        rm.wait(lambda: bool(rm.live(name, S.STARTED, S.JOINED)), 60, "the worker's agent to start")
        result = CliRunner().invoke(cli, ["delete", name, "--timeout", "60"], env=env)
        assert result.exit_code == 0, result.output
        assert store.get_domain(name) is None and store.nodes(name) == []
        rm.wait(lambda: rm.driver.list_nodes() == [], 20, "the machine to end")
