"""What `pool` shows people: tables that fit the terminal (and are never cut when piped), what an
apply changed, a domain's producer environment (`pool env`) and node consoles (`pool logs`).

Pure helpers and the two commands' bodies; `pool.cli.commands` registers the commands. Imports
click, rich's cell widths, ``pool.core`` and ``pool.sites.local``; the Spark master's record only
when a Spark domain asks.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Sequence

import click
import yaml
from rich.cells import cell_len, set_cell_size

from pool.core.secrets import SECRET_KEYS, redact_text

# ---------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------

#: Spaces between two columns (fewer when the terminal is narrow).
GAPS = (3, 2, 1)
#: A column of free text (an error, a path) wraps down to this many cells before others are cut.
FLEX_MIN = 12
#: A cut column keeps at least this many cells (its last one an ellipsis).
CUT_MIN = 4
_ANSI = {"bold": "\x1b[1m", "red": "\x1b[31m", "dim": "\x1b[2m"}
_RESET = "\x1b[0m"


@dataclass
class Column:
    header: str
    #: free text that may wrap onto more lines in a narrow terminal (never cut)
    flexible: bool = False


@dataclass
class TextTable:
    """A kubectl-like table: an upper-case header row, columns separated by spaces, no borders.

    :meth:`render` with a width fits the table into it: gaps narrow first, then headers wider than
    their column's values are cut, flexible columns wrap, then the widest other columns are cut with
    an ellipsis; the first column (names, ids) is never cut. Without a width (output that is not a
    terminal) every cell is printed whole, however wide.
    """

    columns: list[Column]
    rows: list[list[tuple[str, str | None]]] = field(default_factory=list)

    @classmethod
    def of(cls, *columns: str | Column) -> "TextTable":
        return cls([c if isinstance(c, Column) else Column(c) for c in columns])

    def add_row(self, *cells: Any) -> None:
        """Cells are text (``None``: empty) or ``(text, style)`` with style ``red``, ``bold`` or ``dim``."""
        row: list[tuple[str, str | None]] = []
        for c in cells:
            text, style = c if isinstance(c, tuple) else (c, None)
            row.append(("" if text is None else str(text), style))
        self.rows.append(row)

    def widths(self, width: int | None) -> tuple[list[int], int]:
        n = len(self.columns)
        natural = [max([cell_len(c.header)] + [cell_len(r[i][0]) for r in self.rows]) for i, c in enumerate(self.columns)]
        if width is None:
            return natural, GAPS[0]
        gap = GAPS[0]
        for gap in GAPS:
            if sum(natural) + gap * (n - 1) <= width:
                return natural, gap
        widths = list(natural)
        budget = width - gap * (n - 1)
        flex = [i for i, c in enumerate(self.columns) if c.flexible]
        rest = [i for i in range(1, n) if i not in flex]
        cells = [max([0] + [cell_len(r[i][0]) for r in self.rows]) for i in range(n)]
        # first headers wider than their values (INTENDED over one digit), then free text wraps,
        # then the other columns are cut, widest first
        _squeeze(widths, rest, {i: max(cells[i], min(natural[i], CUT_MIN)) for i in rest}, budget)
        # the first column (the names people copy into the next command) is never cut
        steps = ((flex, FLEX_MIN), (rest, CUT_MIN), (flex, 4), (rest, 2))  # then: as is
        for group, floor in steps:
            _squeeze(widths, group, {i: min(natural[i], floor) for i in group}, budget)
        return widths, gap

    def render(self, width: int | None = None, *, color: bool = False) -> list[str]:
        widths, gap = self.widths(width)
        lines: list[str] = []
        header: list[tuple[str, str | None]] = [(c.header, "bold") for c in self.columns]
        for row in [header, *self.rows]:
            cells = []
            for i, (text, style) in enumerate(row):
                w = widths[i]
                if cell_len(text) <= w:
                    parts = [text]
                elif self.columns[i].flexible:
                    parts = _wrap(text, w)
                else:
                    parts = [set_cell_size(text, w - 1) + "…"]
                cells.append((parts, style))
            height = max(len(p) for p, _ in cells)
            for k in range(height):
                out = []
                for i, (parts, style) in enumerate(cells):
                    text = parts[k] if k < len(parts) else ""
                    pad = " " * (widths[i] - cell_len(text)) if i < len(cells) - 1 else ""
                    if color and style and text:
                        text = f"{_ANSI[style]}{text}{_RESET}"
                    out.append(text + pad)
                lines.append((" " * gap).join(out).rstrip())
        return lines


def _squeeze(widths: list[int], group: list[int], floors: dict[int, int], budget: int) -> None:
    """Narrow the widest columns of ``group`` one cell at a time (not below their floors) until the
    widths fit ``budget``."""
    while sum(widths) > budget:
        movable = [i for i in group if widths[i] > floors[i]]
        if not movable:
            return
        widest = max(widths[i] for i in movable)
        for i in movable:
            if widths[i] == widest and sum(widths) > budget:
                widths[i] -= 1


def _wrap(text: str, width: int) -> list[str]:
    lines = textwrap.wrap(text, width=max(1, width), break_long_words=True, break_on_hyphens=False) or [""]
    return [line if cell_len(line) <= width else set_cell_size(line, width) for line in lines]


def terminal_width() -> int | None:
    """The terminal's width when standard output is one, else ``None`` (nothing is cut)."""
    try:
        if not sys.stdout.isatty():
            return None
    except (AttributeError, ValueError):
        return None
    return max(20, shutil.get_terminal_size().columns)


def print_table(table: TextTable) -> None:
    """The table on standard output: fitted to a terminal, whole when piped or redirected."""
    width = terminal_width()
    color = width is not None and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
    for line in table.render(width, color=color):
        click.echo(line)


# ---------------------------------------------------------------------------
# what an apply changed
# ---------------------------------------------------------------------------

#: Changes an apply line names before "and N more".
CHANGES_SHOWN = 6
#: Characters of a value an apply line shows.
VALUE_SHOWN = 40
_UNSET = object()


def arrow() -> str:
    """``→`` where standard output can encode it, else ``->``."""
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "→".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "->"
    return "→"


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}.{i}", out)
    elif prefix and value not in ({}, []):
        out[prefix] = value


def _shown(value: Any) -> str:
    if value is _UNSET:
        return "(unset)"
    text = redact_text(value) if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join(text.split()) or '""'
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= VALUE_SHOWN else text[: VALUE_SHOWN - 3] + "..."


def spec_changes(old: Any, new: Any) -> list[str]:
    """The fields that differ between two domain specs, one short phrase each (``max 4→8``),
    secrets never shown (``broker: password changed (hidden)``)."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    _flatten(json.loads(old.model_dump_json()), "", before)
    _flatten(json.loads(new.model_dump_json()), "", after)
    to = arrow()
    out = []
    for key in [*after, *(k for k in before if k not in after)]:
        a, b = before.get(key, _UNSET), after.get(key, _UNSET)
        if a == b:
            continue
        if SECRET_KEYS.search(key.rsplit(".", 1)[-1]):
            out.append(f"{key} changed (value hidden)")
            continue
        x, y = _shown(a), _shown(b)
        out.append(f"{key}: password changed (hidden)" if x == y else f"{key} {x}{to}{y}")
    return out


def changes_line(changes: Sequence[str]) -> str:
    shown = ", ".join(changes[:CHANGES_SHOWN])
    more = len(changes) - CHANGES_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


# ---------------------------------------------------------------------------
# pool env
# ---------------------------------------------------------------------------


class EnvError(RuntimeError):
    """What a producer needs cannot be said yet (one line, no secret)."""


def producer_env(spec: Any, control_url: str) -> dict[str, Any]:
    """What a producer (Celery) or a notebook (Spark) needs for domain ``spec``: the broker URL
    with its password, the queue; or the master URL and executor properties that fit one worker.
    The ``env`` entry holds the same as environment variables the clients read."""
    from pool.state.redisserver import broker_url_for
    from pool.workloads.base import workload_for_type

    out: dict[str, Any] = {"domain": spec.name, "workload": spec.deployable_type}
    own = getattr(workload_for_type(spec.deployable_type), "producer_env", None)
    if own is not None:  # a workload that says what its users need (HTCondor: the pool's client settings)
        try:
            return {**out, **own(spec)}
        except LookupError as exc:
            raise EnvError(str(exc)) from None
    spark = workload_block(spec, "spark")
    if spark is not None:
        return {**out, **_spark_env(spec, spark)}
    broker = spec.broker or broker_url_for(control_url)
    out["broker_url"] = broker
    env = {"CELERY_BROKER_URL": broker}
    celery = workload_block(spec, "celery")
    if celery is not None:
        out["queue"] = celery.queue
        env["POOL_QUEUE"] = celery.queue
    out["env"] = env
    return out


def workload_block(spec: Any, key: str) -> Any:
    """The block of a domain spec its workload owns under ``key`` (``celery``, ``spark``), or None."""
    value = getattr(spec, key, None)
    if value is not None:
        return value
    block = getattr(spec, "block", None)  # workloads that own their blocks (pool.core.model.SpecBlock)
    if block is not None and key in json.loads(spec.model_dump_json()):
        return block
    return None


def _spark_env(spec: Any, sp: Any) -> dict[str, Any]:
    from spark.master import read_master, submit_conf

    recorded = read_master(spec.name) or {}
    url = recorded.get("url") if isinstance(recorded.get("url"), str) else None
    ui = recorded.get("ui") if isinstance(recorded.get("ui"), str) else None
    if not url and sp.master_url:  # adopted: the spec says where it is
        url, ui = sp.master_url, sp.master_ui
    if not url or not str(url).startswith("spark://"):
        raise EnvError(f"domain {spec.name} has no Spark master yet: `pool up` starts it (then run this again)")
    conf = dict(submit_conf(sp))  # executor memory and cores: one executor fills one worker
    if not sp.master_url:
        host = str(recorded.get("host") or sp.host)
        conf.update({"spark.driver.host": host, "spark.driver.bindAddress": host})
    args = ["--master", str(url)]
    for key, value in conf.items():
        args += ["--conf", f"{key}={value}"]
    env = {"MASTER": str(url), "PYSPARK_SUBMIT_ARGS": " ".join(shlex.quote(a) for a in [*args, "pyspark-shell"])}
    out: dict[str, Any] = {"master_url": url, "master_ui": ui}
    if recorded.get("state") == "starting":
        out["note"] = "the master is still starting"
    out.update({"worker": {"memory": sp.worker_memory, "cores": sp.worker_cores}, "spark_conf": conf, "env": env})
    return out


def env_text(data: dict[str, Any], command: str) -> str:
    """The default form: YAML, with comments saying how to use it."""
    body = {k: v for k, v in data.items() if k not in ("env", "note")}
    lines = [f"# domain {data['domain']} ({data['workload']}): what "
             + ("a notebook or spark-submit needs" if "master_url" in data else
                "a submitter needs" if "collector" in data else "a producer needs")]
    lines.append(yaml.safe_dump(body, sort_keys=False, default_flow_style=False, width=10_000).rstrip())
    names = ", ".join(data.get("env", {}))
    lines.append(f'# as environment variables ({names}): eval "$({command} -o shell)"')
    if "queue" in data:
        lines.append(f"# send to the queue: task.apply_async(..., queue={data['queue']!r}), "
                     f"or app.conf.task_default_queue = {data['queue']!r}")
    return "\n".join(lines)


def env_shell(data: dict[str, Any]) -> str:
    return "\n".join(f"export {k}={shlex.quote(str(v))}" for k, v in data.get("env", {}).items())


# ---------------------------------------------------------------------------
# nodes on the local site: process ids, consoles
# ---------------------------------------------------------------------------


def local_driver() -> Any:
    """The local site's driver over the pool's state directory (as `pool up` makes it)."""
    from pool.sites.local import LocalNodeDriver

    return LocalNodeDriver()


def is_local(spec: Any, site: str) -> bool:
    """Whether ``site`` of ``spec`` is the built-in local site (whose machines are processes here)."""
    if site != "local":
        return False
    return all(s.provider is None for s in spec.sites if s.name == site)


def printable(line: str) -> str:
    """A console line as it may be shown: secrets masked, control characters (terminal escapes) as ``?``."""
    clean = "".join(ch if ch.isprintable() or ch == "\t" else "?" for ch in line.rstrip("\r\n"))
    return redact_text(clean)


def tail_lines(fh: BinaryIO, count: int, block: int = 65536) -> list[bytes]:
    """The last ``count`` lines of a binary file, read from its end; leaves ``fh`` at the end."""
    fh.seek(0, os.SEEK_END)
    end = pos = fh.tell()
    data = b""
    while pos > 0 and data.count(b"\n") <= count:
        step = min(block, pos)
        pos -= step
        fh.seek(pos)
        data = fh.read(step) + data
    fh.seek(end)
    lines = data.splitlines(keepends=True)
    return lines[-count:] if count else []


def stream_console(path: Path, *, tail: int | None, follow: bool, alive: Callable[[], bool],
                   echo: Callable[[str], None], poll: float = 0.25) -> None:
    """Print the console at ``path`` (the last ``tail`` lines), then, with ``follow``, what is
    appended, until ``alive()`` is false and nothing more was written."""
    with open(path, "rb") as fh:
        if tail is not None:
            for raw in tail_lines(fh, tail):
                echo(printable(raw.decode("utf-8", "replace")))
        else:
            for raw in iter(lambda: fh.readline(1 << 20), b""):
                echo(printable(raw.decode("utf-8", "replace")))
        if not follow:
            return
        partial = b""
        quiet_checks = 0
        while True:
            chunk = fh.read(1 << 20)
            if chunk:
                quiet_checks = 0
                partial += chunk
                *complete, partial = partial.split(b"\n")
                for raw in complete:
                    echo(printable(raw.decode("utf-8", "replace")))
                continue
            if not alive():
                quiet_checks += 1
                if quiet_checks > 1:  # ended, and one more read found nothing
                    if partial:
                        echo(printable(partial.decode("utf-8", "replace")))
                    return
            time.sleep(poll)


def iter_nodes(store: Any, node: str, domain: str | None) -> Iterator[tuple[Any, Any]]:
    """``(spec, record)`` of node ``node`` in ``domain`` (or in any domain)."""
    specs = store.domains()
    for spec in specs:
        if domain is not None and spec.name != domain:
            continue
        rec = store.node(spec.name, node)
        if rec is not None:
            yield spec, rec
