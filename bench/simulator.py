"""Simulator speed: 10,000 tasks x 5 policies through the live manager on a simulated clock."""

from __future__ import annotations

import time

from bench.common import row, write_result
from pool.sim.simulate import parse_policy, simulate_many
from pool.sim.traces import load_trace

POLICIES = ["queue_depth", "keda_hpa", "ray", "spark_da", "aws_target_tracking"]
TRACE = "poisson:n=10000"


def main() -> None:
    tasks = load_trace(TRACE)
    started = time.perf_counter()
    cpu = time.process_time()
    report = simulate_many(tasks, [parse_policy(p) for p in POLICIES], source=TRACE, profile="ec2", seed=0)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    simulated = max(r.get("makespan") or 0 for r in report["results"])
    result = {"tasks": len(tasks), "policies": POLICIES, "trace": TRACE, "wall_s": wall, "cpu_s": cpu,
              "per_policy_s": report["runtime"]["seconds"], "simulated_s_per_policy": simulated}
    table = [row(f"{len(tasks)} tasks x {len(POLICIES)} policies, wall seconds", round(wall, 1), "< 60 s", wall < 60,
                 f"CPU {cpu:.1f}s; each policy simulates ~{simulated / 3600:.1f} h of cloud time")]
    print(write_result("simulator", result, table))


if __name__ == "__main__":
    main()
