"""What a plan is drawn up from and into: the :class:`Observation` of one domain in one tick, the
:class:`Draft` the steps of :mod:`pool.control.doctor` and :mod:`pool.control.decider` add to, and
the frozen :class:`Plan` the manager applies. Pure: imports ``pool.core``, the provisioner's
:class:`~pool.sites.provisioner.SiteNode` value type and the role names.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

from pool.core.model import Decision, DomainSpec, DomainState, DomainView, Heartbeat, NodeRecord, NodeState, Reading
from pool.sites.provisioner import SiteNode
from pool.state.leases import ROLES

S = NodeState

#: How long ended node records stay visible in `pool show`.
TERMINATED_RETENTION = 600.0

#: A PENDING node missing from the site's listing is taken as gone only after this long
#: (cloud listings lag behind launches).
LISTING_GRACE = 30.0

#: States of a node being ended (or failed): terminated again while a machine may be there.
ENDING_STATES = frozenset({S.TERMINATING, S.UNHEALTHY, S.FAILED})

#: Terminate retries a record in an ending state gets while no listing shows its machine alive;
#: then it is retired (TERMINATED, with a ``retired`` event). The first retry comes
#: ``terminate_grace + 15`` s after it entered the state, each next one twice as long after the last.
END_RETRIES = 5

#: Longest wait between two terminate retries of one record (seconds).
END_RETRY_CAP = 900.0

#: The history note a terminate retry leaves (the record keeps its state: no transition).
RETRY_NOTE = "terminate retry"

#: How a record that ended without a machine starts its last history entry.
RETIRED = "retired"

#: How the doctor's detail starts when a node's workload exited before it joined (a crash on boot:
#: a typo in the app, a missing module): consecutive ones back the domain's launches off
#: (pool.control.backoff). A machine that never boots is no such failure: it is replaced at once.
BOOT_FAILURE = "boot failure"

@dataclass(frozen=True)
class Observation:
    """Everything one tick knows about one domain, read before anything is decided."""

    spec: DomainSpec
    state: DomainState
    nodes: tuple[NodeRecord, ...]
    heartbeats: Mapping[str, Heartbeat]
    site_nodes: Mapping[str, SiteNode] | None  # None: no listing this tick (failed, or not the provisioner)
    site_available: bool | Mapping[str, bool]  # per site (a bool: the same for every site)
    readings: Mapping[str, Reading]
    now: float
    #: when the store answered again after an outage: heartbeats lost in it are not held against nodes
    store_back_at: float = 0.0
    #: sites whose listing failed this tick: their nodes are not judged by it
    unlisted: frozenset[str] = frozenset()
    #: when the oldest listing in ``site_nodes`` was fetched: nodes launched after it are not judged by it
    listed_at: float = float("inf")
    #: a named domain's wanted names and since when (None: a domain sized by count)
    wanted: Mapping[str, float] | None = None
    #: a named domain whose policy may also run ahead of its scheduler (the workload says so)
    ahead: bool = False

    def available(self, site: str) -> bool:
        sa = self.site_available
        return sa if isinstance(sa, bool) else bool(sa.get(site, False))

@dataclass(frozen=True)
class Termination:
    node_id: str
    grace: float
    reason: str
    provider_id: str | None = None  # set for zombies: machines no record knows
    site: str = ""  # the zombie's site

@dataclass(frozen=True)
class Plan:
    """A frozen decision for one domain, applied by :meth:`Manager.apply`."""

    domain: str
    decision: Decision
    view: DomainView
    changed: tuple[NodeRecord, ...]  # records whose state moved (new copies)
    launches: tuple[NodeRecord, ...]  # REQUESTED records to hand to the provisioner
    terminations: tuple[Termination, ...]
    forget: tuple[NodeRecord, ...]
    state: DomainState
    events: tuple[tuple[str, dict[str, Any]], ...] = field(default=())
    #: node ids of the launches decided this tick (the rest of ``launches`` are earlier, unaccepted ones)
    fresh: frozenset[str] = frozenset()
    #: the roles whose parts of the plan ran (see :data:`pool.state.leases.ROLES`)
    roles: frozenset[str] = frozenset(ROLES)
    #: a named domain running ahead: the policy's size, above the names asked for (the manager asks the
    #: workload's scheduler to power up nodes toward it); None when nothing is to be asked
    warm: int | None = None

def _new_ids(domain: str) -> tuple[str, str]:
    return f"{domain}-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex

Event = tuple[str, dict[str, Any]]

@dataclass
class Draft:
    """A plan while it is drawn up: the records as they change (copied on first change, so the
    observation stays intact) and what is to be done. Each step adds to it; :func:`record` freezes it."""

    obs: Observation
    nodes: dict[str, NodeRecord]
    changed: dict[str, NodeRecord] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    terminations: list[Termination] = field(default_factory=list)
    forget: list[NodeRecord] = field(default_factory=list)
    #: (node, last sign of life): workers the doctor condemned, for time-to-repair events
    lost: list[tuple[str, float]] = field(default_factory=list)

    @property
    def now(self) -> float:
        return self.obs.now

    def twin(self, rec: NodeRecord) -> NodeRecord:
        """The record's copy in this plan (made on first use)."""
        twin = self.changed.get(rec.node_id)
        if twin is None:
            twin = self.changed[rec.node_id] = self.nodes[rec.node_id] = rec.copy()
        return twin

    def move(self, rec: NodeRecord, new: NodeState, detail: str, *,
             drain_deadline: float | None = None) -> NodeRecord:
        """A state change (through the one state table), with its event."""
        twin = self.twin(rec)
        old = twin.state
        twin.set_state(new, self.now, detail)
        if drain_deadline is not None:
            twin.drain_deadline = drain_deadline
        self.events.append(("node", {"node": twin.node_id, "from": old.value, "to": new.value, "detail": detail}))
        return twin

    def kill(self, rec: NodeRecord, new: NodeState, detail: str, grace: float = 0.0,
             drain_deadline: float | None = None) -> NodeRecord:
        """A state change and a terminate (after ``grace`` seconds of warm shutdown)."""
        twin = self.move(rec, new, detail, drain_deadline=drain_deadline)
        twin.drain_sent = True
        self.terminations.append(Termination(twin.node_id, grace, detail))
        return twin

    def drain(self, rec: NodeRecord, detail: str, *, deadline: float) -> NodeRecord:
        """Ask a worker to drain, through its record (the agent reads it): DRAINING with the drain
        sent and its deadline; no terminate until it reports drained or the deadline passes."""
        twin = self.move(rec, NodeState.DRAINING, detail, drain_deadline=deadline)
        twin.drain_sent = True
        self.events.append(("drain", {"node": twin.node_id, "why": detail, "deadline": round(deadline, 3)}))
        return twin

    def note(self, rec: NodeRecord, detail: str) -> NodeRecord:
        """A history entry that keeps the record's state (a terminate retry): counted, and when."""
        twin = self.twin(rec)
        twin.history.append((twin.state.value, self.now, detail))
        return twin
