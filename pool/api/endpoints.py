"""The endpoint registry: the addresses a domain's workers advertise (a workload that serves pushed
requests says its worker's address through ``NodeSide.endpoint``; the agent beats it as the heartbeat
field ``endpoint``), listed for `GET /domains/{name}/endpoints` only for the workers that may take a
request now.

A worker is listed while it is JOINED (not draining, unhealthy or ending), its last heartbeat is fresher
than the domain's heartbeat timeout, says its workload is alive and not draining, drained or warned of
preemption, and its address is a valid one (``check_endpoint``: anything read back from Redis is
untrusted). The choice is :func:`healthy_endpoints`, pure; :func:`endpoints` reads.

Imports ``pool.core``, ``pool.state`` and ``pool.workloads.base``.
"""

from __future__ import annotations

import time
from typing import Iterable, Mapping

from pool.core.model import Heartbeat, NodeRecord, NodeState
from pool.state.store import Store
from pool.workloads.base import check_endpoint

S = NodeState


def endpoints(store: Store, domain: str, *, now: float | None = None) -> list[dict[str, str]]:
    """``[{"node": id, "address": url}]`` of the domain's healthy joined workers, oldest first; empty when
    the domain does not exist (the API says 404 before asking)."""
    spec = store.get_domain(domain)
    if spec is None:
        return []
    joined = [rec for rec in store.nodes(domain) if rec.state is S.JOINED]
    if not joined:
        return []
    ids = [rec.node_id for rec in joined]
    beats = store.heartbeats(domain, ids)
    addresses = advertised(store, domain, [i for i in ids if i in beats])
    return healthy_endpoints(joined, beats, addresses, heartbeat_timeout=spec.timeouts.heartbeat_timeout,
                             now=time.time() if now is None else now)


def advertised(store: Store, domain: str, node_ids: Iterable[str]) -> dict[str, str]:
    """The ``endpoint`` field of each node's heartbeat hash (one round trip; raw: validate before use). A store
    without Redis (the simulator's) keeps no endpoints."""
    ids = list(node_ids)
    client = getattr(store, "r", None)
    if not ids or client is None:
        return {}
    pipe = client.pipeline(transaction=False)
    for node_id in ids:
        pipe.hget(store.heartbeat_key(domain, node_id), "endpoint")
    return {node_id: raw for node_id, raw in zip(ids, pipe.execute()) if isinstance(raw, str) and raw}


def healthy_endpoints(records: Iterable[NodeRecord], beats: Mapping[str, Heartbeat], addresses: Mapping[str, str],
                      *, heartbeat_timeout: float, now: float) -> list[dict[str, str]]:
    """The endpoints of the records that may take a request at ``now`` (pure; the rules in the module doc)."""
    out = []
    for rec in records:
        beat, address = beats.get(rec.node_id), addresses.get(rec.node_id)
        if rec.state is not S.JOINED or beat is None or address is None or check_endpoint(address) is not None:
            continue
        if now - beat.time > heartbeat_timeout or not beat.workload_alive:
            continue
        if beat.draining or beat.drained or beat.preempt_notice is not None:
            continue
        out.append({"node": rec.node_id, "address": address})
    return out
