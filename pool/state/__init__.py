"""Control-plane state: the Redis store (and the in-memory one for the simulator), leader leases
with fencing tokens, the durable work queue (and its in-memory twin), and the embedded Redis server.

Imports ``pool.core`` and redis-py only.
"""
