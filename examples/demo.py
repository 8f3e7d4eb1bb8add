"""The demo: a burst of Celery tasks on an elastic domain, one busy worker SIGKILLed, nothing lost.

Runs what a user runs: `pool up` (which starts the embedded Redis), `pool apply -f`, then enqueues
tasks of the bundled Celery app, shows live progress, kills a busy worker part-way, waits until every
task is done and the domain is back at zero, prints a summary, and ends with `pool down`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis
from rich.console import Console
from rich.live import Live
from rich.table import Table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
POOL = [sys.executable, "-m", "pool.cli"]
console = Console()


def pool(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*POOL, *args], env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    if check and proc.returncode != 0:
        console.print(f"[red]pool {' '.join(args)} failed:[/] {proc.stderr.strip()}")
        raise SystemExit(1)
    return proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=0.4, help="how long each task sleeps")
    parser.add_argument("--home", default=str(ROOT / ".state" / "demo"), help="private state directory")
    args = parser.parse_args()

    home = Path(args.home)
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(POOL_HOME=str(home), C_FORCE_ROOT="1", COLUMNS="120")
    if home.exists():  # a previous run that was interrupted: stop what it left, start fresh
        pool("down", "--timeout", "30", env=env, check=False)
        shutil.rmtree(home)
    home.mkdir(parents=True)
    console.rule("elastic-pool demo")
    console.print(f"state in {home}")

    manager = subprocess.Popen([*POOL, "up", "--interval", "1"], env=env, cwd=ROOT,
                               stdout=open(home / "manager.log", "w"), stderr=subprocess.STDOUT)
    try:
        server = home / "redis" / "server.json"
        deadline = time.monotonic() + 30
        while not server.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        url = json.loads(server.read_text())["url"]
        from pool.core.secrets import redact_url

        console.print(f"embedded Redis at {redact_url(url)}; manager pid {manager.pid}")
        console.print(pool("apply", "-f", str(HERE / "celery-domain.yaml"), env=env).stdout.strip())
        return run_demo(args, env=env, url=url, home=home)
    finally:
        console.print(pool("down", "--timeout", "120", env=env, check=False).stdout.strip())
        try:
            manager.wait(timeout=30)
        except subprocess.TimeoutExpired:
            manager.kill()


def run_demo(args: argparse.Namespace, *, env: dict[str, str], url: str, home: Path) -> int:
    from pool.core.model import NodeState
    from pool.sites.local import LocalNodeDriver
    from pool.state.redisserver import broker_url_for
    from pool.state.store import Store
    from sensors.celery import CeleryQueueSensor

    broker = broker_url_for(url)
    store = Store.from_url(url)
    driver = LocalNodeDriver(ex_state_dir=str(home / "sites" / "local"))
    sensor = CeleryQueueSensor(broker=broker, queue="etl")
    results = redis.Redis.from_url(broker, decode_responses=True)

    sys.path.insert(0, str(HERE / "demo_app"))
    os.environ["DEMO_BROKER"] = broker
    import tasks  # the bundled Celery app: it imports nothing from elastic-pool

    time.sleep(1.5)  # the domain sits at 0 workers while nothing waits
    t0 = time.time()
    for i in range(args.tasks):
        tasks.work.apply_async((i, args.seconds), queue="etl")
    console.print(f"enqueued {args.tasks} tasks of {args.seconds:g}s in {time.time() - t0:.2f}s")

    killed: str | None = None
    peak = 0
    back_at_zero = None
    last_done_at = None

    def snapshot() -> tuple[Table, int, int]:
        nodes = store.nodes("etl")
        live = [n for n in nodes if n.state in (NodeState.REQUESTED, NodeState.PENDING, NodeState.STARTED,
                                                NodeState.JOINED)]
        joined = [n for n in live if n.state == NodeState.JOINED]
        reading = sensor.read(time.time())
        done = results.hlen("demo:done")
        st = store.get_state("etl")
        table = Table("elapsed", "queue depth (ready+in-flight)", "intended", "actual", "joined", "done",
                      "killed", title="domain etl")
        table.add_row(f"{time.time() - t0:5.1f}s", f"{reading.value:g}" if reading.ok else str(reading.error),
                      str(st.intended), str(len(live)), str(len(joined)), f"{done}/{args.tasks}", killed or "-")
        return table, len(live), done

    with Live(console=console, refresh_per_second=4) as live_view:
        while True:
            table, actual, done = snapshot()
            live_view.update(table)
            peak = max(peak, actual)
            if killed is None and done >= args.tasks // 3:
                joined = [n for n in store.nodes("etl") if n.state == NodeState.JOINED]
                hbs = store.heartbeats("etl", [n.node_id for n in joined])
                busy = [n for n in joined if n.node_id in hbs and hbs[n.node_id].active > 0]
                for node in driver.list_nodes():
                    if busy and node.id == busy[0].node_id:
                        os.killpg(node.extra["pid"], signal.SIGKILL)  # a spot loss, mid-task
                        killed = node.id
            if done >= args.tasks and last_done_at is None:
                last_done_at = max(float(v) for v in results.hvals("demo:finished"))
            if done >= args.tasks and actual == 0:
                back_at_zero = time.time()
                table, _, _ = snapshot()
                live_view.update(table)
                break
            if time.time() - t0 > 170:
                console.print("[red]demo did not finish within 170 s[/]")
                break
            time.sleep(0.25)

    counts = {int(k): int(v) for k, v in results.hgetall("demo:done").items()}
    completed = len(counts)
    lost = args.tasks - completed
    duplicates = sum(counts.values()) - completed
    worker_seconds = 0.0
    for n in store.nodes("etl"):
        start = n.entered(NodeState.PENDING) or n.created
        end = n.entered(NodeState.TERMINATED) or time.time()
        worker_seconds += max(0.0, end - start)
    summary = Table("", "", title="summary", show_header=False)
    rows = [
        ("tasks submitted", str(args.tasks)),
        ("tasks completed", str(completed)),
        ("tasks lost", str(lost)),
        ("duplicates (at-least-once re-runs)", str(duplicates)),
        ("worker killed with SIGKILL", killed or "none"),
        ("peak workers", str(peak)),
        ("worker-seconds", f"{worker_seconds:.1f}"),
        ("time to drain (first enqueue -> last task done)", f"{(last_done_at or time.time()) - t0:.1f}s"),
        ("domain back at 0 workers", f"yes, after {back_at_zero - t0:.1f}s" if back_at_zero else "no"),
    ]
    for k, v in rows:
        summary.add_row(k, v)
    console.print(summary)
    ok = lost == 0 and back_at_zero is not None
    console.print("[green]demo passed: nothing lost[/]" if ok else "[red]demo failed[/]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
