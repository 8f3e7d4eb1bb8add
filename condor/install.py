"""Where HTCondor's daemons come from: a Debian trixie chroot with ``minicondor``, built once per
machine and reused (HTCondor is not packaged for bookworm; the PyPI bindings outside talk to it).

The chroot lives under ``$POOL_CONDOR_ROOT``, else ``~/.local/state/elastic-pool/condor-root``: not
under ``$POOL_HOME``, so that every pool and test run of this machine shares one. Daemons run in it
as an ordinary user (the schedd refuses jobs owned by root or ``condor``), each ``condor_master`` as
init of a pid namespace of its own: when its parent dies, even by SIGKILL, the kernel kills every
daemon and job under it, exactly like a machine that is gone. Inside the chroot the chroot's own
absolute path leads back to its root, so a directory under it has the same path inside and out
(the submit client checks ``initialdir`` outside, the schedd uses it inside).

Imports ``pool.state.procs`` and the standard library. ``python -m condor.install`` builds the chroot when missing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from pool.state.procs import in_pid_namespace

SUITE = "trixie"
PACKAGE = "minicondor"
#: The ordinary user the daemons and jobs run as inside the chroot.
USER = "condoruser"
USER_ID = 2001
MARKER = ".elastic-pool-ready"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


class CondorNotInstalled(RuntimeError):
    """HTCondor's daemons are not available on this machine (permanent until someone installs them)."""


def chroot_dir() -> Path:
    """The chroot's directory (``$POOL_CONDOR_ROOT`` or the per-user default)."""
    env = os.environ.get("POOL_CONDOR_ROOT")
    return Path(env) if env else Path.home() / ".local" / "state" / "elastic-pool" / "condor-root"


def installed(root: Path | None = None) -> bool:
    root = root or chroot_dir()
    return (root / MARKER).is_file() and (root / "usr" / "sbin" / "condor_master").is_file()


def require(root: Path | None = None) -> Path:
    """The chroot, or :class:`CondorNotInstalled` saying how to build it."""
    root = root or chroot_dir()
    if not installed(root):
        raise CondorNotInstalled(f"no HTCondor chroot at {root}: build it with `make condor-root` "
                                 "(or `python -m condor.install`; needs root, debootstrap and about a minute)")
    if os.geteuid() != 0:
        raise CondorNotInstalled("HTCondor daemons run in a chroot and a pid namespace: that needs root")
    return root


def mirror() -> str:
    """The Debian mirror apt already uses here (a deb822 ``URIs:`` line), else deb.debian.org."""
    for path in [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                found = re.match(r"^(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(https?://\S+/debian)/?\s*", line)
                if found and "security" not in found.group(1):
                    return found.group(1)
    return DEFAULT_MIRROR


def user_ids(root: Path) -> tuple[int, int]:
    """uid and gid of :data:`USER` in the chroot's own passwd file."""
    for line in (root / "etc" / "passwd").read_text().splitlines():
        parts = line.split(":")
        if parts[0] == USER:
            return int(parts[2]), int(parts[3])
    raise CondorNotInstalled(f"the chroot at {root} has no user {USER}: rebuild it (`make condor-root`)")


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(cmd)}\n".encode())
        out.flush()
        code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if code != 0:
        raise CondorNotInstalled(f"`{' '.join(cmd[:3])} ...` failed with {code}; see {log}")


def build(root: Path | None = None, *, quiet: bool = False) -> Path:
    """Build the chroot when missing (serialised by a lock beside it); returns its directory."""
    root = root or chroot_dir()
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed(root):
            return root
        if os.geteuid() != 0:
            raise CondorNotInstalled("building the HTCondor chroot needs root (debootstrap, chroot)")
        if not shutil.which("debootstrap"):
            _run(["apt-get", "install", "-y", "-q", "debootstrap"], root.parent / "condor-root.log")
        tmp = root.with_name(root.name + ".building")
        shutil.rmtree(tmp, ignore_errors=True)
        log = root.parent / "condor-root.log"
        if not quiet:
            print(f"building the HTCondor chroot at {root} (log: {log})", file=sys.stderr, flush=True)
        _run(["debootstrap", "--variant=minbase", SUITE, str(tmp), mirror()], log)
        _prepare(tmp, root)
        script = ("set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update -q; "
                  f"apt-get install -y -q --no-install-recommends {PACKAGE}; apt-get clean; "
                  f"useradd -m -u {USER_ID} -s /bin/bash {USER}; condor_version")
        _run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
              'mount -t proc proc "$0/proc" && exec chroot "$0" sh -c "$1"', str(tmp), script], log)
        (tmp / "usr" / "sbin" / "policy-rc.d").unlink(missing_ok=True)
        _link_same_path(tmp, root)
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
        (root / MARKER).write_text(f"{SUITE} {PACKAGE}\n")
        return root


def _prepare(tmp: Path, root: Path) -> None:
    """No service starts while packages install; the host's name resolves inside."""
    policy = tmp / "usr" / "sbin" / "policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    hostname = os.uname().nodename
    hosts = tmp / "etc" / "hosts"
    text = hosts.read_text() if hosts.exists() else "127.0.0.1\tlocalhost\n"
    if hostname not in text.split():
        hosts.write_text(text + f"127.0.0.1\t{hostname}\n")


def _link_same_path(tmp: Path, root: Path) -> None:
    """Inside the chroot, ``<root>`` is a link to ``/``: a path under the chroot means the same
    directory inside and out. Every directory on the way is searchable by the daemons' user."""
    inner = tmp / str(root).lstrip("/")
    inner.parent.mkdir(parents=True, exist_ok=True)
    part = tmp
    for name in inner.parent.relative_to(tmp).parts:
        part = part / name
        part.chmod(part.stat().st_mode | 0o111)
    if inner.is_symlink() or inner.exists():
        inner.unlink()
    inner.symlink_to("/")


def daemon_command(root: Path, config: str, *, env: dict[str, str] | None = None) -> list[str]:
    """``condor_master -f`` with config file ``config`` (a path inside the chroot), as :data:`USER`,
    under the init of a new pid namespace that dies with its parent (``--kill-child``), /proc its own."""
    assignments = [f"{k}={v}" for k, v in sorted((env or {}).items())]
    return in_pid_namespace(["chroot", f"--userspec={USER}:{USER}", str(root),
                             "/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/bin", f"HOME=/home/{USER}",
                             f"CONDOR_CONFIG={config}", *assignments, "condor_master", "-f"],
                            proc=str(root / "proc"))


def own(path: Path, root: Path) -> None:
    """Give ``path`` (and what is under it) to :data:`USER`."""
    uid, gid = user_ids(root)
    for dirpath, _dirs, filenames in os.walk(path):
        os.chown(dirpath, uid, gid)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), uid, gid)
    os.chown(path, uid, gid)


def home(root: Path | None = None) -> Path:
    """The daemons' user's home: submit from a directory under it (same path inside and out)."""
    return (root or chroot_dir()) / "home" / USER


def main() -> None:
    """Build the chroot when missing. ``--if-possible``: where it cannot be built here (not root, no
    network), say why and exit 0, so `make test` runs on and the HTCondor tests skip with that reason."""
    try:
        print(build())
    except CondorNotInstalled as exc:
        print(f"condor-root: {exc}", file=sys.stderr)
        sys.exit(0 if "--if-possible" in sys.argv[1:] else 1)


if __name__ == "__main__":
    main()
