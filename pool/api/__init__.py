"""The operator's faces over HTTP: the REST API (``app``), its access control (``auth``), the server
that runs it (``server``), the endpoint registry (``endpoints``) and usage (``usage``) behind two of its
routes, and the dashboard's files (``static/``).

A face: may import ``pool.control``, ``pool.state``, ``pool.core``, ``pool.workloads``, ``pool.sites``
and the helpers of ``pool.cli`` that do not import ``pool.api`` back; nothing below the faces imports it.
"""
