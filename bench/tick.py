"""Control-plane cost: CPU time of one manager tick and the manager's memory at 1,000 and 10,000 nodes.

The default run also compares a baseline revision (``--base REV``, default :data:`BASE_REV`) with
the current code (``--head REV``, default :data:`HEAD_REV`): a temporary git worktree of each with
this harness copied into both; at 10,000 nodes on both stores the two measured alternately in
fresh processes, plus callgrind's instruction count per measured tick on the in-memory store.
"""

from __future__ import annotations

import argparse
import contextvars
import importlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIZES = (1000, 10000)
STORES = ("memory", "redis")
TARGET_MS = 50.0  # per tick at 10,000 nodes
TARGET_MB = 300.0  # manager memory at 10,000 nodes
TICKS = {"memory": 40, "redis": 12}  # measured ticks per size, after warm-up
WARMUP = 3
DOMAIN = "tick"
SITE = "sim"

#: where each module the harness uses lives: in this tree's layout, then in the layout before
#: pool/core, state, control and sites (so the same harness measures a baseline revision)
MODULES = {
    "manager": ("pool/control/manager.py", "pool/manager.py"),
    "model": ("pool/core/model.py", "pool/model.py"),
    "provisioner": ("pool/sites/provisioner.py", "pool/provisioner.py"),
    "sim": ("pool/sites/sim.py", "pool/drivers/sim.py"),
    "store": ("pool/state/store.py", "pool/store.py"),
    "redisserver": ("pool/state/redisserver.py", "pool/redisserver.py"),
}
PACKAGES = ("pool", "sensors", "policies", "spark")  # the project's top-level packages


def pool_module(role: str) -> Any:
    """The module of ``role`` from the first layout whose file exists under ROOT.

    Chosen by file, not by trying imports: an editable install of another tree resolves a
    missing ``pool.*`` submodule to that tree's file, which would mix two trees' code.
    """
    for rel in MODULES[role]:
        if (ROOT / rel).is_file():
            return importlib.import_module(rel[:-3].replace("/", "."))
    raise ModuleNotFoundError(f"no {role} module under {ROOT} (looked for {', '.join(MODULES[role])})")


def foreign_modules() -> list[str]:
    """The project's modules this process loaded from outside ROOT (there should be none)."""
    out = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name.split(".")[0] in PACKAGES and path and not Path(path).resolve().is_relative_to(ROOT):
            out.append(f"{name} ({path})")
    return sorted(out)


def vm_status() -> dict[str, float]:
    """This process's resident set now (VmRSS) and its peak (VmHWM), in MB."""
    out: dict[str, float] = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024.0
    if "VmHWM" not in out:  # no /proc: ru_maxrss is in kB on Linux
        out["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        out.setdefault("VmRSS", out["VmHWM"])
    return out


def pctl(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


class SteadyPool:
    """One domain of ``nodes`` JOINED workers on a simulated site, driven to steady state on a simulated clock.

    The real :class:`~pool.control.manager.Manager` launches every node through the real provisioner and
    the ``sim`` driver (profile ``local``: no API throttling, ~2 s boots); booted machines
    heartbeat ``ready`` into the store like agents do, and the manager's doctor moves them to
    JOINED. The ``fixed`` policy keeps the size at ``nodes``, so later ticks change nothing:
    they observe, plan and find nothing to do, which is the cost every idle second pays.
    """

    def __init__(self, nodes: int, store_kind: str, workdir: Path) -> None:
        from sensors import simqueue

        Manager = pool_module("manager").Manager
        parse_domain_spec = pool_module("model").parse_domain_spec
        Provisioner = pool_module("provisioner").Provisioner
        SimNodeDriver = pool_module("sim").SimNodeDriver
        MemoryStore, Store = pool_module("store").MemoryStore, pool_module("store").Store

        self.nodes = nodes
        self.now = 0.0
        self.server: Any = None
        if store_kind == "redis":
            RedisServer = pool_module("redisserver").RedisServer
            self.server = RedisServer.start(workdir / "redis", appendonly=False)
            self.store: Any = Store.from_url(self.server.url, namespace="tick")
            redis_url = self.server.url
        else:
            self.store = MemoryStore(namespace="tick")
            redis_url = "memory://tick"
        self.queue_name = f"tick-{os.getpid()}"
        # the sim_queue sensor reads ``self.depth``: injected through the manager's sensor factory, or
        # (revisions before simqueue.attach) registered in the module's registry
        injected: dict[str, Any] = {}
        if hasattr(simqueue, "attach"):
            injected["sensor_factory"] = simqueue.attach({self.queue_name: self})
        else:
            legacy: Any = simqueue
            legacy.register(self.queue_name, self)
        self.driver = SimNodeDriver(ex_clock=self.clock, ex_profile="local", ex_seed=0)
        self.provisioner = Provisioner({SITE: self.driver})
        # the provisioner role lists the site every LIST_INTERVAL s (`pool up --list-interval`); at
        # 10,000 machines a cloud listing is ten 1,000-machine pages, so it runs on its own cadence
        self.manager = Manager(store=self.store, provisioner=self.provisioner, redis_url=redis_url,
                               clock=self.clock, manager_id="tick-bench", wakeups=False,
                               list_interval=LIST_INTERVAL, **injected)
        self.spec = parse_domain_spec({
            "name": DOMAIN, "site": SITE, "deployable_type": "celery-worker", "min": 0, "max": nodes,
            "policy": {"name": "fixed", "size": nodes},
            "sensor": {"name": "sim_queue", "queue": self.queue_name},
            "celery": {"app": "tick", "concurrency": 1},
        })
        self.interval = self.spec.timeouts.heartbeat_interval
        self.store.put_domain(self.spec)
        self.last_beat: dict[str, float] = {}  # node id -> simulated time of its last heartbeat
        # measured ticks run inside Context.run: its C function, context_run, is called by nothing in a
        # tick, so callgrind's --toggle-collect=context_run counts the measured ticks and nothing else
        self.context = contextvars.copy_context()

    # what the sim_queue sensor reads: nothing waiting, half the workers busy
    def depth(self) -> tuple[int, int]:
        return 0, self.nodes // 2

    def clock(self) -> float:
        return self.now

    def _boots(self) -> None:
        """Machines that finished booting send their first heartbeat: ready, every other one busy."""
        for node in self.driver.ex_booted(self.now):
            node_id = node.extra["tags"]["elastic-pool/node"]
            busy = len(self.last_beat) % 2 == 1
            self.store.beat(DOMAIN, node_id, time=self.now, ready=True, active=1 if busy else 0,
                            idle_since="" if busy else self.now, workload_alive=True, draining=False)
            self.last_beat[node_id] = self.now

    def _beats(self) -> None:
        """The agents' periodic heartbeats that fall due (each node every ``heartbeat_interval``)."""
        for node_id, last in self.last_beat.items():
            if self.now - last >= self.interval:
                self.store.beat(DOMAIN, node_id, time=self.now)
                self.last_beat[node_id] = self.now

    def advance(self, seconds: float = 1.0) -> None:
        self.now += seconds
        self._boots()
        self._beats()

    def build(self) -> None:
        """Launch every node, let them boot and join; raise unless all ``nodes`` are JOINED."""
        NodeState = pool_module("model").NodeState
        self.manager.tick(self.now)  # the launch tick: ``nodes`` records, ``nodes`` launches
        for _ in range(30):
            self.advance()
            self.manager.tick(self.now)
            if len(self.last_beat) == self.nodes:
                break
        self.advance()
        self.manager.tick(self.now)
        states = [n.state for n in self.store.nodes(DOMAIN)]
        joined = sum(1 for s in states if s == NodeState.JOINED)
        if joined != self.nodes or len(states) != self.nodes:
            raise RuntimeError(f"steady state not reached: {joined} of {self.nodes} JOINED, {len(states)} records")

    def tick(self, *, counted: bool = True) -> tuple[float, float, int, float]:
        """One steady-state tick: (CPU ms, wall ms, plans' side effects count, redis-server CPU ms in it).

        ``counted`` runs it through :data:`COUNTED` (see ``self.context``); warm-up ticks are not.
        """
        self.advance()
        server = self.server_cpu()
        wall, cpu = time.perf_counter(), time.process_time()
        plans = self.context.run(self.manager.tick, self.now) if counted else self.manager.tick(self.now)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        server = self.server_cpu() - server
        acted = sum(len(p.changed) + len(p.launches) + len(p.terminations) for p in plans)
        return cpu * 1000.0, wall * 1000.0, acted, server * 1000.0

    def server_cpu(self) -> float:
        """CPU seconds redis-server has used so far (0 for the in-memory store)."""
        if self.server is None:
            return 0.0
        info = self.store.r.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def server_rss_mb(self) -> float | None:
        if self.server is None:
            return None
        return float(self.store.r.info("memory")["used_memory_rss"]) / 2**20

    def close(self) -> None:
        from sensors import simqueue

        if not hasattr(simqueue, "attach"):
            legacy: Any = simqueue
            legacy.unregister(self.queue_name)
        if self.server is not None:
            self.server.stop()


class GcTime:
    """A ``gc.callbacks`` hook that adds up the CPU time of the collector's passes."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.count = 0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.process_time()
        else:
            self.seconds += time.process_time() - self._start
            self.count += 1


def measure(nodes: int, store_kind: str, ticks: int, *, profile: bool = False) -> dict[str, Any]:
    """Build the steady state and time ``ticks`` ticks of it; runs in its own process."""
    import gc

    for role in ("manager", "sim", "redisserver"):  # the base line includes every module a tick uses
        pool_module(role)

    base = vm_status()["VmRSS"]  # interpreter + the pool's modules, before any node exists
    with tempfile.TemporaryDirectory(prefix="ep-tick-") as tmp:
        steady = SteadyPool(nodes, store_kind, Path(tmp))
        try:
            started = time.perf_counter()
            steady.build()
            build_s = time.perf_counter() - started
            gc.collect()
            built = vm_status()
            for _ in range(WARMUP):
                steady.tick(counted=False)
            if profile:
                return {"profile": run_profile(steady)}
            server_cpu = steady.server_cpu()
            cpu_ms, wall_ms, server_in_tick, acted = [], [], [], 0
            collector = GcTime()
            gc.callbacks.append(collector)
            try:
                for _ in range(ticks):
                    c, w, a, s = steady.tick()
                    cpu_ms.append(c)
                    wall_ms.append(w)
                    server_in_tick.append(s)
                    acted += a
            finally:
                gc.callbacks.remove(collector)
            server_ms = (steady.server_cpu() - server_cpu) * 1000.0 / ticks
            after = vm_status()
            if foreign := foreign_modules():
                raise RuntimeError(f"modules loaded from outside {ROOT}: {', '.join(foreign)}")
            return {
                "nodes": nodes,
                "store": store_kind,
                "tick_cpu_ms": round(statistics.median(cpu_ms), 2),
                "tick_cpu_p95_ms": round(pctl(cpu_ms, 95), 2),
                "tick_wall_ms": round(statistics.median(wall_ms), 2),
                "tick_wall_p95_ms": round(pctl(wall_ms, 95), 2),
                "redis_server_cpu_ms_per_tick": round(server_ms, 2) if store_kind == "redis" else None,
                "redis_server_cpu_ms_in_tick": (round(statistics.median(server_in_tick), 2)
                                                if store_kind == "redis" else None),
                "gc_ms_per_tick": round(collector.seconds * 1000.0 / ticks, 2),
                "gc_collections_per_tick": round(collector.count / ticks, 1),
                "rss_mb": round(after["VmRSS"], 1),
                "rss_after_build_mb": round(built["VmRSS"], 1),
                "peak_rss_mb": round(after["VmHWM"], 1),
                "base_rss_mb": round(base, 1),
                "redis_server_rss_mb": round(rss, 1) if (rss := steady.server_rss_mb()) is not None else None,
                "ticks": ticks,
                "tick_cpu_ms_all": [round(x, 2) for x in cpu_ms],
                "changes_during_ticks": acted,
                "build_s": round(build_s, 1),
                "root": str(ROOT),
            }
        finally:
            steady.close()


def run_profile(pool: SteadyPool, ticks: int = 5, top: int = 30) -> str:
    """cProfile of ``ticks`` steady-state ticks, sorted by cumulative time."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    for _ in range(ticks):
        pool.advance()
        prof.enable()
        pool.manager.tick(pool.now)
        prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def in_subprocess(nodes: int, store_kind: str, ticks: int) -> dict[str, Any]:
    """One size and store in a fresh interpreter, so one size's memory never shows in another's."""
    cmd = [sys.executable, "-m", "bench.tick", "--one", "--nodes", str(nodes), "--store", store_kind,
           "--ticks", str(ticks)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# -- side by side with a baseline revision ----------------------------------------------------------

#: the revision the current tree is compared with: the control loop before it moved into
#: pool/core, state, control and sites (``--base REV`` overrides it)
BASE_REV = "61a184d"
#: the revision measured against it (``--head REV``): the commit, not the working tree's uncommitted
#: edits; "." measures this working tree as it is
HEAD_REV = "HEAD"
SIDE_NODES = 10000
SIDE_ROUNDS = 3  # alternating rounds per store: baseline, current, baseline, current, ...
SIDE_TARGET = 1.0  # current / baseline, at most
#: measured ticks under callgrind: ten simulated seconds, so one of them lists the site
CALLGRIND_TICKS = 10
#: the C function a measured tick runs in (contextvars.Context.run, see SteadyPool.tick)
COUNTED = "context_run"
CALLGRIND_TIMEOUT = 1200.0
HARNESS = "tick_side"  # this file's name in each side's worktree: bench/tick_side.py


def git(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def run_side(root: Path, module: str, nodes: int, store_kind: str, ticks: int) -> dict[str, Any]:
    """One ``--one`` measurement of the tree at ``root`` with its harness ``module``, in a fresh process."""
    cmd = [sys.executable, "-m", module, "--one", "--nodes", str(nodes), "--store", store_kind, "--ticks", str(ticks)]
    env = dict(os.environ, PYTHONPATH=str(root))
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} in {root} failed:\n{proc.stderr[-3000:]}")
    out = dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    if out.get("root", str(root)) != str(root):
        raise RuntimeError(f"{module} in {root} measured the tree at {out['root']}")
    return out


def callgrind_cmd(out_dir: Path, side: str) -> list[str]:
    """valgrind counting instructions only inside :data:`COUNTED`, one dump per measured tick."""
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_dir / side}.%p",
            "--collect-atstart=no", f"--toggle-collect={COUNTED}", f"--dump-after={COUNTED}",
            "--compress-strings=no", "--compress-pos=no"]


def self_costs(path: Path) -> tuple[int, dict[str, int]]:
    """A callgrind dump's total and each function's own instructions (recursion levels merged)."""
    costs: dict[str, int] = {}
    total, fn, call_line = 0, "", False
    with open(path) as fh:
        for line in fh:
            if line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split()[1]))
            elif line.startswith("fn="):
                fn = line[3:].strip().split("'")[0]
            elif line.startswith("calls="):
                call_line = True  # the next cost line is the call's inclusive cost
            elif line[:1].isdigit() or line[:1] in "+-*":
                if call_line:
                    call_line = False
                elif fn and len(parts := line.split()) > 1:
                    costs[fn] = costs.get(fn, 0) + int(parts[1])
    return total, costs


def count_instructions(sides: dict[str, tuple[Path, str]], ticks: int) -> dict[str, Any]:
    """Both sides under callgrind at the same time (counts do not depend on load); per side, the
    instructions of each measured tick and each C function's own instructions per tick."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ep-tick-cg-") as tmp:
        out_dir = Path(tmp)
        procs = {}
        for side, (root, module) in sides.items():
            cmd = callgrind_cmd(out_dir, side) + [sys.executable, "-m", module, "--one", "--nodes",
                                                  str(SIDE_NODES), "--store", "memory", "--ticks", str(ticks)]
            # a fixed hash seed: the same set and dict orders, so two runs count the same
            env = dict(os.environ, PYTHONPATH=str(root), PYTHONHASHSEED="0")
            procs[side] = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                           text=True)
        deadline = time.monotonic() + CALLGRIND_TIMEOUT
        errors = {}
        try:
            for side, proc in procs.items():
                errors[side] = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))[1]
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"callgrind runs took over {CALLGRIND_TIMEOUT:g} s") from None
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
        for side, proc in procs.items():
            if proc.returncode != 0:
                raise RuntimeError(f"callgrind run of the {side} side failed:\n{errors[side][-3000:]}")
            parts: list[int] = []
            functions: dict[str, int] = {}
            for dump in sorted(out_dir.glob(f"{side}.*.*"), key=lambda p: int(p.suffix[1:])):
                total, costs = self_costs(dump)
                parts.append(total)
                for fn, ir in costs.items():
                    functions[fn] = functions.get(fn, 0) + ir
            if len(parts) != ticks:  # one dump per measured tick: nothing else entered COUNTED
                raise RuntimeError(f"{side}: {len(parts)} callgrind dumps for {ticks} measured ticks "
                                   f"(does its harness run the measured ticks in {COUNTED}?)")
            out[side] = {"per_tick": parts, "median": int(statistics.median(parts)),
                         "mean": round(sum(parts) / ticks),
                         "functions": {fn: ir / ticks for fn, ir in functions.items()}}
    return out


def alternate(sides: dict[str, tuple[Path, str]], rounds: int, log: Any) -> dict[str, Any]:
    """Per store, ``rounds`` rounds of (baseline, current) at SIDE_NODES, each run a fresh process."""
    out: dict[str, Any] = {}
    for store_kind in STORES:
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
        for i in range(rounds):
            for side, (root, module) in sides.items():
                r = run_side(root, module, SIDE_NODES, store_kind, TICKS[store_kind])
                runs[side].append(r)
                log(f"side by side {store_kind:6} round {i + 1}/{rounds} {side:4}: tick CPU median "
                    f"{r['tick_cpu_ms']:.1f} ms (p95 {r['tick_cpu_p95_ms']:.1f}), build {r['build_s']:.0f} s")
        for side, rs in runs.items():
            # the median of every measured tick of the side's runs, and each run's own median
            out[f"{store_kind}_ms_{side}"] = round(statistics.median(x for r in rs for x in r["tick_cpu_ms_all"]), 2)
            out[f"{store_kind}_run_medians_{side}"] = [r["tick_cpu_ms"] for r in rs]
            out[f"{store_kind}_p95_ms_{side}"] = round(pctl([x for r in rs for x in r["tick_cpu_ms_all"]], 95), 2)
        out[f"{store_kind}_ratio"] = round(out[f"{store_kind}_ms_head"] / out[f"{store_kind}_ms_base"], 3)
        out[f"{store_kind}_round_ratios"] = [round(h["tick_cpu_ms"] / b["tick_cpu_ms"], 3)
                                             for b, h in zip(runs["base"], runs["head"])]
    return out


def uncommitted() -> list[str]:
    """This working tree's uncommitted changes to the project's code."""
    return [line[3:] for line in git("status", "--porcelain", "--", *PACKAGES).stdout.splitlines()]


def checkout(rev: str, path: Path) -> tuple[Path, str] | str:
    """A detached worktree of ``rev`` at ``path`` with this harness in it: (path, harness module), or
    why not. ``rev`` "." is this working tree itself, as it is."""
    if rev == ".":
        return ROOT, "bench.tick"
    from bench.common import harness_worktree  # here only: the harness itself runs on older trees too

    made = harness_worktree(rev, path, harness=Path(__file__).resolve(), name=HARNESS)
    return made if isinstance(made, str) else (made, f"bench.{HARNESS}")


def side_by_side(base_rev: str, head_rev: str = HEAD_REV, rounds: int = SIDE_ROUNDS, *,
                 instructions: bool = True, log: Any = print) -> dict[str, Any]:
    """The revisions ``base_rev`` and ``head_rev`` at SIDE_NODES nodes, measured alternately.

    Each side runs in a temporary git worktree of its revision (``head_rev`` "." is this working
    tree) with this harness copied into it: it finds either module layout (see :data:`MODULES`),
    so both sides run the same measurement code. If it cannot run a side, that side's own
    bench/tick.py does (no instruction counts then). A revision that cannot be checked out is
    reported, not raised.
    """
    started = time.monotonic()
    out: dict[str, Any] = {"base_rev": base_rev, "head_rev": head_rev, "nodes": SIDE_NODES, "rounds": rounds,
                           "target_ratio": SIDE_TARGET, "working_tree_uncommitted": uncommitted()}
    tmp = Path(tempfile.mkdtemp(prefix="ep-tick-sides-"))
    sides: dict[str, tuple[Path, str]] = {}
    try:
        for side, rev in (("base", base_rev), ("head", head_rev)):
            got = checkout(rev, tmp / side)
            if isinstance(got, str):
                out["skipped"] = f"revision {rev} cannot be checked out: {got}"
                log(f"side by side skipped: {out['skipped']}")
                return out
            sides[side] = got
            root = got[0]
            out[f"{side}_commit"] = git("rev-parse", "--short", "HEAD", cwd=root).stdout.strip()
            out[f"{side}_harness"] = "this bench/tick.py"
            try:  # a short run: does this harness run that tree?
                run_side(root, got[1], 1000, "memory", 2)
            except RuntimeError as exc:
                why = str(exc).strip().splitlines()[-1]
                if got[1] == "bench.tick" or not (root / "bench" / "tick.py").is_file():
                    out["skipped"] = f"no harness runs revision {rev}: {why}"
                    log(f"side by side skipped: {out['skipped']}")
                    return out
                log(f"this harness cannot run {rev} ({why}); using its own bench/tick.py")
                sides[side] = (root, "bench.tick")
                out[f"{side}_harness"] = f"bench/tick.py of {rev} (this one failed: {why})"
        try:
            out.update(alternate(sides, rounds, log))
        except RuntimeError as exc:
            out["skipped"] = f"a measurement failed: {str(exc)[-500:]}"
            log(f"side by side skipped: {out['skipped']}")
            return out
        out["timing_s"] = round(time.monotonic() - started)
        out.update(side_instructions(sides, instructions, log))
    finally:
        for root, _ in sides.values():
            if root != ROOT:
                git("worktree", "remove", "--force", str(root))
        shutil.rmtree(tmp, ignore_errors=True)
        git("worktree", "prune")
    out["took_s"] = round(time.monotonic() - started)
    return out


def side_instructions(sides: dict[str, tuple[Path, str]], wanted: bool, log: Any) -> dict[str, Any]:
    """callgrind's instructions per measured tick, both sides, in-memory store at SIDE_NODES."""
    out: dict[str, Any] = {"instr_method": (
        f"valgrind --tool=callgrind --collect-atstart=no --toggle-collect={COUNTED} --dump-after={COUNTED}: "
        f"the measured ticks run inside contextvars.Context.run (C function {COUNTED}, called by nothing else), "
        f"so only they are counted, one dump per tick; build and {WARMUP} warm-up ticks uncounted; "
        f"{CALLGRIND_TICKS} ticks (one lists the site), PYTHONHASHSEED=0, memory store, {SIDE_NODES:,} nodes")}
    if not wanted:
        out["instr_skipped"] = "not asked for (--no-callgrind)"
        return out
    if shutil.which("valgrind") is None:
        out["instr_skipped"] = "valgrind is not installed"
        return out
    started = time.monotonic()
    try:
        counts = count_instructions(sides, CALLGRIND_TICKS)
    except RuntimeError as exc:
        out["instr_skipped"] = str(exc)[-500:]
        log(f"instruction counts skipped: {out['instr_skipped']}")
        return out
    for side in ("base", "head"):
        out[f"instr_per_tick_{side}"] = counts[side]["median"]
        out[f"instr_mean_per_tick_{side}"] = counts[side]["mean"]
        out[f"instr_all_ticks_{side}"] = counts[side]["per_tick"]
    out["instr_ratio"] = round(out["instr_per_tick_head"] / out["instr_per_tick_base"], 3)
    out["instr_mean_ratio"] = round(out["instr_mean_per_tick_head"] / out["instr_mean_per_tick_base"], 3)
    base_fn, head_fn = counts["base"]["functions"], counts["head"]["functions"]
    delta = {fn: head_fn.get(fn, 0.0) - base_fn.get(fn, 0.0) for fn in set(base_fn) | set(head_fn)}
    # where the difference is, by C function (own instructions, mean per tick): the largest changes
    out["instr_by_function"] = [
        {"function": fn, "base": round(base_fn.get(fn, 0.0)), "head": round(head_fn.get(fn, 0.0)),
         "delta": round(d)}
        for fn, d in sorted(delta.items(), key=lambda kv: -abs(kv[1]))[:12]]
    out["callgrind_s"] = round(time.monotonic() - started)
    log(f"instructions per tick (median of {CALLGRIND_TICKS}): baseline {out['instr_per_tick_base'] / 1e6:.1f} M, "
        f"current {out['instr_per_tick_head'] / 1e6:.1f} M, ratio {out['instr_ratio']:.3f} "
        f"(callgrind {out['callgrind_s']} s)")
    return out


def table_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from bench.common import row

    rows = []
    for r in results:
        n, store = r["nodes"], r["store"]
        at_target = n == max(SIZES)
        note = (f"p95 {r['tick_cpu_p95_ms']:.1f} ms, wall median {r['tick_wall_ms']:.1f} ms, "
                f"garbage collector {r['gc_ms_per_tick']:.1f} ms/tick"
                + (f", redis-server CPU {r['redis_server_cpu_ms_in_tick']:.1f} ms in the tick (median), "
                   f"{r['redis_server_cpu_ms_per_tick']:.1f} ms per simulated second with the agents' heartbeats"
                   if r["redis_server_cpu_ms_per_tick"] is not None else ""))
        rows.append(row(f"{n:,} nodes, {store} store: CPU ms per tick (median)", r["tick_cpu_ms"],
                        f"<= {TARGET_MS:g} ms" if at_target else "-",
                        r["tick_cpu_ms"] <= TARGET_MS if at_target else None, note))
        mem_note = (f"peak {r['peak_rss_mb']:.0f} MB; {r['base_rss_mb']:.0f} MB before any node; includes the "
                    f"simulated site's machines")
        if r["redis_server_rss_mb"] is not None:
            mem_note += f"; redis-server RSS {r['redis_server_rss_mb']:.0f} MB (not counted)"
        rows.append(row(f"{n:,} nodes, {store} store: manager process RSS, MB", r["rss_mb"],
                        f"<= {TARGET_MB:g} MB" if at_target else "-",
                        r["rss_mb"] <= TARGET_MB if at_target else None, mem_note))
    return rows


def markdown(results: list[dict[str, Any]]) -> str:
    """Per size and store, side by side (the rows above repeat the target cells)."""
    lines = ["| nodes | store | tick CPU median, ms | p95, ms | wall median, ms | RSS, MB | peak RSS, MB |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['nodes']:,} | {r['store']} | {r['tick_cpu_ms']:.1f} | {r['tick_cpu_p95_ms']:.1f} | "
                     f"{r['tick_wall_ms']:.1f} | {r['rss_mb']:.0f} | {r['peak_rss_mb']:.0f} |")
    lines += ["", "Steady state: every node JOINED and heartbeating, the `fixed` policy keeps the size, so a tick "
              "observes (node records, heartbeats; the site's listing of every machine once per list interval), "
              "plans and changes nothing. The manager holds every role (doctor, provisioner, decider); the "
              f"provisioner role lists the site every {LIST_INTERVAL:g} s (`pool up --list-interval`), so the "
              "median tick is the decider and doctor, and the p95 includes a listing. `memory` is the in-memory "
              "store (the simulator's); `redis` is the store `pool up` uses, read incrementally: per tick one read of "
              "the beat times written since the last tick, and only the heartbeat fields and node records that "
              "the domain's change streams name are read again (redis-server's own CPU is given apart: in the "
              "tick, and per simulated second with the agents' heartbeats). CPU is the manager process's; "
              "p95 includes the garbage collector's full passes. Memory is the manager process's RSS with the "
              "simulated site's machines in it. Wall time is on a shared 2-core machine and varies with its load."]
    return "\n".join(lines)


SIDE_TARGET_TEXT = f"≤ {SIDE_TARGET:.1f}x of the baseline"
SKIPPED: Any = "skipped"  # the value of a row that could not be measured


def side_rows(side: dict[str, Any]) -> list[dict[str, Any]]:
    """The comparison with the baseline revision: current / baseline, met when at most SIDE_TARGET."""
    from bench.common import row

    base = side.get("base_commit") or side["base_rev"]
    head = side.get("head_commit") or side["head_rev"]
    if "skipped" in side:
        return [row(f"{side['nodes']:,} nodes: side by side with the baseline {side['base_rev']}", SKIPPED,
                    SIDE_TARGET_TEXT, None, side["skipped"])]
    rows = []
    for store_kind in STORES:
        b, h = side[f"{store_kind}_ms_base"], side[f"{store_kind}_ms_head"]
        ticks = len(side[f"{store_kind}_run_medians_base"]) * TICKS[store_kind]
        note = (f"{h:.1f} ms current vs {b:.1f} ms baseline (median of every measured tick, {ticks} per side); "
                f"each run's median: baseline {', '.join(f'{x:.1f}' for x in side[f'{store_kind}_run_medians_base'])}"
                f", current {', '.join(f'{x:.1f}' for x in side[f'{store_kind}_run_medians_head'])} ms; "
                f"ratio per round {', '.join(f'{x:.2f}' for x in side[f'{store_kind}_round_ratios'])}; "
                f"p95 {side[f'{store_kind}_p95_ms_head']:.1f} vs {side[f'{store_kind}_p95_ms_base']:.1f} ms")
        rows.append(row(f"{side['nodes']:,} nodes, {store_kind} store: CPU per tick, {head} / baseline {base} "
                        f"({side['rounds']} alternating rounds)", side[f"{store_kind}_ratio"], SIDE_TARGET_TEXT,
                        side[f"{store_kind}_ratio"] <= SIDE_TARGET, note))
    metric = f"{side['nodes']:,} nodes, memory store: instructions per tick, {head} / baseline {base} (callgrind)"
    if "instr_ratio" not in side:
        rows.append(row(metric, SKIPPED, SIDE_TARGET_TEXT, None, side.get("instr_skipped", "")))
        return rows
    top = ", ".join(f"{f['function']} {f['delta'] / 1e6:+.1f} M" for f in side["instr_by_function"][:5])
    note = (f"{side['instr_per_tick_head'] / 1e6:.1f} M current vs {side['instr_per_tick_base'] / 1e6:.1f} M "
            f"baseline per steady tick (median of {CALLGRIND_TICKS} counted ticks); with the tick that lists the "
            f"site, mean {side['instr_mean_per_tick_head'] / 1e6:.1f} M vs "
            f"{side['instr_mean_per_tick_base'] / 1e6:.1f} M ({side['instr_mean_ratio']:.3f}); counted, not timed, "
            f"so the machine's load does not enter; largest changes by C function (own instructions per tick): {top}")
    rows.append(row(metric, side["instr_ratio"], SIDE_TARGET_TEXT, side["instr_ratio"] <= SIDE_TARGET, note))
    return rows


def side_markdown(side: dict[str, Any]) -> str:
    base = side.get("base_commit") or side["base_rev"]
    if "skipped" in side:
        return f"Side by side with the baseline {side['base_rev']}: skipped ({side['skipped']})."
    head = side.get("head_commit") or side["head_rev"]
    if side["head_rev"] == "." and side.get("working_tree_uncommitted"):
        head += f" with the working tree's uncommitted changes to {len(side['working_tree_uncommitted'])} files"
    instr = {s: (f"{side[f'instr_per_tick_{s}'] / 1e6:.1f} M" if "instr_ratio" in side else "-")
             for s in ("base", "head")}
    lines = [f"Side by side at {side['nodes']:,} nodes: the baseline {base} and the current code ({head}).",
             "",
             "| side | memory store: CPU ms per tick | redis store: CPU ms per tick | instructions per tick (memory) |",
             "|---|---|---|---|",
             f"| baseline {base} | {side['memory_ms_base']:.1f} | {side['redis_ms_base']:.1f} | {instr['base']} |",
             f"| current {side.get('head_commit') or side['head_rev']} | {side['memory_ms_head']:.1f} | {side['redis_ms_head']:.1f} | "
             f"{instr['head']} |",
             f"| current / baseline | {side['memory_ratio']:.3f} | {side['redis_ratio']:.3f} | "
             f"{side['instr_ratio'] if 'instr_ratio' in side else '-'} |",
             "",
             f"`make bench-tick` checks out the baseline (`python -m bench.tick --base REV`, default {BASE_REV}) and "
             f"the current code (`--head REV`, default {HEAD_REV}: the commit; `--head .` is the working tree as it "
             "is) in temporary git worktrees, copies this harness into both (it imports either module layout: "
             "`pool.control.manager` or `pool.manager`, and so on; every project module must load from the tree "
             f"measured), and runs `--one` for each store {side['rounds']} times per side, alternating baseline "
             "and current, each a fresh process, so both see the same machine at nearly the same time. The CPU "
             "per side is the median of every measured tick of its runs. Instructions: "
             f"{side.get('instr_method', '')}. Per C function, `instr_by_function` in the raw numbers gives the "
             "largest changes of their own instructions per tick (Python code runs in the interpreter's C "
             "functions: `_PyEval_EvalFrameDefault` is the bytecode loop)."]
    return "\n".join(lines)


#: seconds between two listings of the site by the provisioner role
LIST_INTERVAL = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--one", action="store_true", help="measure one size in this process, print JSON")
    parser.add_argument("--profile", action="store_true", help="with --one: print a cProfile of steady ticks")
    parser.add_argument("--nodes", type=int, default=max(SIZES))
    parser.add_argument("--store", choices=STORES, default="memory")
    parser.add_argument("--ticks", type=int, default=0, help="measured ticks (default per store)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--stores", default=",".join(STORES))
    parser.add_argument("--base", default=BASE_REV, help=f"baseline git revision to compare with (default {BASE_REV})")
    parser.add_argument("--head", default=HEAD_REV,
                        help=f"revision measured against the baseline (default {HEAD_REV}; '.': this working tree)")
    parser.add_argument("--rounds", type=int, default=SIDE_ROUNDS, help="alternating rounds per store, side by side")
    parser.add_argument("--no-side", action="store_true", help="no side by side with the baseline")
    parser.add_argument("--no-callgrind", action="store_true", help="side by side without instruction counts")
    args = parser.parse_args()
    if args.one:
        out = measure(args.nodes, args.store, args.ticks or TICKS[args.store], profile=args.profile)
        print(out["profile"] if args.profile else json.dumps(out))
        return

    from bench.common import write_result

    results = []
    for store_kind in args.stores.split(","):
        for n in (int(s) for s in args.sizes.split(",")):
            r = in_subprocess(n, store_kind, args.ticks or TICKS[store_kind])
            print(f"{store_kind:6} {n:6} nodes: tick CPU median {r['tick_cpu_ms']:.1f} ms "
                  f"(p95 {r['tick_cpu_p95_ms']:.1f}), wall {r['tick_wall_ms']:.1f} ms, RSS {r['rss_mb']:.0f} MB "
                  f"(peak {r['peak_rss_mb']:.0f}), build {r['build_s']:.0f} s", flush=True)
            results.append(r)
    data: dict[str, Any] = {
        "results": results,
        "target": {"nodes": max(SIZES), "tick_cpu_ms": TARGET_MS, "rss_mb": TARGET_MB},
        "setup": ("one domain of N JOINED workers on the sim site (profile local), fixed policy keeping N, "
                  "sim_queue sensor; every node heartbeats (Store.beat) each heartbeat_interval (2 s); the manager ticks "
                  f"each simulated second and lists the site every {LIST_INTERVAL:g} s (list_interval; the median "
                  "tick does not list, the p95 does); no leases, "
                  "provisioning inline; CPU is time.process_time() of Manager.tick() in the manager process "
                  "(redis-server's CPU is reported apart: during Manager.tick(), median, and per simulated second "
                  "including the heartbeats written between ticks); RSS is VmRSS after the measured ticks, each size "
                  "and store in a fresh process"),
    }
    rows = table_rows(results)
    data["markdown"] = markdown(results)
    if not args.no_side:
        side = side_by_side(args.base, args.head, args.rounds, instructions=not args.no_callgrind,
                            log=lambda line: print(line, flush=True))
        data["side_by_side"] = side
        rows += side_rows(side)
        data["markdown"] += "\n\n" + side_markdown(side)
    print(write_result("tick", data, rows))


if __name__ == "__main__":
    main()
