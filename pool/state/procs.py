"""Processes the pool starts on this machine (a Spark master, an HTCondor central manager, local
workers), told apart from a reused pid by their start time, and stopped by process group.

Imports the standard library only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def start_ticks(pid: int) -> int | None:
    """The process start time in clock ticks (field 22 of /proc/PID/stat), to tell a pid from a
    reused one; None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return None if fields[0] == "Z" else int(fields[19])


def terminate(pid: int, ticks: int | None, *, timeout: float = 10.0, first: int | None = None) -> bool:
    """SIGTERM the process group of ``pid`` (or only process ``first``, when given) if ``pid`` is
    still that process; SIGKILL to the group after ``timeout``. False: it was already gone."""
    if ticks is None or start_ticks(pid) != ticks:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if first is not None:
            os.kill(first, signal.SIGTERM)
        else:
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if start_ticks(pid) != ticks:
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    return True


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (from /proc; empty when it is gone)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.scandir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                found.extend(int(p) for p in Path(task.path, "children").read_text().split())
    return found


#: Init of a pid namespace that outlives nothing it runs: it stays as it was started (a change of
#: user would clear its parent-death signal), runs ``"$@"`` as a child, and passes SIGTERM on to it.
NS_INIT = """"$@" &
child=$!
trap 'kill -TERM $child 2>/dev/null' TERM INT
code=0
while kill -0 $child 2>/dev/null; do wait $child; code=$?; done
exit $code"""


def in_pid_namespace(argv: list[str], *, proc: str | None = None) -> list[str]:
    """``argv`` under the init of a new pid namespace that dies with its parent, even by SIGKILL
    (``unshare --kill-child``): the kernel then kills everything in it, like a machine that is gone.
    ``proc``: where to mount the namespace's own /proc (default: /proc in a private mount namespace)."""
    mount = f"--mount-proc={proc}" if proc else "--mount-proc"
    return ["unshare", "--pid", "--fork", "--kill-child=SIGKILL", "--mount", "--propagation", "private", mount,
            "/bin/sh", "-c", NS_INIT, "ns-init", *argv]


#: Restart backoff of a supervised service: doubles from BACKOFF_BASE up to BACKOFF_CAP seconds.
BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0


@dataclass(kw_only=True)
class Supervised:
    """A service process the manager keeps up (a Spark master, a central manager): the process (or,
    when adopted from an earlier manager, its pid and start time), when it started and came up, and
    its restart backoff."""

    pid: int = 0
    ticks: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    up_since: float | None = None
    failures: int = 0
    next_start: float = 0.0

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid > 0 and start_ticks(self.pid) == self.ticks

    def exit_code(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def back_off(self, now: float) -> float:
        """One more failure: not started again for a delay that doubles per failure; the delay."""
        self.failures += 1
        delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (self.failures - 1))
        self.next_start, self.started, self.up_since = now + delay, 0.0, None
        return delay
