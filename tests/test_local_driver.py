"""The local site: a libcloud NodeDriver whose nodes are real process groups."""

from __future__ import annotations

import time
from pathlib import Path

from libcloud.compute.providers import get_driver
from libcloud.compute.types import NodeState

from pool.sites.local import LocalNodeDriver
from pool.sites.registry import register_drivers


def wait_for(pred, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


SCRIPT = """#!/bin/bash
trap 'echo got-term >> "$OUT"; sleep 0.2; exit 0' TERM
echo started >> "$OUT"
sleep 300 & wait
"""


def test_registered_with_libcloud(tmp_path: Path) -> None:
    register_drivers()
    cls = get_driver("elastic_local")
    assert cls is LocalNodeDriver
    driver = cls(ex_state_dir=str(tmp_path))
    assert driver.list_nodes() == []


def test_create_list_destroy_and_idempotency(tmp_path: Path) -> None:
    driver = LocalNodeDriver(ex_state_dir=str(tmp_path))
    out = tmp_path / "out.txt"
    node = driver.create_node("n1", ex_userdata=SCRIPT, ex_client_token="tok-1", ex_tags={"k": "v"},
                              ex_env={"OUT": str(out)})
    again = driver.create_node("n1-retry", ex_userdata=SCRIPT, ex_client_token="tok-1", ex_env={"OUT": str(out)})
    assert again.id == node.id  # a retried launch makes no second machine
    assert [n.id for n in driver.list_nodes()] == ["n1"]
    assert driver.list_nodes()[0].state == NodeState.RUNNING
    assert driver.list_nodes()[0].extra["tags"] == {"k": "v"}
    assert wait_for(lambda: out.exists() and "started" in out.read_text())
    driver.destroy_node(node, ex_grace=5)
    assert wait_for(lambda: driver.list_nodes() == [])
    assert "got-term" in out.read_text()  # SIGTERM first: a chance to shut down warm
    assert driver.destroy_node(node)  # idempotent


def test_destroy_escalates_to_sigkill_after_grace(tmp_path: Path) -> None:
    driver = LocalNodeDriver(ex_state_dir=str(tmp_path))
    stubborn = "#!/bin/bash\ntrap '' TERM\nsleep 300 & wait; sleep 300\n"
    node = driver.create_node("stubborn", ex_userdata=stubborn)
    time.sleep(0.3)
    driver.destroy_node(node, ex_grace=0.5)
    time.sleep(0.2)
    assert driver.list_nodes() != []  # still there within the grace period
    assert wait_for(lambda: driver.list_nodes() == [], timeout=5)


def test_preempt_kills_the_whole_group_at_once(tmp_path: Path) -> None:
    driver = LocalNodeDriver(ex_state_dir=str(tmp_path))
    node = driver.create_node("spot", ex_userdata="#!/bin/bash\ntrap '' TERM\nsleep 300 & sleep 300 & wait\n")
    time.sleep(0.2)
    assert driver.ex_preempt(node)
    assert wait_for(lambda: driver.list_nodes() == [], timeout=3)
    assert [n.state for n in driver.list_nodes(ex_include_gone=True)] == [NodeState.TERMINATED]


def test_listing_survives_a_new_driver_instance(tmp_path: Path) -> None:
    """A restarted manager sees the nodes an earlier one launched."""
    first = LocalNodeDriver(ex_state_dir=str(tmp_path))
    first.create_node("keep", ex_userdata="#!/bin/bash\nsleep 300\n")
    second = LocalNodeDriver(ex_state_dir=str(tmp_path))
    nodes = second.list_nodes()
    assert [n.id for n in nodes] == ["keep"]
    second.ex_preempt(nodes[0])
    assert wait_for(lambda: second.list_nodes() == [])


def test_a_launch_id_claimed_by_another_live_process_is_not_launched_twice(tmp_path: Path) -> None:
    import os
    import subprocess

    import pytest

    driver = LocalNodeDriver(ex_state_dir=str(tmp_path))
    other = subprocess.Popen(["sleep", "30"])  # stands for a manager paused mid-launch
    try:
        claims = tmp_path / ".claims"
        claims.mkdir()
        (claims / "tok-busy").write_text(str(other.pid))
        with pytest.raises(BlockingIOError, match="in progress"):
            driver.create_node("n-busy", ex_userdata="#!/bin/bash\nsleep 30\n", ex_client_token="tok-busy")
        assert driver.list_nodes() == []
    finally:
        other.kill()
        other.wait()
    # the claimant is gone: its claim is taken over and the launch goes ahead, once
    node = driver.create_node("n-busy", ex_userdata="#!/bin/bash\nsleep 30\n", ex_client_token="tok-busy")
    again = driver.create_node("n-busy-2", ex_userdata="#!/bin/bash\nsleep 30\n", ex_client_token="tok-busy")
    assert again.id == node.id and [n.id for n in driver.list_nodes()] == ["n-busy"]
    assert (tmp_path / ".claims" / "tok-busy").read_text() == str(os.getpid())
    driver.ex_preempt(node)


def test_a_machine_spawned_by_a_dead_launcher_is_adopted_not_launched_again(tmp_path: Path) -> None:
    """The launcher died after spawning but before recording: a retry finds the machine by its launch id."""
    import os
    import subprocess
    import uuid

    from pool.sites.local import TOKEN_ENV, _process_with_token

    token = f"tok-orphan-{uuid.uuid4().hex[:8]}"
    # sleep itself, not `bash -c sleep`: Popen returns once its child has exec'd, and no second exec
    # (bash replacing itself with sleep) can then hide the launch id for a moment while the retry looks
    orphan = subprocess.Popen(["sleep", "300"], env={**os.environ, TOKEN_ENV: token}, start_new_session=True)
    driver = LocalNodeDriver(ex_state_dir=str(tmp_path))
    try:
        # Popen returns before the child has called setsid and exec'd: wait until it is what a
        # launcher that died would have left behind (a group leader carrying the launch id)
        assert wait_for(lambda: _process_with_token(token) == orphan.pid)
        node = driver.create_node("n-orphan", ex_userdata="#!/bin/bash\nsleep 300\n", ex_client_token=token)
        assert node.extra["pid"] == orphan.pid  # adopted, nothing new spawned
        assert [n.id for n in driver.list_nodes()] == ["n-orphan"]
        driver.ex_preempt(node)
        assert wait_for(lambda: driver.list_nodes() == [])
    finally:
        for leftover in driver.list_nodes():
            driver.ex_preempt(leftover)
        orphan.kill()
        orphan.wait()
