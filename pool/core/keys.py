"""Names shared across machines: the tags every machine carries and the layout of the control
plane's Redis keys. One definition each, used by the manager, the sites and the worker side alike.
No I/O; imports only the standard library.
"""

from __future__ import annotations

#: Tags every machine the pool launches carries (a cloud tag, or the local site's record).
TAG_DOMAIN = "elastic-pool/domain"
TAG_LAUNCH = "elastic-pool/launch"
TAG_NODE = "elastic-pool/node"


def machine_tags(*, domain: str, launch_id: str, node_id: str) -> dict[str, str]:
    """The tags of one machine: its domain, launch id and node id."""
    return {TAG_DOMAIN: domain, TAG_LAUNCH: launch_id, TAG_NODE: node_id}


def key(namespace: str, *parts: str) -> str:
    """A control-plane key: ``{namespace}:{part}:...``."""
    return ":".join((namespace, *parts))


def domain_key(namespace: str, domain: str, *parts: str) -> str:
    """A key of one domain: ``{namespace}:d:{domain}:{part}:...``."""
    return key(namespace, "d", domain, *parts)


def heartbeat_key(namespace: str, domain: str, node_id: str) -> str:
    """The hash a node's agent and workload write their heartbeat fields to."""
    return domain_key(namespace, domain, "hb", node_id)


def heartbeat_changes_key(namespace: str, domain: str) -> str:
    """The stream of nodes whose heartbeat changed more than its time (capped)."""
    return domain_key(namespace, domain, "hbx")
