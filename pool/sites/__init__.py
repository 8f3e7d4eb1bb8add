"""Sites: where workers run. The provisioner (the only path to cloud APIs: idempotent launches,
backoff, pacing, capacity), the operator's configuration of what a spec may reach, the site
registry, the built-in libcloud drivers (``local``: process groups here; ``sim``: a simulated
cloud) and adapters for provider drivers.

Imports ``pool.core``, ``pool.state`` (the state directory) and libcloud.
"""
