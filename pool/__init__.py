"""elastic-pool: a queue-driven elastic compute pool.

The packages are the layers of docs/architecture.md; imports point down only:

- ``pool.cli``: the faces (the ``pool`` command);
- ``pool.control``: the tick as named steps: the doctor, the decider, the manager that observes,
  plans and acts, metrics;
- ``pool.sites``: the provisioner, the operator's configuration, libcloud drivers (local, sim) and
  their adapters;
- ``pool.workloads``: what a domain's workers run (deployable types and their contextualization,
  the Celery worker wrapper and transport);
- ``pool.node``: the agent that runs on every worker;
- ``pool.state``: Redis (and in-memory) state, leases, the work queue, the embedded Redis server;
- ``pool.sim``: the simulator, the simulated fleet, workload traces;
- ``pool.core``: value types, the node state machine, the spec, the plug-in registry, redaction:
  no I/O at all.

``sensors/`` and ``policies/`` (top level) import only ``pool.core``.
"""
