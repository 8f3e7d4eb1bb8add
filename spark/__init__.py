"""Spark integration: a standalone master per domain, elastic spark-worker nodes, `pool spark`."""
