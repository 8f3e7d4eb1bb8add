"""The faces: the ``pool`` command (``main``) and its groups. Nothing below this package prints or
parses command lines. Imports every layer below it, and the workloads' command groups (``spark.cli``)."""

from pool.cli.commands import load_specs, main, validate_spec

__all__ = ["load_specs", "main", "validate_spec"]
