"""Data-quality checks as small functions that return Spark ``Column`` expressions.

Nothing here runs a Spark action: the job puts every planned aggregate of every check into the ONE
aggregation it already runs per window and slice, then calls each check's pure ``finalize``.

Levels
------
``row``
    The rule yields a boolean Column that is TRUE when the row FAILS (never NULL). The job counts
    them with ``count_if``. Rules other than ``not_null`` and ``expression`` ignore NULL values, as
    Great Expectations' ``mostly`` semantics do: a NULL is ``not_null``'s business.
``aggregate``
    The rule yields an aggregate Column (``null_ratio_below``: null count; ``unique``: rows flagged
    as duplicates; ``freshness``: ``max(timestamp)``) that ``finalize`` turns into a decision.
``table``
    Decided from the window's row count (``volume``, with the recent windows' counts read from
    ``profile_metrics``) or from the schema alone (``schema``).

Counting semantics (matches Great Expectations on Spark, so the parity test is exact)
---------------------------------------------------------------------------------------
``rows_failed``
    GX's ``unexpected_count``: rows whose non-NULL value breaks the rule (``not_null``: NULL rows).
``rows_checked``
    For NULL-ignoring rules (``between``, ``in_set``, ``not_in_set``, ``matches_regex``, ``unique``,
    ``no_nan_or_inf``, ``score_in_unit_interval``): the non-NULL rows, GX's
    ``element_count - missing_count``, so ``fail_ratio`` equals GX's ``unexpected_percent / 100``
    and ``passed`` equals GX's ``success`` with ``mostly = 1 - max_fail_ratio``. For ``not_null``,
    ``null_ratio_below`` and ``expression``: all rows of the window/slice. For table-level checks
    (``freshness``, ``volume``, ``schema``): all rows, and ``rows_failed`` is all rows when the
    check fails, 0 otherwise (``fail_ratio`` is 1.0 or 0.0; ``details`` says why). The total row
    count (GX's ``element_count``) is always in ``details`` as ``rows_total``.

NaN: Spark orders NaN above every number and ``NaN = NaN``; so ``between`` fails NaN against a
``max`` bound but not against a ``min``-only bound (GX on Spark behaves the same). ``no_nan_or_inf``
is the rule for NaN and infinities.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    DataType,
    DateType,
    DecimalType,
    DoubleType,
    FloatType,
    NumericType,
    StringType,
    StructType,
    TimestampNTZType,
    TimestampType,
)

from lakemon.config import CheckSpec, parse_granularity

Level = Literal["row", "aggregate", "table"]

#: Tolerance when comparing a fail ratio with ``max_fail_ratio`` (``1 - 0.9`` is ``0.0999...``).
RATIO_EPS = 1e-9

DUP_PREFIX = "__dup_"

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


# ---------------------------------------------------------------------------------------------------
# Data classes
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckContext:
    """What the checks need to know about the data besides the check itself.

    ``ts_col``: the event timestamp (``freshness`` defaults to it). ``score_cols``: score column(s)
    (``score_in_unit_interval`` defaults to them). ``window_start_col``/``window_end_col``: the
    window columns the job adds (``unique`` partitions its duplicate flag by the window start;
    ``freshness`` reads the window end); ``None`` when the batch is one window. ``schema``: the
    data's schema, for the ``schema`` check (decided at plan time, it needs no data).
    """

    ts_col: str | None = None
    score_cols: tuple[str, ...] = ()
    window_start_col: str | None = "window_start"
    window_end_col: str | None = "window_end"
    schema: StructType | None = None


@dataclass(frozen=True)
class QualityOutcome:
    """One check's result for one window/slice."""

    check_name: str
    check: str
    severity: str
    rows_checked: int
    rows_failed: int
    fail_ratio: float
    passed: bool
    details: str  # a JSON object


@dataclass(frozen=True)
class SchemaDiff:
    missing: tuple[str, ...]
    extra: tuple[str, ...]
    mismatched: tuple[tuple[str, str, str], ...]  # (column, expected, actual)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.mismatched)

    def problems(self) -> list[str]:
        out = [f"missing column '{c}'" for c in self.missing]
        out += [f"unexpected column '{c}'" for c in self.extra]
        out += [f"column '{c}' is {a}, expected {e}" for c, e, a in self.mismatched]
        return out


@dataclass(frozen=True)
class CheckDef:
    """A built-in rule. ``build`` gives the row-level fail Column or the aggregate Column (None for
    table-level rules); ``validate`` gives error messages naming the config key."""

    name: str
    level: Level
    build: Callable[[CheckSpec, CheckContext], Column] | None
    validate: Callable[[CheckSpec, StructType | None, CheckContext | None, str], list[str]]
    ignores_nulls: bool = False
    finalize: Callable[..., Any] | None = None


@dataclass(frozen=True, eq=False)
class PlannedCheck:
    """One check ready for the single aggregation.

    ``aggregates``: aliased aggregate Columns to add to the job's ``agg`` (names ``q__<i>__<role>``,
    unique). ``keys``: role -> alias (``failed``, ``checked``, ``rows``, ``max_ts``, ``window_end``).
    ``row_condition``: the row-level fail Column (row-level and ``unique`` checks), used by
    :func:`sample_failures`. ``derived``: columns the DataFrame must carry before the aggregation
    (the ``__dup_<col>`` window flags); add them with :func:`add_derived_columns`.
    """

    index: int
    spec: CheckSpec
    level: Level
    aggregates: tuple[Column, ...]
    keys: Mapping[str, str]
    row_condition: Column | None = None
    derived: Mapping[str, Column] = field(default_factory=dict)
    static: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.check_name

    @property
    def check(self) -> str:
        return self.spec.check

    def finalize(
        self,
        values: Mapping[str, Any],
        *,
        history: Sequence[float] | None = None,
        window_end: datetime | None = None,
    ) -> QualityOutcome:
        """Turn the aggregated values (a Row's ``asDict()`` or any mapping holding this check's
        ``keys``) into an outcome. ``history``: the recent windows' row counts (``volume``);
        ``window_end`` overrides the aggregated window end (``freshness``)."""
        spec = self.spec
        get = {role: values.get(alias) for role, alias in self.keys.items()}
        total = int(get.get("rows") or 0)
        details: dict[str, Any] = {"rows_total": total}
        if spec.check in ("freshness", "volume", "schema"):
            if spec.check == "freshness":
                wend = window_end if window_end is not None else get.get("window_end")
                ok, info = freshness_finalize(get.get("max_ts"), wend, str(spec.args.get("max_delay")))
            elif spec.check == "volume":
                ok, info = volume_finalize(
                    total,
                    history or (),
                    min_rows=spec.args.get("min_rows"),
                    max_rows=spec.args.get("max_rows"),
                    max_std=spec.args.get("max_std"),
                    history_n=int(spec.args.get("history", 14)),
                    min_history=int(spec.args.get("min_history", 3)),
                )
            else:
                ok, info = bool(self.static["ok"]), dict(self.static["info"])
            details.update(info)
            return _outcome(spec, total, 0 if ok else total, 0.0 if ok else 1.0, ok, details)

        failed = int(get.get("failed") or 0)
        checked = int(get.get("checked") or 0)
        ratio = failed / checked if checked else 0.0
        if spec.check == "null_ratio_below":
            limit = float(spec.args["max_ratio"])
            details["max_ratio"] = limit
        else:
            limit = spec.max_fail_ratio
        details["max_fail_ratio"] = limit
        passed = ratio <= limit + RATIO_EPS
        return _outcome(spec, checked, failed, ratio, passed, details)


def _outcome(
    spec: CheckSpec, checked: int, failed: int, ratio: float, passed: bool, details: dict[str, Any]
) -> QualityOutcome:
    return QualityOutcome(
        check_name=spec.check_name,
        check=spec.check,
        severity=spec.severity,
        rows_checked=int(checked),
        rows_failed=int(failed),
        fail_ratio=float(ratio),
        passed=bool(passed),
        details=json.dumps(details, default=str, sort_keys=True),
    )


# ---------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------


def _c(name: str) -> Column:
    """A column by name, safe for names with dots or spaces."""
    return F.col(f"`{name.replace('`', '``')}`")


def _safe(cond: Column) -> Column:
    """NULL -> FALSE, so a fail flag is never NULL."""
    return F.coalesce(cond, F.lit(False))


def _fails_non_null(col: Column, expected: Column) -> Column:
    """GX's ``column.isNotNull() & ~expected``, NULL-safe."""
    return col.isNotNull() & _safe(~expected)


def _target(spec: CheckSpec) -> str:
    if spec.column is None:
        raise ValueError(f"check '{spec.check_name}' needs a 'column'")
    return spec.column


def _field(schema: StructType | None, name: str) -> DataType | None:
    if schema is None:
        return None
    for f in schema.fields:
        if f.name == name:
            return f.dataType
    return None


def _is_float(dt: DataType | None) -> bool:
    return isinstance(dt, FloatType | DoubleType)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and not math.isnan(float(x))


# ---------------------------------------------------------------------------------------------------
# Row-level rules (TRUE = the row fails)
# ---------------------------------------------------------------------------------------------------


def not_null(spec: CheckSpec, ctx: CheckContext) -> Column:
    """Fails where the column is NULL (any of ``columns`` when several are given). NaN is not NULL."""
    cols = list(spec.columns) if spec.columns else [_target(spec)]
    cond = F.lit(False)
    for c in cols:
        cond = cond | _c(c).isNull()
    return cond


def between(spec: CheckSpec, ctx: CheckContext) -> Column:
    """Fails where a non-NULL value is outside ``[min, max]`` (``min_inclusive``/``max_inclusive``,
    default True; either bound optional). NULL does not fail."""
    col = _c(_target(spec))
    lo, hi = spec.args.get("min"), spec.args.get("max")
    ok = F.lit(True)
    if lo is not None:
        ok = ok & ((col >= F.lit(lo)) if spec.args.get("min_inclusive", True) else (col > F.lit(lo)))
    if hi is not None:
        ok = ok & ((col <= F.lit(hi)) if spec.args.get("max_inclusive", True) else (col < F.lit(hi)))
    return _fails_non_null(col, ok)


def _values(spec: CheckSpec) -> list[Any]:
    return [v for v in spec.args.get("values", []) if v is not None]


def in_set(spec: CheckSpec, ctx: CheckContext) -> Column:
    """Fails where a non-NULL value is not one of ``values``."""
    col = _c(_target(spec))
    return _fails_non_null(col, col.isin(_values(spec)))


def not_in_set(spec: CheckSpec, ctx: CheckContext) -> Column:
    """Fails where a non-NULL value is one of ``values``."""
    col = _c(_target(spec))
    return col.isNotNull() & _safe(col.isin(_values(spec)))


def matches_regex(spec: CheckSpec, ctx: CheckContext) -> Column:
    """Fails where a non-NULL value does not match ``pattern``. Java regex semantics (Spark
    ``rlike``), and a *search*, not a full match: anchor with ``^...$`` to match the whole value."""
    col = _c(_target(spec))
    return _fails_non_null(col, col.rlike(str(spec.args["pattern"])))


def expression(spec: CheckSpec, ctx: CheckContext) -> Column:
    """``expr`` is a boolean Spark SQL expression that must hold; a row fails where it is FALSE or
    NULL (a NULL result counts as failed: write ``x IS NULL OR x > 0`` to let NULLs pass)."""
    return ~_safe(F.expr(str(spec.args["expr"])))


def no_nan_or_inf(spec: CheckSpec, ctx: CheckContext) -> Column:
    """Fails on NaN, +inf and -inf (float/double columns; other numeric types never fail)."""
    col = _c(_target(spec))
    dt = _field(ctx.schema, _target(spec))
    if dt is not None and not _is_float(dt):
        return F.lit(False)
    return _safe(F.isnan(col) | (col == F.lit(float("inf"))) | (col == F.lit(float("-inf"))))


def _score_cols(spec: CheckSpec, ctx: CheckContext) -> list[str]:
    if spec.column:
        return [spec.column]
    if spec.columns:
        return list(spec.columns)
    return list(ctx.score_cols)


def score_in_unit_interval(spec: CheckSpec, ctx: CheckContext) -> Column:
    """Fails where a non-NULL score is NaN or outside ``[0, 1]`` (any of the score columns)."""
    cond = F.lit(False)
    for name in _score_cols(spec, ctx):
        col = _c(name)
        cond = cond | (col.isNotNull() & _safe(F.isnan(col) | (col < 0) | (col > 1)))
    return cond


# ---------------------------------------------------------------------------------------------------
# Aggregate-level rules
# ---------------------------------------------------------------------------------------------------


def null_ratio_below(spec: CheckSpec, ctx: CheckContext) -> Column:
    """The NULL count (aggregate); passed when NULL count / rows <= ``args.max_ratio``."""
    return F.count_if(_c(_target(spec)).isNull())


def _unique_cols(spec: CheckSpec) -> list[str]:
    return list(spec.columns) if spec.columns else [_target(spec)]


def duplicate_flag_name(col: str | Sequence[str]) -> str:
    """``__dup_<col>`` (``__dup_<a>__<b>`` for a compound key)."""
    cols = [col] if isinstance(col, str) else list(col)
    return DUP_PREFIX + "__".join(cols)


def duplicate_flag_column(col: str | Sequence[str], window_col: str | None) -> Column:
    """TRUE on every row whose (non-NULL) key occurs more than once in its window:
    ``count(*) over (partition by window_col, col) > 1``. A window function: add it with
    ``withColumn`` before the aggregation (see :func:`add_derived_columns`). Rows with a NULL key are
    never flagged (GX's ``expect_column_values_to_be_unique`` ignores NULLs too)."""
    cols = [col] if isinstance(col, str) else list(col)
    parts = ([_c(window_col)] if window_col else []) + [_c(c) for c in cols]
    w = Window.partitionBy(*parts)
    not_null_key = F.lit(True)
    for c in cols:
        not_null_key = not_null_key & _c(c).isNotNull()
    return _safe(not_null_key & (F.count(F.lit(1)).over(w) > 1))


def unique_fail(spec: CheckSpec, ctx: CheckContext) -> Column:
    """Row-level view of ``unique``: the duplicate flag column (must exist on the DataFrame)."""
    return _safe(_c(duplicate_flag_name(_unique_cols(spec))))


def unique(spec: CheckSpec, ctx: CheckContext) -> Column:
    """Rows flagged as exact duplicates of the key within the window (all copies count, like GX)."""
    return F.count_if(unique_fail(spec, ctx))


def freshness_max_ts(spec: CheckSpec, ctx: CheckContext) -> Column:
    """``max(timestamp)`` of the window/slice (aggregate)."""
    name = spec.column or ctx.ts_col
    if not name:
        raise ValueError(f"check '{spec.check_name}' needs a 'column' or a timestamp column")
    return F.max(_c(name))


def _naive(t: datetime) -> datetime:
    return t.replace(tzinfo=None) if t.tzinfo is not None else t


def _as_datetime(t: date | datetime) -> datetime:
    """A DATE column's max is a ``date``: take its midnight."""
    return t if isinstance(t, datetime) else datetime(t.year, t.month, t.day)


def freshness_finalize(
    max_ts: datetime | None, window_end: datetime | None, max_delay: str | timedelta
) -> tuple[bool, dict[str, Any]]:
    """Pure: fails when ``window_end - max_ts > max_delay`` (or when there is no timestamp)."""
    delay_limit = max_delay if isinstance(max_delay, timedelta) else parse_granularity(max_delay)
    info: dict[str, Any] = {
        "max_delay_s": delay_limit.total_seconds(),
        "max_ts": max_ts,
        "window_end": window_end,
    }
    if max_ts is None:
        info["reason"] = "no timestamp in the window"
        return False, info
    if window_end is None:
        info["reason"] = "window end unknown"
        return False, info
    max_ts, window_end = _as_datetime(max_ts), _as_datetime(window_end)
    if (max_ts.tzinfo is None) != (window_end.tzinfo is None):
        max_ts, window_end = _naive(max_ts), _naive(window_end)
    delay = (window_end - max_ts).total_seconds()
    info["delay_s"] = delay
    ok = delay <= delay_limit.total_seconds()
    if not ok:
        info["reason"] = (
            f"newest row is {delay:.0f}s before the window end (max {delay_limit.total_seconds():.0f}s)"
        )
    return ok, info


def volume_finalize(
    row_count: int,
    history: Sequence[float],
    *,
    min_rows: float | None = None,
    max_rows: float | None = None,
    max_std: float | None = None,
    history_n: int = 14,
    min_history: int = 3,
) -> tuple[bool, dict[str, Any]]:
    """Pure: fails when the count is outside ``[min_rows, max_rows]`` or, with ``max_std``, more
    than ``max_std`` standard deviations from the mean of the last ``history_n`` windows' counts
    (skipped with fewer than ``min_history`` of them). The standard deviation is floored at
    ``sqrt(mean)`` (Poisson counting noise), so a flat history does not flag every small change."""
    info: dict[str, Any] = {"row_count": int(row_count)}
    reasons: list[str] = []
    if min_rows is not None:
        info["min_rows"] = min_rows
        if row_count < min_rows:
            reasons.append(f"{row_count} rows < min_rows {min_rows}")
    if max_rows is not None:
        info["max_rows"] = max_rows
        if row_count > max_rows:
            reasons.append(f"{row_count} rows > max_rows {max_rows}")
    if max_std is not None:
        recent = [float(h) for h in list(history)[-history_n:] if h is not None]
        info["history_windows"] = len(recent)
        if len(recent) >= max(min_history, 2):
            mean = statistics.fmean(recent)
            std = max(statistics.stdev(recent), math.sqrt(max(mean, 0.0)))
            z = (row_count - mean) / std if std > 0 else (0.0 if row_count == mean else math.inf)
            info.update({"history_mean": mean, "history_std": std, "z": z, "max_std": max_std})
            if abs(z) > max_std:
                reasons.append(f"{row_count} rows is {z:+.2f} std from the recent mean {mean:.1f}")
        else:
            info["skipped"] = f"fewer than {max(min_history, 2)} history windows"
    if reasons:
        info["reason"] = "; ".join(reasons)
    return not reasons, info


# ---------------------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------------------

_TYPE_ALIASES = {
    "long": "bigint",
    "integer": "int",
    "short": "smallint",
    "byte": "tinyint",
    "bool": "boolean",
    "real": "float",
    "str": "string",
    "text": "string",
    "timestamp_ltz": "timestamp",
}


def _norm_type(t: str) -> str:
    t = re.sub(r"\s+", "", str(t).lower())
    return _TYPE_ALIASES.get(t, t)


def _type_matches(expected: str, actual: DataType) -> bool:
    e = _norm_type(expected)
    a = _norm_type(actual.simpleString())
    if e == a:
        return True
    if e == "numeric":
        return isinstance(actual, NumericType)
    if e == "decimal":
        return isinstance(actual, DecimalType)
    if e == "timestamp":
        return isinstance(actual, TimestampType)
    return False


def schema_diff(schema: StructType, required: Mapping[str, str], allow_extra: bool = True) -> SchemaDiff:
    """Pure: missing, extra (only when ``allow_extra`` is False) and mismatched columns. Types are
    Spark names (``double``, ``bigint``/``long``, ``string``, ``timestamp``, ``decimal(10,2)``) or
    the families ``numeric`` and ``decimal``; an empty type accepts any type."""
    actual = {f.name: f.dataType for f in schema.fields}
    missing = tuple(c for c in required if c not in actual)
    extra = () if allow_extra else tuple(c for c in actual if c not in required)
    mismatched = tuple(
        (c, str(t), actual[c].simpleString())
        for c, t in required.items()
        if c in actual and t and not _type_matches(str(t), actual[c])
    )
    return SchemaDiff(missing, extra, mismatched)


def _schema_static(spec: CheckSpec, ctx: CheckContext) -> dict[str, Any]:
    if ctx.schema is None:
        return {"ok": False, "info": {"reason": "schema not available to the check"}}
    diff = schema_diff(
        ctx.schema, dict(spec.args.get("required") or {}), bool(spec.args.get("allow_extra", True))
    )
    info = {
        "missing": list(diff.missing),
        "extra": list(diff.extra),
        "mismatched": [{"column": c, "expected": e, "actual": a} for c, e, a in diff.mismatched],
    }
    if not diff.ok:
        info["reason"] = "; ".join(diff.problems())
    return {"ok": diff.ok, "info": info}


# ---------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------


def _need_column(spec: CheckSpec, schema: StructType | None, key: str) -> list[str]:
    if not spec.column:
        return [f"{key}.column: check '{spec.check}' needs a 'column'"]
    if schema is not None and _field(schema, spec.column) is None:
        return [f"{key}.column: unknown column '{spec.column}' for check '{spec.check_name}'"]
    return []


def _need_columns(cols: Sequence[str], schema: StructType | None, key: str, what: str) -> list[str]:
    if schema is None:
        return []
    return [f"{key}.{what}: unknown column '{c}'" for c in cols if _field(schema, c) is None]


def _no_columns(spec: CheckSpec, key: str) -> list[str]:
    return [f"{key}.columns: check '{spec.check}' takes one 'column', not 'columns'"] if spec.columns else []


def _v_not_null(spec, schema, ctx, key) -> list[str]:
    if spec.columns:
        return _need_columns(spec.columns, schema, key, "columns") + _unknown_args(spec, key, set())
    return _need_column(spec, schema, key) + _unknown_args(spec, key, set())


def _v_between(spec, schema, ctx, key) -> list[str]:
    errs = _need_column(spec, schema, key) + _no_columns(spec, key)
    lo, hi = spec.args.get("min"), spec.args.get("max")
    if lo is None and hi is None:
        errs.append(f"{key}.args.min: check 'between' needs 'min' and/or 'max'")
    for k, v in (("min", lo), ("max", hi)):
        if v is not None and not _is_number(v):
            errs.append(f"{key}.args.{k}: expected a number, got {v!r}")
    for k in ("min_inclusive", "max_inclusive"):
        if k in spec.args and not isinstance(spec.args[k], bool):
            errs.append(f"{key}.args.{k}: expected true or false, got {spec.args[k]!r}")
    if _is_number(lo) and _is_number(hi) and lo > hi:
        errs.append(f"{key}.args.min: min {lo} is greater than max {hi}")
    dt = _field(schema, spec.column) if spec.column else None
    if dt is not None and not isinstance(dt, NumericType):
        errs.append(
            f"{key}.column: check 'between' needs a numeric column, '{spec.column}' is {dt.simpleString()}"
        )
    return errs + _unknown_args(spec, key, {"min", "max", "min_inclusive", "max_inclusive"})


def _v_set(spec, schema, ctx, key) -> list[str]:
    errs = _need_column(spec, schema, key) + _no_columns(spec, key)
    vals = spec.args.get("values")
    if not isinstance(vals, list | tuple) or not vals:
        errs.append(f"{key}.args.values: check '{spec.check}' needs a non-empty list of values")
    return errs + _unknown_args(spec, key, {"values"})


def _v_regex(spec, schema, ctx, key) -> list[str]:
    errs = _need_column(spec, schema, key) + _no_columns(spec, key)
    pat = spec.args.get("pattern")
    if not isinstance(pat, str) or not pat:
        errs.append(f"{key}.args.pattern: check 'matches_regex' needs a 'pattern' (a Java regex)")
    else:
        try:
            re.compile(pat)
        except re.error as e:  # Python and Java regex agree on the common syntax
            errs.append(f"{key}.args.pattern: invalid regex {pat!r}: {e}")
    dt = _field(schema, spec.column) if spec.column else None
    if dt is not None and not isinstance(dt, StringType):
        errs.append(
            f"{key}.column: check 'matches_regex' needs a string column, '{spec.column}' is {dt.simpleString()}"
        )
    return errs + _unknown_args(spec, key, {"pattern"})


def _v_expression(spec, schema, ctx, key) -> list[str]:
    e = spec.args.get("expr")
    if not isinstance(e, str) or not e.strip():
        return [f"{key}.args.expr: check 'expression' needs 'expr' (a boolean Spark SQL expression)"]
    errs = _unknown_args(spec, key, {"expr"})
    if schema is not None:
        from pyspark.sql import SparkSession

        spark = SparkSession.getActiveSession()
        if spark is not None:  # analysis only: an empty DataFrame, no Spark job
            import logging

            quiet = logging.getLogger("SQLQueryContextLogger")  # pyspark logs every failed analysis
            level = quiet.level
            quiet.setLevel(logging.CRITICAL)
            try:
                out = spark.createDataFrame([], schema).select(F.expr(e).alias("x")).schema
                if out.fields[0].dataType.simpleString() != "boolean":
                    errs.append(
                        f"{key}.args.expr: {e!r} is {out.fields[0].dataType.simpleString()}, expected boolean"
                    )
            except Exception as ex:
                first = str(ex).strip().splitlines()[0] if str(ex).strip() else type(ex).__name__
                errs.append(f"{key}.args.expr: cannot be evaluated on the data: {first}")
            finally:
                quiet.setLevel(level)
    return errs


def _v_numeric(spec, schema, ctx, key) -> list[str]:
    errs = _need_column(spec, schema, key) + _no_columns(spec, key)
    dt = _field(schema, spec.column) if spec.column else None
    if dt is not None and not isinstance(dt, NumericType):
        errs.append(
            f"{key}.column: check '{spec.check}' needs a numeric column, '{spec.column}' is {dt.simpleString()}"
        )
    return errs + _unknown_args(spec, key, set())


def _v_score(spec, schema, ctx, key) -> list[str]:
    cols = _score_cols(spec, ctx or CheckContext())
    if not cols:
        return [f"{key}.column: check 'score_in_unit_interval' needs a 'column' (no score column configured)"]
    errs = _need_columns(cols, schema, key, "column")
    for c in cols:
        dt = _field(schema, c)
        if dt is not None and not isinstance(dt, NumericType):
            errs.append(f"{key}.column: score column '{c}' is {dt.simpleString()}, expected numeric")
    return errs + _unknown_args(spec, key, set())


def _v_null_ratio(spec, schema, ctx, key) -> list[str]:
    errs = _need_column(spec, schema, key) + _no_columns(spec, key)
    r = spec.args.get("max_ratio")
    if not _is_number(r) or not 0 <= float(r) <= 1:
        errs.append(f"{key}.args.max_ratio: expected a number between 0 and 1, got {r!r}")
    return errs + _unknown_args(spec, key, {"max_ratio"})


def _v_unique(spec, schema, ctx, key) -> list[str]:
    if spec.columns:
        return _need_columns(spec.columns, schema, key, "columns") + _unknown_args(spec, key, set())
    return _need_column(spec, schema, key) + _unknown_args(spec, key, set())


def _v_freshness(spec, schema, ctx, key) -> list[str]:
    errs: list[str] = []
    col = spec.column or (ctx.ts_col if ctx else None)
    if not col and ctx is not None:
        errs.append(f"{key}.column: check 'freshness' needs a 'column' (no timestamp column configured)")
    elif col and schema is not None:
        dt = _field(schema, col)
        if dt is None:
            errs.append(f"{key}.column: unknown column '{col}' for check '{spec.check_name}'")
        elif not isinstance(dt, TimestampType | TimestampNTZType | DateType):
            errs.append(
                f"{key}.column: check 'freshness' needs a timestamp column, '{col}' is {dt.simpleString()}"
            )
    d = spec.args.get("max_delay")
    try:
        parse_granularity(str(d)) if d is not None else None
        if d is None:
            errs.append(f"{key}.args.max_delay: check 'freshness' needs 'max_delay' (e.g. '2 hours')")
    except ValueError as e:
        errs.append(f"{key}.args.max_delay: {e}")
    return errs + _unknown_args(spec, key, {"max_delay"})


def _v_volume(spec, schema, ctx, key) -> list[str]:
    a = spec.args
    errs: list[str] = []
    if all(a.get(k) is None for k in ("min_rows", "max_rows", "max_std")):
        errs.append(f"{key}.args.min_rows: check 'volume' needs 'min_rows', 'max_rows' and/or 'max_std'")
    for k in ("min_rows", "max_rows", "max_std"):
        if a.get(k) is not None and (not _is_number(a[k]) or a[k] < 0):
            errs.append(f"{key}.args.{k}: expected a non-negative number, got {a[k]!r}")
    for k in ("history", "min_history"):
        if k in a and (not isinstance(a[k], int) or isinstance(a[k], bool) or a[k] < 2):
            errs.append(f"{key}.args.{k}: expected an integer >= 2, got {a[k]!r}")
    if _is_number(a.get("min_rows")) and _is_number(a.get("max_rows")) and a["min_rows"] > a["max_rows"]:
        errs.append(f"{key}.args.min_rows: min_rows {a['min_rows']} is greater than max_rows {a['max_rows']}")
    return errs + _unknown_args(spec, key, {"min_rows", "max_rows", "max_std", "history", "min_history"})


def _v_schema(spec, schema, ctx, key) -> list[str]:
    req = spec.args.get("required")
    errs: list[str] = []
    if not isinstance(req, dict) or not req:
        errs.append(f"{key}.args.required: check 'schema' needs 'required' as a mapping column -> type")
    if "allow_extra" in spec.args and not isinstance(spec.args["allow_extra"], bool):
        errs.append(f"{key}.args.allow_extra: expected true or false, got {spec.args['allow_extra']!r}")
    return errs + _unknown_args(spec, key, {"required", "allow_extra"})


def _unknown_args(spec: CheckSpec, key: str, allowed: set[str]) -> list[str]:
    return [
        f"{key}.args.{k}: unknown argument for check '{spec.check}' (allowed: {sorted(allowed) or 'none'})"
        for k in spec.args
        if k not in allowed
    ]


# ---------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------

CHECKS: dict[str, CheckDef] = {
    d.name: d
    for d in (
        CheckDef("not_null", "row", not_null, _v_not_null),
        CheckDef("between", "row", between, _v_between, ignores_nulls=True),
        CheckDef("in_set", "row", in_set, _v_set, ignores_nulls=True),
        CheckDef("not_in_set", "row", not_in_set, _v_set, ignores_nulls=True),
        CheckDef("matches_regex", "row", matches_regex, _v_regex, ignores_nulls=True),
        CheckDef("expression", "row", expression, _v_expression),
        CheckDef("no_nan_or_inf", "row", no_nan_or_inf, _v_numeric, ignores_nulls=True),
        CheckDef("score_in_unit_interval", "row", score_in_unit_interval, _v_score, ignores_nulls=True),
        CheckDef("null_ratio_below", "aggregate", null_ratio_below, _v_null_ratio),
        CheckDef("unique", "aggregate", unique, _v_unique, ignores_nulls=True),
        CheckDef("freshness", "aggregate", freshness_max_ts, _v_freshness, finalize=freshness_finalize),
        CheckDef("volume", "table", None, _v_volume, finalize=volume_finalize),
        CheckDef("schema", "table", None, _v_schema, finalize=schema_diff),
    )
}


def validate_checks(
    specs: Sequence[CheckSpec],
    schema: StructType | None,
    ctx: CheckContext | None = None,
    prefix: str = "quality.checks",
) -> list[str]:
    """Every configuration error of every check, each naming its key (``quality.checks[2].args.min``)."""
    errs: list[str] = []
    for i, spec in enumerate(specs):
        d = CHECKS.get(spec.check)
        key = f"{prefix}[{i}]"
        if d is None:
            errs.append(f"{key}.check: unknown check '{spec.check}' (known: {sorted(CHECKS)})")
            continue
        errs.extend(d.validate(spec, schema, ctx, key))
    return errs


# ---------------------------------------------------------------------------------------------------
# Defaults
# ---------------------------------------------------------------------------------------------------


def default_checks(
    numeric: Sequence[str],
    categorical: Sequence[str],
    score_col: str | Sequence[str] | None,
    id_col: str | None,
    ts_col: str | None,
) -> list[CheckSpec]:
    """The checks used when ``quality.default_checks`` is true: the id and timestamp are never NULL,
    ids are unique within a window, numeric features hold no NaN/inf, scores lie in [0, 1], and the
    window's row count is not an outlier of the recent windows (a warning)."""
    out: list[CheckSpec] = []
    for col in (id_col, ts_col):
        if col:
            out.append(CheckSpec(check="not_null", column=col))
    if id_col:
        out.append(CheckSpec(check="unique", column=id_col))
    for col in numeric:
        out.append(CheckSpec(check="no_nan_or_inf", column=col))
    scores = [score_col] if isinstance(score_col, str) else list(score_col or ())
    for col in scores:
        out.append(CheckSpec(check="score_in_unit_interval", column=col))
    out.append(CheckSpec(check="volume", args={"max_std": 4.0, "history": 14}, severity="warn"))
    return out


# ---------------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------------


def _alias(i: int, role: str) -> str:
    return f"q__{i}__{role}"


def _non_null_count(cols: Sequence[str], mode: Literal["any", "all"]) -> Column:
    if len(cols) == 1:
        # a plain count: cheaper per row than a conditional one, and Spark evaluates identical aggregates
        # once, so rules on the same column (and the profile's count) share it
        return F.count(_c(cols[0]))
    cond = F.lit(mode == "all")
    for c in cols:
        cond = (cond & _c(c).isNotNull()) if mode == "all" else (cond | _c(c).isNotNull())
    return F.count_if(cond)


@dataclass
class _Collector:
    """Adds ``q__<i>__<role>`` aggregates to a check's plan."""

    index: int
    keys: dict[str, str]
    aggs: list[Column]

    def __call__(self, role: str, col: Column) -> None:
        self.keys[role] = _alias(self.index, role)
        self.aggs.append(col.alias(self.keys[role]))


def plan_checks(specs: Sequence[CheckSpec], ctx: CheckContext) -> list[PlannedCheck]:
    """For each check, the aggregate Columns for the job's single ``agg`` and a pure finalize.

    Aggregate names are ``q__<i>__<role>`` (``i`` = position in ``specs``). Unknown or
    misconfigured checks raise ``ValueError``: run :func:`validate_checks` first.
    """
    planned: list[PlannedCheck] = []
    for i, spec in enumerate(specs):
        d = CHECKS.get(spec.check)
        if d is None:
            raise ValueError(f"unknown check '{spec.check}'")
        keys: dict[str, str] = {"rows": _alias(i, "rows")}
        aggs: list[Column] = [F.count(F.lit(1)).alias(keys["rows"])]
        row_cond: Column | None = None
        derived: dict[str, Column] = {}
        static: dict[str, Any] = {}

        add = _Collector(i, keys, aggs)

        if d.level == "row":
            assert d.build is not None
            row_cond = d.build(spec, ctx)
            add("failed", F.count_if(row_cond))
            if d.ignores_nulls:
                cols = _score_cols(spec, ctx) if spec.check == "score_in_unit_interval" else [_target(spec)]
                add("checked", _non_null_count(cols, "any"))
            else:
                add("checked", F.count(F.lit(1)))
        elif spec.check == "null_ratio_below":
            add("failed", null_ratio_below(spec, ctx))
            add("checked", F.count(F.lit(1)))
        elif spec.check == "unique":
            cols = _unique_cols(spec)
            derived[duplicate_flag_name(cols)] = duplicate_flag_column(cols, ctx.window_start_col)
            row_cond = unique_fail(spec, ctx)
            add("failed", unique(spec, ctx))
            add("checked", _non_null_count(cols, "all"))
        elif spec.check == "freshness":
            add("max_ts", freshness_max_ts(spec, ctx))
            if ctx.window_end_col:
                add("window_end", F.max(_c(ctx.window_end_col)))
        elif spec.check == "schema":
            static = _schema_static(spec, ctx)
        # volume: the row count alone
        planned.append(PlannedCheck(i, spec, d.level, tuple(aggs), keys, row_cond, derived, static))
    return planned


def add_derived_columns(df: DataFrame, planned: Sequence[PlannedCheck]) -> DataFrame:
    """Add the columns the planned checks read (``__dup_<col>`` window flags) unless present."""
    have = set(df.columns)
    for p in planned:
        for name, col in p.derived.items():
            if name not in have:
                df = df.withColumn(name, col)
                have.add(name)
    return df


def aggregate_columns(planned: Sequence[PlannedCheck]) -> list[Column]:
    """All planned aggregate Columns, flattened, for ``df.groupBy(...).agg(*aggregate_columns(p))``."""
    return [c for p in planned for c in p.aggregates]


# ---------------------------------------------------------------------------------------------------
# Failure samples
# ---------------------------------------------------------------------------------------------------


def sample_failures(
    df: DataFrame,
    planned_rows: Sequence[PlannedCheck],
    limit: int,
    columns: Sequence[str] | None = None,
    window_col: str | None = "window_start",
) -> DataFrame:
    """Up to ``limit`` offending rows per (check, window) for the given checks, in ONE plan and one
    scan: each row carries the names of the checks it fails (an array), exploded, then ranked with
    ``row_number() over (partition by check_name, window)`` (ordered by the row's JSON, so the
    sample is deterministic). Pass the checks that failed; only those with a row condition
    (row-level rules and ``unique``) are sampled. ``columns``: the columns written to ``row_json``
    (leave PII out); default all non-internal columns.

    Result columns: ``check_name``, ``check``, ``<window_col>`` (if given), ``row_json``.
    """
    sampled = [p for p in planned_rows if p.row_condition is not None]
    df = add_derived_columns(df, sampled)
    cols = list(columns) if columns is not None else [c for c in df.columns if not c.startswith("__")]
    wcols = [window_col] if window_col else []
    row_json = F.to_json(F.struct(*[_c(c) for c in cols])) if cols else F.lit("{}")
    if not sampled or limit <= 0:
        return df.select(
            F.lit(None).cast("string").alias("check_name"),
            F.lit(None).cast("string").alias("check"),
            *[_c(w) for w in wcols],
            row_json.alias("row_json"),
        ).limit(0)
    hits = F.array(
        *[
            F.when(p.row_condition, F.struct(F.lit(p.name).alias("name"), F.lit(p.check).alias("check")))
            for p in sampled
        ]
    )
    failing = _safe(F.lit(False))
    for p in sampled:
        failing = failing | p.row_condition  # type: ignore[operator]
    exploded = (
        df.where(failing)
        .select(
            *[_c(w) for w in wcols],
            row_json.alias("row_json"),
            F.filter(hits, lambda x: x.isNotNull()).alias("h"),
        )
        .select(*[_c(w) for w in wcols], "row_json", F.explode("h").alias("h"))
        .select(
            F.col("h.name").alias("check_name"),
            F.col("h.check").alias("check"),
            *[_c(w) for w in wcols],
            "row_json",
        )
    )
    w = Window.partitionBy("check_name", *[_c(x) for x in wcols]).orderBy("row_json")
    return exploded.withColumn("__rn", F.row_number().over(w)).where(F.col("__rn") <= limit).drop("__rn")
