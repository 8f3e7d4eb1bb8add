"""SIGKILL Redis-broker workers at random instants: kombu's Redis transport against the atomic pop.

kombu's Redis consumer pops a message with ``BRPOP`` and records it as unacknowledged only after
it has read the reply; a worker killed in between loses that message. ``pool.workloads.reliable_redis``
pops and records in one Lua script. Both sides run the same plain Celery workers (the pool's
durable settings: late acks, prefetch 1, visibility timeout 3 s here) draining short tasks while
one worker is SIGKILLed every ``KILL_EVERY`` seconds and replaced at once; rounds alternate
between the transports. Lost = tasks submitted that never completed once the queue and the
unacked hash are empty and the visibility timeout has passed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench.common import demo_tasks, enqueue, plain_workers, row, stop_procs, wait_until, write_result
from pool.state.redisserver import RedisServer, broker_url_for

TASKS = int(os.environ.get("POPKILL_TASKS", "20000"))
ROUNDS = int(os.environ.get("POPKILL_ROUNDS", "3"))  # per transport
WORKERS = 3
KILL_EVERY = 0.3  # seconds
VISIBILITY = 3.0
QUEUE = "popkill"


def one_round(*, server: RedisServer, transport: str, seed: int, tmp: Path) -> dict[str, Any]:
    broker = broker_url_for(server.url)
    client = redis.Redis.from_url(broker, decode_responses=True)
    client.flushdb()
    tasks = demo_tasks(broker)
    enqueue(tasks, broker, QUEUE, [(i, 0.0) for i in range(TASKS)])
    rng = random.Random(seed)
    logdir = tmp / f"{transport}-{seed}"
    logdir.mkdir()
    started = 0
    born: dict[int, float] = {}
    names: dict[int, int] = {}

    def spawn(n: int) -> list[subprocess.Popen[bytes]]:
        nonlocal started
        procs = plain_workers(n, broker=broker, queue=QUEUE, logdir=logdir, visibility_timeout=VISIBILITY,
                              first=started, stock_transport=transport == "kombu")
        for i, p in enumerate(procs):
            born[p.pid], names[p.pid] = time.monotonic(), started + i
        started += n
        return procs

    live = spawn(WORKERS)
    dead: list[subprocess.Popen[bytes]] = []
    kills = 0
    t0 = time.monotonic()
    try:
        # kill while at least 10 % of the queue is left, so the kills hit workers that are popping
        while int(client.llen(QUEUE)) > TASKS // 10 and time.monotonic() - t0 < 300:
            time.sleep(KILL_EVERY)
            # only workers consuming for a while: a worker still booting has nothing to lose
            consuming = [i for i, p in enumerate(live) if born[p.pid] < time.monotonic() - 1.0
                         and (logdir / f"plain{names[p.pid]}.ready").exists()]
            if not consuming:
                continue
            victim = live.pop(rng.choice(consuming))
            os.killpg(victim.pid, signal.SIGKILL)
            dead.append(victim)
            kills += 1
            live += spawn(1)
        # drain: the queue and unacked empty, then a visibility timeout and a sweep for stragglers
        wait_until(lambda: int(client.llen(QUEUE)) == 0 and int(client.hlen("unacked")) == 0, 300,
                   "the queue and unacked to empty", poll=0.2)
        time.sleep(VISIBILITY + 2)
        wait_until(lambda: int(client.llen(QUEUE)) == 0 and int(client.hlen("unacked")) == 0, 60,
                   "the queue and unacked to stay empty", poll=0.2)
    finally:
        stop_procs(live + dead)
    done = client.hgetall("demo:done")
    completed = sum(1 for i in range(TASKS) if str(i) in done)
    duplicates = sum(int(v) - 1 for v in done.values() if int(v) > 1)
    client.close()
    out = {"transport": transport, "seed": seed, "submitted": TASKS, "completed": completed,
           "lost": TASKS - completed, "duplicates": duplicates, "kills": kills,
           "seconds": round(time.monotonic() - t0, 1)}
    print(out, flush=True)
    return out


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="ep-popkill-"))
    server = RedisServer.start(tmp / "redis")
    rounds: list[dict[str, Any]] = []
    try:
        for n in range(ROUNDS):
            order = ("kombu", "reliable") if n % 2 == 0 else ("reliable", "kombu")
            for transport in order:
                rounds.append(one_round(server=server, transport=transport, seed=n + 1, tmp=tmp))
    finally:
        server.stop()
    totals = {t: {k: sum(r[k] for r in rounds if r["transport"] == t) for k in ("submitted", "lost", "kills",
                                                                             "duplicates")}
              for t in ("kombu", "reliable")}
    table = [
        row(f"{t}: tasks lost / submitted with a worker SIGKILLed every {KILL_EVERY:g} s",
            f"{v['lost']} / {v['submitted']}", "0 lost" if t == "reliable" else "-",
            v["lost"] == 0 if t == "reliable" else None,
            f"{ROUNDS} rounds, {v['kills']} kills, {v['duplicates']} duplicates (at least once)")
        for t, v in totals.items()
    ]
    print(write_result("popkill", {"rounds": rounds, "totals": totals, "tasks_per_round": TASKS,
                                   "workers": WORKERS, "kill_every_s": KILL_EVERY,
                                   "visibility_timeout_s": VISIBILITY}, table))


if __name__ == "__main__":
    main()
