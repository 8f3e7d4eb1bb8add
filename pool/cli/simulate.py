"""`pool simulate`: replay a workload trace through the real manager and policies on a simulated cloud."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

err_console = Console(stderr=True, emoji=False)


def _fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr naming what is wrong (secrets masked, at most about 400 characters), then exit."""
    from pool.core.secrets import redact_text

    text = " ".join(redact_text(str(message)).split())
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    if len(text) > 400:
        text = text[:397] + "..."
    err_console.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """A float option that is a finite number (``nan`` and ``inf`` pass click's ranges)."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value!r} is not a finite number of seconds")
    return value


def _pairs(text: str | None, what: str) -> dict[str, Any]:
    """``key=value,key=value`` -> a dict with numbers parsed."""
    from pool.sim.simulate import parse_value

    out: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            _fail(f"{what}: {item!r} is not key=value (e.g. stabilization=60,idle_timeout=30)")
        out[key.strip()] = parse_value(value)
    return out


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


@click.command()
@click.option("--trace", "trace", required=True, metavar="TRACE",
              help="a file (.csv, .json, .swf, optionally .gz) or a family: burst, periodic, diurnal, poisson, "
                   "heavy, spiky, with parameters as in burst:n=2000,service=30")
@click.option("--policy", "policies", multiple=True, required=True, metavar="POLICY",
              help="NAME or NAME:key=value,...; repeat to compare policies")
@click.option("--site-profile", default="ec2", show_default=True, metavar="PROFILE",
              help="ec2 or local, optionally with overrides: ec2:never_boot=0.02,capacity=200")
@click.option("--seed", default=0, show_default=True, type=int, help="seed of the simulated cloud")
@click.option("--out", default="sim-report", show_default=True, type=click.Path(file_okay=False),
              help="directory for report.json and report.png")
@click.option("--spec", "spec_path", default=None, type=click.Path(dir_okay=False),
              help="YAML with domain fields to start from: min, max, celery (concurrency), timeouts, scaling")
@click.option("--scaling", default=None, metavar="K=V,...", help="scaling: overrides, e.g. stabilization=60")
@click.option("--tick", default=1.0, show_default=True, type=click.FloatRange(min=0.01, max=86400),
              callback=_finite, help="simulated seconds between decider ticks")
@click.option("--tail", default=900.0, show_default=True, type=click.FloatRange(min=0, max=1e8), callback=_finite,
              help="after the last task, simulate at most this long for the domain to shrink to min")
@click.option("--horizon", default=None, type=click.FloatRange(min=0, max=1e9), callback=_finite,
              help="stop at this simulated time even if tasks remain (default: last arrival + 6 h + tail)")
@click.option("--swf-processors-per-task", default=1, show_default=True, type=click.IntRange(min=0),
              help="SWF: a job on P processors becomes ceil(P / this) tasks; 0: one task per job")
@click.option("--max-tasks", default=None, type=click.IntRange(min=1), help="use only the first N tasks")
@click.option("--target", "targets", multiple=True, metavar="KIND=SECONDS",
              help="a wait target to check every policy against: p95=30 or mean=5; repeatable")
def simulate(trace: str, policies: tuple[str, ...], site_profile: str, seed: int, out: str, spec_path: str | None,
             scaling: str | None, tick: float, tail: float, horizon: float | None, swf_processors_per_task: int,
             max_tasks: int | None, targets: tuple[str, ...]) -> None:
    """Replay TRACE through the real manager for each --policy on a simulated cloud; write a report.

    Reports per policy worker-hours (launch to termination, as a cloud bills), mean and p95 task
    wait, makespan, peak workers and launches, next to the oracle (an infinite pool with zero boot
    time). See docs/simulator.md.
    """
    from pool.sim.simulate import SimulationError, parse_policy, parse_target, simulate_many, write_report
    from pool.sim.traces import TraceError, load_trace
    from pool.sites.sim import parse_profile

    try:
        choices = [parse_policy(p) for p in policies]
        wanted = [parse_target(t) for t in targets]
        profile = parse_profile(site_profile)
    except (SimulationError, TraceError, ValueError) as exc:
        _fail(str(exc))
    try:
        tasks = load_trace(trace, processors_per_task=swf_processors_per_task or None, max_tasks=max_tasks)
    except (SimulationError, TraceError) as exc:
        _fail(str(exc))
    except (ValueError, ArithmeticError) as exc:  # a parameter the family's formulas cannot take
        _fail(f"--trace {trace!r}: {exc}; see docs/simulator.md for each family's parameters")
    except OSError as exc:
        _fail(f"--trace {trace!r}: cannot read it: {exc.strerror or exc}")
    base: dict[str, Any] = {}
    if spec_path is not None:
        try:
            loaded = yaml.safe_load(Path(spec_path).read_text())
        except OSError as exc:
            _fail(f"cannot read {spec_path}: {exc.strerror}")
        except yaml.YAMLError as exc:
            _fail(f"{spec_path}: not valid YAML: {getattr(exc, 'problem', exc)}")
        if not isinstance(loaded, dict):
            _fail(f"{spec_path}: expected a mapping of domain fields (min, max, celery, scaling, timeouts)")
        base = loaded
    try:
        report = simulate_many(tasks, choices, source=trace, profile=profile, seed=seed, tick=tick, tail=tail,
                               horizon=horizon, base=base, scaling=_pairs(scaling, "--scaling"), targets=wanted)
    except SimulationError as exc:
        _fail(str(exc))
    try:
        json_path, png_path = write_report(report, out)
    except OSError as exc:
        _fail(f"cannot write the report to {out}: {exc.strerror or exc}; choose another --out directory", 1)

    console = Console(width=None if sys.stdout.isatty() else 140, emoji=False)
    table = Table("POLICY", "WORKER-H", "MEAN WAIT s", "P95 WAIT s", "MAKESPAN s", "PEAK", "LAUNCHES",
                  "UNFINISHED", "TARGETS MET", title=escape(f"{trace}: {len(tasks)} tasks, site {profile.name}, seed {seed}"))
    for r in report["results"]:
        met = ", ".join(f"{k}: {'yes' if v['met'] else 'no'}" for k, v in r.get("targets", {}).items()) or "-"
        table.add_row(escape(str(r["policy"])), _fmt(r["worker_hours"], 2), _fmt(r["mean_wait"]), _fmt(r["p95_wait"]),
                      _fmt(r["makespan"]), _fmt(r["peak_workers"]), _fmt(r["launches"]), _fmt(r["unfinished"]),
                      escape(met))
    console.print(table)
    console.print(f"report: {json_path}\nplot:   {png_path}", highlight=False, markup=False)
