"""Data-quality checks: built-in rules as Spark Columns, Great Expectations suites, suggestions.

``checks`` and ``suggest`` import only pyspark; ``gx`` imports Great Expectations lazily.
"""

from __future__ import annotations

from lakemon.quality.checks import (
    CHECKS,
    CheckContext,
    CheckDef,
    PlannedCheck,
    QualityOutcome,
    SchemaDiff,
    add_derived_columns,
    aggregate_columns,
    default_checks,
    duplicate_flag_column,
    duplicate_flag_name,
    freshness_finalize,
    freshness_max_ts,
    plan_checks,
    sample_failures,
    schema_diff,
    validate_checks,
    volume_finalize,
)

__all__ = [
    "CHECKS",
    "CheckContext",
    "CheckDef",
    "PlannedCheck",
    "QualityOutcome",
    "SchemaDiff",
    "add_derived_columns",
    "aggregate_columns",
    "default_checks",
    "duplicate_flag_column",
    "duplicate_flag_name",
    "freshness_finalize",
    "freshness_max_ts",
    "plan_checks",
    "sample_failures",
    "schema_diff",
    "validate_checks",
    "volume_finalize",
]
