"""Every import of the code under test that the golden recordings use, in one place.

When modules move, only the import paths here change. ``PLANNER_HOST`` is the module whose
global ``plan_domain`` the live :class:`Manager` calls: the recorder replaces that attribute
while it records (and only then). ``QUEUE_COUNTERS`` names module internals the recorder resets.
"""

from __future__ import annotations

import pool.control.manager as PLANNER_HOST  # noqa: N812  (a module, named for its role here)
import pool.sim.fleet as _simfleet
import pool.sim.simulate as _simulate
from policies import load_policy
from pool.control.manager import Observation, Plan, Termination, plan_domain
from pool.core.model import (
    Decision,
    DomainSpec,
    DomainState,
    DomainView,
    Heartbeat,
    NodeRecord,
    NodeState,
    Reading,
    parse_domain_spec,
)
from pool.sim.fleet import Fleet
from pool.sim.simulate import PolicyChoice, Simulation, parse_policy, simulate_many
from pool.sim.traces import load_trace
from pool.sites.config import OperatorConfig
from pool.sites.provisioner import SiteNode
from pool.sites.sim import parse_profile
from pool.state.leases import ROLES

#: Per-process counters the simulator and the fleet name their queues with: ``(module, attribute)``.
#: The recorder restarts them in each scenario, so that a scenario's data does not depend on the others.
QUEUE_COUNTERS = ((_simulate, "_queue_names"), (_simfleet, "_fleets"))

__all__ = [
    "QUEUE_COUNTERS",
    "PLANNER_HOST",
    "ROLES",
    "Decision",
    "DomainSpec",
    "DomainState",
    "DomainView",
    "Fleet",
    "Heartbeat",
    "NodeRecord",
    "NodeState",
    "Observation",
    "OperatorConfig",
    "Plan",
    "PolicyChoice",
    "Reading",
    "Simulation",
    "SiteNode",
    "Termination",
    "load_policy",
    "load_trace",
    "parse_domain_spec",
    "parse_policy",
    "parse_profile",
    "plan_domain",
    "simulate_many",
]
