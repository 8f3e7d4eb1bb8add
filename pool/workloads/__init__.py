"""Workloads: what a domain's workers run. Deployable types and their contextualization
(``images``), the Celery worker wrapper with its durable settings (``celery_worker``) and the Redis
transport whose pop is atomic (``reliable_redis``).

Imports ``pool.core`` and ``pool.state``, celery and kombu.
"""
