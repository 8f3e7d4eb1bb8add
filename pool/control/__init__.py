"""The control loop. ``plan`` draws up one domain's plan for one tick (the doctor, then the decider:
view, decide, scale, record; pure); ``manager`` runs the tick over every domain (observe, plan,
apply: the plan's records and work items in one commit, record); ``actuator`` carries the queued
work out on the sites (batched launches, terminations), in the tick or in provisioner worker
threads; ``metrics`` exports what happened to Prometheus.

Imports ``pool.core``, ``pool.state``, ``pool.sites``, ``pool.workloads``, ``sensors`` and ``policies``.
"""
