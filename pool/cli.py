"""The `pool` command line: run the manager, apply domains, inspect and resize them."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

import click
import redis
import yaml
from rich.console import Console
from rich.table import Table

from pool.leases import Leases
from pool.model import (
    NodeState,
    PluginParamError,
    SpecError,
    UnknownPlugin,
    parse_domain_spec,
)
from pool.redisserver import RedisUnavailable, resolve_url, state_dir, stop_embedded
from pool.store import Store

console = Console()
#: Sites that `pool up` runs domains on.
LIVE_SITES = ("local",)
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr naming what is wrong, then exit."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


def open_store(*, start: bool) -> tuple[str, Store]:
    try:
        url = resolve_url(start=start)
    except RedisUnavailable as exc:
        fail(str(exc))
    store = Store.from_url(url, namespace=os.environ.get("POOL_NAMESPACE", "ep"))
    try:
        store.r.ping()
    except (redis.RedisError, OSError) as exc:
        fail(f"cannot reach the pool's Redis at {url.split('@')[-1]}: {exc}")
    return url, store


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="log debug detail")
def main(verbose: bool) -> None:
    """elastic-pool: size worker domains from real queue depth."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


# ---------------------------------------------------------------------------
# up / down
# ---------------------------------------------------------------------------


def _manager_pidfile() -> Path:
    return state_dir() / "manager.pid"


@main.command()
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(min=0.01),
              help="seconds between decider ticks")
@click.option("--drain-timeout", default=900.0, show_default=True, help="seconds `pool down` waits for drains")
@click.option("--quiet", is_flag=True, help="no per-tick status line")
@click.option("--lease-ttl", default=5.0, show_default=True, type=click.FloatRange(min=0.5),
              help="seconds a leader role outlives its holder's last renewal")
@click.option("--provisioners", default=2, show_default=True, type=click.IntRange(min=1),
              help="provisioner worker threads taking launch/terminate work from the shared queue")
@click.option("--list-interval", default=1.0, show_default=True, type=click.FloatRange(min=0.0),
              help="least seconds between two listings of a site's machines")
@click.option("--reclaim-after", default=30.0, show_default=True, type=click.FloatRange(min=1.0),
              help="seconds before work taken by a dead provisioner worker is taken over")
@click.option("--metrics-port", default=None, type=click.IntRange(min=0, max=65535),
              help="serve Prometheus metrics on 127.0.0.1:PORT/metrics (0: a free port)")
def up(interval: float, drain_timeout: float, quiet: bool, lease_ttl: float, provisioners: int,
       list_interval: float, reclaim_after: float, metrics_port: int | None) -> None:
    """Run the domain manager in the foreground (Ctrl-C stops it; workers keep running)."""
    from pool.drivers import make_driver
    from pool.manager import Manager
    from pool.provisioner import Provisioner

    url, store = open_store(start=True)
    provisioner = Provisioner({"local": make_driver("local")})
    from spark.master import SparkMasterService

    manager_id = f"{socket.gethostname()}-{os.getpid()}"
    leases = Leases(store.r, namespace=store.ns, holder=manager_id, ttl=lease_ttl)
    from pool.metrics import Metrics

    metrics = Metrics() if metrics_port is not None else None
    manager = Manager(store=store, provisioner=provisioner, redis_url=url, services=[SparkMasterService()],
                      leases=leases, manager_id=manager_id, workers=provisioners, list_interval=list_interval,
                      reclaim_after=reclaim_after, metrics=metrics)
    info: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    if metrics is not None and metrics_port is not None:
        info["metrics"] = f"http://127.0.0.1:{metrics.serve(metrics_port)}/metrics"
    store.clear_shutdown()
    store.register_manager(manager.manager_id, info)
    _manager_pidfile().write_text(str(os.getpid()))
    stop = threading.Event()
    shutdown = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()
        manager.wake.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    def watch() -> None:
        while not stop.is_set():
            try:
                if store.shutdown_requested():
                    shutdown.set()
                    stop.set()
                    manager.wake.set()
                    return
                store.register_manager(manager.manager_id, {**info, "seen": time.time()})
            except redis.RedisError:
                pass
            stop.wait(0.5)

    threading.Thread(target=watch, name="control", daemon=True).start()
    console.print(f"manager {manager.manager_id} up; state in {url.split('@')[-1]}; tick {interval:g}s; "
                  f"{provisioners} provisioner workers" + (f"; metrics {info['metrics']}" if "metrics" in info else ""))
    manager.start_workers()
    try:
        manager.run(interval=interval, stop=stop)
        if shutdown.is_set():
            console.print("shutting down: draining and terminating workers")
            ok = manager.drain_all(timeout=drain_timeout)
            console.print("all workers terminated" if ok else "drain timeout: some workers remain")
    finally:
        manager.close()
        store.unregister_manager(manager.manager_id)
        _manager_pidfile().unlink(missing_ok=True)
    console.print("manager stopped")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


@main.command()
@click.option("--timeout", default=900.0, show_default=True, help="seconds to wait for workers to drain")
@click.option("--keep-redis", is_flag=True, help="leave the embedded Redis running")
def down(timeout: float, keep_redis: bool) -> None:
    """Stop the manager: workers drain and terminate; then stop the embedded Redis."""
    try:
        url = resolve_url(start=False)
    except RedisUnavailable:
        console.print("nothing is running")
        return
    store = Store.from_url(url, namespace=os.environ.get("POOL_NAMESPACE", "ep"))
    here = socket.gethostname()
    alive = {mid: info for mid, info in store.managers().items()
             if info.get("host") != here or _pid_alive(int(info.get("pid", 0)))}
    if alive:
        store.request_shutdown()
        console.print(f"asked {len(alive)} manager(s) to drain and stop")
        deadline = time.monotonic() + timeout + 30
        while store.managers() and time.monotonic() < deadline:
            time.sleep(0.5)
        if store.managers():
            fail("managers did not stop in time; see `pool ls`", code=1)
    else:
        from pool.drivers import make_driver
        from pool.manager import Manager
        from pool.provisioner import Provisioner

        for mid in store.managers():
            store.unregister_manager(mid)
        manager = Manager(store=store, provisioner=Provisioner({"local": make_driver("local")}), redis_url=url)
        if not manager.drain_all(timeout=timeout):
            fail("some workers did not drain in time", code=1)
    store.clear_shutdown()
    console.print("manager stopped; workers terminated")
    from spark.master import stop_masters

    for domain in stop_masters():
        console.print(f"spark master of {domain} stopped")
    if not os.environ.get("REDIS_URL") and not keep_redis and stop_embedded():
        console.print("embedded Redis stopped (state kept on disk)")


@main.command()
@click.option("--json", "as_json", is_flag=True)
def status(as_json: bool) -> None:
    """Managers, and which one holds which leader role."""
    _, store = open_store(start=False)
    from pool.workqueue import WorkQueue

    holders = Leases(store.r, namespace=store.ns, holder="-").holders()
    managers = store.managers()
    work = WorkQueue(store.r, namespace=store.ns).depth()
    if as_json:
        click.echo(json.dumps({"managers": managers, "roles": holders, "work": work}, indent=2))
        return
    table = Table("MANAGER", "PID", "HOST", "LAST SEEN", "ROLES")
    now = time.time()
    for mid, info in sorted(managers.items()):
        roles = [r for r, h in holders.items() if h["holder"] == mid]
        seen = info.get("seen") or info.get("started")
        table.add_row(mid, str(info.get("pid", "")), str(info.get("host", "")),
                      f"{now - seen:.1f}s ago" if seen else "-", ", ".join(roles) or "standby")
    console.print(table)
    for role, h in holders.items():
        console.print(f"role {role}: " + (f"{h['holder']} (token {h['token']}, {h['ttl_s']:.1f}s left)"
                                         if h["holder"] else "free"))
    console.print(f"provisioning work: {work['queued']} queued, {work['in_progress']} being done")


# ---------------------------------------------------------------------------
# domains
# ---------------------------------------------------------------------------


def validate_spec(data: Any) -> Any:
    """Validate a spec and its plug-ins; raise with one line naming the field."""
    from policies import registry as policies
    from pool.drivers import BUILTIN_SITES
    from pool.images import deployable_type
    from sensors import registry as sensors

    spec = parse_domain_spec(data)
    try:
        policies.build(spec.policy.name, spec.policy.params)
    except (UnknownPlugin, PluginParamError) as exc:
        raise SpecError(f"invalid domain spec: policy: {exc}") from None
    try:
        sensors.resolve(spec.sensor.name)
        if spec.sensor.name != "celery":
            sensors.build(spec.sensor.name, spec.sensor.params)
        else:
            params = dict(spec.sensor.params)
            params.setdefault("broker", spec.broker or "redis://127.0.0.1/1")
            sensors.build("celery", params)
    except (UnknownPlugin, PluginParamError) as exc:
        raise SpecError(f"invalid domain spec: sensor: {exc}") from None
    try:
        deployable_type(spec.deployable_type)
    except UnknownPlugin as exc:
        raise SpecError(f"invalid domain spec: deployable_type: {exc}") from None
    from libcloud.compute.providers import Provider

    providers = {v for k, v in vars(Provider).items() if not k.startswith("_") and isinstance(v, str)}
    for i, site in enumerate(spec.sites):
        where = "site" if isinstance(data, dict) and "sites" not in data else f"sites.{i}"
        if site.provider is None and site.name not in LIVE_SITES:
            other = " (sim runs under `pool simulate`)" if site.name in BUILTIN_SITES else ""
            raise SpecError(f"invalid domain spec: {where}: unknown site {site.name!r}{other}; valid: "
                            f"{', '.join(LIVE_SITES)}, or any name with provider: (a libcloud provider, e.g. ec2)")
        if site.provider is not None and site.provider.lower() not in providers:
            raise SpecError(f"invalid domain spec: {where}.provider: unknown libcloud provider {site.provider!r} "
                            "(e.g. ec2, gce, azure_arm, openstack)")
    if spec.celery and spec.celery.path and not Path(spec.celery.path).is_dir():
        raise SpecError(f"invalid domain spec: celery.path: {spec.celery.path!r} is not a directory")
    return spec


def load_specs(path: str) -> list[Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror}") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not docs:
        raise SpecError(f"{path}: no domain spec in the file")
    base = Path(path).parent if path != "-" else Path.cwd()
    specs = []
    for doc in docs:
        if isinstance(doc, dict) and isinstance(doc.get("celery"), dict) and doc["celery"].get("path"):
            p = Path(doc["celery"]["path"])
            if not p.is_absolute():
                doc["celery"]["path"] = str((base / p).resolve())
        specs.append(validate_spec(doc))
    return specs


@main.command()
@click.option("-f", "--file", "path", required=True, help="YAML domain spec ('-' for stdin)")
def apply(path: str) -> None:
    """Create or update domains from a YAML spec."""
    try:
        specs = load_specs(path)
    except SpecError as exc:
        fail(str(exc))
    _, store = open_store(start=True)
    for spec in specs:
        created = store.put_domain(spec)
        store.record(spec.name, "applied", time.time(), created=created)
        console.print(f"domain {spec.name} {'created' if created else 'configured'}")


def _counts(store: Store, name: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in store.nodes(name):
        counts[n.state.value] = counts.get(n.state.value, 0) + 1
    return counts


@main.command("ls")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def ls(as_json: bool) -> None:
    """Domains: intended and actual size, sensor value, policy."""
    _, store = open_store(start=False)
    rows = []
    for spec in store.domains():
        st = store.get_state(spec.name)
        counts = _counts(store, spec.name)
        live = sum(counts.get(s, 0) for s in ("REQUESTED", "PENDING", "STARTED", "JOINED"))
        reading = next(iter(st.readings.values()), {})
        rows.append({
            "domain": spec.name, "policy": spec.policy.name, "sensor": spec.sensor.name,
            "value": reading.get("value"), "error": reading.get("error"),
            "intended": st.intended, "actual": live, "joined": counts.get("JOINED", 0),
            "min": spec.min, "max": spec.max, "override": st.override,
        })
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("DOMAIN", "POLICY", "SENSOR", "VALUE", "INTENDED", "ACTUAL", "JOINED", "MIN/MAX", "OVERRIDE")
    for r in rows:
        value = f"[red]{r['error']}[/]" if r["error"] else ("-" if r["value"] is None else f"{r['value']:g}")
        table.add_row(str(r["domain"]), str(r["policy"]), str(r["sensor"]), value, str(r["intended"]), str(r["actual"]),
                      str(r["joined"]), f"{r['min']}/{r['max']}", "auto" if r["override"] is None else str(r["override"]))
    console.print(table)


@main.command()
@click.argument("name")
@click.option("--events", "n_events", default=10, show_default=True, type=click.IntRange(min=0),
              help="how many recent decisions to show")
@click.option("--json", "as_json", is_flag=True)
def show(name: str, n_events: int, as_json: bool) -> None:
    """One domain: nodes by state, last readings, last decisions with reasons."""
    _, store = open_store(start=False)
    spec = store.get_domain(name)
    if spec is None:
        fail(f"no domain {name!r}; domains: {', '.join(s.name for s in store.domains()) or 'none'}")
    st = store.get_state(name)
    nodes = store.nodes(name)
    hbs = store.heartbeats(name, [n.node_id for n in nodes])
    decisions = store.events(name, n_events, kind="decision") if n_events else []
    if as_json:
        click.echo(json.dumps({
            "spec": json.loads(spec.model_dump_json()),
            "intended": st.intended, "override": st.override, "readings": st.readings,
            "last_decision": st.last_decision,
            "nodes": [{"node": n.node_id, "state": n.state.value, "site": n.site, "since": n.since,
                       "active": hbs[n.node_id].active if n.node_id in hbs else None} for n in nodes],
            "decisions": decisions,
        }, indent=2, default=str))
        return
    console.print(f"[bold]{name}[/]  policy {spec.policy.name}  sensor {spec.sensor.name}  "
                  f"min {spec.min} max {spec.max}  intended {st.intended}  "
                  f"override {'auto' if st.override is None else st.override}")
    for sname, r in st.readings.items():
        console.print(f"reading {sname}: " + (f"[red]error: {r['error']}[/]" if r.get("error") else
                      ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
                                for k, v in r.items() if k not in ("error",) and v is not None)))
    table = Table("NODE", "STATE", "SITE", "FOR", "TASKS", "LAST HEARTBEAT")
    now = time.time()
    order = {s: i for i, s in enumerate(NodeState)}
    for n in sorted(nodes, key=lambda n: (order[n.state], n.created)):
        hb = hbs.get(n.node_id)
        table.add_row(n.node_id, n.state.value, n.site, f"{now - n.since:.0f}s",
                      "-" if hb is None else str(hb.active), "-" if hb is None else f"{now - hb.time:.1f}s ago")
    console.print(table)
    console.print("[bold]decisions[/] (newest first)")
    for d in decisions:
        stamp = time.strftime("%H:%M:%S", time.localtime(d["time"]))
        console.print(f"  {stamp}  target {d.get('target')} (actual {d.get('actual')}): {d.get('reason')}",
                      highlight=False)


@main.command()
@click.argument("name")
@click.argument("size")
def resize(name: str, size: str) -> None:
    """Set a domain's size by hand (an operator event); `auto` hands it back to the policy."""
    _, store = open_store(start=False)
    spec = store.get_domain(name)
    if spec is None:
        fail(f"no domain {name!r}; domains: {', '.join(s.name for s in store.domains()) or 'none'}")
    if size == "auto":
        store.set_override(name, None)
        store.record(name, "resize", time.time(), size="auto")
        console.print(f"domain {name}: size handed back to policy {spec.policy.name}")
        return
    try:
        n = int(size)
    except ValueError:
        fail(f"size must be a whole number between {spec.min} and {spec.max}, or 'auto'; got {size!r}")
    if not spec.min <= n <= spec.max:
        fail(f"size {n} is outside the domain's bounds [{spec.min}, {spec.max}]; change min/max with `pool apply`")
    store.set_override(name, n)
    store.record(name, "resize", time.time(), size=n)
    console.print(f"domain {name}: intended size {n} (operator override; `pool resize {name} auto` to undo)")


@main.command()
@click.argument("name")
def delete(name: str) -> None:
    """Remove a domain; its workers are drained first."""
    _, store = open_store(start=False)
    if store.get_domain(name) is None:
        fail(f"no domain {name!r}")
    live = [n for n in store.nodes(name) if n.state != NodeState.TERMINATED]
    if live:
        fail(f"domain {name} still has {len(live)} node(s): `pool resize {name} 0` first, then delete")
    store.delete_domain(name)
    console.print(f"domain {name} deleted")


@main.command()
@click.argument("name")
@click.option("-n", "count", default=30, show_default=True)
def events(name: str, count: int) -> None:
    """The domain's event log, newest first."""
    _, store = open_store(start=False)
    for e in store.events(name, count):
        stamp = time.strftime("%H:%M:%S", time.localtime(e.pop("time")))
        kind = e.pop("kind")
        click.echo(f"{stamp} {kind:10s} " + " ".join(f"{k}={v}" for k, v in e.items()))


from spark.cli import spark as spark_commands  # noqa: E402  (the `pool spark` group)

main.add_command(spark_commands)
from pool.simulate_cli import simulate  # noqa: E402  (`pool simulate`)

main.add_command(simulate)

if __name__ == "__main__":
    main()
