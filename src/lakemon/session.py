"""The one SparkSession builder: an existing session is taken as it is, otherwise a local Delta session."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("lakemon")

# Maven Central serves the Spark-4.2 build of Delta at 4.4.0; pyproject pins delta-spark==4.4.0 to match.
DELTA_PACKAGE = "io.delta:delta-spark_4.2_2.13:4.4.0"

# What lakemon's queries want from any Spark session, local or a cluster's. A session lakemon builds gets them; a
# cluster's own session gets them from its configuration (jobs/databricks.yml, spark-submit --conf), and
# get_spark warns, naming the keys, when a session it is handed lacks them.
TUNING: dict[str, str] = {
    # Wide aggregations (hundreds of fields) otherwise silently lose whole-stage codegen.
    "spark.sql.codegen.maxFields": "2000",
    # One small monitoring run needs ~300 generated classes; with Spark's default cache of 100 it compiles ~290
    # of them again on every run (measured with CodegenMetrics); 1000 keeps a run's classes for the next one.
    "spark.sql.codegen.cache.maxEntries": "1000",
    # Sketch aggregates are object-hash aggregates; keep them hash-based for thousands of groups.
    "spark.sql.objectHashAggregate.sortBased.fallbackThreshold": "4096",
    # Generated code for wide aggregations exceeds HotSpot's 8,000-byte JIT limit and would run interpreted.
    "spark.driver.extraJavaOptions": "-XX:-DontCompileHugeMethods",
}

LOCAL_DEFAULTS: dict[str, str] = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.memory": "6g",
    "spark.databricks.delta.schema.autoMerge.enabled": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Delta replays its log with 50 partitions by default: far too many tasks for small monitoring tables.
    "spark.databricks.delta.snapshotPartitions": "2",
    **TUNING,
}


def active_session() -> SparkSession | None:
    """Return the already running SparkSession (Databricks, spark-submit, a notebook), if any."""
    from pyspark.sql import SparkSession

    return SparkSession.getActiveSession()


def missing_tuning(get: Callable[[str], str | None]) -> list[str]:
    """The :data:`TUNING` settings a session lacks, as ``key=value`` (``get`` reads the session's setting).

    A numeric setting counts as present when it is at least lakemon's value; the JVM option when its flag is
    among the driver's options.
    """
    missing = []
    for key, want in TUNING.items():
        have = get(key) or ""
        if key == "spark.driver.extraJavaOptions":
            ok = want in have.split()
        else:
            ok = have.isdigit() and int(have) >= int(want)
        if not ok:
            missing.append(f"{key}={want}")
    return missing


def get_spark(
    app_name: str = "lakemon",
    master: str | None = None,
    extra_conf: dict[str, str] | None = None,
) -> SparkSession:
    """Build the session once, or take the running one as it is.

    When a session already exists (Databricks, ``spark-submit`` with a master, a notebook), it is
    returned untouched: the platform owns its configuration. Otherwise a local session with the Delta
    extensions is started; the Delta JAR is resolved from the local Maven repository, where
    ``scripts/setup.sh`` fetched it, so no network is needed.
    """
    existing = active_session()
    if existing is not None:

        def setting(key: str) -> str | None:
            # a platform may refuse to show some settings (Spark Connect): counted as missing
            try:
                return existing.conf.get(key, None)
            except Exception:
                return None

        missing = missing_tuning(setting)
        if missing:
            log.warning(
                "this Spark session lacks settings lakemon's queries want (set them in the cluster's Spark "
                "configuration, as jobs/databricks.yml does): %s",
                ", ".join(missing),
            )
        return existing

    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    conf = dict(LOCAL_DEFAULTS)
    conf.update(extra_conf or {})
    under_submit = "PYSPARK_GATEWAY_PORT" in os.environ  # spark-submit already started the JVM with its conf
    if master is not None:
        builder = builder.master(master)
    elif not under_submit:
        builder = builder.master(os.environ.get("LAKEMON_SPARK_MASTER", "local[*]"))
    if not under_submit:
        conf.setdefault("spark.jars.packages", DELTA_PACKAGE)
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()
