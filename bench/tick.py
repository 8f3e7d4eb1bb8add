"""Control-plane cost: CPU time of one manager tick and the manager's memory at 1,000 and 10,000 nodes."""

from __future__ import annotations

import argparse
import json
import os
import resource
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
        from pool.control.manager import Manager
        from pool.core.model import parse_domain_spec
        from pool.sites.provisioner import Provisioner
        from pool.sites.sim import SimNodeDriver
        from pool.state.store import MemoryStore, Store
        from sensors import simqueue

        self.nodes = nodes
        self.now = 0.0
        self.server: Any = None
        if store_kind == "redis":
            from pool.state.redisserver import RedisServer

            self.server = RedisServer.start(workdir / "redis", appendonly=False)
            self.store: Store = Store.from_url(self.server.url, namespace="tick")
            redis_url = self.server.url
        else:
            self.store = MemoryStore(namespace="tick")
            redis_url = "memory://tick"
        self.queue_name = f"tick-{os.getpid()}"
        simqueue.register(self.queue_name, self)
        self.driver = SimNodeDriver(ex_clock=self.clock, ex_profile="local", ex_seed=0)
        self.provisioner = Provisioner({SITE: self.driver})
        # the provisioner role lists the site every LIST_INTERVAL s (`pool up --list-interval`); at
        # 10,000 machines a cloud listing is ten 1,000-machine pages, so it runs on its own cadence
        self.manager = Manager(store=self.store, provisioner=self.provisioner, redis_url=redis_url,
                               clock=self.clock, manager_id="tick-bench", wakeups=False,
                               list_interval=LIST_INTERVAL)
        self.spec = parse_domain_spec({
            "name": DOMAIN, "site": SITE, "deployable_type": "celery-worker", "min": 0, "max": nodes,
            "policy": {"name": "fixed", "size": nodes},
            "sensor": {"name": "sim_queue", "queue": self.queue_name},
            "celery": {"app": "tick", "concurrency": 1},
        })
        self.interval = self.spec.timeouts.heartbeat_interval
        self.store.put_domain(self.spec)
        self.last_beat: dict[str, float] = {}  # node id -> simulated time of its last heartbeat

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
        from pool.core.model import NodeState

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

    def tick(self) -> tuple[float, float, int, float]:
        """One steady-state tick: (CPU ms, wall ms, plans' side effects count, redis-server CPU ms in it)."""
        self.advance()
        server = self.server_cpu()
        wall, cpu = time.perf_counter(), time.process_time()
        plans = self.manager.tick(self.now)
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

        simqueue.unregister(self.queue_name)
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

    import pool.control.manager  # noqa: F401
    import pool.sites.sim  # noqa: F401  (the base line includes every module a tick uses)
    import pool.state.redisserver  # noqa: F401

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
                steady.tick()
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
    data = {
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
    data["markdown"] = markdown(results)
    print(write_result("tick", data, table_rows(results)))


if __name__ == "__main__":
    main()
