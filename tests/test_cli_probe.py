"""The CLI argument matrix: every `pool` command given bad arguments or a bad environment.

Each case must end in one `error: ...` line and the expected exit code (2: usage or input, 1: a
runtime failure), never a traceback, never the CLI's own "internal error" line (which would
mean an exception no command expected), and never a line longer than 600 characters. Domain
specs carry broker, AMQP and management passwords: no output of any command shows them.

Most cases run in this process through click's runner; those about the environment, the
console script itself, `pool up` and `pool down` run as subprocesses. Nothing started here is
left running: the last test looks for redis-servers and managers by their pid files and by
/proc, and kills what it finds by process id.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from click.testing import CliRunner

from pool.cli.commands import main
from pool.state.redisserver import RedisServer
from pool.state.store import Store

ROOT = Path(__file__).resolve().parent.parent
POOL = [sys.executable, "-m", "pool.cli"]
SECRETS = ("AmqpPassw0rd42", "MgmtPassw0rd42", "RedisPassw0rd42", "WrongPassw0rd42", "AttrPassw0rd42")
LONG = "x" * 5000
HOMES: list[Path] = []  # every POOL_HOME this module used: searched for servers left running at the end


@pytest.fixture(scope="module")
def probe(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The test Redis (own namespace), a state directory, and domains whose specs hold passwords."""
    home = tmp_path_factory.mktemp("probe-home")
    HOMES.append(home)
    ns = f"probe{uuid.uuid4().hex[:6]}"
    env = {"REDIS_URL": redis_server.url, "POOL_HOME": str(home), "POOL_NAMESPACE": ns, "COLUMNS": "200"}
    specs = [
        {"name": "etl", "site": "local", "min": 0, "max": 4, "policy": {"name": "fixed", "size": 0},
         "sensor": {"name": "celery", "management_url": "http://admin:MgmtPassw0rd42@127.0.0.1:1"},
         "broker": "amqp://worker:AmqpPassw0rd42@127.0.0.1:1//", "celery": {"app": "tasks", "queue": "etl"}},
        {"name": "red", "site": "local", "min": 0, "max": 2, "policy": {"name": "fixed", "size": 0},
         "broker": "redis://:RedisPassw0rd42@127.0.0.1:1/1", "celery": {"app": "tasks", "queue": "red"}},
    ]
    spec_file = home / "domains.yaml"
    spec_file.write_text(yaml.safe_dump_all(specs))
    result = CliRunner().invoke(main, ["apply", "-f", str(spec_file)], env=env)
    assert result.exit_code == 0, result.output
    # one tick, so that readings (a sensor error naming its broker), decisions and events exist
    from pool.control.manager import Manager
    from pool.sites.local import LocalNodeDriver
    from pool.sites.provisioner import Provisioner

    store = Store.from_url(redis_server.url, namespace=ns)
    manager = Manager(store=store, redis_url=redis_server.url, wakeups=False, provisioner=Provisioner(
        {"local": LocalNodeDriver(ex_state_dir=str(home / "sites" / "local"))}))
    try:
        manager.tick()
    finally:
        manager.close()
    yield {"env": env, "home": home, "store": store, "url": redis_server.url, "spec_file": spec_file}


def check(out: str, err: str, code: int, expected: int, what: str, *, one_error: bool = True) -> None:
    text = out + err
    assert "Traceback" not in text and "Exception in thread" not in text, f"{what}: {text[-3000:]}"
    assert "internal error" not in text, f"{what}: {text[-2000:]}"
    long = [line for line in text.splitlines() if len(line) > 600]
    assert not long, f"{what}: a line of {len(long[0])} characters"
    assert code == expected, f"{what}: exit {code}, expected {expected}: {text[-2000:]}"
    if expected != 0 and one_error:
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, f"{what}: expected one error line, got: {err[-2000:]}"
        assert len(errors[0]) > len("error: ") + 10
    for secret in SECRETS:
        assert secret not in text, f"{what}: shows a password"


def invoke(probe: dict[str, Any], args: list[str], expected: int, *, env: dict[str, str | None] | None = None,
           one_error: bool = True, contains: str | None = None) -> Any:
    result = CliRunner().invoke(main, args, env={**probe["env"], **(env or {})}, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"pool {args[:4]}: {result.exception!r}") from result.exception
    check(result.stdout, result.stderr, result.exit_code, expected, f"pool {' '.join(a[:40] for a in args)}",
          one_error=one_error)
    password = probe["url"].split("@")[0].rsplit(":", 1)[-1]
    if len(password) >= 6:
        assert password not in result.stdout + result.stderr, "the pool's Redis password is shown"
    if contains is not None:
        assert contains in result.stdout + result.stderr, (contains, result.stdout + result.stderr)
    return result


# -- in this process: arguments --------------------------------------------------------------------------

USAGE = 2
ARGUMENT_CASES: list[list[str]] = [
    ["bogus"], ["ls", "--bogus"], ["ls", "extra"], ["status", "extra"], ["status", "--json", "--bogus"],
    ["show"], ["show", "nope"], ["show", ""], ["show", LONG], ["show", "[/x]"], ["show", "etl", "--events", "-1"],
    ["show", "etl", "--events", "abc"], ["show", "etl", "--events", ""], ["show", "etl", "--events", "99999999"],
    ["resize"], ["resize", "etl"], ["resize", "nope", "2"], ["resize", "", "2"], ["resize", LONG, "2"],
    ["resize", "etl", "garbage"], ["resize", "etl", "-3"], ["resize", "etl", ""], ["resize", "etl", "1.5"],
    ["resize", "etl", "5"], ["resize", "etl", "99999999999999999999999"], ["resize", "etl", LONG],
    ["resize", "etl", "[red]x"], ["resize", "etl", "--bogus"],
    ["delete"], ["delete", "nope"], ["delete", ""], ["delete", LONG],
    ["events"], ["events", "nope"], ["events", ""], ["events", LONG], ["events", "etl", "-n", "-5"],
    ["events", "etl", "-n", "0"], ["events", "etl", "-n", "abc"], ["events", "etl", "-n", ""],
    ["events", "etl", "-n", "99999999999"],
    ["apply"], ["apply", "-f"], ["apply", "-f", ""], ["apply", "-f", "/nonexistent/spec.yaml"], ["apply", "-f", "/"],
    ["apply", "-f", LONG],
    ["down", "--timeout", "-5"], ["down", "--timeout", "abc"], ["down", "--timeout", "nan"],
    ["down", "--timeout", "inf"], ["down", "--timeout", ""], ["down", "--bogus"],
    ["up", "--interval", "0"], ["up", "--interval", "abc"], ["up", "--interval", "nan"],
    ["up", "--provisioners", "0"], ["up", "--provisioners", "-2"], ["up", "--metrics-port", "70000"],
    ["up", "--metrics-port", "-1"], ["up", "--metrics-port", "abc"], ["up", "--drain-timeout", "-1"],
    ["up", "--drain-timeout", "inf"], ["up", "--lease-ttl", "0"], ["up", "--list-interval", "-1"],
    ["up", "--reclaim-after", "nan"], ["up", "extra"],
    ["spark", "bogus"], ["spark", "master"], ["spark", "master", "nope"], ["spark", "master", ""],
    ["spark", "master", LONG], ["spark", "submit"], ["spark", "submit", "--interval", "-1", "job.py"],
    ["spark", "submit", "--interval", "nan", "job.py"], ["spark", "submit", "-d", "nope", "job.py"],
    ["spark", "submit", "--conf", "novalue", "job.py"],
    ["simulate"], ["simulate", "--trace", "burst:n=5"], ["simulate", "--trace", "nope", "--policy", "fixed"],
    ["simulate", "--trace", "", "--policy", ""], ["simulate", "--trace", LONG, "--policy", "fixed"],
    ["simulate", "--trace", "burst:n=-5", "--policy", "fixed"], ["simulate", "--trace", "burst:n=abc", "--policy", "fixed"],
    ["simulate", "--trace", "burst:n=5,service=-1", "--policy", "fixed"],
    ["simulate", "--trace", "burst:n=5", "--policy", "nope"], ["simulate", "--trace", "burst:n=5", "--policy", LONG],
    ["simulate", "--trace", "burst:n=5", "--policy", "fixed:size=abc"],
    ["simulate", "--trace", "burst:n=5", "--policy", "[/x]"],
    ["simulate", "--trace", "burst:n=5", "--policy", "fixed", "--horizon", "nan"],
    ["simulate", "--trace", "burst:n=5", "--policy", "fixed", "--tick", "-1"],
    ["simulate", "--trace", "burst:n=5", "--policy", "fixed", "--site-profile", "nope"],
    ["simulate", "--trace", "burst:n=5", "--policy", "fixed", "--scaling", "="],
    ["simulate", "--trace", "burst:n=5", "--policy", "fixed", "--scaling", "stabilization=abc"],
    ["simulate", "--trace", "burst:n=5", "--policy", "fixed", "--spec", "/nonexistent.yaml"],
    ["simulate", "--trace", "/nonexistent.csv", "--policy", "fixed"],
]


def test_bad_arguments_are_one_line_errors(probe: dict[str, Any]) -> None:
    for args in ARGUMENT_CASES:
        invoke(probe, args, USAGE)
    invoke(probe, [], USAGE, one_error=False, contains="Usage:")  # bare `pool`: its help


def test_bad_spec_files_are_one_line_errors(probe: dict[str, Any], tmp_path: Path) -> None:
    cases = {"notyaml.yaml": "name: [unclosed\n", "empty.yaml": "", "list.yaml": "- 1\n- 2\n",
             "unknown.yaml": "name: x\nmax: 1\nreplicas: 3\n", "negative.yaml": "name: x\nmax: -1\n",
             "badname.yaml": f"name: '{LONG}'\nmax: 1\n", "markup.yaml": "name: '[/x]'\nmax: 1\n",
             "binary.yaml": "\x00\x01\x02"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        invoke(probe, ["apply", "-f", str(tmp_path / name)], USAGE)


def test_no_output_shows_a_password(probe: dict[str, Any]) -> None:
    for args in (["ls"], ["ls", "--json"], ["show", "etl"], ["show", "etl", "--json"], ["show", "red", "--json"],
                 ["show", "red"], ["events", "etl"], ["events", "red", "-n", "100"], ["status"], ["status", "--json"]):
        result = invoke(probe, args, 0)
        assert result.stdout.strip(), args
    shown = json.loads(invoke(probe, ["show", "etl", "--json"], 0).stdout)
    assert shown["spec"]["broker"] == "amqp://worker:***@127.0.0.1:1//"
    assert shown["spec"]["sensor"]["management_url"] == "http://admin:***@127.0.0.1:1"
    rows = json.loads(invoke(probe, ["ls", "--json"], 0).stdout)
    assert {r["domain"] for r in rows} == {"etl", "red"}
    # error lines too: a wrong password in REDIS_URL, and a database the server does not have
    host = probe["url"].rsplit("@", 1)[-1].rsplit("/", 1)[0]
    invoke(probe, ["ls"], 1, env={"REDIS_URL": f"redis://:WrongPassw0rd42@{host}/0"})
    invoke(probe, ["resize", "etl", "2"], 1, env={"REDIS_URL": "redis://:RedisPassw0rd42@127.0.0.1:1/0"})


def test_resize_and_simulate_still_work(probe: dict[str, Any], tmp_path: Path) -> None:
    invoke(probe, ["resize", "etl", "3"], 0, contains="intended size 3")
    invoke(probe, ["resize", "etl", "auto"], 0)
    invoke(probe, ["simulate", "--trace", "burst:n=5", "--policy", "fixed", "--out", "/dev/null/report"], 1,
           contains="cannot write the report")
    invoke(probe, ["events", "etl", "-n", "5"], 0, contains="resize")
    odd = tmp_path / "[" / "x]"  # console markup in a path that is printed back
    invoke(probe, ["simulate", "--trace", "burst:n=5", "--policy", "fixed", "--out", str(odd)], 0,
           contains="report.json")


def test_bad_environments_in_process(probe: dict[str, Any], tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    corrupt = tmp_path / "corrupt"
    (corrupt / "redis").mkdir(parents=True)
    empty_json = tmp_path / "emptyjson"
    (empty_json / "redis").mkdir(parents=True)
    (empty_json / "redis" / "server.json").write_text("{}")
    (corrupt / "redis" / "server.json").write_text("garbage\x00{")
    HOMES.extend([corrupt, empty_json])
    for url in ("notaurl", "redis://host:notaport", "redis://127.0.0.1:99999/0", "http://127.0.0.1:6379",
                "redis://127.0.0.1:1/0?socket_timeout=abc", " "):
        for args in (["ls"], ["show", "etl"], ["status"], ["resize", "etl", "1"], ["events", "etl"]):
            invoke(probe, args, USAGE, env={"REDIS_URL": url})
    for args in (["ls"], ["status", "--json"], ["events", "etl"], ["show", "etl"], ["delete", "etl"]):
        invoke(probe, args, 1, env={"REDIS_URL": "redis://127.0.0.1:1/0"})
        invoke(probe, args, USAGE, env={"REDIS_URL": None, "POOL_HOME": str(afile / "sub")})
        invoke(probe, args, 1, env={"REDIS_URL": None, "POOL_HOME": str(corrupt)})
        invoke(probe, args, 1, env={"REDIS_URL": None, "POOL_HOME": str(empty_json)})
    invoke(probe, ["spark", "master", "x"], USAGE, env={"REDIS_URL": None, "POOL_HOME": str(afile / "sub")})
    invoke(probe, ["spark", "submit", "job.py"], USAGE, env={"REDIS_URL": None, "POOL_HOME": str(afile / "sub")})
    invoke(probe, ["ls"], USAGE, env={"POOL_NAMESPACE": "no spaces please"})
    invoke(probe, ["ls"], USAGE, env={"POOL_NAMESPACE": LONG})
    invoke(probe, ["apply", "-f", str(probe["spec_file"])], USAGE,
           env={"REDIS_URL": None, "POOL_HOME": str(afile / "sub")})
    assert not (corrupt / "redis" / "redis.pid").exists()  # nothing was started on a corrupt record


# -- subprocesses: the console script, `pool up` and `pool down`, the embedded Redis ---------------------


def run(args: list[str], env: dict[str, str | None], timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    full = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "POOL_NAMESPACE")}
    full.update({k: v for k, v in env.items() if v is not None})
    for k, v in env.items():
        if v is None:
            full.pop(k, None)
    started = time.monotonic()
    proc = subprocess.run(POOL + args, env=full, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    return proc, time.monotonic() - started


def run_check(args: list[str], env: dict[str, str | None], expected: int, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc, _ = run(args, env)
    check(proc.stdout, proc.stderr, proc.returncode, expected, f"pool {' '.join(args)} ({env})", **kw)
    return proc


def test_the_console_script_in_bad_environments(probe: dict[str, Any], tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    garbage = tmp_path / "garbage"
    (garbage / "redis").mkdir(parents=True)
    (garbage / "redis" / "server.json").write_text("garbage")
    HOMES.extend([garbage, tmp_path])
    env = probe["env"]
    run_check(["ls"], {**env, "REDIS_URL": "notaurl"}, USAGE)
    run_check(["down"], {**env, "REDIS_URL": "redis://host:notaport"}, USAGE)
    run_check(["down", "--timeout", "5"], {**env, "REDIS_URL": "redis://127.0.0.1:1/0"}, 1)
    run_check(["ls"], {**env, "REDIS_URL": None, "POOL_HOME": str(afile / "sub")}, USAGE)
    run_check(["up"], {**env, "REDIS_URL": None, "POOL_HOME": str(afile / "sub")}, USAGE)
    run_check(["down"], {**env, "REDIS_URL": None, "POOL_HOME": str(garbage)}, 0)  # nothing is running
    run_check(["spark", "master", "etl"], {**env, "REDIS_URL": None, "POOL_HOME": str(afile / "sub")}, USAGE)
    shown = run_check(["show", "etl", "--json"], env, 0)  # (check() looks for the spec's passwords)
    assert json.loads(shown.stdout)["spec"]["broker"] == "amqp://worker:***@127.0.0.1:1//"
    with socket.socket() as taken:  # --metrics-port already in use: refused before anything starts
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = run_check(["up", "--metrics-port", str(port)], env, USAGE)
        assert "--metrics-port" in proc.stderr and "in use" in proc.stderr
    assert not _alive_managers(probe["store"])


def test_down_with_no_manager_and_the_embedded_redis(tmp_path: Path) -> None:
    """`pool apply` says it started the embedded Redis; `pool down` (no manager) stops it, quietly."""
    home = tmp_path / "embedded"
    HOMES.append(home)
    env: dict[str, str | None] = {"REDIS_URL": None, "POOL_HOME": str(home), "COLUMNS": "200"}
    try:
        proc = run_check(["apply", "-f", "examples/celery-domain.yaml"], env, 0)
        notes = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(notes) == 1 and "embedded Redis" in notes[0] and "pool down" in notes[0], proc.stderr
        assert str(home) in notes[0] and "started" in notes[0]
        proc = run_check(["apply", "-f", "examples/celery-domain.yaml"], env, 0)
        assert "embedded Redis" not in proc.stderr  # it was running already: nothing to say
        proc, took = run(["down", "--timeout", "10"], env)
        check(proc.stdout, proc.stderr, proc.returncode, 0, "pool down (embedded, no manager)")
        assert "embedded Redis stopped" in proc.stdout and took < 15
        run_check(["ls"], env, 1)  # stopped: says so
    finally:
        _kill_leftovers([home])


def test_down_gives_up_in_time_when_a_manager_never_stops(probe: dict[str, Any]) -> None:
    store: Store = probe["store"]
    store.register_manager("probe-stuck", {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
    try:
        proc, took = run(["down", "--timeout", "2"], probe["env"])
        check(proc.stdout, proc.stderr, proc.returncode, 1, "pool down --timeout 2 (a manager that never stops)")
        assert took < 8 and "did not stop within 2s" in proc.stderr
    finally:
        store.unregister_manager("probe-stuck")
        store.clear_shutdown()


# -- nothing left running ---------------------------------------------------------------------------------


def _alive_managers(store: Store) -> list[str]:
    here = socket.gethostname()
    out = []
    for mid, info in store.managers().items():
        pid = int(info.get("pid", 0) or 0)
        if info.get("host") == here and pid > 0 and pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 0)
                out.append(mid)
    return out


def _leftovers(homes: list[Path]) -> dict[int, str]:
    """Processes started under ``homes``: by their pid files, and by /proc (cwd or POOL_HOME)."""
    found: dict[int, str] = {}
    for home in homes:
        for pidfile in (home / "redis" / "redis.pid", home / "manager.pid"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text().strip())
                os.kill(pid, 0)
                found[pid] = str(pidfile)
        with contextlib.suppress(OSError, ValueError, KeyError):
            pid = int(json.loads((home / "redis" / "server.json").read_text())["pid"])
            os.kill(pid, 0)
            found[pid] = f"{home}/redis/server.json"
    roots = [str(h) for h in homes]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cwd = os.readlink(proc / "cwd")
            if any(cwd == r or cwd.startswith(r + "/") for r in roots):
                found[int(proc.name)] = f"cwd {cwd}"
                continue
        with contextlib.suppress(OSError):
            environ = (proc / "environ").read_bytes()
            if any(f"POOL_HOME={r}".encode() in environ for r in roots):
                found[int(proc.name)] = "POOL_HOME"
    for pid in list(found):  # zombies are gone already
        with contextlib.suppress(OSError):
            if (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z":
                del found[pid]
    return found


def _kill_leftovers(homes: list[Path]) -> dict[int, str]:
    found = _leftovers(homes)
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _leftovers(homes):
        time.sleep(0.1)
    for pid in _leftovers(homes):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return found


def test_nothing_is_left_running(probe: dict[str, Any]) -> None:
    """Runs last in this module: no redis-server or manager any case started is still there."""
    managers = _alive_managers(probe["store"])
    found = _kill_leftovers(HOMES)
    assert not found and not managers, (found, managers)
