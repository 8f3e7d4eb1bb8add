"""A plain Celery worker for comparisons: the same durable settings, no agent, no reporting.

``POOL_STOCK_TRANSPORT=1`` runs it on kombu's own Redis transport instead of ``pool.workloads.reliable_redis``.
"""

from __future__ import annotations

import os
import sys

from celery import signals
from celery.app.utils import find_app

sys.path.insert(0, os.environ["POOL_CELERY_PATH"])
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pool.workloads.celery_worker import durable_settings, worker_pool  # noqa: E402

app = find_app(os.environ["POOL_CELERY_APP"])
settings = durable_settings(broker=os.environ["POOL_BROKER_URL"],
                            visibility_timeout=float(os.environ.get("POOL_VISIBILITY_TIMEOUT", "60")),
                            existing=app.conf.broker_transport_options)
if os.environ.get("POOL_STOCK_TRANSPORT") == "1":  # kombu's own Redis transport, for comparison
    settings.pop("broker_transport", None)
app.conf.update(settings)


def _ready(**_: object) -> None:
    """Say so in a file (the log level stays WARNING, as for pool-managed workers)."""
    if os.environ.get("POOL_READY_FILE"):
        with open(os.environ["POOL_READY_FILE"], "w") as fh:
            fh.write("ready")


signals.worker_ready.connect(_ready, weak=False)
concurrency = int(os.environ.get("POOL_CONCURRENCY", "1"))
app.worker_main(argv=["worker", "-Q", os.environ["POOL_QUEUE"], "-c", str(concurrency),
                      "-P", worker_pool(os.environ.get("POOL_CELERY_POOL", "auto"), concurrency,
                                        broker=os.environ["POOL_BROKER_URL"]),
                      "-n", f"{os.environ['POOL_NODE_ID']}@%h", "-l", os.environ.get("POOL_LOGLEVEL", "WARNING"),
                      "-O", "fair", "--without-gossip", "--without-mingle", "--without-heartbeat"])
