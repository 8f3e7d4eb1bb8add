"""Leader roles as Redis leases with fencing tokens: exactly one manager acts, a deposed one is refused."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis

#: The actor roles, each held by exactly one manager at a time:
#: ``decider`` runs policies and writes launch/scale-in decisions; ``doctor`` judges health from
#: heartbeats (timeouts, dead workloads, preemption notices, boot and drain deadlines);
#: ``provisioner`` polls the sites' listings (lifecycle, vanished machines, zombies) and re-queues
#: provisioning work nobody finished. Launch and terminate calls themselves are done by every
#: manager's provisioner workers from the durable work queue (see :mod:`pool.state.workqueue`).
ROLES = ("decider", "doctor", "provisioner")

_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end
if cur then return false end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return redis.call('INCR', KEYS[2])
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaseLost(RuntimeError):
    """A newer fencing token exists: this manager no longer holds the role."""


@dataclass(frozen=True)
class Lease:
    role: str
    holder: str
    token: int
    acquired: float  # monotonic time of the last acquire or renewal
    ttl: float

    def fresh(self, *, margin: float = 0.0) -> bool:
        """Whether this holder may still act without renewing first."""
        return time.monotonic() < self.acquired + self.ttl - margin


class Leases:
    """Acquire, renew and release leader roles under ``{namespace}:lease:ROLE``."""

    def __init__(self, client: redis.Redis, *, namespace: str, holder: str, ttl: float = 5.0) -> None:
        self.r = client
        self.ns = namespace
        self.holder = holder
        self.ttl = ttl
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)

    def key(self, role: str) -> str:
        return f"{self.ns}:lease:{role}"

    def fence_key(self, role: str) -> str:
        return f"{self.ns}:fence:{role}"

    def acquire(self, role: str) -> Lease | None:
        """Take the role if free, renew it if ours; ``None`` if another manager holds it."""
        started = time.monotonic()
        token = self._acquire(keys=[self.key(role), self.fence_key(role)],
                              args=[self.holder, int(self.ttl * 1000)])
        if token is None or token is False:
            return None
        return Lease(role=role, holder=self.holder, token=int(token), acquired=started, ttl=self.ttl)

    def check(self, lease: Lease) -> None:
        """Raise :class:`LeaseLost` unless ``lease`` still carries the newest token."""
        current = self.r.get(self.fence_key(lease.role))
        if current is None or int(current) != lease.token:
            raise LeaseLost(f"role {lease.role}: token {lease.token} superseded by {current!r}")

    def release(self, role: str) -> None:
        self._release(keys=[self.key(role)], args=[self.holder])

    def holders(self) -> dict[str, dict[str, Any]]:
        out = {}
        for role in ROLES:
            pipe = self.r.pipeline(transaction=False)
            pipe.get(self.key(role)).pttl(self.key(role)).get(self.fence_key(role))
            holder, pttl, token = pipe.execute()
            out[role] = {"holder": holder.decode() if isinstance(holder, bytes) else holder,
                         "ttl_s": max(0, pttl) / 1000 if holder else None,
                         "token": int(token) if token else None}
        return out
