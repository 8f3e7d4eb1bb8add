"""Real Slurm daemons (munged, slurmctld, slurmd) on this machine, for tests and benchmarks.

Role: ``SlurmCluster`` is a context manager that starts a private Slurm cluster whose partition is
made of ``State=CLOUD`` nodes (``cloud1`` .. ``cloudN``): it writes a slurm.conf under a directory
of its own, starts ``munged`` (own key, socket, pid, log and seed files) and ``slurmctld``, and
``start_slurmd(name)`` / ``stop_slurmd(handle)`` run one ``slurmd -D -N name`` per node, the way a
pool worker will when slurmctld's ResumeProgram asks for the node. On leaving (also when a test
fails half-way) every process it started is stopped by its process id, anything left in its
network namespaces (job steps, ResumeProgram children) is stopped by id too, and its namespaces,
veths and bridge are deleted. It imports the standard library only.

Network: slurmctld listens on every interface whatever its config, so no daemon ever runs in the
root network namespace. A bridge lives in a namespace of its own; slurmctld and each slurmd get a
namespace of their own (``ip netns add``) joined to the bridge by a veth pair, on 10.237.0.0/24
(controller .1, node k at .(10+k)); nothing is routed to or from the root namespace. Namespaces
are entered with ``nsenter --net=/run/netns/NAME`` (``ip netns exec`` remounts /sys, and slurmd
then fails on its cgroup mount). Clients (sbatch, squeue, scontrol, sinfo) must reach slurmctld,
so ``run()`` / ``client_argv()`` run them inside the controller's namespace.

Node addresses: a fixed mapping in slurm.conf (``NodeName=cloudK NodeAddr=10.237.0.(10+K)``),
and ``start_slurmd`` gives the node's namespace that address. The ResumeProgram then needs no
``scontrol update nodename=X nodeaddr=IP``, and there is no race between that update and the
node's registration.

Settings that matter (``conf_text``): ``PrivateData=cloud`` (else powered-down CLOUD nodes are
hidden from sinfo/scontrol), ``SlurmctldParameters=idle_on_node_suspend,power_save_interval=1,
power_save_min_interval=0``, ``SchedulerParameters=bf_interval=1``, ``ResumeRate=0``,
``SuspendRate=0``, ``ReturnToService=2``, ``TreeWidth=65533``, ``SuspendTime``/``SuspendTimeout``/
``ResumeTimeout`` from the caller, and the ``PrologSlurmctld`` below (``fast_launch``).

Traps met, and what this module does about each:

- slurmctld runs ResumeProgram with a blocked signal mask that its children inherit: slurmd then
  ignores SIGTERM (and may never register). Every daemon is started through a tiny Python wrapper
  that clears the mask and resets ignored signals to their defaults, then execs the daemon.
- slurmctld ignores a registration whose boot time (``time(NULL) - uptime``) is before the second
  of the resume request ("Still waiting for boot", logged at debug level only), and then waits
  for ResumeTimeout. Each slurmd runs in a fresh time namespace (``unshare --time
  --boottime=-UPTIME``); as the kernel rounds ``sysinfo().uptime`` up to whole seconds, that alone
  fails when slurmd registers within the resume request's second, so ``start_slurmd`` first waits
  (at most ~2 s, see ``boot_offset``) for the right moment to create the namespace.
- A batch job whose nodes had to be powered up is launched only by slurmctld's periodic check
  (``job_time_limit``, every 30 s) or when a PrologSlurmctld ends. ``fast_launch`` (default)
  installs a PrologSlurmctld that waits until the job's nodes registered: the job starts ~0.1 s
  after the registration instead of up to 30 s later.
- slurmctld runs ResumeProgram/SuspendProgram with only SLURM_CONF (+ SLURM_JOB_ID,
  SLURM_RESUME_FILE) in the environment, no PATH, stdout/stderr closed, in its own process group.
- munged runs as the munge user and checks the permissions of its directories: its files live in
  a directory of its own under /tmp (mode 0755, owned by munge; pytest's tmp_path is under a 0700
  root directory the munge user cannot enter); the key is 1024 random bytes, mode 0400. It runs in
  the controller's namespace (a unix socket path works across network namespaces), started by
  ``nsenter --setuid/--setgid``, so reaping that namespace stops it too.
- Clients and daemons find the private munged through ``AuthInfo=socket=PATH`` in slurm.conf.
- ``nsenter --net`` and ``unshare --time`` both exec without forking, so the process id the
  harness holds is the daemon's own (``-D``: foreground).
- A harness killed hard leaves namespaces named ``eps-<pid>-...`` and /tmp/ep-munge-<pid>-...,
  /tmp/ep-slurm-<pid>-... directories: ``start`` (``reap_stale``) deletes those whose owner
  process is gone, after stopping (by id) what still runs in the namespaces.
"""

from __future__ import annotations

import functools
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Callable

from slurm.prolog import prolog_text

HERE = Path(__file__).resolve().parent
ENSURE_SCRIPT = HERE / "ensure-slurm.sh"
NETNS_DIR = Path("/run/netns")
NETNS_PREFIX = "eps"
SUBNET = "10.237.0"
CONTROLLER_ADDRESS = f"{SUBNET}.1"
FIRST_NODE_HOST = 10
MAX_NODES = 200
#: The first seven come with slurm-wlm and munge (slurm/ensure-slurm.sh), the others with iproute2 and util-linux.
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo", "ip", "nsenter", "unshare")

#: Clears the blocked-signal mask and ignored dispositions inherited from the caller, then execs argv[1:].
CLEAR_SIGNALS = """\
import os, signal, sys
signal.pthread_sigmask(signal.SIG_SETMASK, [])
for sig in signal.valid_signals():
    if sig not in (signal.SIGKILL, signal.SIGSTOP):
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
os.execvp(sys.argv[1], sys.argv[1:])
"""


#: PrologSlurmctld that waits until the job's nodes have registered (see ``SlurmCluster`` fast_launch).
class SlurmError(RuntimeError):
    """A Slurm daemon or a namespace could not be started, or a Slurm command failed."""


def missing_requirements() -> str | None:
    """Why real Slurm daemons cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "not root: network namespaces, munged and slurmctld need root"
    missing = [name for name in BINARIES if shutil.which(name) is None]
    if missing:
        return f"missing programs: {', '.join(missing)} (slurm/ensure-slurm.sh installs slurm-wlm and munge)"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no munge user (the munge package creates it)"
    if not Path("/proc/self/timens_offsets").exists():
        return "the kernel has no time namespaces (needed so slurmd's uptime starts at 0)"
    return None


def ensure_installed(timeout: float = 600.0) -> str | None:
    """Install slurm-wlm and munge when missing (``slurm/ensure-slurm.sh``); None, or why not usable."""
    if os.geteuid() == 0 and any(shutil.which(name) is None for name in BINARIES[:7]):
        try:
            proc = subprocess.run(["bash", str(ENSURE_SCRIPT)], capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"could not run {ENSURE_SCRIPT.name}: {exc}"
        why = missing_requirements()
        if why:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            return f"{why}; {ENSURE_SCRIPT.name} said: {tail[0]}"
    return missing_requirements()


def _run(argv: list[str], *, check: bool = True, timeout: float = 30.0,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a short command; raise SlurmError (with its stderr) when ``check`` and it fails."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    except subprocess.TimeoutExpired as exc:
        raise SlurmError(f"{' '.join(argv)} timed out after {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        raise SlurmError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _kill_pids(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM each process by id, then SIGKILL those still running after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.05)
        pids = [pid for pid in pids if _alive(pid)]
        if not pids:
            return


def _stop_process(proc: subprocess.Popen[bytes], *, kill: bool = False, grace: float = 10.0) -> None:
    """Stop one process the harness started, by its id: SIGTERM (or SIGKILL), SIGKILL after ``grace``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)


def host_boottime() -> float:
    """Seconds since the host booted (this process's time namespace offset taken out)."""
    offset = 0.0
    with open("/proc/self/timens_offsets") as offsets:
        for line in offsets:
            name, seconds, nanoseconds = line.split()
            if name in ("boottime", "7"):
                offset = int(seconds) + int(nanoseconds) / 1e9
    return time.clock_gettime(time.CLOCK_BOOTTIME) - offset


def boot_offset(asked_at: float) -> int:
    """A boottime offset for a time namespace whose boot, as slurmctld sees it, is after ``asked_at``.

    slurmctld takes a registering node's boot time as ``time(NULL) - uptime`` and ignores the
    registration ("Still waiting for boot") while that is before the resume request's second;
    the kernel rounds ``sysinfo().uptime`` up to whole seconds and offsets are whole seconds. So
    wait (at most ~2 s) until the wall clock is past ``asked_at``'s second and the host's boottime
    has just ticked a whole second, and start the namespace's boottime at 0.0x s: then the boot
    time slurmctld computes is >= ``floor(asked_at)``, however long slurmd takes to register.
    Anyone starting slurmd for a resumed node (a pool worker too) needs this, not ``-UPTIME``:
    ``unshare --time --boottime=<boot_offset(time the resume request was seen, or now)>``.
    """
    while True:
        boottime, now = host_boottime(), time.time()
        if boottime % 1.0 < 0.5 and now - boottime % 1.0 >= int(asked_at) + 1:
            return -int(boottime)
        time.sleep(0.02)


def netns_pids(netns: str) -> list[int]:
    """The ids of the processes in network namespace ``netns``."""
    proc = _run(["ip", "netns", "pids", netns], check=False)
    return [int(word) for word in proc.stdout.split() if word.isdigit()]


def delete_netns(netns: str) -> None:
    """Stop (by id) what runs in ``netns``, then delete it (its veth ends go with it)."""
    if not (NETNS_DIR / netns).exists():
        return
    _kill_pids([pid for pid in netns_pids(netns) if pid != os.getpid()])
    _run(["ip", "netns", "delete", netns], check=False)


def _owner_gone(name: str, prefix: str) -> bool:
    """Whether ``name`` is ``<prefix>-<pid>-...`` of a process that no longer runs."""
    rest = name[len(prefix) + 1:] if name.startswith(prefix + "-") else ""
    pid = rest.split("-", 1)[0]
    return pid.isdigit() and not _alive(int(pid))


def reap_stale() -> list[str]:
    """Delete what a harness killed hard left: namespaces (stopping by id what runs in them) and its /tmp dirs."""
    reaped = []
    for path in sorted(NETNS_DIR.glob(f"{NETNS_PREFIX}-*")):
        if _owner_gone(path.name, NETNS_PREFIX):
            delete_netns(path.name)
            reaped.append(path.name)
    tmp = Path(tempfile.gettempdir())
    for prefix in ("ep-munge", "ep-slurm"):
        for path in sorted(tmp.glob(f"{prefix}-*")):
            if path.is_dir() and _owner_gone(path.name, prefix):
                shutil.rmtree(path, ignore_errors=True)
                reaped.append(str(path))
    return reaped


class _Network:
    """A bridge in a namespace of its own, and one namespace + veth per endpoint, on SUBNET.0/24."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.bridge_ns = f"{NETNS_PREFIX}-{tag}-br"
        self.endpoints: dict[str, str] = {}  # namespace -> veth name on the bridge side
        self._count = 0

    def create(self) -> None:
        _run(["ip", "netns", "add", self.bridge_ns])
        _run(["ip", "-n", self.bridge_ns, "link", "set", "lo", "up"])
        _run(["ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge", "stp_state", "0"])
        _run(["ip", "-n", self.bridge_ns, "link", "set", "br0", "up"])

    def attach(self, name: str, address: str) -> str:
        """A new namespace for ``name`` whose eth0 has ``address``/24 on the bridge; its name."""
        netns = f"{NETNS_PREFIX}-{self.tag}-{name}"
        self._count += 1
        veth = f"v{self._count}"
        _run(["ip", "netns", "add", netns])
        self.endpoints[netns] = veth
        _run(["ip", "-n", netns, "link", "set", "lo", "up"])
        _run(["ip", "-n", self.bridge_ns, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns])
        _run(["ip", "-n", self.bridge_ns, "link", "set", veth, "master", "br0", "up"])
        _run(["ip", "-n", netns, "addr", "add", f"{address}/24", "dev", "eth0"])
        _run(["ip", "-n", netns, "link", "set", "eth0", "up"])
        return netns

    def detach(self, netns: str) -> None:
        self.endpoints.pop(netns, None)
        delete_netns(netns)

    def destroy(self) -> None:
        for netns in list(self.endpoints):
            self.detach(netns)
        delete_netns(self.bridge_ns)


@dataclass
class SlurmdHandle:
    """One running ``slurmd -D -N node_name`` in a network (and time) namespace of its own."""

    node_name: str
    address: str
    netns: str
    process: subprocess.Popen[bytes] = field(repr=False)
    started_at: float = field(default_factory=time.time)

    @property
    def pid(self) -> int:
        return self.process.pid


class SlurmCluster:
    """A private Slurm cluster: munged, slurmctld and on-demand slurmds, all stopped on exit.

    ``resume_program``, ``suspend_program`` and ``resume_fail_program`` are paths to executables
    that slurmctld runs (as root, inside the controller's network namespace, without PATH) with a
    hostlist such as ``cloud[1-2]``. ``fast_launch`` adds a PrologSlurmctld so that a job starts as
    soon as its resumed nodes registered (not at slurmctld's next 30 s check). ``directory``
    (default: a new /tmp/ep-slurm-* removed on stop) holds slurm.conf, state, spool and logs.
    """

    def __init__(self, directory: Path | str | None = None, *, nodes: int = 2,
                 resume_program: Path | str = "/bin/true", suspend_program: Path | str = "/bin/true",
                 resume_fail_program: Path | str | None = None, suspend_time: int = 5,
                 suspend_timeout: int = 5, resume_timeout: int = 60, cpus: int = 1,
                 real_memory_mb: int = 256, fast_launch: bool = True, extra_conf: str = "") -> None:
        if not 1 <= nodes <= MAX_NODES:
            raise ValueError(f"nodes must be 1..{MAX_NODES}")
        self.tag = f"{os.getpid()}-{secrets.token_hex(2)}"
        self._own_directory = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix=f"ep-slurm-{self.tag}-")).resolve()
        self.node_names = [f"cloud{k}" for k in range(1, nodes + 1)]
        self.programs = {"ResumeProgram": resume_program, "SuspendProgram": suspend_program,
                         "ResumeFailProgram": resume_fail_program}
        self.timing = {"SuspendTime": suspend_time, "SuspendTimeout": suspend_timeout,
                       "ResumeTimeout": resume_timeout}
        self.cpus, self.real_memory_mb, self.extra_conf = cpus, real_memory_mb, extra_conf
        self.prolog_path = self.directory / "etc" / "prolog-wait-boot.sh" if fast_launch else None
        self.conf_path = self.directory / "etc" / "slurm.conf"
        self.munge_dir: Path | None = None
        self.controller_ns = f"{NETNS_PREFIX}-{self.tag}-ctl"
        self._network = _Network(self.tag)
        self._munged: subprocess.Popen[bytes] | None = None
        self._slurmctld: subprocess.Popen[bytes] | None = None
        self.slurmds: dict[str, SlurmdHandle] = {}

    # ----------------------------------------------------------------------------- life cycle

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> SlurmCluster:
        """Network, munged, slurm.conf, slurmctld; wait until slurmctld answers. Cleans up on failure."""
        why = missing_requirements()
        if why:
            raise SlurmError(why)
        reap_stale()
        try:
            for sub in ("etc", "state", "spool", "log", "run", "out"):
                (self.directory / sub).mkdir(parents=True, exist_ok=True)
            self._network.create()
            self._network.attach("ctl", CONTROLLER_ADDRESS)
            self._start_munged()
            if self.prolog_path is not None:
                self.prolog_path.write_text(prolog_text(who="slurm/daemons.py", conf=str(self.conf_path),
                                                        timeout=self.timing["ResumeTimeout"]))
                self.prolog_path.chmod(0o755)
            self.conf_path.write_text(self.conf_text())
            self._start_slurmctld()
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every process started here (by id), then delete the namespaces and munge's files."""
        errors: list[BaseException] = []
        steps: list[Callable[[], None]] = [
            *(functools.partial(self.stop_slurmd, handle) for handle in list(self.slurmds.values())),
            *(functools.partial(_stop_process, proc) for proc in (self._slurmctld, self._munged) if proc),
            self._remove_joined,
            self._network.destroy,  # and whatever still runs in the namespaces (job steps, programs)
        ]
        if self.munge_dir is not None:
            steps.append(functools.partial(shutil.rmtree, self.munge_dir, ignore_errors=True))
        for step in steps:
            try:
                step()
            except Exception as exc:  # every step runs; the first error is raised afterwards
                errors.append(exc)
        self.slurmds.clear()
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)
        if errors:
            raise SlurmError(f"stopping the Slurm cluster: {errors[0]}") from errors[0]

    def _remove_joined(self) -> None:
        """What pool workers joined to this cluster's bridge left when they were killed (a SIGKILLed
        worker cleans up nothing): their namespaces ``epn-NODE-BRIDGE`` and /tmp dirs ``ep-NODE-BRIDGE-*``."""
        bridge = self._network.bridge_ns
        for path in sorted(NETNS_DIR.glob(f"epn-*-{bridge}")):
            delete_netns(path.name)
        for path in sorted(Path(tempfile.gettempdir()).glob(f"ep-*-{bridge}-*")):
            shutil.rmtree(path, ignore_errors=True)

    # ----------------------------------------------------------------------------- config

    def node_address(self, node_name: str) -> str:
        """The fixed address of ``node_name`` (``cloudK`` -> SUBNET.(10+K))."""
        if node_name not in self.node_names:
            raise SlurmError(f"unknown node {node_name!r}: the nodes are {self.node_names}")
        return f"{SUBNET}.{FIRST_NODE_HOST + self.node_names.index(node_name) + 1}"

    @property
    def munge_socket(self) -> Path:
        assert self.munge_dir is not None, "munged is not started"
        return self.munge_dir / "munge.socket"

    @property
    def slurmctld_log(self) -> Path:
        return self.directory / "log" / "slurmctld.log"

    def slurmd_log(self, node_name: str) -> Path:
        return self.directory / "log" / f"slurmd-{node_name}.log"

    def conf_text(self) -> str:
        """slurm.conf: private paths and socket, power saving for an all-CLOUD partition."""
        d = self.directory
        lines = [
            f"ClusterName=ep{self.tag.replace('-', '')}",
            f"SlurmctldHost={socket.gethostname().split('.')[0]}({CONTROLLER_ADDRESS})",
            "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={self.munge_socket}",
            "SlurmctldPort=6817", "SlurmdPort=6818",
            f"StateSaveLocation={d}/state", f"SlurmdSpoolDir={d}/spool/%n",
            f"SlurmctldPidFile={d}/run/slurmctld.pid", f"SlurmdPidFile={d}/run/slurmd-%n.pid",
            f"SlurmctldLogFile={self.slurmctld_log}", f"SlurmdLogFile={d}/log/slurmd-%n.log",
            "SlurmctldDebug=info", "SlurmdDebug=info", "DebugFlags=Power",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none", "MpiDefault=none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "SchedulerType=sched/backfill", "SchedulerParameters=bf_interval=1,sched_min_interval=0",
            "ReturnToService=2", "TreeWidth=65533", "PrivateData=cloud", "MessageTimeout=10",
            "SlurmctldParameters=idle_on_node_suspend,power_save_interval=1,power_save_min_interval=0",
            "ResumeRate=0", "SuspendRate=0",
            *(f"{key}={value}" for key, value in self.timing.items()),
            *(f"{key}={value}" for key, value in self.programs.items() if value is not None),
            *([f"PrologSlurmctld={self.prolog_path}"] if self.prolog_path is not None else []),
            *(f"NodeName={name} NodeAddr={self.node_address(name)} CPUs={self.cpus} "
              f"RealMemory={self.real_memory_mb} State=CLOUD" for name in self.node_names),
            f"PartitionName=cloud Nodes={','.join(self.node_names)} Default=YES MaxTime=INFINITE State=UP",
            self.extra_conf,
        ]
        return "\n".join(lines) + "\n"

    def env(self) -> dict[str, str]:
        """The environment for Slurm clients and daemons: SLURM_CONF, no inherited SLURM_* job variables."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
        env["SLURM_CONF"] = str(self.conf_path)
        return env

    # ----------------------------------------------------------------------------- daemons

    def _start_munged(self) -> None:
        """munged as the munge user (in the controller's namespace), with its own key, socket, pid and seed files."""
        munge = pwd.getpwnam("munge")
        self.munge_dir = Path(tempfile.mkdtemp(prefix=f"ep-munge-{self.tag}-"))
        os.chmod(self.munge_dir, 0o755)
        os.chown(self.munge_dir, munge.pw_uid, munge.pw_gid)
        key = self.munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chown(key, munge.pw_uid, munge.pw_gid)
        os.chmod(key, 0o400)
        m = self.munge_dir
        argv = ["nsenter", f"--net={NETNS_DIR / self.controller_ns}", f"--setuid={munge.pw_uid}",
                f"--setgid={munge.pw_gid}", "--", "munged", "--foreground", f"--socket={self.munge_socket}",
                f"--key-file={key}", f"--pid-file={m}/munged.pid", f"--log-file={m}/munged.log",
                f"--seed-file={m}/munged.seed"]
        self._munged = self._spawn(argv, self.directory / "log" / "munged.out")
        self._wait(lambda: self.munge_socket.exists(), 20.0, "munged's socket", self._munged,
                   self.directory / "log" / "munged.out")

    def _daemon_argv(self, netns: str, argv: list[str], boottime_offset: int | None = None) -> list[str]:
        """``argv`` inside ``netns`` (and a new time namespace), signal mask cleared, same process id."""
        prefix = ["nsenter", f"--net={NETNS_DIR / netns}", "--"]
        if boottime_offset is not None:
            prefix += ["unshare", "--time", f"--boottime={boottime_offset}", "--"]
        return [*prefix, sys.executable, "-I", "-S", "-c", CLEAR_SIGNALS, *argv]

    def _spawn(self, argv: list[str], out_path: Path) -> subprocess.Popen[bytes]:
        with open(out_path, "ab") as out:
            return subprocess.Popen(argv, env=self.env(), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True, cwd=self.directory)

    def _start_slurmctld(self) -> None:
        argv = self._daemon_argv(self.controller_ns, ["slurmctld", "-D", "-f", str(self.conf_path)])
        self._slurmctld = self._spawn(argv, self.directory / "log" / "slurmctld.out")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until slurmctld answers ``scontrol ping``."""
        def up() -> bool:
            return "is UP" in self.run("scontrol", "ping", check=False, timeout=15).stdout
        self._wait(up, timeout, "slurmctld to answer scontrol ping", self._slurmctld, self.slurmctld_log)

    def start_slurmd(self, node_name: str) -> SlurmdHandle:
        """``slurmd -D -N node_name`` in a new network namespace (the node's fixed address) and time namespace.

        Call it after slurmctld asked for the node (ResumeProgram): it waits up to 2 s so that the
        node's boot time, as slurmctld computes it, falls after the resume request (``boot_offset``).
        """
        address = self.node_address(node_name)
        if node_name in self.slurmds:
            raise SlurmError(f"slurmd for {node_name} already runs (pid {self.slurmds[node_name].pid})")
        (self.directory / "spool" / node_name).mkdir(parents=True, exist_ok=True)
        netns = self._network.attach(node_name, address)
        try:
            argv = self._daemon_argv(netns, ["slurmd", "-D", "-N", node_name, "-f", str(self.conf_path)],
                                     boottime_offset=boot_offset(time.time()))
            process = self._spawn(argv, self.directory / "log" / f"slurmd-{node_name}.out")
        except BaseException:
            self._network.detach(netns)
            raise
        handle = SlurmdHandle(node_name, address, netns, process)
        self.slurmds[node_name] = handle
        return handle

    def stop_slurmd(self, handle: SlurmdHandle, kill: bool = False) -> None:
        """Stop that slurmd by id (SIGTERM, or SIGKILL as a crash), what runs in its namespace, and the namespace."""
        try:
            _stop_process(handle.process, kill=kill)
        finally:
            self._network.detach(handle.netns)
            self.slurmds.pop(handle.node_name, None)

    # ----------------------------------------------------------------------------- clients

    def client_argv(self, *argv: str) -> list[str]:
        """``argv`` run inside the controller's network namespace (where slurmctld is reachable)."""
        return ["nsenter", f"--net={NETNS_DIR / self.controller_ns}", "--", *argv]

    def run(self, *argv: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client (sbatch, squeue, scontrol, sinfo, ...) against this cluster."""
        return _run(self.client_argv(*argv), check=check, timeout=timeout, env=self.env())

    def node_state(self, node_name: str) -> str:
        """The node's state as sinfo prints it (``idle~`` powered down, ``#`` powering up, ``%`` down)."""
        return self.run("sinfo", "-h", "-N", "-n", node_name, "-o", "%T", check=False).stdout.strip()

    def _wait(self, predicate: Callable[[], bool], timeout: float, what: str,
              process: subprocess.Popen[bytes] | None, log: Path) -> None:
        """Poll ``predicate``; fail with the log's tail when ``process`` exits or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while not predicate():
            died = process is not None and process.poll() is not None
            if died or time.monotonic() > deadline:
                tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else ["(no log)"]
                state = f"exited with {process.returncode}" if died and process else f"not after {timeout:.0f} s"
                raise SlurmError(f"waiting for {what}: {state}; {log}:\n" + "\n".join(tail))
            time.sleep(0.1)
