"""Simulation: workload traces, the simulated fleet (the live manager over simulated sites) and
``pool simulate`` (policies compared on a trace, on an injected clock).

Imports everything below the faces.
"""
