"""`pool spark`: submit a job to a Spark domain, print a domain's master URL."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from typing import Any, NoReturn

import click

from pool.core.secrets import redact_text
from pool.state.redisserver import free_port
from spark.master import known_masters, read_master
from spark.rest import SparkNotInstalled, Unreachable, app_api, get_json, spark_bin, spark_home


def _fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr (secrets masked, at most about 400 characters), then exit."""
    text = " ".join(redact_text(str(message)).split())
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    if len(text) > 400:
        text = text[:397] + "..."
    click.echo(f"error: {text}", err=True)
    sys.exit(code)


def _interval(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not math.isfinite(value) or not 0.1 <= value <= 3600:
        raise click.BadParameter(f"{value!r} is not between 0.1 and 3600 seconds")
    return value


def _masters() -> dict[str, dict[str, Any]]:
    try:
        return known_masters()
    except (OSError, RuntimeError) as exc:  # the state directory cannot be used
        _fail(str(exc) if "state directory" in str(exc) else
              f"cannot read the recorded Spark masters: {exc}; set POOL_HOME to a directory you can write")


def _master_of(domain: str | None) -> tuple[str, dict[str, Any]]:
    """The recorded master of ``domain`` (or of the only Spark domain), or a one-line error."""
    masters = _masters()
    if domain is None:
        if len(masters) == 1:
            return next(iter(masters.items()))
        if not masters:
            _fail("no Spark domain has a master: `pool apply -f examples/spark-domain.yaml`, then `pool up`")
        _fail(f"several Spark domains ({', '.join(sorted(masters))}): name one with --domain")
    try:
        data = read_master(domain)
    except (OSError, RuntimeError, ValueError):
        data = None
    if data is None:
        known = ", ".join(sorted(masters)) or "none"
        _fail(f"domain {domain!r} has no Spark master recorded (Spark domains with one: {known}); "
              "is `pool up` running?")
    if not isinstance(data.get("url"), str) or not str(data["url"]).startswith("spark://"):
        _fail(f"the recorded Spark master of {domain} has no spark:// URL; restart `pool up` to record it again", 1)
    return domain, data


@click.group("spark")
def spark() -> None:
    """Spark domains: submit jobs and find the master."""


@spark.command("master")
@click.argument("domain")
@click.option("--ui", is_flag=True, help="print the master's web UI address instead")
def master(domain: str, ui: bool) -> None:
    """Print the domain's master URL (spark://host:port) for notebooks and existing scripts."""
    _, data = _master_of(domain)
    if data.get("state") == "starting":
        click.echo(f"note: the master of {domain} is still starting", err=True)
    if ui and not isinstance(data.get("ui"), str):
        _fail(f"the recorded Spark master of {domain} has no web UI address", 1)
    click.echo(redact_text(data["ui"] if ui else data["url"]))


@spark.command("submit", context_settings={"ignore_unknown_options": True,
                                           "allow_interspersed_args": False})
@click.option("-d", "--domain", help="the Spark domain (default: the only one)")
@click.option("--conf", "confs", multiple=True, metavar="KEY=VALUE", help="extra Spark property")
@click.option("--log-level", default="WARN", show_default=True, help="driver log level")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="print task progress from the driver's REST API")
@click.option("--interval", default=2.0, show_default=True, type=float, callback=_interval,
              help="seconds between progress lines")
@click.argument("tokens", nargs=-1, required=True, type=click.UNPROCESSED, metavar="[SPARK-SUBMIT OPTIONS] SCRIPT [ARGS]")
def submit(domain: str | None, confs: tuple[str, ...], log_level: str, progress: bool, interval: float,
           tokens: tuple[str, ...]) -> None:
    """Run SCRIPT with spark-submit on the domain's master (with its decommission defaults).

    spark-submit's own options (--executor-memory 512m, --name NAME, --py-files ...) may come before
    SCRIPT; a job that no worker of the domain can ever run is refused with the reason."""
    options, script, args = _split(tokens)
    name, data = _master_of(domain)
    host = str(data.get("host") or "127.0.0.1")
    try:
        ui_port = free_port(host)
    except (OSError, ValueError) as exc:
        _fail(f"cannot find a free port for the driver UI on {host!r} (the master's recorded host): {exc}", 1)
    conf: dict[str, str] = dict(data.get("submit_conf") or {})
    conf.update({
        "spark.driver.host": host,
        "spark.driver.bindAddress": host,
        "spark.ui.port": str(ui_port),
        "spark.port.maxRetries": "0",  # the driver UI is where this command says it is
        "spark.log.level": log_level,
    })
    for item in confs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"--conf {item!r}: expected KEY=VALUE, e.g. spark.executor.memory=512m")
        conf[key] = value
    _check_fits(name, data, conf, options)
    try:
        cmd = [spark_bin("spark-submit"), "--master", str(data["url"]), *options]
        env = dict(os.environ, SPARK_HOME=str(spark_home()), SPARK_LOCAL_IP=host)
    except SparkNotInstalled as exc:
        _fail(str(exc))
    for key, value in sorted(conf.items()):
        cmd += ["--conf", f"{key}={value}"]
    cmd += [script, *args]
    # driver and executors run the same Python as this command
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    driver_ui = f"http://{host}:{ui_port}"
    click.echo(redact_text(f"submitting {script} to {name} ({data['url']}); driver UI: {driver_ui}"), err=True)
    try:
        proc = subprocess.Popen(cmd, env=env)
    except OSError as exc:
        _fail(f"cannot run {cmd[0]}: {exc.strerror or exc}", 1)
    stop = threading.Event()
    watcher = threading.Thread(target=_progress, args=(driver_ui, stop, interval), daemon=True)
    if progress:
        watcher.start()
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        code = proc.wait()
    stop.set()
    if progress:
        watcher.join(interval + 5)
    click.echo(f"job {'finished' if code == 0 else f'failed (exit {code})'}", err=True)
    sys.exit(code)


#: spark-submit options that take no value; every other option before SCRIPT takes the next word.
_FLAGS = frozenset({"--verbose", "-v", "--supervise", "--help", "-h", "--version"})


def _split(tokens: tuple[str, ...]) -> tuple[list[str], str, list[str]]:
    """spark-submit's options, the script, and the script's own arguments."""
    options: list[str] = []
    i = 0
    while i < len(tokens) and tokens[i].startswith("-"):
        token = tokens[i]
        if token == "--master":
            _fail("--master: the domain's master is used (choose the domain with --domain)")
        takes_value = token not in _FLAGS and "=" not in token
        if takes_value and i + 1 >= len(tokens):
            _fail(f"{token}: expected a value after it, then the script")
        options += tokens[i:i + 2] if takes_value else [token]
        i += 2 if takes_value else 1
    if i >= len(tokens):
        _fail("no script to submit: give SCRIPT after spark-submit's options, e.g. "
              "`pool spark submit --executor-memory 512m job.py`")
    return options, tokens[i], list(tokens[i + 1:])


def _mebibytes(text: str) -> float | None:
    """A JVM memory string (512m, 2g; MiB without a unit) in MiB; None if it is not one."""
    text = text.strip().lower().removesuffix("b")
    units = {"k": 1 / 1024, "m": 1.0, "g": 1024.0, "t": 1024.0 ** 2}
    number, unit = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 1.0)
    try:
        return float(number) * unit
    except ValueError:
        return None


def _check_fits(name: str, data: dict[str, Any], conf: dict[str, str], options: list[str]) -> None:
    """Refuse a job that no worker of the domain can ever run (it would wait forever), saying why."""
    if data.get("max") == 0:
        _fail(f"domain {name} has max: 0, so no worker will ever run this job; apply it with max >= 1")
    asked = dict(conf)
    for flag, key in (("--executor-memory", "spark.executor.memory"), ("--executor-cores", "spark.executor.cores")):
        if flag in options:
            asked[key] = options[options.index(flag) + 1]
        asked.update({k: v for k, _, v in (o.partition("=") for o in options) if k == flag})
    offer = str(data.get("worker_memory") or "")
    want, have = _mebibytes(asked.get("spark.executor.memory", "1g")), _mebibytes(offer)
    if want is not None and have is not None and want > have:
        _fail(f"executor memory {asked.get('spark.executor.memory', '1g')} is more than a worker of {name} offers "
              f"({offer}: its spark.worker_memory), so no executor would ever start; ask for at most {offer} "
              "(--executor-memory) or raise the domain's spark.worker_memory")
    cores, offered = asked.get("spark.executor.cores", "1"), data.get("worker_cores")
    if isinstance(offered, int) and cores.isdigit() and int(cores) > offered:
        _fail(f"executor cores {cores} are more than a worker of {name} offers ({offered}: its "
              "spark.worker_cores); ask for at most that many (--executor-cores)")


def _progress(driver_ui: str, stop: threading.Event, interval: float) -> None:
    """Print a line whenever the job's task counts change (from the driver's REST API)."""
    last = ""
    app_id: str | None = None
    while not stop.wait(interval):
        try:
            if app_id is None:
                apps = get_json(f"{driver_ui}/api/v1/applications", timeout=1.0, what="driver UI")
                app_id = str(apps[0]["id"]) if apps else None
                if app_id is None:
                    continue
            jobs = app_api(driver_ui, app_id, "jobs", timeout=1.0)
            executors = app_api(driver_ui, app_id, "executors", timeout=1.0)
        except (Unreachable, LookupError, TypeError):
            continue
        done = sum(int(j.get("numCompletedTasks", 0)) + int(j.get("numSkippedTasks", 0)) for j in jobs)
        total = sum(int(j.get("numTasks", 0)) for j in jobs)
        running = sum(int(j.get("numActiveTasks", 0)) for j in jobs)
        finished = sum(1 for j in jobs if j.get("status") == "SUCCEEDED")
        workers = sum(1 for e in executors if e.get("id") != "driver" and e.get("isActive", True))
        line = (f"progress: jobs {finished}/{len(jobs)}, tasks {done}/{total} done, {running} running, "
                f"{workers} executor(s)")
        if line != last:
            click.echo(f"{time.strftime('%H:%M:%S')} {line}", err=True)
            last = line
