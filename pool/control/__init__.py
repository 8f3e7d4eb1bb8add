"""The control loop. ``plan`` draws up one domain's plan for one tick (the doctor, then the decider:
view, decide, scale, record; pure); ``manager`` runs the tick over every domain (observe, plan,
apply, record) and the provisioner workers; ``metrics`` exports what happened to Prometheus.

Imports ``pool.core``, ``pool.state``, ``pool.sites``, ``pool.workloads``, ``sensors`` and ``policies``.
"""
