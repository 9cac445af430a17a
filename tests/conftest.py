"""Shared fixtures: one local Spark + Delta session for the whole test run."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def spark() -> Iterator:
    """A local[2] SparkSession with Delta, UI off and few shuffle partitions."""
    from lakemon.session import get_spark

    session = get_spark(
        "lakemon-tests",
        master="local[2]",
        extra_conf={
            "spark.sql.shuffle.partitions": "4",
            "spark.default.parallelism": "4",
            "spark.driver.memory": "4g",
            "spark.sql.adaptive.coalescePartitions.enabled": "true",
            "spark.databricks.delta.snapshotPartitions": "2",
            "spark.ui.showConsoleProgress": "false",
        },
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
