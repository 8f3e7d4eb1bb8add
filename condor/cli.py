"""`pool condor`: a condor-startd domain's slots and idle jobs, the exports that point HTCondor's
clients at its pool, and job submission from a submit file.

Imports ``pool.core``, ``pool.state``, ``sensors.condor`` and the rest of ``condor``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click

from condor.central import central_dir, read_central
from condor.install import USER, CondorNotInstalled, chroot_dir, home
from pool.core.secrets import redact, redact_text


def _fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr (secrets masked), then exit."""
    text = " ".join(redact_text(str(message)).split())
    click.echo(f"error: {text[:400]}", err=True)
    sys.exit(code)


def _central(domain: str) -> dict[str, Any]:
    try:
        data = read_central(domain)
    except (OSError, RuntimeError) as exc:
        _fail(f"cannot read the state directory: {exc}")
    if data is None or not isinstance(data.get("collector"), str):
        base = central_dir(domain).parent
        known = sorted(p.parent.name for p in base.glob("*/central.json")) if base.is_dir() else []
        _fail(f"domain {domain!r} has no HTCondor pool recorded (condor domains: {', '.join(known) or 'none'}); "
              "is `pool up` running?")
    return data


def client_env(data: dict[str, Any]) -> dict[str, str]:
    """``_CONDOR_*`` settings that point condor_q, condor_submit and the Python bindings at the pool."""
    env = {"_CONDOR_COLLECTOR_HOST": str(data["collector"]), "_CONDOR_ENABLE_IPV6": "False",
           "_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS": "CLAIMTOBE",
           "_CONDOR_SEC_CLAIMTOBE_USER": USER, "_CONDOR_SEC_CLAIMTOBE_INCLUDE_DOMAIN": "False"}
    if data.get("schedd") and not data.get("adopted"):
        env["_CONDOR_SCHEDD_HOST"] = str(data["schedd"])
    return env


@click.group("condor")
def condor() -> None:
    """HTCondor domains: slots and idle jobs, client settings, job submission."""


@condor.command("env")
@click.argument("domain")
def env_cmd(domain: str) -> None:
    """Print the exports that point condor_submit, condor_q and the Python bindings at DOMAIN's pool."""
    data = _central(domain)
    for key, value in client_env(data).items():
        click.echo(f"export {key}={value}")
    if not data.get("adopted"):
        click.echo(f"# submit from a directory under {home()}: the schedd runs in a chroot and sees it at the same path")


def _status(domain: str, data: dict[str, Any]) -> dict[str, Any]:
    import htcondor2

    from sensors.condor import CondorIdleSensor, slot_states

    sensor = CondorIdleSensor(collector=str(data["collector"]), domain=domain, schedds=data.get("schedds") or (),
                              constraint=data.get("constraint"), worker_cpus=int(data.get("worker_cpus") or 1),
                              worker_memory=int(data.get("worker_memory") or 1024),
                              worker_disk=int(data.get("worker_disk") or 10 * 1024 * 1024), min_interval=0)
    reading = sensor.read(time.time())
    try:
        slots = slot_states(htcondor2.Collector(str(data["collector"])), domain)
    except Exception as exc:  # noqa: BLE001
        slots = {"error": f"{type(exc).__name__}: {exc}"}
    return {"domain": domain, "collector": data["collector"], "state": data.get("state"),
            "adopted": bool(data.get("adopted")), "slots": slots, "value": reading.value, "error": reading.error,
            "jobs": dict(reading.detail), "not_counted": list(reading.notes)}


@condor.command("status")
@click.argument("domain")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def status(domain: str, as_json: bool) -> None:
    """DOMAIN's startds by slot state, and its idle jobs: counted, and not counted with the reason."""
    data = _central(domain)
    out = redact(_status(domain, data))
    if as_json:
        click.echo(json.dumps(out, indent=1, sort_keys=True))
        return
    click.echo(f"domain {domain}: pool {out['collector']}{' (adopted)' if out['adopted'] else ''}, "
               f"central manager {out['state'] or 'unknown'}")
    slots = out["slots"]
    if "error" in slots:
        click.echo(f"slots: cannot read the collector: {slots['error']}")
    else:
        states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(slots["states"].items())) or "none"
        click.echo(f"startds: {slots['startds']}; job slots: {states}")
        for node, row in sorted(slots["nodes"].items()):
            click.echo(f"  {node}: {row}")
    if out["error"]:
        click.echo(f"idle jobs: cannot read: {out['error']}")
        return
    jobs = out["jobs"]
    click.echo(f"idle jobs: {int(jobs.get('idle_jobs', 0))}, counted {int(jobs.get('counted_jobs', 0))} "
               f"({jobs.get('idle_workers_needed', 0):g} workers' worth); running on this domain: "
               f"{int(jobs.get('running_jobs', 0))}; held: {int(jobs.get('held_jobs', 0))}")
    value = out["value"]
    click.echo(f"wanted: {math.ceil(value) if value is not None else '?'} workers (max {data.get('max', '?')})")
    for note in out["not_counted"]:
        click.echo(f"not counted: {note}")


@condor.command("submit")
@click.argument("domain")
@click.argument("submit_file", type=click.Path(dir_okay=False, path_type=Path))
def submit(domain: str, submit_file: Path) -> None:
    """Submit the jobs of SUBMIT_FILE (condor_submit's format, QUEUE statement included) to DOMAIN's schedd.

    Relative paths in it are taken from the submit file's directory, as when condor_submit runs there."""
    data = _central(domain)
    path = submit_file.resolve()
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read {submit_file}: {getattr(exc, 'strerror', None) or exc}")
    if not data.get("adopted"):
        try:
            root = chroot_dir()
            path.relative_to(home(root))
        except ValueError:
            _fail(f"{submit_file} is outside {home(root)}: the schedd runs in a chroot and sees only that "
                  "directory at the same path; put the submit file and its inputs there")
        except CondorNotInstalled as exc:
            _fail(str(exc))
    os.environ.update(client_env(data))
    import htcondor2

    htcondor2.reload_config()
    try:
        description = htcondor2.Submit(text)
        if "initialdir" not in {k.lower() for k in description.keys()}:
            description["initialdir"] = str(path.parent)
        collector = htcondor2.Collector(str(data["collector"]))
        schedd = htcondor2.Schedd(collector.locate(htcondor2.DaemonType.Schedd, data["schedd"]) if data.get("schedd")
                                  else collector.locate(htcondor2.DaemonType.Schedd))
        with contextlib.chdir(path.parent):  # the client resolves a relative executable from its working directory
            result = schedd.submit(description)
    except Exception as exc:  # noqa: BLE001  (the schedd's own words say what is wrong)
        _fail(f"submit to {domain} failed: {exc}", 1)
    click.echo(f"{result.num_procs()} job(s) submitted to cluster {result.cluster()} on {domain}")
