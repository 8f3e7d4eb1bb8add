"""The `spark:` block of a spark-worker domain spec: the standalone master and the size of a worker.

Imports ``pool.core`` and pydantic only (no I/O).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Mapping

from pydantic import AfterValidator, Field, StringConstraints, field_validator, model_validator

from pool.core.model import SECONDS_MAX, DomainSpec, Host, Url, WorkloadSpec, matches, show_value

MEMORY_RE = re.compile(r"^\d{1,12}[kmgtKMGT]?\Z")
SIGNAL_RE = re.compile(r"^[A-Z0-9]{1,16}\Z")
SPARK_MASTER_RE = re.compile(r"^spark://[^/:\s@]+:\d{1,5}\Z")
WEB_UI_RE = re.compile(r"^https?://[^/\s]+/?\Z")

Memory = Annotated[str, StringConstraints(min_length=1, max_length=13), AfterValidator(matches(
    MEMORY_RE, "a JVM memory size: a number with k, m, g or t, e.g. 512m"))]
Signal = Annotated[str, StringConstraints(min_length=1, max_length=16), AfterValidator(
    matches(SIGNAL_RE, "a signal name in capitals, e.g. PWR"))]


class SparkDecommissionSpec(WorkloadSpec):
    """How a spark-worker leaves without losing work (Spark's graceful decommission)."""

    enabled: bool = Field(
        True, description="scale-in decommissions the worker (signal) before it stops"
    )
    signal: Signal = Field("PWR", description="spark.worker.decommission.signal")
    shuffle_blocks: bool = Field(True, description="jobs migrate shuffle files off a leaving executor")
    rdd_blocks: bool = Field(True, description="jobs migrate cached RDD blocks off a leaving executor")
    migration_interval: float = Field(
        2.0, gt=0, le=SECONDS_MAX,
        description="seconds between block-migration rounds (replicationReattemptInterval)"
    )


class SparkSpec(WorkloadSpec):
    """`spark:` block of a spark-worker domain: its standalone master and the size of a worker."""

    master_url: Url | None = Field(
        None, description="adopt this master (spark://host:port); default: start one"
    )
    master_ui: Url | None = Field(None, description="web UI of an adopted master (http://host:port)")
    host: Host = Field("127.0.0.1", description="address the master and workers bind")
    master_port: int | None = Field(None, ge=1, le=65535, description="default: a free port at start")
    ui_port: int | None = Field(None, ge=1, le=65535, description="default: a free port at start")
    worker_cores: int = Field(1, ge=1, le=1024)
    worker_memory: Memory = Field("1g", description="memory a worker offers executors, e.g. 512m, 2g")
    daemon_memory: Memory = Field("256m", description="heap of the master and worker daemons")
    idle_timeout: float = Field(
        60.0, ge=0, le=SECONDS_MAX, description="default scaling.idle_timeout (Spark's executorIdleTimeout)"
    )
    decommission: SparkDecommissionSpec = SparkDecommissionSpec()

    @field_validator("master_url")
    @classmethod
    def _master_url(cls, v: str | None) -> str | None:
        if v is not None and not SPARK_MASTER_RE.match(v):
            raise ValueError(f"{show_value(v)} is not a Spark master URL; expected spark://host:port")
        return v

    @field_validator("master_ui")
    @classmethod
    def _master_ui(cls, v: str | None) -> str | None:
        if v is not None and not WEB_UI_RE.match(v):
            raise ValueError(f"{show_value(v)} is not a web UI address; expected http://host:port")
        return v.rstrip("/") if v else v

    @model_validator(mode="after")
    def _adopt(self) -> SparkSpec:
        if self.master_url and not self.master_ui:
            raise ValueError(
                "master_url needs master_ui too (the adopted master's web UI, http://host:port)"
            )
        return self


def spark_spec(spec: DomainSpec) -> SparkSpec:
    """The domain's `spark:` block (a spark-worker domain always has one)."""
    block = spec.block
    if not isinstance(block, SparkSpec):
        raise ValueError(f"domain {spec.name} has no spark: block (deployable_type {spec.deployable_type})")
    return block


def spark_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """A spark-worker domain defaults to the spark sensor, the spark_tasks policy and the
    `spark.idle_timeout` as `scaling.idle_timeout`, unless the spec says otherwise."""
    data.setdefault("sensor", {"name": "spark"})
    data.setdefault("policy", {"name": "spark_tasks"})
    spark = data.get("spark")
    scaling = data.get("scaling")
    if isinstance(spark, Mapping) and (scaling is None or isinstance(scaling, Mapping)):
        scaling = dict(scaling or {})
        default_idle = SparkSpec.model_fields["idle_timeout"].default
        scaling.setdefault("idle_timeout", spark.get("idle_timeout", default_idle))
        data["scaling"] = scaling
    return data
