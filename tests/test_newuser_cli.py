"""What a new user meets first, through the `pool` command against the real parts.

`pool env` (the broker URL a producer uses, with its password, printed there only; a Spark
domain's master and executor settings that fit a worker), `pool logs` (a node's console),
`pool show` (process ids, log paths, ended nodes), tables that fit a terminal and are whole when
piped, `-o json`, `pool apply` saying what changed, and the embedded Redis keeping its port across
`pool up` restarts. The Celery app is written here, as a user would write theirs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis
import yaml
from click.testing import CliRunner, Result

from pool.cli.commands import main as cli
from pool.control.manager import Manager
from pool.core.model import NodeRecord, NodeState, parse_domain_spec
from pool.sites.local import LocalNodeDriver
from pool.sites.provisioner import Provisioner
from pool.state.redisserver import broker_url_for
from pool.state.store import Store
from tests.conftest import ROOT, RunningManager, run_manager, wait

POOL = [sys.executable, "-m", "pool.cli"]
S = NodeState
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

APP = '''\
"""A user's own Celery app: it knows nothing of elastic-pool."""
import os

import redis
from celery import Celery

print("newtasks: loaded; broker", os.environ.get("POOL_BROKER_URL"), flush=True)
app = Celery("newtasks")


@app.task(name="newtasks.add")
def add(x, y):
    redis.Redis.from_url(app.conf.broker_url).rpush("newtasks:results", x + y)
    return x + y
'''


def password_of(url: str) -> str:
    return url.split("@", 1)[0].rsplit(":", 1)[-1]


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "newapp"
    directory.mkdir(mode=0o700)
    (directory / "newtasks.py").write_text(APP)
    return directory


def user_spec(name: str, app_dir: Path, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name, "min": 0, "max": 2,
        "policy": {"name": "queue_depth", "tasks_per_worker": 1},
        "scaling": {"stabilization": 1},
        "celery": {"app": "newtasks", "path": str(app_dir), "queue": f"q-{name}", "visibility_timeout": 5},
        "timeouts": {"heartbeat_interval": 0.5, "heartbeat_timeout": 4, "boot": 60, "drain": 30,
                     "terminate_grace": 3},
    }
    spec.update(overrides)
    return spec


class Cli:
    """`pool` in this process (click's runner) against the test Redis, namespace and state directory."""

    def __init__(self, url: str, namespace: str, home: Path) -> None:
        self.env = {"REDIS_URL": url, "POOL_NAMESPACE": namespace, "POOL_HOME": str(home), "COLUMNS": None}

    def __call__(self, *args: str, code: int = 0, stdin: str | None = None) -> Result:
        result = CliRunner().invoke(cli, list(args), env=self.env, input=stdin, catch_exceptions=True)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"pool {' '.join(args)}: {result.exception!r}") from result.exception
        assert result.exit_code == code, f"pool {' '.join(args)}: exit {result.exit_code}: {result.output}"
        assert "Traceback" not in result.stderr  # (a console shown by `pool logs` may hold one)
        return result

    def apply(self, spec: dict[str, Any] | list[dict[str, Any]], tmp_path: Path) -> str:
        path = tmp_path / f"spec-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(yaml.safe_dump_all(spec if isinstance(spec, list) else [spec]))
        return str(self("apply", "-f", str(path)).stdout)

    def subprocess_env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "POOL_NAMESPACE", "COLUMNS", "LINES")}
        env.update({k: v for k, v in self.env.items() if v is not None})
        env.update(extra)
        return env


@pytest.fixture
def pool(store: Store, redis_url: str, pool_home: Path) -> Cli:
    return Cli(redis_url, store.ns, pool_home)


def error_line(result: Result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def joined(rm: RunningManager, domain: str, count: int, timeout: float = 60) -> list[NodeRecord]:
    rm.wait(lambda: len(rm.live(domain, S.JOINED)) >= count, timeout, f"{count} joined node(s) in {domain}")
    return rm.live(domain, S.JOINED)


# ---------------------------------------------------------------------------
# pool env
# ---------------------------------------------------------------------------


def test_env_gives_a_producer_the_broker_url_and_queue_it_sends_to(
        pool: Cli, running_manager: RunningManager, app_dir: Path, tmp_path: Path, redis_url: str) -> None:
    assert "domain shop created" in pool.apply(user_spec("shop", app_dir), tmp_path)
    text = pool("env", "shop").stdout
    data = yaml.safe_load(text)
    assert data["broker_url"] == broker_url_for(redis_url, 1)  # the broker's database, with the password
    assert data["queue"] == "q-shop"
    assert json.loads(pool("env", "shop", "--json").stdout) == json.loads(pool("env", "shop", "-o", "json").stdout)
    assert json.loads(pool("env", "shop", "-o", "json").stdout)["broker_url"] == data["broker_url"]
    # the shell form, as a user evaluates it
    shell = pool("env", "shop", "-o", "shell").stdout
    proc = subprocess.run(["bash", "-c", 'eval "$(cat)"; printf "%s\\n%s" "$CELERY_BROKER_URL" "$POOL_QUEUE"'],
                          input=shell, capture_output=True, text=True, timeout=30)
    assert proc.stdout.splitlines() == [data["broker_url"], "q-shop"]

    # a producer that only has what `pool env` printed: the pool grows and the task runs
    from celery import Celery

    producer = Celery("producer", broker=data["broker_url"])
    try:
        producer.send_task("newtasks.add", (2, 3), queue=data["queue"])
    finally:
        producer.close()
    results = redis.Redis.from_url(data["broker_url"])
    running_manager.wait(lambda: results.lrange("newtasks:results", 0, -1) == [b"5"], 90,
                         "the task sent with the printed URL to run on a pool worker")
    # the password is printed by `pool env` only: not in events, other outputs, or the manager's records
    password = password_of(redis_url)
    assert password in text
    for args in (["events", "shop", "-n", "200"], ["show", "shop"], ["show", "shop", "-o", "json"], ["ls"],
                 ["ls", "-o", "json"], ["status"]):
        assert password not in pool(*args).output, args
    assert password not in json.dumps(running_manager.store.events("shop", 2000))
    verbose = subprocess.run(POOL + ["-v", "env", "shop"], env=pool.subprocess_env(), cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
    assert verbose.returncode == 0 and password in verbose.stdout and password not in verbose.stderr


def test_env_of_an_unknown_domain_lists_the_valid_ones(pool: Cli, app_dir: Path, tmp_path: Path) -> None:
    pool.apply([user_spec("alpha", app_dir), user_spec("beta", app_dir)], tmp_path)
    line = error_line(pool("env", "gamma", code=2))
    assert "no domain 'gamma'" in line and "alpha, beta" in line


def test_env_of_a_domain_with_its_own_broker_prints_that_broker(pool: Cli, app_dir: Path, tmp_path: Path) -> None:
    own = "amqp://worker:Sh0pBrokerPass@127.0.0.1:5999//"
    pool.apply(user_spec("rabbit", app_dir, broker=own), tmp_path)
    assert json.loads(pool("env", "rabbit", "-o", "json").stdout)["broker_url"] == own
    assert "Sh0pBrokerPass" not in pool("show", "rabbit", "-o", "json").stdout


@pytest.mark.slow
def test_env_lets_a_notebook_run_on_a_spark_domain_unchanged(store: Store, redis_url: str, pool_home: Path,
                                                            pool: Cli, tmp_path: Path) -> None:
    """A plain PySpark session (what a notebook does) with only what `pool env` exported: the job
    runs, on executors no larger than a worker."""
    pytest.importorskip("pyspark")
    from spark.master import SparkMasterService

    spec = {"name": "nb", "deployable_type": "spark-worker", "min": 1, "max": 1,
            "spark": {"worker_memory": "512m", "daemon_memory": "160m"},
            "timeouts": {"heartbeat_interval": 1, "heartbeat_timeout": 10, "boot": 150, "drain": 60,
                         "terminate_grace": 5}}
    pool.apply(spec, tmp_path)
    driver = LocalNodeDriver(ex_state_dir=str(pool_home / "sites" / "local"))
    service = SparkMasterService()
    manager = Manager(store=store, provisioner=Provisioner({"local": driver}), redis_url=redis_url,
                      services=[service])
    try:
        with run_manager(manager, driver) as rm:
            joined(rm, "nb", 1, timeout=180)
            data = json.loads(pool("env", "nb", "-o", "json").stdout)
            assert data["spark_conf"]["spark.executor.memory"] == "512m"  # what a worker offers, not Spark's 1g
            assert data["spark_conf"]["spark.executor.cores"] == "1"
            assert data["master_url"].startswith("spark://127.0.0.1:")
            args = shlex.split(data["env"]["PYSPARK_SUBMIT_ARGS"])
            assert args[:2] == ["--master", data["master_url"]] and args[-1] == "pyspark-shell"
            notebook = ("from pyspark.sql import SparkSession\n"
                        "spark = SparkSession.builder.appName('notebook').getOrCreate()\n"
                        "print('MASTER', spark.sparkContext.master)\n"
                        "print('MEMORY', spark.conf.get('spark.executor.memory'))\n"
                        "print('SUM', spark.sparkContext.parallelize(range(1000), 2).map(lambda x: x * x).sum())\n"
                        "spark.stop()\n")
            shell = pool("env", "nb", "-o", "shell").stdout
            env = pool.subprocess_env(PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
            proc = subprocess.run(["bash", "-c", f'eval "$1"; exec "{sys.executable}" -c "$2"', "nb", shell, notebook],
                                  env=env, capture_output=True, text=True, timeout=240)
            assert proc.returncode == 0, proc.stderr[-3000:]
            out = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line[:4] in ("MAST", "MEMO", "SUM "))
            assert out == {"MASTER": data["master_url"], "MEMORY": "512m", "SUM": str(sum(x * x for x in range(1000)))}
    finally:
        service.stop(parse_domain_spec(spec))


# ---------------------------------------------------------------------------
# pool logs
# ---------------------------------------------------------------------------


def test_logs_print_a_node_console_with_secrets_masked(
        pool: Cli, running_manager: RunningManager, app_dir: Path, tmp_path: Path, redis_url: str,
        pool_home: Path) -> None:
    pool.apply(user_spec("logs", app_dir), tmp_path)
    pool("resize", "logs", "1")
    node = joined(running_manager, "logs", 1)[0]
    path = pool_home / "sites" / "local" / (node.provider_id or node.node_id) / "console.log"
    running_manager.wait(lambda: "newtasks: loaded" in path.read_text(), 30, "the app's first line in the console")
    out = pool("logs", node.node_id).stdout
    assert "newtasks: loaded; broker redis://:***@127.0.0.1:" in out  # the app printed its URL: masked
    assert password_of(redis_url) not in out and password_of(redis_url) in path.read_text()
    lines = path.read_text().splitlines()
    tail = pool("logs", node.node_id, "--tail", "2").stdout.splitlines()
    assert len(tail) == 2 and tail == [line.rstrip("\r") for line in lines[-2:]]
    assert pool("logs", node.node_id, "--tail", "0").stdout == ""
    assert pool("logs", node.node_id, "-d", "logs", "--tail", "1").stdout.splitlines() == tail[-1:]

    # with the pool's Redis down, the console is still there to read
    down = subprocess.run(POOL + ["logs", node.node_id, "--tail", "5"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=pool.subprocess_env(REDIS_URL="redis://127.0.0.1:1/0"))
    assert down.returncode == 0
    assert down.stdout.splitlines() == [line.rstrip("\r") for line in path.read_text().splitlines()[-5:]]
    assert "does not answer" in down.stderr and len(down.stderr.strip().splitlines()) == 1

    line = error_line(pool("logs", "logs-00000000", code=2))
    assert "no node 'logs-00000000'" in line and "pool show" in line and "logs" in line
    assert "is a domain, not a node" in error_line(pool("logs", "logs", code=2))
    assert "../../etc" not in pool("logs", "../../etc/passwd", code=2).stdout

    # --follow prints what comes and ends by itself when the node ends
    follow = subprocess.Popen(POOL + ["logs", "-f", node.node_id], env=pool.subprocess_env(), cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        assert follow.poll() is None  # still following a live node
        pool("resize", "logs", "0")
        out, err = follow.communicate(timeout=60)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert follow.returncode == 0, err
    assert "newtasks: loaded" in out and password_of(redis_url) not in out


def test_logs_show_why_a_worker_failed_to_boot(
        pool: Cli, running_manager: RunningManager, app_dir: Path, tmp_path: Path, pool_home: Path) -> None:
    spec = user_spec("typo", app_dir, min=1, max=1)
    spec["celery"] = {**spec["celery"], "app": "newtask"}  # the module is newtasks
    pool.apply(spec, tmp_path)
    sites = pool_home / "sites" / "local"

    def failed_console() -> Path | None:
        for rec in running_manager.store.nodes("typo"):
            path = sites / (rec.provider_id or rec.node_id) / "console.log"
            if path.is_file() and "ModuleNotFoundError" in path.read_text(errors="replace"):
                return path
        return None

    running_manager.wait(lambda: failed_console() is not None, 60, "a worker that failed to boot")
    path = failed_console()
    assert path is not None
    out = pool("logs", path.parent.name).stdout
    assert "No module named 'newtask'" in out


# ---------------------------------------------------------------------------
# pool show: process ids, log paths, ended nodes
# ---------------------------------------------------------------------------


def test_show_gives_process_ids_and_log_paths_and_leaves_out_long_ended_nodes(
        pool: Cli, running_manager: RunningManager, app_dir: Path, tmp_path: Path, pool_home: Path) -> None:
    pool.apply(user_spec("web", app_dir), tmp_path)
    pool("resize", "web", "2")
    nodes = joined(running_manager, "web", 2)
    shown = json.loads(pool("show", "web", "-o", "json").stdout)
    by_id = {n["node"]: n for n in shown["nodes"]}
    for rec in nodes:
        entry = by_id[rec.node_id]
        directory = pool_home / "sites" / "local" / (rec.provider_id or rec.node_id)
        assert entry["console"] == str(directory / "console.log") and Path(entry["console"]).is_file()
        pid = entry["pid"]
        assert isinstance(pid, int) and os.readlink(f"/proc/{pid}/cwd") == str(directory)  # that node's process
        assert entry["active"] == 0
    table = pool("show", "web").stdout
    for rec in nodes:
        row = next(line for line in table.splitlines() if line.startswith(rec.node_id))
        assert f" {by_id[rec.node_id]['pid']} " in row and "JOINED" in row
    assert f"{pool_home / 'sites' / 'local'}/NODE/console.log" in table and "pool logs NODE" in table
    wide = pool("show", "web", "-o", "wide").stdout
    assert all(by_id[rec.node_id]["console"] in wide for rec in nodes)

    # a node that ended ten minutes ago, whose last heartbeat said it ran 3 tasks
    now = time.time()
    old = NodeRecord.new(node_id="web-0ld0ld00", domain="web", launch_id=uuid.uuid4().hex, site="local",
                         deployable_type="celery-worker", now=now - 480)
    old.set_state(S.FAILED, now - 420, "boot timeout")
    old.set_state(S.TERMINATED, now - 400, "gone")
    store = running_manager.store
    store.put_nodes([old])
    store.beat("web", old.node_id, time=now - 400, ready=True, active=3)
    table = pool("show", "web").stdout
    assert "web-0ld0ld00" not in table and "1 node(s) that ended more than 5 minutes ago not shown" in table
    assert "web-0ld0ld00" not in json.dumps(json.loads(pool("show", "web", "-o", "json").stdout)["nodes"])
    every = pool("show", "web", "--all").stdout
    row = next(line for line in every.splitlines() if line.startswith("web-0ld0ld00"))
    assert row.split()[1:6] == ["TERMINATED", "local", "-", "6m40s", "-"]  # no pid, no task count
    entry = next(n for n in json.loads(pool("show", "web", "--all", "-o", "json").stdout)["nodes"]
                 if n["node"] == "web-0ld0ld00")
    assert entry["active"] is None and entry["pid"] is None

    # nodes that just ended: shown, without a process id or a task count
    pool("resize", "web", "0")
    running_manager.wait(lambda: not running_manager.live("web") and all(
        n.state == S.TERMINATED for n in store.nodes("web")), 60, "the domain to end its nodes")
    shown = json.loads(pool("show", "web", "-o", "json").stdout)
    ended = [n for n in shown["nodes"] if n["node"] in {r.node_id for r in nodes}]
    assert len(ended) == 2 and all(n["pid"] is None and n["active"] is None for n in ended)


# ---------------------------------------------------------------------------
# tables: fitted to a terminal, whole when piped; -o json
# ---------------------------------------------------------------------------


def in_terminal(args: list[str], env: dict[str, str], columns: int, rows: int = 60) -> list[str]:
    """Run `pool` with a terminal of ``columns`` x ``rows`` as its standard output; its lines, escapes removed."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    proc = subprocess.Popen(POOL + args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT)
    os.close(slave)
    out = b""
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(timeout=60) == 0, out.decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return [ANSI.sub("", line) for line in out.decode().replace("\r\n", "\n").split("\n")]


def test_tables_fit_the_terminal_and_are_whole_when_piped(
        pool: Cli, store: Store, redis_url: str, app_dir: Path, tmp_path: Path, pool_home: Path) -> None:
    long_name = "nightly-reconciliation-jobs"
    pool.apply([user_spec(long_name, app_dir, broker="redis://127.0.0.1:1/1"), user_spec("tiny", app_dir)], tmp_path)
    manager = Manager(store=store, redis_url=redis_url, wakeups=False, provisioner=Provisioner(
        {"local": LocalNodeDriver(ex_state_dir=str(pool_home / "sites" / "local"))}))
    try:
        manager.tick()  # readings: the unreachable broker gives a long error
    finally:
        manager.close()
    rows = json.loads(pool("ls", "-o", "json").stdout)
    error = next(r["error"] for r in rows if r["domain"] == long_name)
    assert error and len(error) > 40
    assert json.loads(pool("ls", "--json").stdout) == rows
    env = pool.subprocess_env()

    # piped (no terminal, no COLUMNS): every cell whole, however wide the line
    piped = subprocess.run(POOL + ["ls"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0, piped.stderr
    line = next(line for line in piped.stdout.splitlines() if line.startswith(long_name))
    assert " ".join(error.split()) in line and len(line) > 80
    assert piped.stdout.splitlines()[0].split() == ["DOMAIN", "POLICY", "SENSOR", "VALUE", "INTENDED", "ACTUAL",
                                                    "JOINED", "MIN/MAX", "OVERRIDE"]
    assert "\x1b" not in piped.stdout

    # in an 80-column terminal: no line wider, the domain's name whole, every column there
    lines = [line for line in in_terminal(["ls"], env, 80) if line.strip()]
    assert lines and all(len(line) <= 80 for line in lines), lines
    assert lines[0].split()[:1] == ["DOMAIN"] and len(lines[0].split()) == 9
    assert any(line.startswith(long_name + " ") for line in lines)
    assert any(line.startswith("tiny ") for line in lines)
    row = next(i for i, line in enumerate(lines) if line.startswith(long_name))
    value_at = lines[0].index("VALUE")
    assert lines[row][value_at:].startswith(error[:10])  # the error wraps onto more lines
    assert lines[row + 1][:value_at].strip() == "" and lines[row + 1][value_at:].strip()
    narrow = [line for line in in_terminal(["ls"], env, 60) if line.strip()]
    assert all(len(line) <= 60 for line in narrow), narrow  # (columns cut to fit; names never)
    assert any(line.startswith(long_name + " ") for line in narrow)

    # `pool show` likewise (a node's record: its rows; the lines around the table are not cut either)
    node = NodeRecord.new(node_id=f"{long_name}-0a1b2c3d", domain=long_name, launch_id=uuid.uuid4().hex,
                          site="local", deployable_type="celery-worker", now=time.time())
    store.put_nodes([node])
    for args, columns in ((["show", long_name], 60), (["show", long_name, "-o", "wide"], 70)):
        shown = [line for line in in_terminal(args, env, columns) if line.strip()]
        header = next(i for i, line in enumerate(shown) if line.startswith("NODE"))
        row = next(i for i, line in enumerate(shown) if line.startswith(node.node_id))
        assert row == header + 1 and all(len(line) <= columns for line in shown[header:row + 1]), shown
        assert shown[row].startswith(node.node_id + " ")  # the id whole: it goes into `pool logs`
    piped = subprocess.run(POOL + ["show", long_name, "-o", "wide"], env=env, cwd=ROOT, capture_output=True,
                           text=True, timeout=60).stdout.splitlines()
    assert next(line for line in piped if line.startswith("NODE")).split() == [
        "NODE", "STATE", "SITE", "PID", "FOR", "TASKS", "LAST", "HEARTBEAT", "MACHINE", "LOG"]


# ---------------------------------------------------------------------------
# pool apply says what changed
# ---------------------------------------------------------------------------


def test_apply_says_created_unchanged_or_what_changed(pool: Cli, store: Store, app_dir: Path, tmp_path: Path) -> None:
    spec = user_spec("etl", app_dir, max=4, broker="redis://:Old0ldPassword@127.0.0.1:6399/1")
    other = user_spec("other", app_dir)
    assert pool.apply([spec, other], tmp_path).splitlines() == ["domain etl created", "domain other created"]
    assert pool.apply([spec, other], tmp_path).splitlines() == ["domain etl unchanged", "domain other unchanged"]
    changed = {**spec, "max": 8, "policy": {"name": "fixed", "size": 2}}
    out = pool.apply([changed, other], tmp_path).splitlines()
    assert out[1] == "domain other unchanged"
    assert out[0].startswith("domain etl changed: ")
    changes = out[0].split(": ", 1)[1]
    assert "max 4→8" in changes and "policy.name queue_depth→fixed" in changes
    assert "policy.tasks_per_worker 1→(unset)" in changes and "policy.size (unset)→2" in changes
    assert "celery" not in changes and "min" not in changes.replace("timeouts", "")

    secret = {**changed, "broker": "redis://:N3wN3wPassword@127.0.0.1:6399/1"}
    out = pool.apply(secret, tmp_path)
    assert out.strip() == "domain etl changed: broker: password changed (hidden)"
    moved = {**secret, "broker": "redis://:N3wN3wPassword@127.0.0.1:6400/1"}
    out = pool.apply(moved, tmp_path)
    assert "broker redis://:***@127.0.0.1:6399/1→redis://:***@127.0.0.1:6400/1" in out
    for text in (out, pool("events", "etl", "-n", "50").stdout, json.dumps(store.events("etl", 50))):
        assert "Old0ldPassword" not in text and "N3wN3wPassword" not in text
    applied = store.events("etl", 50, kind="applied")
    assert [e.get("created") for e in applied][-1] in (True, "True", 1)
    assert any("max 4→8" in str(e.get("changes")) for e in applied)
    assert len(applied) == 4  # created, changed three times; "unchanged" records nothing
    many = {**moved, "min": 1, "max": 5, "scaling": {"stabilization": 3, "activation": 2, "idle_timeout": 9},
            "timeouts": {**moved["timeouts"], "boot": 61, "drain": 31, "heartbeat_timeout": 5}}
    out = pool.apply(many, tmp_path)
    assert re.search(r"and \d+ more$", out.strip()), out


# ---------------------------------------------------------------------------
# the embedded Redis keeps its port across `pool up` restarts
# ---------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def embedded_home(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A state directory of its own and no REDIS_URL; after the test nothing started under it runs."""
    home = tmp_path / "embedded"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "POOL_NAMESPACE")}
    env.update(POOL_HOME=str(home), COLUMNS="200")
    yield home, env
    subprocess.run(POOL + ["down", "--timeout", "20"], env=env, cwd=ROOT, capture_output=True, timeout=60)
    pids = set()
    for pidfile in (home / "redis" / "redis.pid", home / "manager.pid"):
        with contextlib.suppress(OSError, ValueError):
            pids.add(int(pidfile.read_text().strip()))
    with contextlib.suppress(OSError, ValueError, KeyError):
        pids.add(int(json.loads((home / "redis" / "server.json").read_text())["pid"]))
    for pid in pids:
        if _alive(pid) and os.stat(f"/proc/{pid}").st_uid == os.getuid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    driver = LocalNodeDriver(ex_state_dir=str(home / "sites" / "local"))
    for node in driver.list_nodes():
        driver.ex_preempt(node)


def _start_up(env: dict[str, str]) -> subprocess.Popen[str]:
    manager = subprocess.Popen(POOL + ["up", "--quiet", "--interval", "0.3"], env=env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    home = Path(env["POOL_HOME"])
    wait(lambda: (home / "manager.pid").exists() or manager.poll() is not None, 30, "`pool up` to start")
    assert manager.poll() is None, manager.stdout.read() if manager.stdout else ""
    return manager


def _down(env: dict[str, str], manager: subprocess.Popen[str] | None = None) -> None:
    proc = subprocess.run(POOL + ["down", "--timeout", "20"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    if manager is not None:
        assert manager.wait(timeout=30) == 0


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(POOL + args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.slow
def test_the_embedded_redis_keeps_its_port_across_pool_up_restarts(
        embedded_home: tuple[Path, dict[str, str]], app_dir: Path, tmp_path: Path) -> None:
    home, env = embedded_home
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(user_spec("prod", app_dir)))
    manager = _start_up(env)
    _run(["apply", "-f", str(spec)], env)
    first = json.loads(_run(["env", "prod", "-o", "json"], env).stdout)["broker_url"]
    info = json.loads((home / "redis" / "server.json").read_text())
    password = (home / "redis" / "password").read_text().strip()
    assert first == f"redis://:{password}@127.0.0.1:{info['port']}/1"
    client = redis.Redis.from_url(first)
    assert client.config_get("bind")["bind"] == "127.0.0.1"  # this machine only
    client.close()
    _down(env, manager)
    assert not _alive(info["pid"])

    manager = _start_up(env)  # a restart: the producer's URL still works
    assert json.loads(_run(["env", "prod", "-o", "json"], env).stdout)["broker_url"] == first
    assert redis.Redis.from_url(first).ping()
    # its record lost while it runs: found on its port and taken back, not started twice
    pid = json.loads((home / "redis" / "server.json").read_text())["pid"]
    (home / "redis" / "server.json").unlink()
    again = _run(["apply", "-f", str(spec)], env)
    assert "warning" not in again.stderr and json.loads((home / "redis" / "server.json").read_text())["pid"] == pid
    _down(env, manager)

    # another program took the port meanwhile: a new port, said in one line, recorded for next time
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", info["port"]))
        squatter.listen(1)
        moved = _run(["apply", "-f", str(spec)], env)
        warnings = [line for line in moved.stderr.splitlines() if "warning" in line]
        assert len(warnings) == 1, moved.stderr
        new_port = json.loads((home / "redis" / "server.json").read_text())["port"]
        assert new_port != info["port"] and f"port {info['port']} is taken" in warnings[0]
        assert f"127.0.0.1:{new_port}" in warnings[0] and password not in moved.stderr
        assert (home / "redis" / "port").read_text().strip() == str(new_port)
        assert (home / "redis" / "password").read_text().strip() == password  # the same password
        url = json.loads(_run(["env", "prod", "-o", "json"], env).stdout)["broker_url"]
        assert url == f"redis://:{password}@127.0.0.1:{new_port}/1"
        _down(env)


# ---------------------------------------------------------------------------
# wrong arguments: one line each
# ---------------------------------------------------------------------------


def test_new_commands_refuse_bad_arguments_in_one_line(pool: Cli, app_dir: Path, tmp_path: Path) -> None:
    pool.apply([user_spec("etl", app_dir), {"name": "sp", "deployable_type": "spark-worker", "max": 1,
                                            "spark": {"worker_memory": "512m"}}], tmp_path)
    long = "x" * 5000
    for args in (["env"], ["env", long], ["env", "[/x]"], ["env", "etl", "-o", "yaml"], ["env", "etl", "extra"],
                 ["logs"], ["logs", long], ["logs", "[/x]"], ["logs", "x", "--tail", "-1"], ["logs", "x", "--tail", "a"],
                 ["logs", "x", "-d", "nope"], ["ls", "-o", "tree"], ["show", "etl", "-o", "yaml"], ["show", "etl", "-A", "x"]):
        result = pool(*args, code=2)
        line = error_line(result)
        assert len(line) < 600 and "internal error" not in line, (args, line)
    # a Spark domain whose master `pool up` has not started yet: said, in one line
    line = error_line(pool("env", "sp", code=1))
    assert "no Spark master yet" in line and "pool up" in line
