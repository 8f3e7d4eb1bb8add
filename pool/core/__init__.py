"""The ground floor: value types, the node state machine and its one table of transitions, the
domain spec, the plug-in registry, and secret redaction.

No I/O at all. Imports only the standard library, pydantic and yaml; nothing from the state,
control, sites, workloads, node, sim or cli packages.
"""
