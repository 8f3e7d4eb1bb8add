"""What runs on a worker machine: the agent (``python -m pool.node.agent``) that heartbeats to the
store and supervises the workload process.

Imports ``pool.core``, ``pool.state`` and ``pool.workloads``.
"""
