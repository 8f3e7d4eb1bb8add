"""The REST API: domains (list, get, apply, delete, resize, pause, resume), nodes, readings history,
events and their live stream, managers, the work queue, usage, endpoints and tokens; the dashboard's
files at ``/``. Every error is ``{"error": "<one line>"}`` with a 4xx status (503 when the store is away).

:func:`create_app` builds the FastAPI application over a store; ``pool.api.server`` serves it.
Imports ``pool.api`` (auth, models, views, specs, and lazily usage and endpoints), ``pool.state`` and
``pool.core``.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Callable

import anyio.to_thread
import redis
from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pool.api import models as m
from pool.api import views
from pool.api.auth import ApiError, Caller, TokenError, create_token, list_tokens, require
from pool.api.stream import event_stream
from pool.core.model import NAME_RE, SpecError
from pool.core.secrets import redact_text
from pool.state.store import Store
from pool.workloads.base import cannot_pause

log = logging.getLogger("elastic_pool.api")

STATIC = Path(__file__).resolve().parent / "static"
#: largest request body taken (a domain spec is far smaller)
BODY_LIMIT = 1 << 20
#: worker threads for the routes (each open event stream holds one while it waits on the store)
THREADS = 200
#: how old the shared summary of every domain may be when `GET /domains` answers
LIST_MAX_AGE = 0.25

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": m.ErrorBody, "description": "no token, or an unknown one"},
    403: {"model": m.ErrorBody, "description": "the token's role is too weak"},
    404: {"model": m.ErrorBody, "description": "no such domain"},
    409: {"model": m.ErrorBody, "description": "the domain is being deleted, or cannot be paused (sized by its scheduler)"},
    413: {"model": m.ErrorBody, "description": "the body is larger than 1 MiB"},
    422: {"model": m.ErrorBody, "description": "a field is wrong (the message names it)"},
    503: {"model": m.ErrorBody, "description": "the pool's store is unavailable"},
}

DomainName = Annotated[str, PathParam(description="the domain's name", max_length=200)]

router = APIRouter()

viewer = require("viewer")
operator = require("operator")
admin = require("admin")


def create_app(*, store: Store, keepalive: float = 15.0, poll: float = 0.5,
               clock: Callable[[], float] = time.time) -> FastAPI:
    """The API over ``store``. ``keepalive``: seconds between comments on an idle event stream;
    ``poll``: the longest an event stream waits on the store before it looks for summary changes."""
    app = FastAPI(title="elastic-pool", version="1", description="The operator's API of an elastic compute pool.",
                  docs_url=None, redoc_url=None,  # their pages load scripts from a CDN: the document is enough
                  responses={k: v for k, v in ERRORS.items() if k in (401, 422, 503)})
    app.state.store = store
    app.state.summaries = views.SummaryCache(store)
    app.state.stopping = threading.Event()
    app.state.keepalive = keepalive
    app.state.poll = poll
    app.state.clock = clock
    _install_errors(app)
    app.add_middleware(Guard)
    _dashboard(app)
    app.include_router(router)
    return app


# ---------------------------------------------------------------------------
# errors: one JSON line, never a stack trace
# ---------------------------------------------------------------------------


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": redact_text(message)[:500]}, status_code=status, headers=headers)


_LOC_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")


def _field_error(exc: RequestValidationError) -> str:
    """The first validation error as ``where: what`` (``body.size: ...``)."""
    errors = exc.errors()
    if not errors:
        return "request: not valid"
    first = errors[0]
    parts = [str(p) for p in first.get("loc", ())]
    kept = [p for p in parts if _LOC_PART.fullmatch(p)]  # not pydantic's names of union members
    return f"{'.'.join(kept) or 'request'}: {first.get('msg', 'not valid')}"


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _field_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 400:  # a body that is not what its content type says: a field error like any other
            return _error(422, f"body: {detail}")
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"path: no route {request.url.path[:100]!r} (see /openapi.json)"
        return _error(exc.status_code, detail, getattr(exc, "headers", None))

    @app.exception_handler(redis.RedisError)
    async def store_away(request: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("API %s %s: the store failed: %s", request.method, request.url.path, exc)
        return _error(503, f"store: the pool's Redis failed ({type(exc).__name__}); try again")


class Guard:
    """Around every request: a declared body over :data:`BODY_LIMIT` is refused (413), and an exception
    no handler took is one log line and a 503 JSON answer (never a 500, never a stack trace)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.threads_set = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.threads_set:  # each event stream holds a thread while it waits on the store
            limiter = anyio.to_thread.current_default_thread_limiter()
            limiter.total_tokens = max(limiter.total_tokens, THREADS)
            self.threads_set = True
        length = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > BODY_LIMIT:
            response = _error(413, f"body: larger than {BODY_LIMIT} bytes" if length.isdigit()
                              else "content-length: not a number")
            await response(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:  # a bug: said in one line, answered as JSON
            log.error("API %s %s failed: %s: %s", scope.get("method"), str(scope.get("path"))[:100],
                      type(exc).__name__, redact_text(str(exc))[:300])
            if not started:
                await _error(503, f"internal: {type(exc).__name__}; the request was not carried out")(
                    scope, receive, send)


# ---------------------------------------------------------------------------
# routes
# ---------------------------------------------------------------------------


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _known(store: Store, name: str) -> Any:
    """The domain's spec, or 404."""
    spec = store.get_domain(name) if NAME_RE.fullmatch(name) else None
    if spec is None:
        raise ApiError(404, f"name: no domain {name[:64]!r}")
    return spec


def _changed(request: Request, name: str) -> dict[str, Any]:
    """The domain's summary after a change (read now; the shared list is read again next time)."""
    request.app.state.summaries.invalidate()
    return _read(request, name)


def _read(request: Request, name: str, *, full: bool = False) -> dict[str, Any]:
    """The domain's summary (``full``: its detail) read now, or 404."""
    out = views.read_summary(_store(request), name, full=full)
    if out is None:
        raise ApiError(404, f"name: no domain {name[:64]!r}")
    return out


def _dashboard(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def index() -> Response:
        page = STATIC / "index.html"
        if not page.is_file():
            return _error(404, "dashboard: not installed (pool/api/static/index.html is missing)")
        return FileResponse(page, media_type="text/html")

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/healthz", response_model=m.Health, tags=["meta"])
    def healthz() -> dict[str, Any]:
        """Whether the API answers (no token needed)."""
        return {"ok": True}


@router.get("/whoami", response_model=m.Whoami, tags=["meta"])
def whoami(caller: Caller = Depends(viewer)) -> dict[str, Any]:
    return {"name": caller.name, "role": caller.role}


@router.get("/domains", response_model=m.DomainList, tags=["domains"])
def domains(request: Request, caller: Caller = Depends(viewer)) -> Response:
    """Every domain at a glance."""
    return Response(request.app.state.summaries.body(LIST_MAX_AGE), media_type="application/json")


@router.get("/domains/{name}", response_model=m.DomainDetail, tags=["domains"], responses=ERRORS)
def domain(request: Request, name: DomainName, caller: Caller = Depends(viewer)) -> Response:
    """One domain: its summary, its spec (secrets masked) and the manager's last decision."""
    store = _store(request)
    spec = _known(store, name)
    shared = request.app.state.summaries.by_name(LIST_MAX_AGE).get(name)  # the list's read: no node records here
    out = views.with_detail(shared, spec, store.get_state(name)) if shared is not None else _read(request, name, full=True)
    return Response(json.dumps(out, separators=(",", ":"), allow_nan=False).encode(), media_type="application/json")


@router.get("/domains/{name}/nodes", response_model=m.NodeList, tags=["domains"], responses=ERRORS)
def nodes(request: Request, name: DomainName, caller: Caller = Depends(viewer)) -> dict[str, Any]:
    """The domain's node records, oldest first."""
    from pool.api.endpoints import advertised
    from pool.workloads.base import check_endpoint

    store = _store(request)
    _known(store, name)
    records = store.nodes(name)
    working = [r.node_id for r in records if r.state in (views.S.JOINED, views.S.DRAINING)]
    beats = store.heartbeats(name, working)
    addresses = advertised(store, name, working)
    return {"nodes": [views.node_view(
        rec, active=beats[rec.node_id].active if rec.node_id in beats else None,
        endpoint=a if (a := addresses.get(rec.node_id)) is not None and check_endpoint(a) is None else None)
        for rec in records]}


@router.get("/domains/{name}/readings", response_model=m.Points, tags=["domains"], responses=ERRORS)
def readings(request: Request, name: DomainName,
             since: float | None = Query(None, ge=0, le=1e11, allow_inf_nan=False,
                                         description="seconds since the epoch (default: an hour ago)"),
             caller: Caller = Depends(viewer)) -> dict[str, Any]:
    """The domain's readings history: sensor value, intended and actual size over time."""
    store = _store(request)
    _known(store, name)
    start = request.app.state.clock() - 3600 if since is None else since
    return {"points": views.clean(store.readings(name, start))}


@router.get("/domains/{name}/events", response_model=m.EventList, tags=["domains"], responses=ERRORS)
def events(request: Request, name: DomainName, count: int = Query(50, ge=1, le=2000),
           kind: str | None = Query(None, max_length=64), caller: Caller = Depends(viewer)) -> dict[str, Any]:
    """The domain's event log (decisions with reasons, node moves, operator changes), newest first."""
    store = _store(request)
    _known(store, name)
    return {"events": views.clean(store.event_log(name, count, kind=kind))}


@router.get("/domains/{name}/endpoints", response_model=m.EndpointList, tags=["domains"], responses=ERRORS)
def endpoints(request: Request, name: DomainName, caller: Caller = Depends(viewer)) -> dict[str, Any]:
    """The addresses of the domain's healthy joined workers."""
    store = _store(request)
    _known(store, name)
    try:
        from pool.api.endpoints import endpoints as find
    except ImportError:
        raise ApiError(503, "endpoints: the endpoint registry is not installed") from None
    return {"endpoints": find(store, name)}


@router.put("/domains/{name}", response_model=m.DomainSummary, tags=["domains"], responses=ERRORS)
def apply(request: Request, name: DomainName, body: dict[str, Any] = Body(..., description="the domain spec"),
          caller: Caller = Depends(admin)) -> dict[str, Any]:
    """Create or update a domain from its spec (the fields of `pool apply`'s YAML)."""
    from pool.api.specs import validate_spec
    from pool.cli.views import spec_changes

    store = _store(request)
    if not NAME_RE.fullmatch(name):
        raise ApiError(422, f"name: {name[:64]!r} is not a domain name (lowercase letters, digits and '-')")
    if body.get("name", name) != name:
        raise ApiError(422, f"name: the spec is named {str(body.get('name'))[:64]!r}, the path {name!r}")
    if name in store.marks().deleting:
        raise ApiError(409, f"name: domain {name!r} is being deleted; apply it again once it is gone")
    try:
        spec = validate_spec({**body, "name": name})
    except SpecError as exc:
        raise ApiError(422, str(exc).splitlines()[0] if str(exc) else "spec: not valid") from None
    except RecursionError:
        raise ApiError(422, "spec: nested too deeply") from None
    old = store.get_domain(name)
    changes = spec_changes(old, spec) if old is not None else []
    if old is None or changes:
        created = store.put_domain(spec)
        store.record(name, "applied", request.app.state.clock(), by=caller.name, created=created,
                     **({"changes": changes[:50]} if changes else {}))
    return _changed(request, name)


@router.delete("/domains/{name}", response_model=m.Deleting, status_code=202, tags=["domains"], responses=ERRORS)
def delete(request: Request, name: DomainName, caller: Caller = Depends(admin)) -> dict[str, Any]:
    """Delete a domain: the manager drains its workers, stops its services, then removes it."""
    store = _store(request)
    _known(store, name)
    if name not in store.marks().deleting:
        now = request.app.state.clock()
        store.mark_deleting(name, caller.name, now)
        store.record(name, "delete", now, by=caller.name, what="draining the workers before the domain goes")
    request.app.state.summaries.invalidate()
    return {"deleting": True}


@router.post("/domains/{name}/resize", response_model=m.DomainSummary, tags=["domains"], responses=ERRORS)
def resize(request: Request, body: m.ResizeBody, name: DomainName,
           caller: Caller = Depends(operator)) -> dict[str, Any]:
    """Set the size by hand (``{"size": N}``, ``{"delta": +-N}``) or hand it back to the policy
    (``{"size": "auto"}``)."""
    store = _store(request)
    spec = _known(store, name)
    if (body.size is None) == (body.delta is None):
        raise ApiError(422, "body: give exactly one of size (a number, or \"auto\") and delta")
    now = request.app.state.clock()
    if body.size == "auto":
        store.set_override(name, None)
        store.record(name, "resize", now, by=caller.name, size="auto")
        return _changed(request, name)
    if body.size is not None:
        size = int(body.size)
        if not spec.min <= size <= spec.max:
            raise ApiError(422, f"size: size {size} is outside the domain's bounds [{spec.min}, {spec.max}]")
        store.set_override(name, size)
    else:  # read and written in one step: two operators' clicks at once both count
        try:
            size = store.shift_override(name, int(body.delta or 0), low=spec.min, high=spec.max)
        except ValueError as exc:
            raise ApiError(422, f"delta: {exc}") from None
    store.record(name, "resize", now, by=caller.name, size=size)
    return _changed(request, name)


@router.post("/domains/{name}/pause", response_model=m.DomainSummary, tags=["domains"], responses=ERRORS)
def pause(request: Request, name: DomainName, caller: Caller = Depends(operator)) -> dict[str, Any]:
    """Hold the intended size where it is: the policy is not consulted (dead workers are still replaced)."""
    store = _store(request)
    why = cannot_pause(_known(store, name))
    if why:
        raise ApiError(409, why)
    now = request.app.state.clock()
    store.set_paused(name, caller.name, now)
    store.record(name, "pause", now, by=caller.name)
    return _changed(request, name)


@router.post("/domains/{name}/resume", response_model=m.DomainSummary, tags=["domains"], responses=ERRORS)
def resume(request: Request, name: DomainName, caller: Caller = Depends(operator)) -> dict[str, Any]:
    """Hand the domain back to its policy."""
    store = _store(request)
    _known(store, name)
    now = request.app.state.clock()
    store.set_paused(name, None, now)
    store.record(name, "resume", now, by=caller.name)
    return _changed(request, name)


@router.get("/managers", response_model=m.ManagerList, tags=["pool"])
def managers(request: Request, caller: Caller = Depends(viewer)) -> dict[str, Any]:
    """Registered managers and the leader roles each holds."""
    return {"managers": views.managers_view(_store(request))}


@router.get("/queue", response_model=m.QueueView, tags=["pool"])
def queue(request: Request, caller: Caller = Depends(viewer)) -> dict[str, Any]:
    """The provisioner work queue: launches and terminations waiting or being done."""
    store = _store(request)
    depth = store.work_queue().depth()
    return {"pending": int(depth.get("queued", 0)), "in_progress": int(depth.get("in_progress", 0)),
            "items": store.queued_work(100)}


@router.get("/usage", response_model=m.UsageView, tags=["pool"])
def usage(request: Request, caller: Caller = Depends(viewer)) -> dict[str, Any]:
    """Worker-seconds and cost per domain and site."""
    try:
        from pool.api.usage import usage as report
    except ImportError:
        raise ApiError(503, "usage: the usage report is not installed") from None
    return dict(report(_store(request), request.app.state.clock()))


@router.get("/events/stream", tags=["pool"], response_class=StreamingResponse,
         responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}})
async def stream(request: Request, caller: Caller = Depends(viewer)) -> StreamingResponse:
    """Every domain's events as they are recorded (``event: KIND``), a ``summary`` event when a domain's
    intended or actual size, pause, override or deletion changes, and a keepalive comment when idle."""
    return StreamingResponse(event_stream(request), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/tokens", response_model=m.TokenList, tags=["tokens"])
def tokens(request: Request, caller: Caller = Depends(admin)) -> dict[str, Any]:
    """Every token's name, role and creation time (never the token)."""
    return {"tokens": list_tokens(_store(request))}


@router.post("/tokens", response_model=m.NewToken, status_code=201, tags=["tokens"], responses=ERRORS)
def new_token(request: Request, body: m.TokenBody, caller: Caller = Depends(admin)) -> dict[str, Any]:
    """Create a token; the answer holds it, once."""
    store = _store(request)
    now = request.app.state.clock()
    try:
        token = create_token(store, body.name, body.role, now=now)
    except TokenError as exc:
        raise ApiError(409 if "exists" in str(exc) else 422, f"name: {exc}") from None
    log.info("token %s (%s) created by %s", body.name, body.role, caller.name)
    return {"name": body.name, "role": body.role, "created": now, "token": token}


@router.delete("/tokens/{token_name}", response_model=m.Removed, tags=["tokens"], responses=ERRORS)
def remove_token(request: Request, token_name: str = PathParam(max_length=200),
                 caller: Caller = Depends(admin)) -> dict[str, Any]:
    """Revoke a token."""
    if not _store(request).delete_token(token_name):
        raise ApiError(404, f"token_name: no token named {token_name[:64]!r}")
    log.info("token %s removed by %s", token_name[:64], caller.name)
    return {"removed": True}
