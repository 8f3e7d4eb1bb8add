"""Policy registry: turns a policy name and its parameters into a pure decision function."""

from __future__ import annotations

from typing import Any, Mapping, Protocol, runtime_checkable

from pool.core.model import Decision, DomainView, Reading, Registry

ALIASES: dict[str, str] = {
    "fixed": "policies.fixed:Fixed",
    "queue_depth": "policies.queue_depth:QueueDepth",
    "spark_tasks": "policies.spark_tasks:SparkTasks",
    "threshold": "policies.threshold:Threshold",
    "drain_time": "policies.drain_time:DrainTime",
    "lookahead": "policies.lookahead:Lookahead",
    "wait_target": "policies.wait_target:WaitTarget",
    "schedule": "policies.schedule:Schedule",
    "composite": "policies.composite:Composite",
    "keda_hpa": "policies.baselines:KedaHpa",
    "ray": "policies.baselines:Ray",
    "spark_da": "policies.baselines:SparkDynamicAllocation",
    "aws_target_tracking": "policies.baselines:AwsTargetTracking",
}

registry = Registry("policy", "elastic_pool.policies", ALIASES)


@runtime_checkable
class Policy(Protocol):
    """A pure function from readings and domain state to an intended size; time is passed in."""

    def decide(self, view: DomainView, readings: Mapping[str, Reading], now: float) -> Decision: ...


def load_policy(name: str, params: Mapping[str, Any] | None = None) -> Policy:
    """Build the policy ``name``; unknown names and parameters raise with the valid ones listed."""
    policy = registry.build(name, dict(params or {}))
    assert isinstance(policy, Policy)
    return policy


def primary(readings: Mapping[str, Reading], sensor: str | None = None) -> Reading | None:
    """The reading a single-metric policy uses: the named one, else the first."""
    if sensor is not None:
        return readings.get(sensor)
    return next(iter(readings.values()), None)
