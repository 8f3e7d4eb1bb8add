"""Writes BENCHMARKS.md from bench/results/*.json: one table per benchmark, targets side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

ORDER = ["reaction", "drain", "overhead", "popkill", "tts", "tick", "faults", "chaos", "spark", "condor", "slurm", "scalein", "policies",
         "policies-sweep", "waittarget", "simulator", "fuzz"]
TITLES = {
    "reaction": "Reaction to a burst (`make bench-reaction`)",
    "drain": "Elastic vs fixed pool on two bursts (`make bench-drain`)",
    "overhead": "Throughput overhead of a pool-managed worker (`make bench-overhead`)",
    "spark": "Elastic Spark domain vs a static cluster (`make bench-spark`)",
    "condor": "Elastic HTCondor domain vs 6 static startds on two bursts of jobs (`make bench-condor`)",
    "slurm": ("Slurm: a burst of 40 jobs on 8 powered-down CLOUD nodes the pool powers up, vs 8 static nodes "
              "(`make bench-slurm`)"),
    "scalein": ("Scale-in while workers hold long tasks: tasks restarted, busy workers killed and worker-seconds, "
                "side by side with a baseline revision (`make bench-scalein`)"),
    "policies": "Decision quality of policies on synthetic traces (`make bench-policies`)",
    "tts": "Time to scale from 0 to N nodes on the simulated EC2 site (`make bench-tts`)",
    "faults": "Failure mix: throttling storm, boot failures, a site failing every launch (`make bench-faults`)",
    "popkill": "Workers SIGKILLed at random instants: kombu's Redis transport vs the atomic pop (`make bench-popkill`)",
    "chaos": "Chaos suite: real managers, workers and brokers under faults (`make chaos`)",
    "policies-sweep": "Policy parameter sweep toward each trace's baseline corner (`python -m bench.policies --sweep`)",
    "waittarget": ("Wait targets: `wait_target` against the cheapest configuration of any other built-in policy "
                   "meeting the same p95 wait, found in hindsight (`make bench-policies`)"),
    "simulator": "Simulator speed (`make bench-simulator`)",
    "tick": ("Control-plane cost: one manager tick and its memory at 1,000 and 10,000 nodes, and side by side "
             "with a baseline revision (`make bench-tick`)"),
    "fuzz": "Spec loader fuzzing: generated YAML and bytes through the loader and validation (`make bench-fuzz`)",
    "api": ("Operator API: 100 domains of 100 nodes, 50 concurrent clients, resize to an event-stream client, "
            "Schemathesis (`make bench-api`)"),
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
    render = RENDERERS.get(name)
    if render is not None:
        lines += ["", *render(data)]
    extra = data.get("markdown")
    if extra:
        lines += ["", extra]
    lines.append("")
    return lines


def condor(data: dict[str, Any]) -> list[str]:
    """bench/condor.py: the static and the elastic domain side by side, per run and per burst."""
    static, elastic = data.get("static") or {}, data.get("elastic") or {}
    setup = data.get("setup") or {}
    lines = [f"{setup.get('jobs', '?')} jobs of {setup.get('job_seconds', '?')} s in {setup.get('bursts', '?')} "
             f"bursts {fmt(setup.get('gap_s', '?'))} s apart; static: {setup.get('static', '?')}; elastic: "
             f"{setup.get('elastic', '?')}, scaling {json.dumps(setup.get('scaling', {}))}. A startd counts "
             "from its launch request until it is terminated.", "",
             "| | static | elastic | elastic / static |", "|---|---|---|---|"]

    def pair(label: str, key: str, with_ratio: bool = False) -> None:
        s, e = static.get(key), elastic.get(key)
        r = fmt(round(e / s, 3)) if with_ratio and isinstance(s, (int, float)) and isinstance(e, (int, float)) \
            and s else ""
        lines.append(f"| {label} | {fmt(s) if s is not None else '-'} | {fmt(e) if e is not None else '-'} | {r} |")

    pair("makespan, s (first submit to last job's end)", "makespan_s", True)
    pair("slot-seconds (live startds, sampled)", "slot_seconds", True)
    pair("slot-seconds (node records' history)", "slot_seconds_from_records", True)
    pair("job-seconds (the jobs' own sleeps)", "job_seconds")
    pair("peak startds", "peak_startds")
    pair("startds launched", "startds_launched")
    pair("launches failed", "launches_failed")
    pair("jobs done", "jobs_done")
    pair("jobs lost", "lost")
    pair("jobs started more than once", "started_more_than_once")
    pair("back to 0 startds, s after the last job", "back_to_zero_s")
    for i, (sb, eb) in enumerate(zip(static.get("bursts", []), elastic.get("bursts", [])), 1):
        for label, key in (("submitted, s after the first", "submitted_s"),
                           ("live startds at its submission", "live_startds_at_submit"),
                           ("its last job's end, s after its submission", "last_job_end_s"),
                           ("first new startd: launch requested, s", "first_new_launch_request_s"),
                           ("first new startd: joined, s", "first_new_joined_s"),
                           ("first job on a new startd, s", "time_to_first_new_claim_s")):
            s, e = sb.get(key), eb.get(key)
            lines.append(f"| burst {i}: {label} | {fmt(s) if s is not None else '-'} | "
                         f"{fmt(e) if e is not None else '-'} | |")
    return lines


def slurm(data: dict[str, Any]) -> list[str]:
    """bench/slurm.py: the static and the elastic cluster side by side, then where a power up's time goes."""
    static, elastic = data.get("static") or {}, data.get("elastic") or {}
    setup = data.get("setup") or {}
    lines = [f"{setup.get('jobs', '?')} one-node jobs of {setup.get('job_seconds', '?')} s "
             f"({setup.get('submission', '?')}); elastic: {setup.get('elastic', '?')}, SuspendTime "
             f"{setup.get('suspend_time_s', '?')} s; static: {setup.get('static', '?')}. A job's start is the "
             "time its first line was written.", "",
             "| | static | elastic | elastic / static |", "|---|---|---|---|"]

    def cell(v: Any) -> str:
        return fmt(v) if v is not None else "-"

    for label, key, with_ratio in (("sbatch to job start, median, s", "start_s_median", True),
                                   ("sbatch to job start, p95, s", "start_s_p95", True),
                                   ("sbatch to job start, min / max, s", "", False),
                                   ("makespan, s (first sbatch to the last job's end)", "makespan_s", True),
                                   ("job-seconds (the jobs' own sleeps)", "job_seconds", False),
                                   ("nodes that ran a job", "nodes_used", False),
                                   ("jobs done", "jobs_done", False), ("jobs lost", "lost", False)):
        if not key:
            lines.append(f"| {label} | {cell(static.get('start_s_min'))} / {cell(static.get('start_s_max'))} | "
                         f"{cell(elastic.get('start_s_min'))} / {cell(elastic.get('start_s_max'))} | |")
            continue
        s, e = static.get(key), elastic.get(key)
        r = fmt(round(e / s, 3)) if with_ratio and isinstance(s, (int, float)) and isinstance(e, (int, float)) \
            and s else ""
        lines.append(f"| {label} | {cell(s)} | {cell(e)} | {r} |")
    lines += ["", f"Elastic, where a power up's time goes (medians over the {cell(elastic.get('nodes_powered_up'))} "
              "nodes' first power up, s):", "", "| step | by | s |", "|---|---|---|"]
    for label, by, key in (("first job's sbatch to ResumeProgram called", "slurmctld", "ctld_submit_to_resume_s_median"),
                           ("ResumeProgram called to its store event", "pool (program)", "resume_program_s_median"),
                           ("store event to the worker's launch request", "pool (manager)",
                            "resume_to_launch_s_median"),
                           ("launch request to 'Node cloudK now responding'", "pool (worker: agent, munged, slurmd)",
                            "launch_to_registered_s_median"),
                           ("**ResumeProgram called to registered (the pool's share)**", "pool",
                            "pool_share_s_median"),
                           ("registered to the first job's start", "slurmctld (PrologSlurmctld, launch)",
                            "ctld_registered_to_start_s_median"),
                           ("registered to the node record JOINED", "pool (probe)", "registered_to_joined_s_median"),
                           ("sbatch to start of each node's first job (all of it)", "both", "cold_start_s_median")):
        lines.append(f"| {label} | {by} | {cell(elastic.get(key))} |")
    lines += ["", f"Back to 0 live workers {cell(elastic.get('back_to_zero_s'))} s after the last job; node states "
              f"then: {', '.join(elastic.get('node_states_at_end') or []) or '-'}; workers launched: "
              f"{cell(elastic.get('workers_launched'))}."]
    return lines


RENDERERS: dict[str, Callable[[dict[str, Any]], list[str]]] = {"condor": condor, "slurm": slurm}


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
