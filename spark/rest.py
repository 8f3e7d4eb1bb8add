"""Reads a Spark standalone master, its workers and its drivers through their web UIs (JSON, REST)."""

from __future__ import annotations

import html
import json
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

#: The master's application page links the driver's own web UI with this text.
_DETAIL_LINK = re.compile(r'<a[^>]*href="([^"]+)"[^>]*>\s*Application Detail UI\s*</a>')
_MEMORY = re.compile(r"^(\d+)([kmgtKMGT]?)$")


class Unreachable(RuntimeError):
    """A Spark web UI that did not answer; the message is one line naming it."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "no answer (timed out)"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def get_text(url: str, *, timeout: float, what: str, base: str | None = None) -> str:
    """GET ``url``; raise :class:`Unreachable` naming ``what`` (at ``base``) when it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return str(resp.read().decode("utf-8", "replace"))
    except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts, refused, bad URL
        raise Unreachable(f"{what} at {base or url} does not answer: {_reason(exc)}") from None


def get_json(url: str, *, timeout: float, what: str, base: str | None = None) -> Any:
    text = get_text(url, timeout=timeout, what=what, base=base)
    try:
        return json.loads(text)
    except ValueError:
        raise Unreachable(f"{what} at {base or url} answered with something that is not JSON") from None


def master_state(master_ui: str, *, timeout: float) -> dict[str, Any]:
    """The master's ``/json/`` document: workers, cores, coresused, activeapps, status."""
    data = get_json(f"{master_ui.rstrip('/')}/json/", timeout=timeout, what="Spark master UI",
                    base=master_ui)
    if not isinstance(data, dict) or "workers" not in data:
        raise Unreachable(f"Spark master UI at {master_ui} did not give a master state document")
    return data


def worker_state(worker_ui: str, *, timeout: float) -> dict[str, Any]:
    """A worker's ``/json/`` document: its id, cores, executors."""
    data = get_json(f"{worker_ui.rstrip('/')}/json/", timeout=timeout, what="Spark worker UI",
                    base=worker_ui)
    if not isinstance(data, dict):
        raise Unreachable(f"Spark worker UI at {worker_ui} did not give a worker state document")
    return data


def driver_ui_of(master_ui: str, app_id: str, *, timeout: float) -> str | None:
    """The driver web UI of a running application, from the master's page of that application."""
    page = get_text(f"{master_ui.rstrip('/')}/app/?appId={app_id}", timeout=timeout,
                    what="Spark master UI", base=master_ui)
    found = _DETAIL_LINK.search(page)
    if not found:
        return None
    url = html.unescape(found.group(1)).rstrip("/")
    return url if url.startswith(("http://", "https://")) else None


def app_api(driver_ui: str, app_id: str, path: str, *, timeout: float) -> Any:
    """``GET {driver_ui}/api/v1/applications/{app_id}/{path}`` (Spark's monitoring REST API)."""
    return get_json(f"{driver_ui.rstrip('/')}/api/v1/applications/{app_id}/{path}", timeout=timeout,
                    what=f"driver UI of {app_id}", base=driver_ui)


def memory_mb(text: str) -> int:
    """A JVM memory size (``512m``, ``2g``, bytes without a unit) in megabytes."""
    found = _MEMORY.match(str(text).strip())
    if not found:
        raise ValueError(f"{text!r} is not a memory size; expected e.g. 512m or 2g")
    number, unit = int(found.group(1)), found.group(2).lower()
    factor = {"": 1 / (1024 * 1024), "k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}[unit]
    return int(number * factor)


# ---------------------------------------------------------------------------
# Where Spark is: the pyspark package ships a full Spark (jars, bin/spark-class, bin/spark-submit)
# ---------------------------------------------------------------------------


class SparkNotInstalled(RuntimeError):
    """pyspark is missing."""


def spark_home() -> Path:
    try:
        import pyspark
    except ImportError:
        raise SparkNotInstalled(
            "pyspark is not installed: install the 'spark' extra (pip install 'elastic-pool[spark]')"
        ) from None
    return Path(pyspark.__file__).resolve().parent


def spark_bin(name: str) -> str:
    """``spark-class`` or ``spark-submit`` from pyspark's Spark."""
    path = spark_home() / "bin" / name
    if not path.exists():
        raise SparkNotInstalled(f"{path} is missing: reinstall pyspark")
    return str(path)
