"""The `pool` command as a user runs it: the embedded Redis, apply, ls, show, resize, down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
POOL = [sys.executable, "-m", "pool.cli"]


def run(args: list[str], env: dict[str, str], check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(POOL + args, env=env, capture_output=True, text=True, timeout=120, input=stdin, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"pool {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


@pytest.fixture
def env(pool_home: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    e["POOL_HOME"] = str(pool_home)
    e["COLUMNS"] = "200"
    return e


GOOD = yaml.safe_load((ROOT / "examples" / "celery-domain.yaml").read_text())


@pytest.mark.parametrize(
    "change,expected",
    [
        ({"policy": {"name": "nope"}}, "policy: unknown policy 'nope'; valid: "),
        ({"policy": {"name": "queue_depth", "per_worker": 3}}, "unknown parameter 'per_worker' (allowed: tasks_per_worker"),
        ({"max": -1}, "max: Input should be greater than or equal to 0"),
        ({"min": 4, "max": 2}, "max (2) must be >= min (4)"),
        ({"replicas": 3}, "replicas: unknown field (allowed: name,"),
        ({"broker": "mysql://db"}, "broker: 'mysql://db' is not a broker URL"),
        ({"sensor": {"name": "prometheus"}}, "sensor: unknown sensor 'prometheus'; valid: "),
        ({"site": "mars"}, "site: unknown site 'mars'; valid: "),
    ],
)
def test_invalid_spec_is_one_line_and_changes_nothing(env: dict[str, str], tmp_path: Path, change: dict, expected: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**GOOD, **change}))
    proc = run(["apply", "-f", str(bad)], env, check=False)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line]
    assert len(lines) == 1, proc.stderr
    assert expected in lines[0], lines[0]
    if "valid: " in expected:  # the valid choices are listed
        assert any(name in lines[0].split("valid: ")[1] for name in ("queue_depth", "celery", "local"))
    assert not (Path(env["POOL_HOME"]) / "redis" / "server.json").exists()  # nothing was started or stored


def test_not_yaml_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    proc = run(["apply", "-f", str(bad)], env, check=False)
    assert proc.returncode == 2 and "not valid YAML at line" in proc.stderr and proc.stderr.count("\n") == 1


@pytest.mark.slow
def test_user_session_on_the_embedded_default(env: dict[str, str]) -> None:
    manager = subprocess.Popen(POOL + ["up", "--interval", "0.3"], env=env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        server = Path(env["POOL_HOME"]) / "redis" / "server.json"
        while not server.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        url = json.loads(server.read_text())["url"]
        password = (Path(env["POOL_HOME"]) / "redis" / "password").read_text().strip()
        assert url.startswith(f"redis://:{password}@127.0.0.1:") and ":6379/" not in url
        assert "created" in run(["apply", "-f", "examples/celery-domain.yaml"], env).stdout
        assert "domain etl unchanged" in run(["apply", "-f", "examples/celery-domain.yaml"], env).stdout
        rows = json.loads(run(["ls", "--json"], env).stdout)
        assert rows[0]["domain"] == "etl" and rows[0]["policy"] == "queue_depth" and rows[0]["max"] == 6
        run(["resize", "etl", "2"], env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            shown = json.loads(run(["show", "etl", "--json"], env).stdout)
            if sum(n["state"] == "JOINED" for n in shown["nodes"]) == 2:
                break
            time.sleep(0.5)
        assert sum(n["state"] == "JOINED" for n in shown["nodes"]) == 2
        assert shown["override"] == 2 and "operator override" in shown["decisions"][0]["reason"]
        out = run(["show", "etl"], env).stdout
        assert "JOINED" in out and "operator override" in out
        bad = run(["resize", "etl", "9"], env, check=False)
        assert bad.returncode == 2 and "outside the domain's bounds [0, 6]" in bad.stderr
        run(["resize", "etl", "auto"], env)
        down = run(["down", "--timeout", "60"], env)
        assert "workers terminated" in down.stdout
        assert manager.wait(timeout=30) == 0
        assert not server.exists()  # the embedded Redis was stopped by its process id
        nodes_dir = Path(env["POOL_HOME"]) / "sites" / "local"
        from pool.sites.local import LocalNodeDriver

        assert LocalNodeDriver(ex_state_dir=str(nodes_dir)).list_nodes() == []
    finally:
        if manager.poll() is None:
            manager.kill()
        run(["down", "--timeout", "20"], env, check=False)
