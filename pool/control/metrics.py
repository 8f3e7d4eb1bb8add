"""Prometheus metrics of a manager: sizes, node states, decisions, provisioning work and time to repair."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Iterable

from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server
from prometheus_client import Counter as PCounter

if TYPE_CHECKING:
    from pool.control.manager import Plan

#: Time-to-repair buckets (seconds): a heartbeat timeout is a few seconds, a cloud boot a minute or more.
TTR_BUCKETS = (0.5, 1, 2, 3, 4, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600)


class Metrics:
    """One manager's metrics in a registry of its own (exported by :meth:`serve`)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.intended = Gauge("elastic_pool_intended_size", "Intended size of the domain", ["domain"], registry=r)
        self.actual = Gauge("elastic_pool_actual_size", "Live nodes (requested, booting, joined)", ["domain"],
                            registry=r)
        self.joined = Gauge("elastic_pool_joined_nodes", "Nodes pulling work", ["domain"], registry=r)
        self.busy = Gauge("elastic_pool_busy_nodes", "Joined nodes running a task", ["domain"], registry=r)
        self.sensor = Gauge("elastic_pool_sensor_value", "The domain's primary sensor reading", ["domain"],
                            registry=r)
        self.transitions = PCounter("elastic_pool_node_transitions", "Node state changes",
                                    ["domain", "to"], registry=r)
        self.decisions = PCounter("elastic_pool_decisions", "Decisions recorded (target or actions changed)",
                                  ["domain"], registry=r)
        self.work = PCounter("elastic_pool_work_done", "Provisioning work items done by this manager",
                             ["op"], registry=r)
        self.ttr = Histogram("elastic_pool_time_to_repair_seconds",
                             "Last sign of life of a lost worker -> its replacement requested / joined",
                             ["domain", "stage"], buckets=TTR_BUCKETS, registry=r)
        self.roles = Gauge("elastic_pool_role_held", "1 while this manager holds the role", ["role"], registry=r)

    def observe_plan(self, plan: Plan, events: Iterable[tuple[str, dict[str, Any]]]) -> None:
        domain = plan.domain
        if "decider" in plan.roles:
            self.intended.labels(domain).set(plan.decision.target)
            self.actual.labels(domain).set(plan.view.actual)
            self.joined.labels(domain).set(plan.view.joined)
            self.busy.labels(domain).set(plan.view.busy)
            value = plan.state.readings and next(iter(plan.state.readings.values())).get("value")
            if isinstance(value, (int, float)):
                self.sensor.labels(domain).set(value)
        moves: Counter[str] = Counter()
        for kind, data in events:
            if kind == "node" and data.get("to"):
                moves[str(data["to"])] += 1
            elif kind == "decision":
                self.decisions.labels(domain).inc()
            elif kind == "repair":
                self.ttr.labels(domain, str(data["stage"])).observe(float(data["seconds"]))
        for to, n in moves.items():
            self.transitions.labels(domain, to).inc(n)

    def work_done(self, op: str) -> None:
        self.work.labels(op).inc()

    def held(self, roles: Iterable[str], all_roles: Iterable[str]) -> None:
        held = set(roles)
        for role in all_roles:
            self.roles.labels(role).set(1 if role in held else 0)

    def serve(self, port: int, *, addr: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``addr:port`` (0: a free port); returns the port."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return int(server.server_port)
