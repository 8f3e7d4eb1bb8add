"""The `pool` command line: run the manager, apply domains, inspect and resize them."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

import click
import redis
from rich.console import Console
from rich.markup import escape

from pool.api.specs import LIVE_SITES, validate_spec  # noqa: F401  (re-exported)
from pool.cli.views import (
    Column,
    EnvError,
    TextTable,
    changes_line,
    env_shell,
    env_text,
    is_local,
    iter_nodes,
    local_driver,
    print_table,
    producer_env,
    spec_changes,
    stream_console,
)
from pool.core.model import (
    NodeState,
    SpecError,
)
from pool.core.secrets import install_log_redaction, protect_process, redact, redact_text
from pool.sites.config import ConfigError, OperatorConfig
from pool.state.redisserver import RedisUnavailable, StateDirError, embedded_url, resolve_url, state_dir, stop_embedded
from pool.state.store import Store
from pool.workloads.base import workload_for_type

console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False, highlight=False)
log = logging.getLogger("elastic_pool.cli")

#: Longest message an error line shows (the rest is cut, marked with "...").
MESSAGE_MAX = 400
#: Seconds `pool down` waits past its --timeout for a manager to finish its drain and unregister.
DOWN_GRACE = 4.0
#: A manager on another host not seen for this long (it re-registers twice a second) has stopped.
MANAGER_SILENT = 15.0
#: Node records `pool down` lists when it gives up (then a count of the rest).
REMAINING_SHOWN = 20
#: What a Redis URL looks like, for error lines.
URL_FORMS = ("a URL like redis://localhost:6379/0 (rediss:// for TLS, unix:///path/to/socket for a socket; "
             "a password goes in the user part)")


def one_line(text: Any, limit: int = MESSAGE_MAX) -> str:
    """``text`` as one printable line, secrets masked, at most ``limit`` characters."""
    clean = " ".join(redact_text(str(text)).split())
    clean = "".join(ch if ch.isprintable() else "?" for ch in clean)
    return clean if len(clean) <= limit else clean[: max(0, limit - 3)] + "..."


def fail(message: str, code: int = 2, *, markup: bool = False) -> NoReturn:
    """One line on stderr naming what is wrong, then exit (2: usage or input, 1: a runtime failure).

    ``markup``: the message is console markup already (escaped where it quotes input).
    """
    text = one_line(message)
    err_console.print(f"[bold red]error:[/] {text if markup else escape(text)}", soft_wrap=True)
    sys.exit(code)


def say(text: str, *, err: bool = False) -> None:
    """One line of plain output (no console markup), secrets masked."""
    (err_console if err else console).print(redact_text(text), markup=False, highlight=False, soft_wrap=True)


def cell(value: Any) -> str:
    """A table cell: secrets masked, console markup escaped, long values cut."""
    return escape(one_line("" if value is None else value, 200))


def emit_json(value: Any) -> None:
    """``--json`` output: secrets masked (URL passwords, values of secret-named keys)."""
    click.echo(json.dumps(redact(value), indent=2, default=str))


class Seconds(click.ParamType):
    """A finite number of seconds within bounds (``nan`` and ``inf`` are refused)."""

    name = "seconds"

    def __init__(self, low: float = 0.0, high: float = 10_000_000.0) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(number) or not self.low <= number <= self.high:
            self.fail(f"{value!r} is not between {self.low:g} and {self.high:g} seconds", param, ctx)
        return number


def _namespace() -> str:
    ns = os.environ.get("POOL_NAMESPACE") or "ep"  # (set but empty: the default)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", ns):
        fail(f"POOL_NAMESPACE {ns!r} is not a namespace: letters, digits, '_', '.', ':' or '-', "
             "at most 64 characters (default: ep)")
    return ns


def _state_dir_failure(exc: BaseException) -> NoReturn:
    if not isinstance(exc, OSError) and "state directory" in str(exc):  # it says so itself
        fail(str(exc))
    home = os.environ.get("POOL_HOME") or "~/.local/state/elastic-pool"
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    fail(f"cannot use the state directory {home} ({detail}); set POOL_HOME to a directory you can write")


def _state_dir() -> Path:
    """The state directory, or one line saying why it cannot be used."""
    try:
        return state_dir()
    except (OSError, RuntimeError) as exc:
        _state_dir_failure(exc)


def _resolve(*, start: bool) -> str | None:
    """The URL of the pool's Redis (``None``: none runs and ``start`` is false), or one line saying what is wrong."""

    url = os.environ.get("REDIS_URL")
    if url:  # (set but empty: unset, as for resolve_url)
        _check_url(url)
        return url
    try:
        return resolve_url(start=start, notify=lambda message: say(f"warning: {message}", err=True))
    except RedisUnavailable as exc:
        if start:
            fail(str(exc), 1)
        return None
    except RuntimeError as exc:  # the state directory, a server that would not start
        if isinstance(exc, StateDirError):
            _state_dir_failure(exc)
        fail(str(exc), 1)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        fail(f"could not find or start the embedded Redis under {os.environ.get('POOL_HOME') or 'the state directory'}: "
             f"{exc.strerror or exc}{where}; set POOL_HOME to a directory you can write, or set REDIS_URL", 1)
    except (ValueError, KeyError, TypeError) as exc:  # a corrupt record of the embedded server (server.json)
        fail(f"the embedded Redis's record under {_state_dir() / 'redis'} is unreadable ({type(exc).__name__}: "
             f"{exc}); remove server.json there, or set REDIS_URL", 1)
    except subprocess.SubprocessError as exc:
        fail(f"could not start the embedded Redis: {exc}", 1)


def _check_url(url: str) -> None:
    from redis.connection import parse_url

    try:
        parse_url(url)
    except ValueError as exc:
        fail(f"REDIS_URL {redact_text(url)!r} is not a Redis URL ({exc}); expected {URL_FORMS}")


def _connect(url: str) -> Store:
    """A store on ``url`` that answered PING, or one line saying why not."""
    where = redact_text(url)
    try:
        store = Store.from_url(url, namespace=_namespace())
    except ValueError as exc:
        fail(f"REDIS_URL {where!r} is not a Redis URL ({exc}); expected {URL_FORMS}")
    try:
        store.ping()
    except redis.AuthenticationError as exc:
        fail(f"the pool's Redis at {where} refused the credentials ({exc}); set REDIS_URL with the right password", 1)
    except (redis.RedisError, OSError, ValueError) as exc:
        fail(f"cannot reach the pool's Redis at {where}: {exc}", 1)
    return store


def open_store(*, start: bool) -> tuple[str, Store]:
    url = _resolve(start=start)
    if url is None:
        fail("the pool's Redis is not running: start it with 'pool up' or set REDIS_URL", 1)
    return url, _connect(url)


def _thread_died(args: threading.ExceptHookArgs) -> None:
    """A background thread that stops on an exception: one log line, never a traceback."""
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    log.error("thread %s stopped: %s", name, one_line(f"{args.exc_type.__name__}: {args.exc_value}", 300))


#: click's "no arguments: show the help" (click 8.2 and later; nothing to catch before)
_NO_ARGS_IS_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())


class PoolGroup(click.Group):
    """The `pool` group: usage errors and unexpected exceptions as one `error:` line, never a traceback."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as exc:  # bare `pool`: its help
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            path = exc.ctx.command_path.split(" ", 1) if exc.ctx is not None else []
            where = " ".join(["pool", *path[1:]])  # the command as installed, whatever argv[0] was
            fail(f"{exc.format_message()} (see `{where} --help`)", exc.exit_code)
        except click.ClickException as exc:
            fail(exc.format_message(), exc.exit_code)
        except click.Abort:
            fail("aborted", 1)
        except BrokenPipeError:  # the reader went away (`pool events x | head`): nothing more to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
            fail(f"lost the pool's Redis: {type(exc).__name__}: {exc}", 1)
        except redis.ResponseError as exc:  # the server refused a command (permissions, read-only replica, memory)
            fail(f"the pool's Redis refused a command: {type(exc).__name__}: {exc}", 1)
        except StateDirError as exc:  # POOL_HOME unusable, found wherever it is first needed
            _state_dir_failure(exc)
        except Exception as exc:  # noqa: BLE001  (a bug: shown as one line, named as internal)
            fail(f"internal error: {type(exc).__name__}: {one_line(exc, 300)}", 1)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=PoolGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="log debug detail")
def main(verbose: bool) -> None:
    """elastic-pool: size worker domains from real queue depth."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    install_log_redaction()
    threading.excepthook = _thread_died


# ---------------------------------------------------------------------------
# up / down
# ---------------------------------------------------------------------------


def _manager_pidfile() -> Path:
    return _state_dir() / "manager.pid"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _managers(store: Store) -> dict[str, dict[str, Any]]:
    """Registered managers by id (an entry that is not a JSON object is shown empty, not fatal)."""
    return {str(k): (v if isinstance(v, dict) else {}) for k, v in store.managers().items()}


def _alive(managers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The managers that run: on this host, a live process id; elsewhere, seen recently."""
    here, now = socket.gethostname(), time.time()
    out = {}
    for mid, info in managers.items():
        if info.get("host") == here:
            pid = _number(info.get("pid"))
            running = pid is not None and pid > 0 and pid == int(pid) and _pid_alive(int(pid))
        else:
            seen = _number(info.get("seen")) or _number(info.get("started"))
            running = seen is not None and now - seen < MANAGER_SILENT
        if running:
            out[mid] = info
    return out


@main.command()
@click.option("--interval", default=1.0, show_default=True, type=Seconds(0.01, 3600),
              help="seconds between decider ticks")
@click.option("--drain-timeout", default=900.0, show_default=True, type=Seconds(0),
              help="most seconds the drain on `pool down` takes (its --timeout may shorten it)")
@click.option("--quiet", is_flag=True, help="no per-tick status line")
@click.option("--lease-ttl", default=5.0, show_default=True, type=Seconds(0.5, 86400),
              help="seconds a leader role outlives its holder's last renewal")
@click.option("--provisioners", default=2, show_default=True, type=click.IntRange(min=1, max=256),
              help="provisioner worker threads taking launch/terminate work from the shared queue")
@click.option("--list-interval", default=1.0, show_default=True, type=Seconds(0, 86400),
              help="least seconds between two listings of a site's machines")
@click.option("--reclaim-after", default=30.0, show_default=True, type=Seconds(1, 86400),
              help="seconds before work taken by a dead provisioner worker is taken over")
@click.option("--metrics-port", default=None, type=click.IntRange(min=0, max=65535),
              help="serve Prometheus metrics on 127.0.0.1:PORT/metrics (0: a free port)")
@click.option("--api", "api_address", default=None, metavar="HOST:PORT",
              help="serve the REST API and the dashboard on HOST:PORT (e.g. 127.0.0.1:8080; port 0: any free one)")
@click.option("--tls-cert", default=None, type=click.Path(exists=True, dir_okay=False), help="the API's TLS certificate (PEM)")
@click.option("--tls-key", default=None, type=click.Path(exists=True, dir_okay=False), help="the API's TLS private key (PEM)")
@click.option("--insecure", is_flag=True, help="serve the API on a non-loopback address without TLS (tokens in the clear)")
def up(interval: float, drain_timeout: float, quiet: bool, lease_ttl: float, provisioners: int,
       list_interval: float, reclaim_after: float, metrics_port: int | None, api_address: str | None,
       tls_cert: str | None, tls_key: str | None, insecure: bool) -> None:
    """Run the domain manager in the foreground (Ctrl-C stops it; workers keep running)."""
    api_bind = _api_bind(api_address, tls_cert=tls_cert, tls_key=tls_key, insecure=insecure)
    from pool.control.manager import Manager
    from pool.control.metrics import Metrics
    from pool.sites.provisioner import Provisioner
    from pool.sites.registry import make_driver
    from pool.workloads.base import workloads

    pidfile = _manager_pidfile()  # the state directory is usable before anything starts
    metrics = Metrics() if metrics_port is not None else None
    info: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    if metrics is not None and metrics_port is not None:
        try:
            info["metrics"] = f"http://127.0.0.1:{metrics.serve(metrics_port)}/metrics"
        except OSError as exc:
            fail(f"--metrics-port {metrics_port}: cannot listen on 127.0.0.1:{metrics_port} "
                 f"({exc.strerror or exc}); choose a free port, or 0 for any free one")
    config = operator_config()
    protect_process()  # task code of local workers (the same user) cannot read this process's environment
    url, store = open_store(start=True)
    try:
        provisioner = Provisioner({"local": make_driver("local", ex_worker_env=config.worker_env)}, config=config)
    except (OSError, RuntimeError, ValueError) as exc:
        fail(f"cannot set up the local site: {exc}", 1)
    manager_id = f"{socket.gethostname()}-{os.getpid()}"
    leases = store.leases(holder=manager_id, ttl=lease_ttl)
    manager = Manager(store=store, provisioner=provisioner, redis_url=url, services=[s for w in workloads() for s in w.services()],
                      leases=leases, manager_id=manager_id, workers=provisioners, list_interval=list_interval,
                      reclaim_after=reclaim_after, metrics=metrics)
    store.clear_shutdown()
    api = _start_api(api_bind, url, tls_cert=tls_cert, tls_key=tls_key, insecure=insecure)
    if api is not None:
        info["api"] = api.url
    store.register_manager(manager.manager_id, info)
    try:
        pidfile.write_text(str(os.getpid()))
    except OSError as exc:
        store.unregister_manager(manager.manager_id)
        fail(f"cannot write {pidfile}: {exc.strerror or exc}", 1)
    stop = threading.Event()
    shutdown = threading.Event()
    finished = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()
        manager.wake.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    def watch() -> None:  # also while draining: `pool down` elsewhere sees this manager alive
        while not finished.is_set():
            try:
                if not shutdown.is_set() and store.shutdown_requested():
                    shutdown.set()
                    stop.set()
                    manager.wake.set()
                store.register_manager(manager.manager_id, {**info, "seen": time.time()})
            except redis.RedisError:
                pass
            finished.wait(0.5)

    watcher = threading.Thread(target=watch, name="control", daemon=True)
    watcher.start()
    say(f"manager {manager.manager_id} up; state in {url}; tick {interval:g}s; "
        f"{provisioners} provisioner workers" + (f"; metrics {info['metrics']}" if "metrics" in info else "")
        + (f"; API {info['api']}" if "api" in info else "") + "; `pool env DOMAIN` prints what a producer needs")
    manager.start_workers()
    try:
        manager.run(interval=interval, stop=stop)
        if shutdown.is_set():
            try:
                limit = min(drain_timeout, store.shutdown_timeout(drain_timeout))
            except redis.RedisError:
                limit = drain_timeout
            say(f"shutting down: draining and terminating workers (at most {limit:g}s)")
            ok = manager.drain_all(timeout=limit)
            say("all workers terminated" if ok else "drain timeout: some workers remain")
    finally:
        finished.set()
        watcher.join(5)
        if api is not None:
            api.stop()
        pidfile.unlink(missing_ok=True)
        manager.close()
        try:
            store.unregister_manager(manager.manager_id)
        except redis.RedisError as exc:
            log.warning("could not unregister manager %s: %s", manager.manager_id, exc)
    say("manager stopped")


def _api_bind(address: str | None, *, tls_cert: str | None, tls_key: str | None,
              insecure: bool) -> tuple[str, int] | None:
    """Where `pool up --api` serves (checked before anything starts), or one line saying why not."""
    if address is None:
        if tls_cert or tls_key or insecure:
            fail("--tls-cert, --tls-key and --insecure go with --api HOST:PORT")
        return None
    from pool.api.server import BindRefused, check_bind, parse_address

    try:
        host, port = parse_address(address)
        if (tls_cert is None) != (tls_key is None):
            raise BindRefused("--tls-cert and --tls-key go together: give both, or neither")
        check_bind(host, tls=tls_cert is not None, insecure=insecure)
    except BindRefused as exc:
        fail(str(exc))
    return host, port


def _start_api(bind: tuple[str, int] | None, url: str, *, tls_cert: str | None, tls_key: str | None,
               insecure: bool) -> Any:
    """The API server of `pool up --api` (a store of its own: its reads do not wait on the tick's)."""
    if bind is None:
        return None
    from pool.api.app import create_app
    from pool.api.server import BindRefused, serve

    try:
        return serve(create_app(store=Store.from_url(url, namespace=_namespace())), host=bind[0], port=bind[1],
                     tls_cert=tls_cert, tls_key=tls_key, insecure=insecure)
    except (OSError, BindRefused) as exc:
        fail(f"--api {bind[0]}:{bind[1]}: cannot serve there ({getattr(exc, 'strerror', None) or exc})", 1)


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, killed but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc here: the signal test is all there is
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def _remaining(store: Store) -> list[Any]:
    """Node records not yet TERMINATED, over every domain (empty when the store cannot be read)."""
    try:
        return [n for spec in store.domains() for n in store.nodes(spec.name) if n.state != NodeState.TERMINATED]
    except (redis.RedisError, OSError, ValueError) as exc:
        say(f"cannot read what remains: {exc}", err=True)
        return []


def _give_up(store: Store, why: str) -> NoReturn:
    """Name what remains (one line each, at most REMAINING_SHOWN), then one error line; exit 1."""
    left = _remaining(store)
    now = time.time()
    for rec in left[:REMAINING_SHOWN]:
        detail = rec.history[-1][2] if rec.history else ""
        say(f"remaining: {rec.domain} {rec.node_id} {rec.state.value} on {rec.site} for {now - rec.since:.0f}s"
            + (f": {one_line(detail, 160)}" if detail else ""))
    if len(left) > REMAINING_SHOWN:
        say(f"remaining: ... and {len(left) - REMAINING_SHOWN} more")
    counts: dict[str, int] = {}
    for rec in left:
        counts[f"{rec.domain} {rec.state.value}"] = counts.get(f"{rec.domain} {rec.state.value}", 0) + 1
    summary = ", ".join(f"{n} {key}" for key, n in sorted(counts.items())[:10])
    fail(f"{why}; {len(left)} node(s) remain" + (f" ({summary})" if summary else "")
         + "; run `pool down` again to wait longer, `pool show DOMAIN` for details", 1)


def _drain_here(store: Store, url: str, deadline: float) -> tuple[bool, str | None]:
    """No manager runs: drain every domain from this process, giving up at ``deadline`` (monotonic)."""
    from pool.control.manager import Manager
    from pool.sites.provisioner import Provisioner
    from pool.sites.registry import make_driver

    try:
        config = OperatorConfig.load()
        provisioner = Provisioner({"local": make_driver("local", ex_worker_env=config.worker_env)}, config=config)
    except (OSError, RuntimeError, ValueError) as exc:
        return False, f"cannot set up the local site: {exc}"
    manager = Manager(store=store, provisioner=provisioner, redis_url=url, wakeups=False)
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["ok"] = manager.drain_all(timeout=max(0.0, deadline - time.monotonic()))
        except Exception as exc:  # noqa: BLE001  (reported by the caller)
            result["error"] = exc

    thread = threading.Thread(target=work, name="drain", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()) + DOWN_GRACE)
    if thread.is_alive():  # a call that hangs: given up (the thread ends with this process)
        return False, "the drain did not finish in time"
    try:
        manager.close()  # sensors and their watches: nothing left talking to Redis
    except Exception as exc:  # noqa: BLE001
        log.warning("closing the drain's manager: %s", exc)
    if "error" in result:
        error = result["error"]
        return False, f"the drain failed: {type(error).__name__}: {error}"
    return bool(result.get("ok")), None


@main.command()
@click.option("--timeout", default=900.0, show_default=True, type=Seconds(0),
              help="seconds to wait for workers to drain; then gives up, naming what remains (exit 1)")
@click.option("--keep-redis", is_flag=True, help="leave the embedded Redis running")
def down(timeout: float, keep_redis: bool) -> None:
    """Stop the manager: workers drain and terminate; then stop the embedded Redis."""
    deadline = time.monotonic() + timeout
    url = _resolve(start=False)
    if url is None:
        say("nothing is running")
        return
    store = _connect(url)
    managers = _managers(store)
    alive = _alive(managers)
    if alive:
        store.request_shutdown(timeout=timeout)
        say(f"asked {len(alive)} manager(s) to drain and stop (at most {timeout:g}s)")
        while _alive(_managers(store)) and time.monotonic() < deadline + DOWN_GRACE:
            time.sleep(0.25)
        still = _alive(_managers(store))
        if still:
            _give_up(store, f"{len(still)} manager(s) did not stop within {timeout:g}s: {', '.join(sorted(still))}")
    else:
        for mid in managers:  # stale entries of managers that are gone
            store.unregister_manager(mid)
        ok, why = _drain_here(store, url, deadline)
        if not ok:
            _give_up(store, why or f"workers did not drain within {timeout:g}s")
    if _remaining(store):  # the manager's own --drain-timeout ended its drain first
        _give_up(store, "the manager stopped before its workers were terminated")
    store.clear_shutdown()
    say("manager stopped; workers terminated")
    from pool.workloads.base import workloads

    for service in [s for w in workloads() for s in w.services()]:  # a Spark master, a Condor central manager
        stop_all = getattr(service, "stop_all", None)
        try:
            for what in stop_all() if stop_all is not None else []:
                say(f"{what} stopped")
        except (OSError, RuntimeError, ValueError) as exc:
            say(f"warning: could not stop {type(service).__name__}'s processes: {one_line(exc, 200)}", err=True)
    if not os.environ.get("REDIS_URL") and not keep_redis:
        try:
            stopped = stop_embedded()
        except (OSError, RuntimeError, ValueError) as exc:
            fail(f"could not stop the embedded Redis: {exc}", 1)
        if stopped:
            say("embedded Redis stopped (state kept on disk)")


@main.command()
@click.option("--json", "as_json", is_flag=True)
def status(as_json: bool) -> None:
    """Managers, and which one holds which leader role."""
    _, store = open_store(start=False)

    try:
        holders = store.leases(holder="-").holders()
    except ValueError as exc:  # a fencing token that is not a number: not written by a manager
        fail(f"the pool's Redis holds a malformed leader lease ({exc}); a manager rewrites it when it takes the role", 1)
    managers = _managers(store)
    work = store.work_queue().depth()
    if as_json:  # a role's fencing token is a counter, not a credential: shown (redact masks every "token")
        roles = {role: {**redact(h), "token": h.get("token")} for role, h in holders.items()}
        click.echo(json.dumps({"managers": redact(managers), "roles": roles, "work": redact(work)}, indent=2,
                              default=str))
        return
    table = TextTable.of("MANAGER", "PID", "HOST", "LAST SEEN", "ROLES")
    now = time.time()
    for mid, info in sorted(managers.items()):
        held = [r for r, h in holders.items() if h["holder"] == mid]
        seen = _number(info.get("seen")) or _number(info.get("started"))
        table.add_row(one_line(mid), one_line(info.get("pid", "")), one_line(info.get("host", "")),
                      f"{now - seen:.1f}s ago" if seen else "-", one_line(", ".join(held) or "standby"))
    if managers:
        print_table(table)
    else:
        say("no manager is registered (`pool up` runs one)")
    for role, h in holders.items():
        say(f"role {role}: " + (f"{h['holder']} (token {h['token']}, {h['ttl_s']:.1f}s left)"
                                if h["holder"] else "free"))
    say(f"provisioning work: {work['queued']} queued, {work['in_progress']} being done")


# ---------------------------------------------------------------------------
# domains
# ---------------------------------------------------------------------------


def operator_config() -> OperatorConfig:
    """The operator's configuration ($POOL_CONFIG or {state}/config.yaml), or one line naming what is wrong."""
    try:
        return OperatorConfig.load()
    except ConfigError as exc:
        fail(str(exc))


def load_specs(path: str) -> list[Any]:
    """The validated domain specs of a YAML file (``-``: stdin), or :class:`SpecError` with one line.

    The bytes are read up to the loader's limit and go through
    :func:`pool.specload.load_yaml_documents` (size, UTF-8, duplicate keys, nesting, aliases), each
    document through :func:`validate_spec`; a relative ``celery.path`` is taken relative to the
    file. The message is one bounded line that shows no credential, escaped for the console markup
    that ``apply`` prints it with.
    """
    from pool.core.model import clean_text
    from pool.specload import MAX_BYTES, load_yaml_documents

    source = "stdin" if path == "-" else path
    try:
        try:
            if path == "-":
                stream = getattr(sys.stdin, "buffer", None)
                data = (stream.read(MAX_BYTES + 1) if stream is not None
                        else sys.stdin.read(MAX_BYTES + 1).encode("utf-8", "surrogateescape"))
            else:
                with open(path, "rb") as f:
                    data = f.read(MAX_BYTES + 1)
        except OSError as exc:
            raise SpecError(f"cannot read {path}: {exc.strerror}") from None
        docs = [d for d in load_yaml_documents(data, source=source) if d is not None]
        if not docs:
            raise SpecError(f"{source}: no domain spec in the file")
        base = Path(path).parent if path != "-" else Path.cwd()
        specs = []
        for i, doc in enumerate(docs, 1):
            celery = doc.get("celery") if isinstance(doc, dict) else None
            if isinstance(celery, dict) and isinstance(celery.get("path"), str) and celery["path"]:
                try:
                    p = Path(celery["path"])
                    if not p.is_absolute():
                        celery["path"] = str((base / p).resolve())
                except (OSError, ValueError, RuntimeError):
                    pass  # left as written: validation names what is wrong with it
            try:
                specs.append(validate_spec(doc))
            except SpecError as exc:
                raise SpecError(f"{source}: document {i}: {exc}" if len(docs) > 1 else str(exc)) from None
            except RecursionError:  # a plug-in that recurses over a parameter (a formula, say)
                raise SpecError(f"{source}: invalid domain spec: a policy or sensor parameter is nested too "
                                "deeply for the plug-in to check") from None
        return specs
    except SpecError as exc:
        raise SpecError(escape(clean_text(str(exc)))) from None


def _embedded_running() -> bool:
    try:
        return embedded_url() is not None
    except Exception:  # noqa: BLE001  (only a hint: open_store names what is wrong)
        return False


@main.command()
@click.option("-f", "--file", "path", required=True, help="YAML domain spec ('-' for stdin)")
def apply(path: str) -> None:
    """Create or update domains from a YAML spec."""
    try:
        specs = load_specs(path)
    except SpecError as exc:
        fail(str(exc), markup=True)  # load_specs escapes what it quotes
    embedded = not os.environ.get("REDIS_URL")
    was_running = embedded and _embedded_running()
    _, store = open_store(start=True)
    if embedded and not was_running and _embedded_running():
        say(f"note: started the pool's embedded Redis in the background (state in {_state_dir() / 'redis'}); "
            "`pool down` stops it", err=True)
    for spec in specs:
        _apply_one(store, spec)


def _apply_one(store: Store, spec: Any) -> None:
    """Store one validated spec and say what changed: created, unchanged, or the fields that changed."""
    old = store.get_domain(spec.name)
    refused = old is None and spec.name in getattr(store, "refused", {})
    changes = spec_changes(old, spec) if old is not None else []
    if old is not None and not changes:
        say(f"domain {spec.name} unchanged")
        return
    created = store.put_domain(spec)
    store.record(spec.name, "applied", time.time(), by="cli", created=created, **({"changes": changes[:50]} if changes else {}))
    if created:
        say(f"domain {spec.name} created")
    elif refused or old is None:
        say(f"domain {spec.name} changed: replaced a stored spec that did not validate")
    else:
        say(f"domain {spec.name} changed: {changes_line(changes)}")


def _counts(store: Store, name: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in store.nodes(name):
        counts[n.state.value] = counts.get(n.state.value, 0) + 1
    return counts


def _domain(store: Store, name: str) -> Any:
    """The named domain's spec, or one line naming the domains there are."""
    spec = store.get_domain(name)
    refused = getattr(store, "refused", {}).get(name)
    if spec is None and refused:
        fail(f"domain {name!r} is stored but its spec does not validate ({refused}); `pool apply` it again", 1)
    if spec is None:
        names = [s.name for s in store.domains()]
        known = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        fail(f"no domain {name!r}; domains: {known or 'none (create one with `pool apply -f SPEC.yaml`)'}")
    return spec


#: `-o` formats of the listing commands: a table fitted to the terminal, with more columns, or JSON.
OUTPUTS = ("table", "wide", "json")


def output_option(f: Any) -> Any:
    """``-o table|wide|json`` and ``--json`` (the same as ``-o json``)."""
    f = click.option("--json", "as_json", is_flag=True, help="machine-readable output (the same as -o json)")(f)
    return click.option("-o", "--output", type=click.Choice(OUTPUTS), default="table", show_default=True,
                        help="table (fitted to the terminal; whole when piped), wide (more columns), json")(f)


@main.command("ls")
@output_option
def ls(output: str, as_json: bool) -> None:
    """Domains: intended and actual size, sensor value, policy."""
    _, store = open_store(start=False)
    rows: list[dict[str, Any]] = []
    marks = store.marks()
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
            "paused": marks.paused_by(spec.name) is not None, "paused_by": marks.paused_by(spec.name),
            "deployable_type": spec.deployable_type, "sites": [s.name for s in spec.sites],
            "boot_failures": st.boot_failures,
        })
    if as_json or output == "json":
        emit_json(rows)
        return
    if not rows:
        say("no domains (create one with `pool apply -f SPEC.yaml`)", err=True)
        return
    wide = output == "wide"
    table = TextTable.of("DOMAIN", "POLICY", "SENSOR", Column("VALUE", flexible=True), "INTENDED", "ACTUAL",
                         "JOINED", "MIN/MAX", "OVERRIDE", *(("TYPE", "SITES") if wide else ()))
    for r in rows:
        number = _number(r["value"])
        value = ((one_line(r["error"]), "red") if r["error"] else
                 "-" if number is None else f"{number:g}")
        if r["boot_failures"]:  # `pool show` says why
            value = (f"degraded: {r['boot_failures']} boot failure(s)", "red")
        table.add_row(one_line(r["domain"]), one_line(r["policy"]), one_line(r["sensor"]), value,
                      one_line(r["intended"]), one_line(r["actual"]), one_line(r["joined"]),
                      f"{r['min']}/{r['max']}", "paused" if r["paused"] else
                      "auto" if r["override"] is None else one_line(r["override"]),
                      *((one_line(r["deployable_type"]), one_line(",".join(r["sites"]))) if wide else ()))
    print_table(table)


#: `pool show` leaves out nodes that ended (TERMINATED) longer ago than this, unless --all.
ENDED_SHOWN = 300.0


def _machines(spec: Any, nodes: list[Any]) -> tuple[dict[str, dict[str, Any]], Path | None]:
    """Process id (while it runs) and console log of each node on the local site, by node id; and
    the local site's directory (``None``: no node of this domain is there)."""
    local = [n for n in nodes if is_local(spec, n.site)]
    if not local:
        return {}, None
    try:
        driver = local_driver()
        found = driver.ex_describe([n.provider_id or n.node_id for n in local])
    except (OSError, RuntimeError, ValueError) as exc:  # the state directory: shown, not fatal
        say(f"warning: cannot read the local site's machines: {one_line(exc, 200)}", err=True)
        return {}, None
    return ({n.node_id: found[n.provider_id or n.node_id] for n in local if (n.provider_id or n.node_id) in found},
            Path(driver.root))


@main.command()
@click.argument("name")
@click.option("--events", "n_events", default=10, show_default=True, type=click.IntRange(min=0, max=2000),
              help="how many recent decisions to show")
@click.option("-A", "--all", "show_all", is_flag=True,
              help=f"also the nodes that ended more than {ENDED_SHOWN / 60:g} minutes ago")
@output_option
def show(name: str, n_events: int, show_all: bool, output: str, as_json: bool) -> None:
    """One domain: nodes by state (process ids, console logs), last readings, last decisions with reasons."""
    _, store = open_store(start=False)
    spec = _domain(store, name)
    st = store.get_state(name)
    now = time.time()
    every = store.nodes(name)
    nodes = [n for n in every if show_all or n.state != NodeState.TERMINATED or now - n.since <= ENDED_SHOWN]
    hidden = len(every) - len(nodes)
    hbs = store.heartbeats(name, [n.node_id for n in nodes])
    machines, site_dir = _machines(spec, nodes)
    decisions = store.events(name, n_events, kind="decision") if n_events else []

    def tasks(n: Any) -> Any:
        """Tasks running now: only from a heartbeat that is current (never an ended node's last count)."""
        hb = hbs.get(n.node_id)
        if hb is None or n.state == NodeState.TERMINATED or now - hb.time > spec.timeouts.heartbeat_timeout:
            return None
        view = next((r.get("nodes") for r in st.readings.values() if isinstance(r.get("nodes"), dict)), None)
        held = view.get(n.node_id) if view is not None else None  # the workload's own view of every node
        return held if isinstance(held, int) else hb.active

    order = {s: i for i, s in enumerate(NodeState)}
    nodes.sort(key=lambda n: (order[n.state], n.created))
    if as_json or output == "json":
        paused_by = store.marks().paused_by(name)
        emit_json({
            "spec": json.loads(spec.model_dump_json()),
            "intended": st.intended, "override": st.override, "readings": st.readings,
            "actual": sum(n.state.value in ("REQUESTED", "PENDING", "STARTED", "JOINED") for n in every),
            "paused": paused_by is not None, "paused_by": paused_by,
            "last_decision": st.last_decision,
            "boot_failures": {"count": st.boot_failures, "last_at": st.boot_failed_at, "error": st.boot_error,
                              "last_lines": _last_lines(store, name) if st.boot_failures else []},
            "nodes": [{"node": n.node_id, "name": n.name, "state": n.state.value, "site": n.site, "since": n.since,
                       "active": tasks(n), "machine": n.provider_id,
                       "pid": machines.get(n.node_id, {}).get("pid"),
                       "console": machines.get(n.node_id, {}).get("console"),
                       "last_heartbeat": hbs[n.node_id].time if n.node_id in hbs else None} for n in nodes],
            "nodes_not_shown": hidden,
            "decisions": decisions,
        })
        return
    console.print(f"[bold]{escape(name)}[/]  " + escape(redact_text(
        f"policy {spec.policy.name}  sensor {spec.sensor.name}  min {spec.min} max {spec.max}  "
        f"intended {st.intended}  override {'auto' if st.override is None else st.override}")), soft_wrap=True)
    for sname, r in redact(st.readings).items():
        if r.get("error"):
            console.print(f"reading {cell(sname)}: [red]error: {cell(r['error'])}[/]", soft_wrap=True)
        else:
            say(f"reading {sname}: " + ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
                                                for k, v in r.items() if k not in ("error", "notes", "nodes")
                                                and v is not None))
        for note in r.get("notes") or []:  # work the sensor did not count, and why
            say(f"  {sname}: {note}")
    if st.boot_failures:
        _say_degraded(store, name, st, now)
    wide = output == "wide"
    named = any(n.name for n in nodes)  # a named domain: the scheduler's node name beside the record
    table = TextTable.of("NODE", *(("NAME",) if named else ()), "STATE", "SITE", "PID", "FOR", "TASKS",
                         "LAST HEARTBEAT", *(("MACHINE", Column("LOG", flexible=True)) if wide else ()))
    for n in nodes:
        hb = hbs.get(n.node_id)
        machine = machines.get(n.node_id, {})
        active = tasks(n)
        table.add_row(one_line(n.node_id), *((one_line(n.name or "-"),) if named else ()), n.state.value,
                      one_line(n.site),
                      "-" if machine.get("pid") is None else str(machine["pid"]), _ago(now - n.since),
                      "-" if active is None else one_line(active),
                      "-" if hb is None else f"{_ago(now - hb.time)} ago",
                      *((one_line(n.provider_id or "-"), one_line(machine.get("console") or "-")) if wide else ()))
    if nodes:
        print_table(table)
    else:
        say("no nodes")
    if hidden:
        say(f"({hidden} node(s) that ended more than {ENDED_SHOWN / 60:g} minutes ago not shown: --all shows them)")
    if site_dir is not None and not wide:
        say(f"console logs: `pool logs NODE` (files: {site_dir}/NODE/console.log; -o wide shows each)")
    console.print("[bold]decisions[/] (newest first)")
    for d in redact(decisions):
        when = _number(d.get("time"))
        stamp = time.strftime("%H:%M:%S", time.localtime(when)) if when is not None else "--:--:--"
        say(f"  {stamp}  target {d.get('target')} (actual {d.get('actual')}): {d.get('reason')}")


def _last_lines(store: Store, name: str) -> list[str]:
    """The last lines the workload wrote before its latest exit (the agent's `workload_exit` event)."""
    exits = redact(store.events(name, 50, kind="workload_exit"))[:1]
    lines = exits[0].get("last_lines") if exits else None
    return [one_line(line) for line in lines] if isinstance(lines, list) else []


def _say_degraded(store: Store, name: str, st: Any, now: float) -> None:
    """Why a domain's workers keep failing on boot, in the workload's own words, and when it tries again."""
    from pool.control.backoff import boot_backoff

    wait = boot_backoff(st, now)
    console.print(f"[red]degraded[/]: {st.boot_failures} boot failure(s) in a row; " + escape(one_line(
        f"{st.boot_error}; next launch " + (f"in {wait:.0f}s" if wait > 0 else "when a worker is wanted")
        + " (one at a time until a worker joins)")), soft_wrap=True)
    lines = _last_lines(store, name)
    if lines:
        say("  the workload's last lines:")
        for line in lines[-10:]:
            say(f"    {line}")


def _ago(seconds: float) -> str:
    """A duration as people read it: 42s, 3m10s, 2h05m, 3d4h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("size")
def resize(name: str, size: str) -> None:
    """Set a domain's size by hand (an operator event); `auto` hands it back to the policy."""
    _, store = open_store(start=False)
    spec = _domain(store, name)
    if size == "auto":
        store.set_override(name, None)
        store.record(name, "resize", time.time(), by="cli", size="auto")
        say(f"domain {name}: size handed back to policy {spec.policy.name}")
        return
    try:
        n = int(size) if re.fullmatch(r"\s*[+-]?[0-9]{1,12}\s*", size) else None
    except ValueError:
        n = None
    if n is None:
        fail(f"size must be a whole number between {spec.min} and {spec.max}, or 'auto'; got {size!r}")
    if not spec.min <= n <= spec.max:
        fail(f"size {n} is outside the domain's bounds [{spec.min}, {spec.max}]; change min/max with `pool apply`")
    store.set_override(name, n)
    store.record(name, "resize", time.time(), by="cli", size=n)
    say(f"domain {name}: intended size {n} (operator override; `pool resize {name} auto` to undo)")


@main.command()
@click.argument("name")
@click.option("--timeout", default=None, type=float, help="seconds to wait for the workers to drain "
              "(default: the domain's timeouts.drain plus a minute)")
def delete(name: str, timeout: float | None) -> None:
    """Remove a domain: its workers are drained first (by the running manager, whatever the domain's
    min and even with its broker unreachable), then its services (a Spark master) are stopped."""
    _, store = open_store(start=False)
    spec = _domain(store, name)
    if _ending(store, name):
        store.set_override(name, 0)  # the override wins over min, the policy and a failing sensor
        store.record(name, "delete", time.time(), by="cli", what="draining the workers before the domain goes")
        limit = spec.timeouts.drain + 60.0 if timeout is None else timeout
        say(f"draining {len(_ending(store, name))} node(s) of {name} (up to {limit:g}s; `pool up` must be running)")
        deadline = time.monotonic() + limit
        while _ending(store, name) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = _ending(store, name)
        if left:
            fail(f"{len(left)} node(s) of {name} still running after {limit:g}s ({', '.join(left[:5])}): is a "
                 f"manager running (`pool up`)? The domain stays, at size 0; `pool show {name}` says more", 1)
    workload = workload_for_type(spec.deployable_type)
    for service in workload.services():
        if service.applies(spec):
            try:
                service.stop(spec)
            except Exception as exc:  # noqa: BLE001  (said; the domain still goes)
                say(f"warning: could not stop a service of {name}: {one_line(exc)}", err=True)
    store.delete_domain(name)
    say(f"domain {name} deleted")


@main.command()
@click.argument("name")
def pause(name: str) -> None:
    """Hold a domain's intended size where it is (its policy is not consulted; dead workers are still replaced)."""
    from pool.workloads.base import cannot_pause

    _, store = open_store(start=False)
    why = cannot_pause(_domain(store, name))
    if why:
        fail(why)
    now = time.time()
    store.set_paused(name, "cli", now)
    store.record(name, "pause", now, by="cli")
    say(f"domain {name}: paused at intended size {store.get_state(name).intended} (`pool resume {name}` to undo)")


@main.command()
@click.argument("name")
def resume(name: str) -> None:
    """Hand a paused domain back to its policy."""
    _, store = open_store(start=False)
    _domain(store, name)
    now = time.time()
    store.set_paused(name, None, now)
    store.record(name, "resume", now, by="cli")
    say(f"domain {name}: resumed (sized by its policy again)")


@main.group()
def token() -> None:
    """Bearer tokens for the REST API (roles: viewer, operator, admin); only their hashes are stored."""


@token.command("create")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(("viewer", "operator", "admin")),
              help="viewer reads; operator also resizes and pauses; admin also applies, deletes and manages tokens")
def token_create(name: str, role: str) -> None:
    """Create a token and print it, once (it cannot be shown again)."""
    from pool.api.auth import TokenError, create_token

    _, store = open_store(start=True)
    try:
        value = create_token(store, name, role, now=time.time())
    except TokenError as exc:
        fail(str(exc))
    click.echo(value)
    say(f"token {name} ({role}) created: shown once, keep it; send it as 'Authorization: Bearer TOKEN'", err=True)


@token.command("ls")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def token_ls(as_json: bool) -> None:
    """Tokens: name, role, when created (never the token)."""
    from pool.api.auth import list_tokens

    _, store = open_store(start=False)
    rows = list_tokens(store)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        say("no tokens (`pool token create NAME --role viewer|operator|admin`)", err=True)
        return
    table = TextTable.of("NAME", "ROLE", "CREATED")
    for r in rows:
        table.add_row(one_line(r["name"]), r["role"], time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created"])))
    print_table(table)


@token.command("rm")
@click.argument("name")
def token_rm(name: str) -> None:
    """Revoke a token."""
    _, store = open_store(start=False)
    if not store.delete_token(name):
        fail(f"no token named {name[:64]!r} (`pool token ls` lists them)", 1)
    say(f"token {name} removed")


def _ending(store: Store, name: str) -> list[str]:
    """Nodes of the domain whose machine may still run."""
    return [n.node_id for n in store.nodes(name) if n.state != NodeState.TERMINATED]


@main.command()
@click.argument("name")
@click.option("-n", "count", default=30, show_default=True, type=click.IntRange(min=1, max=2000),
              help="how many events, newest first")
def events(name: str, count: int) -> None:
    """The domain's event log, newest first."""
    _, store = open_store(start=False)
    found = store.events(name, count)
    if not found:
        _domain(store, name)  # an unknown name is an error; a known domain may have no events yet
    for e in redact(found):
        when = _number(e.pop("time", None))
        stamp = time.strftime("%H:%M:%S", time.localtime(when)) if when is not None else "--:--:--"
        kind = str(e.pop("kind", "?"))
        click.echo(one_line(f"{stamp} {kind:10s} " + " ".join(f"{k}={v}" for k, v in e.items()), 2000))


@main.command("watch")
@click.argument("name", required=False)
@click.option("--interval", default=1.0, show_default=True, type=Seconds(0.1, 3600), help="seconds between refreshes")
@click.option("--count", default=None, type=click.IntRange(min=1), metavar="N",
              help="show N refreshes, one after another, then exit (default: live until Ctrl-C)")
@click.option("--once", is_flag=True, help="one refresh, then exit (the same as --count 1)")
def watch_command(name: str | None, interval: float, count: int | None, once: bool) -> None:
    """Live view of every domain (or of NAME: its reading and workers over the last hour, nodes, decisions)."""
    from pool.cli import watch as watching

    _, store = open_store(start=False)
    if name is not None:
        _domain(store, name)
    try:
        watching.run(observe_frame=lambda now: watching.observe(store, name, now), console=console,
                     interval=interval, count=1 if once else count)
    except KeyboardInterrupt:
        return
    except redis.RedisError as exc:
        fail(f"lost the pool's Redis: {one_line(exc, 200)}", 1)


@main.command("env")
@click.argument("name")
@click.option("-o", "--output", type=click.Choice(("text", "json", "shell")), default="text", show_default=True,
              help="text (YAML with comments), json, or shell (export lines: eval \"$(pool env NAME -o shell)\")")
@click.option("--json", "as_json", is_flag=True, help="the same as -o json")
def env(name: str, output: str, as_json: bool) -> None:
    """What a producer or notebook needs for domain NAME: broker URL (with its password) and queue;
    for Spark, the master URL and executor settings that fit one worker. Printed only here, on
    standard output: treat it like the password file it comes from."""
    url, store = open_store(start=False)
    spec = _domain(store, name)
    try:
        data = producer_env(spec, url)
    except EnvError as exc:
        fail(str(exc), 1)
    if data.get("note"):
        say(f"note: {data['note']}", err=True)
    # the one output that carries credentials, unmasked on purpose: never logged or recorded
    if as_json or output == "json":
        click.echo(json.dumps(data, indent=2))
    elif output == "shell":
        click.echo(env_shell(data))
    else:
        click.echo(env_text(data, f"pool env {name}"))


@main.command("logs")
@click.argument("node")
@click.option("--tail", type=click.IntRange(min=0), default=None, metavar="N", help="only the last N lines")
@click.option("-f", "--follow", is_flag=True, help="keep printing what the node writes until it ends (Ctrl-C stops)")
@click.option("-d", "--domain", default=None, help="the node's domain (default: any)")
def logs(node: str, tail: int | None, follow: bool, domain: str | None) -> None:
    """A node's console: what its boot script and workload wrote (local site: a file per node under
    the state directory, {state}/sites/local/NODE/console.log)."""
    url = _resolve(start=False)
    store: Store | None = None
    if url is not None:  # a console is most wanted when things are broken: without Redis, the directories
        try:
            store = Store.from_url(url, namespace=_namespace())
            store.ping()
        except (redis.RedisError, OSError, ValueError) as exc:
            store = None
            say(f"note: the pool's Redis does not answer ({one_line(exc, 160)}): looking for the node's "
                "directory only", err=True)
    found = list(iter_nodes(store, node, domain)) if store is not None else []
    if domain is not None and store is not None:
        _domain(store, domain)
    machine = node
    if found:
        spec, rec = found[0]
        if not is_local(spec, rec.site):
            fail(f"node {node} runs on site {rec.site}: the pool keeps the console of local nodes only; "
                 f"ask the site's console for machine {rec.provider_id or '(not launched)'}", 1)
        machine = rec.provider_id or rec.node_id
    driver = local_driver()
    try:
        path = driver.ex_console_path(machine)
    except ValueError:
        path = None
    if path is None or not path.is_file():
        if found:
            fail(f"node {node} has no console log ({path}): it was never started on this machine, or it ended "
                 "long ago and its directory was removed", 1)
        names = [s.name for s in store.domains()] if store is not None else []
        if node in names and store is not None:
            ids = [n.node_id for n in store.nodes(node)]
            listed = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
            fail(f"{node!r} is a domain, not a node; its nodes: {listed or 'none'} (`pool show {node}`)")
        where = "" if store is not None else " (the pool's Redis is not running: only node directories were searched)"
        fail(f"no node {node!r}{where}; `pool show DOMAIN` lists a domain's nodes"
             + (f" (domains: {', '.join(names[:20])})" if names else ""))

    def alive() -> bool:
        return bool(driver.ex_describe([machine]).get(machine, {}).get("alive"))

    try:
        stream_console(path, tail=tail, follow=follow, alive=alive, echo=click.echo)
    except KeyboardInterrupt:  # Ctrl-C ends --follow: not an error
        return
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}", 1)


def _add_workload_commands() -> None:
    """Each workload's own command group (`pool spark`, ...), from the workload registry."""
    from pool.workloads.base import workloads

    for workload in workloads():
        group = workload.cli()
        if group is not None:
            main.add_command(group)


_add_workload_commands()
from pool.cli.simulate import simulate  # noqa: E402  (`pool simulate`)

main.add_command(simulate)

if __name__ == "__main__":
    main()
