"""Access control for the API: bearer tokens with a role, stored in Redis only as SHA-256 hashes.

Roles nest (``viewer`` < ``operator`` < ``admin``): a viewer reads everything, an operator also
resizes, pauses and resumes, an admin also applies and deletes domains and manages tokens. A token is
shown once, when created (``pool token create``); the store keeps its name, role, hash and creation
time. :func:`require` is the FastAPI dependency a route declares with the role it needs.

Imports ``pool.state`` (the store) and ``pool.core``; FastAPI for the dependency.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any, Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pool.state.store import TOKEN_ROLES, Store

#: what a token starts with (so a leaked one is recognisable, and greppable in a secret scanner)
TOKEN_PREFIX = "pool_"
#: token names: what may follow `by:` in an event
TOKEN_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
#: names a token may not have: what the CLI records as its own changes
RESERVED_NAMES = frozenset({"cli"})
#: the longest bearer value looked at (anything longer is no token of ours)
TOKEN_MAX = 200


class TokenError(ValueError):
    """A token request refused; the message is one line naming what is wrong."""


class ApiError(Exception):
    """An error answered as ``{"error": message}`` with ``status`` (the app's handler renders it)."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


@dataclass(frozen=True)
class Caller:
    """Who is calling: the token's name (recorded as ``by`` on every change) and its role."""

    name: str
    role: str


def digest(token: str) -> str:
    """The stored form of a token (tokens are 256 random bits: a plain hash is enough)."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def check_name(name: str) -> str:
    if not TOKEN_NAME_RE.fullmatch(name):
        raise TokenError(f"token name {name[:70]!r} is not valid: lowercase letters, digits, '.', '_' and '-', "
                         "starting with a letter or digit, at most 63 characters")
    if name in RESERVED_NAMES:
        raise TokenError(f"token name {name!r} is reserved (changes made with the CLI are recorded as by: cli)")
    return name


def check_role(role: str) -> str:
    if role not in TOKEN_ROLES:
        raise TokenError(f"role {role[:40]!r} is not one of {', '.join(TOKEN_ROLES)}")
    return role


def create_token(store: Store, name: str, role: str, *, now: float) -> str:
    """A new token for ``name`` with ``role``; returned once, only its hash is stored."""
    check_name(name)
    check_role(role)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    if not store.put_token(name, role=role, digest=digest(token), now=now):
        raise TokenError(f"a token named {name!r} exists already; remove it first (`pool token rm {name}`)")
    return token


def list_tokens(store: Store) -> list[dict[str, Any]]:
    """Every token's name, role and creation time (never its hash)."""
    return [{"name": name, "role": entry["role"], "created": entry["created"]}
            for name, entry in sorted(store.tokens().items())]


def authenticate(store: Store, token: str) -> Caller | None:
    """The caller a bearer token belongs to, or ``None``."""
    if not token or len(token) > TOKEN_MAX or not token.startswith(TOKEN_PREFIX):
        return None
    wanted = digest(token)
    found = None
    for name, entry in store.tokens().items():  # compared in constant time, every entry
        if hmac.compare_digest(entry["hash"], wanted):
            found = Caller(name=name, role=entry["role"])
    return found


def allows(role: str, needed: str) -> bool:
    """Whether ``role`` may do what ``needed`` may."""
    return role in TOKEN_ROLES and TOKEN_ROLES.index(role) >= TOKEN_ROLES.index(needed)


bearer = HTTPBearer(auto_error=False, description="a token from `pool token create NAME --role ROLE`")


def require(needed: str) -> Callable[..., Caller]:
    """The dependency of a route that needs ``needed``: the caller, or 401 (no or unknown token) / 403."""
    check_role(needed)

    def dependency(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Caller:
        challenge = {"WWW-Authenticate": "Bearer"}
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise ApiError(401, "authorization: missing; send 'Authorization: Bearer TOKEN' "
                                "(tokens: `pool token create NAME --role ROLE`)", headers=challenge)
        caller = authenticate(request.app.state.store, credentials.credentials)
        if caller is None:
            raise ApiError(401, "authorization: unknown or revoked token", headers=challenge)
        if not allows(caller.role, needed):
            raise ApiError(403, f"role: token {caller.name!r} is a {caller.role}; this needs {needed} or above")
        return caller

    return dependency
