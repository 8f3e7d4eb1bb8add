"""Writes BENCHMARKS.md from bench/results/*.json: one table per benchmark, targets side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

ORDER = ["reaction", "drain", "overhead", "popkill", "tts", "tick", "faults", "chaos", "spark", "scalein", "policies",
         "policies-sweep", "simulator", "fuzz"]
TITLES = {
    "reaction": "Reaction to a burst (`make bench-reaction`)",
    "drain": "Elastic vs fixed pool on two bursts (`make bench-drain`)",
    "overhead": "Throughput overhead of a pool-managed worker (`make bench-overhead`)",
    "spark": "Elastic Spark domain vs a static cluster (`make bench-spark`)",
    "scalein": ("Scale-in while workers hold long tasks: tasks restarted, busy workers killed and worker-seconds, "
                "side by side with a baseline revision (`make bench-scalein`)"),
    "policies": "Decision quality of policies on synthetic traces (`make bench-policies`)",
    "tts": "Time to scale from 0 to N nodes on the simulated EC2 site (`make bench-tts`)",
    "faults": "Failure mix: throttling storm, boot failures, a site failing every launch (`make bench-faults`)",
    "popkill": "Workers SIGKILLed at random instants: kombu's Redis transport vs the atomic pop (`make bench-popkill`)",
    "chaos": "Chaos suite: real managers, workers and brokers under faults (`make chaos`)",
    "policies-sweep": "Policy parameter sweep toward each trace's baseline corner (`python -m bench.policies --sweep`)",
    "simulator": "Simulator speed (`make bench-simulator`)",
    "tick": ("Control-plane cost: one manager tick and its memory at 1,000 and 10,000 nodes, and side by side "
             "with a baseline revision (`make bench-tick`)"),
    "fuzz": "Spec loader fuzzing: generated YAML and bytes through the loader and validation (`make bench-fuzz`)",
}


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def section(name: str, data: dict[str, Any]) -> list[str]:
    lines = [f"## {TITLES.get(name, name)}", ""]
    m = data.get("machine", {})
    lines.append(f"Run {data.get('date', '?')} on {m.get('cores', '?')} cores, Python {m.get('python', '?')}; "
                 f"raw numbers in `bench/results/{name}.json`.")
    lines.append("")
    table = data.get("table")
    if table:
        lines += ["| metric | value | target | met | note |", "|---|---|---|---|---|"]
        for r in table:
            ok = {True: "yes", False: "**no**", None: ""}[r.get("ok")]
            lines.append(f"| {r['metric']} | {fmt(r['value'])} | {r.get('target', '')} | {ok} | {r.get('note', '')} |")
    else:
        lines += ["| field | value |", "|---|---|"]
        for k, v in data.items():
            if isinstance(v, (int, float, str)) and k not in ("date", "benchmark"):
                lines.append(f"| {k} | {fmt(v)} |")
    extra = data.get("markdown")
    if extra:
        lines += ["", extra]
    lines.append("")
    return lines


def main() -> None:
    found = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}
    names = [n for n in ORDER if n in found] + sorted(n for n in found if n not in ORDER)
    lines = [
        "# Benchmarks",
        "",
        "Every number here is written by `make bench` (or `make bench-NAME`) on the machine named in each",
        "section, comparing side by side in one run. Tests never assert speed; these scripts measure it.",
        "A target that is not met is shown as **no**, with what was measured.",
        "",
    ]
    for name in names:
        lines += section(name, found[name])
    (ROOT / "BENCHMARKS.md").write_text("\n".join(lines))
    print(f"BENCHMARKS.md: {', '.join(names) or 'no results yet'}")


if __name__ == "__main__":
    main()
