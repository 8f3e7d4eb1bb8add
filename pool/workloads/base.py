"""The workload plug-in interface: what a domain's workers run, and everything the pool needs to
know of it, behind one protocol, so that the control loop names no workload.

A workload gives its deployable type (the contextualization template), its part of the attribute
bag, defaults for its sensor, the per-domain services it needs (a Spark master, say) and, on the
worker, the process the agent runs (:class:`NodeSide`: command, environment, busy/idle probe,
drain, cleanup). Workloads are found like policies and sensors: a short alias table, then the
entry-point group ``elastic_pool.workloads``; an unknown name lists the valid ones.

Imports ``pool.core`` and ``pool.workloads.images`` only.
"""

from __future__ import annotations

import importlib
import re
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

from pool.core.model import DomainSpec, Registry, SpecBlock, UnknownPlugin
from pool.workloads.images import DeployableType

ALIASES: dict[str, str] = {
    "celery": "pool.workloads.celery:Celery",
    "spark": "spark.workload:Spark",
    "condor": "condor.workload:Condor",
    "slurm": "slurm.workload:Slurm",
}
#: The deployable type of a domain whose spec names none.
DEFAULT_TYPE = "celery-worker"

registry = Registry("workload", "elastic_pool.workloads", ALIASES)


@dataclass
class NodeSide:
    """The workload's process on one worker, as the agent runs it.

    ``probe`` returns heartbeat fields (``ready``, ``active``, ``idle_since``) for a workload watched
    from outside; ``drain(proc, beat)`` replaces the plain SIGTERM of a warm shutdown; ``cleanup``
    runs when the agent ends. ``endpoint`` returns the address clients reach this worker at (a URL such
    as ``http://10.0.0.5:8080``, or ``None`` while it has none yet), for a workload that serves requests
    pushed to it: the agent publishes it in the heartbeat (field ``endpoint``), and the operator API lists
    the endpoints of a domain's healthy joined workers (``GET /domains/{name}/endpoints``).
    """

    command: list[str]
    env: dict[str, str] | None = None
    probe: Callable[[], Mapping[str, object]] | None = None
    drain: Callable[..., None] | None = None
    cleanup: Callable[[], None] | None = None
    endpoint: Callable[[], str | None] | None = None


#: The longest endpoint address a worker may advertise.
ENDPOINT_MAX = 256
_ENDPOINT_RE = re.compile(r"[a-z][a-z0-9+.-]{0,15}://[A-Za-z0-9.\[\]:-]{1,200}(/[A-Za-z0-9._~/%-]*)?")


def check_endpoint(address: object) -> str | None:
    """What is wrong with an advertised endpoint (one line), or ``None``: it is ``scheme://host:port[/path]``
    with a port, no credentials, no query, at most :data:`ENDPOINT_MAX` characters."""
    if not isinstance(address, str) or not 0 < len(address) <= ENDPOINT_MAX or not _ENDPOINT_RE.fullmatch(address):
        return f"endpoint must be scheme://host:port[/path] (no credentials, at most {ENDPOINT_MAX} characters)"
    try:
        port = urllib.parse.urlsplit(address).port
    except ValueError:
        port = None
    if port is None or port == 0:
        return "endpoint must name a port from 1 to 65535, as in http://10.0.0.5:8080"
    return None


@runtime_checkable
class DomainService(Protocol):
    """Something a domain needs besides its workers (e.g. a Spark master), kept up by the manager.

    ``ensure`` runs at the start of every tick for the domains it ``applies`` to; the mapping it
    returns is added to those domains' attribute bag and offered to their sensor as defaults
    (keys the sensor does not take are left out). An optional ``stop_all() -> list[str]`` lets
    `pool down` stop every process of the kind the pool started (saying what it stopped).
    """

    def applies(self, spec: DomainSpec) -> bool: ...

    def ensure(self, spec: DomainSpec, now: float) -> Mapping[str, str]: ...

    def stop(self, spec: DomainSpec) -> None: ...


@runtime_checkable
class Workload(Protocol):
    """One kind of worker. ``name`` is its registry name; ``deployable_type`` its contextualization."""

    name: str
    deployable_type: DeployableType
    #: the block it owns in a domain spec (a top-level key, its model, defaults), or None
    spec_block: SpecBlock | None

    def attributes(self, spec: DomainSpec) -> dict[str, str]:
        """The workload's part of the attribute bag (rendered into every worker's user-data)."""
        ...

    def sensor_defaults(self, spec: DomainSpec, *, broker: str) -> dict[str, Any]:
        """Parameters the domain's sensor gets unless the spec sets them."""
        ...

    def check(self, spec: DomainSpec) -> None:
        """What `pool apply` checks beyond the spec's own validation, on the manager's machine (a code
        directory that exists, say); raises ``ValueError`` with one line saying what is wrong."""
        ...

    def services(self) -> list[DomainService]:
        """Per-domain services the manager keeps up for this workload's domains."""
        ...

    def node(self, env: Mapping[str, str]) -> NodeSide:
        """On the worker: the process to run, from the contextualization's environment."""
        ...

    def cli(self) -> Any:
        """The workload's command group under `pool` (a click group), or ``None``."""
        ...


_lock = threading.Lock()
_by_name: dict[str, Workload] = {}


def load_workload(name: str) -> Workload:
    """The workload ``name`` (one instance per process); unknown names list the valid ones."""
    with _lock:
        found = _by_name.get(name)
        if found is None:
            found = _by_name[name] = registry.build(name, {})
        return found


def workloads() -> list[Workload]:
    """Every workload the registry knows (those that cannot be loaded here are left out)."""
    out = []
    for name in registry.names():
        try:
            out.append(load_workload(name))
        except Exception:  # noqa: BLE001  (a third party's broken plug-in: not ours to stop on)
            continue
    return out


_by_type: dict[str, Workload] = {}


def cannot_pause(spec: DomainSpec) -> str | None:
    """Why the domain cannot be paused, or None: a named domain is sized by its scheduler's requests, and
    holding them would leave its jobs waiting for nodes that never come."""
    if getattr(workload_for_type(spec.deployable_type), "named", False):
        return (f"domain {spec.name} is sized by its scheduler's requests ({spec.deployable_type}): a pause would "
                "leave them unanswered; stop the scheduler from asking instead (e.g. set its partition inactive)")
    return None


def workload_for_type(deployable_type: str) -> Workload:
    """The workload whose deployable type is ``deployable_type``; unknown ones list the valid ones.

    Called for every launch and every tick: found once, then cached (the alias table is searched
    before the installed entry points, whose scan costs milliseconds).
    """
    found = _by_type.get(deployable_type)
    if found is not None:
        return found
    for name in list(registry.aliases):
        workload = load_workload(name)
        _by_type.setdefault(workload.deployable_type.name, workload)
    found = _by_type.get(deployable_type)
    if found is not None:
        return found
    known = workloads()
    for workload in known:
        _by_type.setdefault(workload.deployable_type.name, workload)
    found = _by_type.get(deployable_type)
    if found is not None:
        return found
    valid = ", ".join(sorted(w.deployable_type.name for w in known))
    raise UnknownPlugin(f"unknown deployable type {deployable_type!r}; valid: {valid}")


def spec_block_for_type(deployable_type: str) -> SpecBlock | None:
    """The spec block of the workload of ``deployable_type`` (None: it has none); unknown types raise."""
    return getattr(workload_for_type(deployable_type), "spec_block", None)


def _known() -> list[Workload]:
    """The workloads loaded so far and the built-in ones (no entry-point scan)."""
    for name in list(registry.aliases):
        try:
            load_workload(name)
        except Exception:  # noqa: BLE001  (a broken plug-in: not ours to stop on)
            continue
    with _lock:
        return list(_by_name.values())


def block_keys() -> list[str]:
    """The spec-block keys of the known workloads."""
    blocks = [getattr(w, "spec_block", None) for w in _known()]
    return sorted({b.key for b in blocks if isinstance(b, SpecBlock)})


def block_owner(key: str) -> str | None:
    """The deployable type whose workload owns the spec block ``key``; None: no known workload's."""
    for candidates in (_known, workloads):
        for workload in candidates():
            block = getattr(workload, "spec_block", None)
            if block is not None and block.key == key:
                return workload.deployable_type.name
    return None


def import_path(workload: Workload) -> str:
    """``module:Class`` of a workload: what a worker's agent imports to run it (set in its user-data by
    the manager, never by a spec), so a workload registered only where the manager runs works too."""
    cls = type(workload)
    return f"{cls.__module__}:{cls.__qualname__}"


def from_import_path(path: str) -> Workload:
    """The workload at ``module:Class`` (the agent's side of :func:`import_path`)."""
    module, _, attr = path.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    workload = cls()
    if not isinstance(workload, Workload):
        raise TypeError(f"{path} is not a workload")
    return workload
