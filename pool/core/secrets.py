"""Keeping secrets out of sight: redaction for anything shown, logged, recorded or raised.

Secrets travel only in user-data files private to their owner and in a worker's own environment.
Everything else (CLI output, ``--json`` included, events, logs, error messages) passes through
:func:`redact` or :func:`redact_text` first. Imports only the standard library.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

MASK = "***"

#: ``scheme://user:password@`` or ``scheme://:password@`` in any text.
_URL_CREDENTIALS = re.compile(r"(?<=://)(?P<user>[^/\s:@'\"]{0,256}):(?P<pw>[^/\s@'\"]{1,1024})@")
#: Field names whose values are secrets wherever they appear.
SECRET_KEYS = re.compile(r"(^|_)(password|passwd|pass|secret|token|credential|munge_key|pool_password|auth)($|_)",
                         re.IGNORECASE)

_known_lock = threading.Lock()
_known: set[str] = set()


def remember(*values: str | None) -> None:
    """Secret values (a Redis password, say) to be masked wherever they appear in text."""
    with _known_lock:
        for value in values:
            if value and len(value) >= 6:
                _known.add(value)


def redact_url(url: str) -> str:
    """The URL with the password of its user part masked (``redis://:***@host:port/0``)."""
    return redact_text(url)


def redact_text(text: str) -> str:
    """``text`` with every URL password and every remembered secret value masked."""
    out = _URL_CREDENTIALS.sub(lambda m: f"{m['user']}:{MASK}@", text) if "://" in text else text
    with _known_lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        if value in out:
            out = out.replace(value, MASK)
    return out


def redact(value: Any) -> Any:
    """A copy of a JSON-like value with secrets masked: URL passwords, remembered values, and the
    value of every key that names a secret (``password``, ``secret``, ``token``, ...)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and SECRET_KEYS.search(k) and v not in (None, "")
                    else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in every record's rendered message."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001  (a malformed record is left to logging itself)
            return True
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Mask secrets in everything the root logger's handlers (or ``logger``'s) write."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def protect_process() -> bool:
    """Make this process non-dumpable, so that other processes of the same user (a worker's task
    code on the local site, say) cannot read its environment or memory through /proc. True if set."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return bool(libc.prctl(4, 0, 0, 0, 0) == 0)  # PR_SET_DUMPABLE = 4
    except (OSError, AttributeError):
        return False
