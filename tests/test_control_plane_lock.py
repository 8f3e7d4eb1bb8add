"""The control plane is locked: what a neighbour on this machine, a forged Redis entry or a hostile
spec can do to the manager's machine, and where secrets may and may not be seen.

Each test replays one way in that was found open, against the real Redis, manager and local site.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import redis

from pool.control.manager import Manager
from pool.core.model import NodeRecord, NodeState, parse_domain_spec
from pool.core.secrets import redact_text
from pool.sites.config import OperatorConfig
from pool.sites.local import LocalNodeDriver
from pool.sites.provisioner import Provisioner
from pool.state.redisserver import embedded_url, ensure_embedded, stop_embedded
from pool.state.store import Store
from pool.state.workqueue import WorkItem, WorkQueue
from tests.conftest import celery_spec, wait

S = NodeState
ROOT = Path(__file__).resolve().parent.parent


def as_nobody(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` as the user nobody (a neighbour on this machine)."""
    import pwd

    nobody = pwd.getpwnam("nobody")

    def drop() -> None:
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    return subprocess.run([SYSTEM_PYTHON, "-c", code, *args], capture_output=True, text=True, timeout=60,
                          preexec_fn=drop if os.getuid() == 0 else None, cwd="/")


#: An interpreter the user nobody may run (the virtualenv's may live under a private home).
SYSTEM_PYTHON = "/usr/bin/python3"


# ---------------------------------------------------------------------------
# The embedded Redis: a password of its own, private files, a fixed port
# ---------------------------------------------------------------------------


@pytest.fixture
def embedded(pool_home: Path) -> Iterator[str]:
    url = ensure_embedded()
    try:
        yield url
    finally:
        stop_embedded()


def test_embedded_redis_requires_its_password_and_keeps_it_private(embedded: str, pool_home: Path) -> None:
    port = int(embedded.rsplit(":", 1)[1].split("/")[0])
    password = (pool_home / "redis" / "password").read_text().strip()
    assert len(password) >= 32 and password in embedded
    with pytest.raises(redis.exceptions.AuthenticationError):  # no password, no access
        redis.Redis(host="127.0.0.1", port=port, socket_timeout=2).hset("ep:domains", "evil", "{}")
    assert redis.Redis.from_url(embedded).ping()
    for path in (pool_home, pool_home / "redis"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    for name in ("password", "server.json", "redis.conf", "port"):
        assert stat.S_IMODE((pool_home / "redis" / name).stat().st_mode) == 0o600, name
    pid = json.loads((pool_home / "redis" / "server.json").read_text())["pid"]
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    assert password not in cmdline  # every local user can read a command line


@pytest.mark.skipif(os.getuid() != 0 or not os.path.exists(SYSTEM_PYTHON), reason="needs root and /usr/bin/python3")
def test_a_neighbour_can_neither_read_the_password_nor_write_a_domain(embedded: str, pool_home: Path) -> None:
    port = embedded.rsplit(":", 1)[1].split("/")[0]
    probe = as_nobody(
        "import sys, socket\n"
        "try:\n"
        "    open(sys.argv[1]).read(); print('READ')\n"
        "except OSError: print('no-read')\n"
        "s = socket.create_connection(('127.0.0.1', int(sys.argv[2])), timeout=5)\n"
        "s.sendall(b'HSET ep:domains evil x\\r\\n')\n"
        "print('reply', s.recv(200).decode().strip())\n",
        str(pool_home / "redis" / "password"), port)
    assert probe.returncode == 0, probe.stderr
    assert "no-read" in probe.stdout and "reply -NOAUTH" in probe.stdout, probe.stdout
    assert redis.Redis.from_url(embedded).hget("ep:domains", "evil") is None


def test_embedded_redis_comes_back_on_its_port_and_a_client_reconnects(embedded: str, pool_home: Path) -> None:
    store = Store.from_url(embedded, namespace="ep")
    store.put_domain(parse_domain_spec(celery_spec("keep")))
    pid = json.loads((pool_home / "redis" / "server.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    wait(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2],
         10, "the server to die")
    assert embedded_url() is None
    again = ensure_embedded()  # what `pool up` does
    assert again == embedded  # same port, same password: producers and managers keep their URL
    wait(lambda: store.get_domain("keep") is not None, 10, "the old client to reconnect and read")
    assert stop_embedded() and embedded_url() is None
    assert ensure_embedded() == embedded  # after `pool down` too


def test_a_corrupt_server_file_signals_nothing(pool_home: Path) -> None:
    (pool_home / "redis").mkdir(mode=0o700)
    (pool_home / "redis" / "server.json").write_text(json.dumps({"url": "x", "port": 1, "pid": 1}))
    assert embedded_url() is None
    assert stop_embedded() is False  # pid 1 is no redis-server of ours: not signalled


# ---------------------------------------------------------------------------
# Forged entries in Redis: validated before anything acts on them
# ---------------------------------------------------------------------------


@pytest.fixture
def victim(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A directory of the attacker's choosing with a node.json naming a process that must survive."""
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    directory = tmp_path / "victim"
    directory.mkdir()
    (directory / "keep.txt").write_text("precious")
    (directory / "node.json").write_text(json.dumps({"id": str(directory), "name": "x", "pid": proc.pid,
                                                      "start_ticks": None, "token": None, "tags": {}}))
    try:
        yield directory, proc
    finally:
        proc.kill()
        proc.wait()


def manager_for(store: Store, redis_url: str, home: Path, *, workers: int = 0) -> Manager:
    driver = LocalNodeDriver(ex_state_dir=str(home / "sites" / "local"))
    return Manager(store=store, provisioner=Provisioner({"local": driver}), redis_url=redis_url,
                   wakeups=False, workers=workers)


def test_forged_terminate_item_cannot_signal_or_remove_outside_the_site(
        store: Store, redis_url: str, pool_home: Path, victim: tuple[Path, subprocess.Popen[bytes]]) -> None:
    directory, proc = victim
    store.put_domain(parse_domain_spec(celery_spec("work")))
    manager = manager_for(store, redis_url, pool_home, workers=1)
    try:
        manager.start_workers()
        forged = [
            {"op": "terminate", "domain": "work", "node_id": "ghost", "provider_id": str(directory), "site": "local"},
            {"op": "terminate", "domain": "work", "node_id": "ghost", "provider_id": "../../victim", "site": "local"},
            {"op": "terminate", "domain": "work", "node_id": "../x", "site": "local"},
            {"op": "launch", "domain": "../../etc", "node_id": "n"},
            {"op": "rm -rf /", "domain": "work", "node_id": "n"},
            "not an object",
        ]
        for item in forged:
            store.r.xadd(f"{store.ns}:work", {"item": json.dumps(item)})
        store.r.xadd(f"{store.ns}:work", {"item": "{not json"})
        wait(lambda: WorkQueue(store.r, namespace=store.ns).depth()["queued"] == 0
             and WorkQueue(store.r, namespace=store.ns).depth()["in_progress"] == 0, 20, "forged items to be dropped")
        time.sleep(0.5)
    finally:
        manager.close()
    assert proc.poll() is None  # not signalled
    assert (directory / "keep.txt").read_text() == "precious" and (directory / "node.json").exists()


def test_forged_node_records_are_refused_and_nothing_outside_the_site_is_touched(
        store: Store, redis_url: str, pool_home: Path, victim: tuple[Path, subprocess.Popen[bytes]]) -> None:
    directory, proc = victim
    store.put_domain(parse_domain_spec(celery_spec("work")))
    good = NodeRecord.new(node_id="work-good", domain="work", launch_id=uuid.uuid4().hex, site="local",
                          deployable_type="celery-worker", now=time.time() - 10_000)
    forged = json.loads(good.to_json())
    forged.update(node_id="work-evil", state="TERMINATED", provider_id=str(directory),
                  history=[["REQUESTED", 0, ""], ["TERMINATED", 1, ""]])
    store.r.hset(store._d("work", "nodes"), "work-evil", json.dumps(forged))
    for i, change in enumerate([{"provider_id": "../victim"}, {"state": "BOGUS"}, {"created": None},
                                {"node_id": "../../x"}, {"extra": 1}]):
        store.r.hset(store._d("work", "nodes"), f"work-bad{i}", json.dumps({**forged, "node_id": f"work-bad{i}",
                                                                            **change}))
    store.r.hset(store._d("work", "nodes"), "work-junk", "][")
    manager = manager_for(store, redis_url, pool_home)
    try:
        for _ in range(3):
            manager.tick()
    finally:
        manager.close()
    assert proc.poll() is None and (directory / "keep.txt").exists() and (directory / "node.json").exists()
    refused = [e for e in store.events("work", 50) if e["kind"] == "refused"]
    assert {e["node"] for e in refused} >= {"work-evil", "work-junk", *(f"work-bad{i}" for i in range(5))}
    assert store.node("work", "work-evil") is None


def test_a_bad_stored_domain_never_stops_the_others(store: Store, redis_url: str, pool_home: Path) -> None:
    """A spec written to Redis behind the CLI's back (an .inf, a NaN, a wrong name, not JSON) is refused with
    an event; the domain next to it is still managed."""
    store.put_domain(parse_domain_spec(celery_spec("good", min=1, policy={"name": "fixed", "size": 1})))
    good = json.loads(store.r.hget(store._k("domains"), "good"))
    bad = {
        "inf": {**good, "name": "inf", "timeouts": {**good["timeouts"], "boot": None}},
        "nan": {**good, "name": "nan", "policy": {"name": "queue_depth", "tasks_per_worker": float("nan")}},
        "renamed": {**good, "name": "other"},
        "junk": "}{",
    }
    for name, value in bad.items():
        store.r.hset(store._k("domains"), name, value if isinstance(value, str) else json.dumps(value))
    manager = manager_for(store, redis_url, pool_home)
    manager.provisioner.drivers["local"] = _NoLaunch()
    try:
        plans = manager.tick()
    finally:
        manager.close()
    assert [p.domain for p in plans] == ["good"]
    assert len(store.nodes("good")) == 1  # the good domain got its worker (its launch failed here: no site)
    assert set(store.refused) == {"inf", "nan", "renamed", "junk"}
    for name in ("inf", "nan", "renamed", "junk"):
        assert any(e["kind"] == "refused" and e["what"] == "spec" for e in store.events(name, 5)), name


class _NoLaunch(LocalNodeDriver):
    """A local site that starts nothing (for tests about planning only)."""

    def __init__(self) -> None:
        pass

    def create_node(self, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        raise RuntimeError("no launches in this test")

    def list_nodes(self, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        return []


def test_forged_heartbeats_do_not_stop_the_tick(store: Store, redis_url: str, pool_home: Path) -> None:
    store.put_domain(parse_domain_spec(celery_spec("beat")))
    rec = NodeRecord.new(node_id="beat-1", domain="beat", launch_id=uuid.uuid4().hex, site="local",
                         deployable_type="celery-worker", now=time.time())
    store.put_nodes([rec])
    store.r.hset(store.heartbeat_key("beat", "beat-1"), mapping={"time": "soon", "active": "lots",
                                                                 "idle_since": "nan", "preempt_notice": "x"})
    manager = manager_for(store, redis_url, pool_home)
    manager.provisioner.drivers["local"] = _NoLaunch()
    try:
        assert [p.domain for p in manager.tick()] == ["beat"]
        store.beat("beat", "beat-1", active="-5", idle_since="inf")
        assert [p.domain for p in manager.tick()] == ["beat"]
    finally:
        manager.close()
    hb = store.heartbeats("beat", ["beat-1"])["beat-1"]
    assert hb.active == 0 and hb.idle_since is None


# ---------------------------------------------------------------------------
# A spec reaches only what the operator allows
# ---------------------------------------------------------------------------


def test_celery_path_others_can_write_is_refused(store: Store, redis_url: str, pool_home: Path,
                                                 tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "evil.py").write_text("import os; os.system('touch /tmp/owned')\n")
    shared.chmod(0o777)
    store.put_domain(parse_domain_spec(celery_spec("evil", min=1, policy={"name": "fixed", "size": 1},
                                                   celery={"app": "evil", "path": str(shared)})))
    manager = manager_for(store, redis_url, pool_home)
    try:
        manager.tick()
    finally:
        manager.close()
    assert LocalNodeDriver(ex_state_dir=str(pool_home / "sites" / "local")).list_nodes(ex_include_gone=True) == []
    errors = [e for e in store.events("evil", 20) if e["kind"] == "launch_error"]
    assert errors and "may be changed by other users" in errors[0]["error"]


def test_spec_attributes_cannot_shadow_the_pools_own(store: Store, redis_url: str, pool_home: Path) -> None:
    spec = parse_domain_spec(celery_spec("attrs", attributes={"team": "ml"}))
    # whatever validation let through, the bag's own values win
    forged = spec.model_copy(update={"attributes": {"namespace": "other", "redis_url": "redis://evil/0",
                                                    "python": "/tmp/evil", "node_id": "x", "team": "ml"}})
    manager = manager_for(store, redis_url, pool_home)
    rec = NodeRecord.new(node_id="attrs-1", domain="attrs", launch_id="l1", site="local",
                         deployable_type="celery-worker", now=0.0)
    bag = manager.attributes(forged, rec)
    manager.close()
    assert bag["namespace"] == store.ns and bag["redis_url"] == redis_url and bag["python"] == sys.executable
    assert bag["node_id"] == "attrs-1" and bag["team"] == "ml"


def test_a_spec_cannot_send_a_credential_or_user_data_to_a_host_of_its_choice(
        store: Store, redis_url: str, pool_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An EC2 site with `key: env:ANY` and `options: {host, port}` made the manager send that variable (and the
    user-data, with the control-plane password) to the named host. Now nothing reaches the host unless the
    operator's configuration allows both the reference and the endpoint."""
    monkeypatch.setenv("MANAGER_ONLY_SECRET", "s3cr3t-value-of-the-manager")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    spec = parse_domain_spec(celery_spec("exfil", min=1, policy={"name": "fixed", "size": 1}, sites=[{
        "name": "evil", "provider": "ec2", "key": "env:MANAGER_ONLY_SECRET", "secret": "env:MANAGER_ONLY_SECRET",
        "region": "us-east-1", "image": "ami-1", "size": "t3.micro",
        "options": {"host": "127.0.0.1", "port": port, "secure": False}}]))
    store.put_domain(spec)
    manager = manager_for(store, redis_url, pool_home)
    try:
        for _ in range(3):
            manager.tick()
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing connected
        assert "not among the credential references the operator allows" in manager.provisioner.broken["evil"]
        # the operator allows the reference but not the endpoint: still nothing is sent
        manager.provisioner = Provisioner({"local": manager.provisioner.drivers["local"]},
                                          config=OperatorConfig(credentials=("env:MANAGER_ONLY_SECRET",)))
        for _ in range(3):
            manager.tick()
        with pytest.raises(BlockingIOError):
            listener.accept()
        assert "not among the endpoints the operator allows" in manager.provisioner.broken["evil"]
    finally:
        manager.close()
        listener.close()
    text = json.dumps(store.events("exfil", 100))
    assert "s3cr3t-value-of-the-manager" not in text


def test_operator_config_file_others_can_write_is_refused(tmp_path: Path) -> None:
    from pool.sites.config import ConfigError

    path = tmp_path / "config.yaml"
    path.write_text("credentials: ['env:*']\n")
    path.chmod(0o666)
    with pytest.raises(ConfigError, match="others may write it"):
        OperatorConfig.load(path)
    path.chmod(0o600)
    assert OperatorConfig.load(path).allows_credential("env:ANY")
    path.write_text("credentails: []\n")
    with pytest.raises(ConfigError, match="unknown key 'credentails'"):
        OperatorConfig.load(path)


# ---------------------------------------------------------------------------
# Secrets: private files, an explicit worker environment, masked wherever shown
# ---------------------------------------------------------------------------


def test_worker_files_are_private_and_its_environment_is_explicit(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "manager-cloud-key")
    monkeypatch.setenv("APP_SETTING", "passed-on")
    driver = LocalNodeDriver(ex_state_dir=str(tmp_path / "site"), ex_worker_env=("APP_*",))
    out = tmp_path / "env.txt"
    node = driver.create_node("w1", ex_userdata=f"export POOL_REDIS_URL=redis://:pw@x/0\nenv > {out}\n",
                              ex_client_token="t1")
    wait(lambda: out.exists() and out.stat().st_size > 0, 10, "the worker to write its environment")
    time.sleep(0.2)
    env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert "AWS_SECRET_ACCESS_KEY" not in env and env.get("APP_SETTING") == "passed-on" and "PATH" in env
    assert stat.S_IMODE((tmp_path / "site").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "site" / "w1").stat().st_mode) == 0o700
    for name in ("user-data", "console.log", "node.json"):
        assert stat.S_IMODE((tmp_path / "site" / "w1" / name).stat().st_mode) == 0o600, name
    driver.destroy_node(node, ex_grace=0)


def test_events_and_errors_mask_passwords(store: Store, redis_url: str) -> None:
    store.record("work", "launch_error", 1.0, error="cannot reach amqp://user:hunter2secret@10.0.0.1:5672//",
                 broker="redis://:hunter2secret@127.0.0.1:1/1", password="hunter2secret")
    text = json.dumps(store.events("work", 5))
    assert "hunter2secret" not in text and "***" in text
    password = redis_url.split(":", 2)[2].split("@")[0]
    assert password not in redact_text(f"failed: {redis_url}")


def test_a_manager_never_logs_or_records_the_control_plane_password(
        store: Store, redis_url: str, pool_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    password = redis_url.split(":", 2)[2].split("@")[0]
    store.put_domain(parse_domain_spec(celery_spec("quiet", broker="amqp://u:p4ssw0rd-amqp@127.0.0.1:1//")))
    manager = manager_for(store, redis_url, pool_home)
    try:
        for _ in range(2):
            manager.tick()
    finally:
        manager.close()
    text = json.dumps(store.events("quiet", 100)) + caplog.text
    assert password not in text and "p4ssw0rd-amqp" not in text


def test_work_items_round_trip() -> None:
    item = WorkItem(op="terminate", domain="a-b", node_id="a-b-12ab", provider_id="i-0123", site="ec2", grace=5)
    assert WorkItem.from_entry("1-0", item.fields()) == WorkItem(**{**item.__dict__, "entry_id": "1-0"})


@pytest.mark.skipif(os.getuid() != 0 or not os.path.exists(SYSTEM_PYTHON), reason="needs root and /usr/bin/python3")
def test_a_protected_process_hides_its_environment_from_its_own_user() -> None:
    """`pool up` makes the manager non-dumpable: a worker's task code, running as the same user on the local
    site, cannot read the manager's environment (its cloud keys) from /proc."""
    import pwd

    nobody = pwd.getpwnam("nobody")

    def drop() -> None:
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    holder_code = ((ROOT / "pool" / "core" / "secrets.py").read_text()
                   + "\nimport sys, time\nif sys.argv[1] == '1':\n    assert protect_process()\n"
                   "print('ready', flush=True)\ntime.sleep(30)\n")
    for protect, readable in (("0", True), ("1", False)):
        holder = subprocess.Popen([SYSTEM_PYTHON, "-c", holder_code, protect], stdout=subprocess.PIPE, text=True,
                                  env={"PATH": "/usr/bin:/bin", "CLOUD_KEY": "manager-cloud-key"},
                                  preexec_fn=drop, cwd="/")
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
            reader = as_nobody(f"print('manager-cloud-key' in open('/proc/{holder.pid}/environ').read())")
            if readable:  # the control: the same user reads an unprotected process's environment
                assert reader.stdout.strip() == "True", reader.stderr
            else:
                assert "PermissionError" in reader.stderr and "True" not in reader.stdout, reader.stdout
        finally:
            holder.kill()
            holder.wait()


@pytest.mark.parametrize("params", [{"rabbitmqctl": "/bin/sh -c 'touch /tmp/owned'"},
                                    {"rabbitmqctl_env": {"LD_PRELOAD": "/tmp/evil.so"}}])
def test_a_spec_cannot_choose_a_program_the_manager_runs(params: dict) -> None:
    from pool.core.model import SpecError

    with pytest.raises(SpecError, match="not allowed in a spec"):
        parse_domain_spec(celery_spec("ctl", sensor={"name": "celery", "rabbitmq_node": "rabbit@h", **params}))
