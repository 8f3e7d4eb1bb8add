"""Compatibility: workers configured by an earlier version name ``pool.reliable_redis:Transport``."""

from pool.workloads.reliable_redis import Transport

__all__ = ["Transport"]
