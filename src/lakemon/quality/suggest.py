"""``lakemon suggest``: propose quality checks from one profiling pass over the data.

:func:`profile_for_suggestions` runs ONE aggregation (one collected row); :func:`suggest_checks` is
pure; :func:`to_yaml` renders a ``quality:`` block to paste into the monitor config and edit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import yaml
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, FloatType, IntegralType, NumericType

from lakemon.config import CheckSpec

__all__ = ["QUANTILES", "profile_for_suggestions", "suggest_checks", "to_yaml"]

#: Quantiles profiled for numeric columns; bounds are suggested from the 0.1% and 99.9% ones.
QUANTILES = (0.001, 0.01, 0.5, 0.99, 0.999)


def _c(name: str):
    return F.col(f"`{name.replace('`', '``')}`")


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def profile_for_suggestions(
    df: DataFrame, numeric: Sequence[str], categorical: Sequence[str], max_categories: int = 50
) -> dict[str, Any]:
    """Per-column stats in ONE aggregation: row count, null count, min, max, approximate quantiles
    and NaN/inf count (numeric); approximate distinct count and, for columns with at most
    ``max_categories`` values, the sorted distinct values (categorical). The value set is collected as
    a ``collect_set`` capped at ``max_categories + 1`` entries in the result (the aggregation buffer
    of a high-cardinality column still holds its distinct values: profile a sample of a huge log).

    Returns ``{"row_count": n, "columns": {col: {...}}}`` with plain Python values."""
    types = {f.name: f.dataType for f in df.schema.fields}
    aggs = [F.count(F.lit(1)).alias("n")]
    for i, c in enumerate(numeric):
        col = _c(c)
        is_float = isinstance(types.get(c), FloatType | DoubleType)
        finite = (
            F.when(~(F.isnan(col) | F.abs(col).eqNullSafe(F.lit(float("inf")))), col) if is_float else col
        )
        aggs += [
            F.count(col).alias(f"n{i}_nonnull"),
            F.min(finite).alias(f"n{i}_min"),
            F.max(finite).alias(f"n{i}_max"),
            F.percentile_approx(finite.cast("double"), list(QUANTILES), 10000).alias(f"n{i}_q"),
            (F.count_if(F.isnan(col) | (F.abs(col) == float("inf"))) if is_float else F.lit(0)).alias(
                f"n{i}_nan"
            ),
        ]
    for i, c in enumerate(categorical):
        col = _c(c)
        aggs += [
            F.count(col).alias(f"c{i}_nonnull"),
            F.approx_count_distinct(col).alias(f"c{i}_distinct"),
            F.slice(F.array_sort(F.collect_set(col.cast("string"))), 1, max_categories + 1).alias(
                f"c{i}_values"
            ),
        ]
    row = df.agg(*aggs).collect()[0].asDict()  # one aggregated row
    n = int(row["n"])
    cols: dict[str, Any] = {}
    for i, c in enumerate(numeric):
        nonnull = int(row[f"n{i}_nonnull"])
        q = row[f"n{i}_q"] or [None] * len(QUANTILES)
        dt = types.get(c)
        cols[c] = {
            "kind": "numeric",
            "type": dt.simpleString() if dt is not None else None,
            "integral": isinstance(dt, IntegralType),
            "floating": isinstance(dt, FloatType | DoubleType),
            "null_ratio": (n - nonnull) / n if n else 0.0,
            "nan_count": int(row[f"n{i}_nan"] or 0),
            "min": _num(row[f"n{i}_min"]),
            "max": _num(row[f"n{i}_max"]),
            "quantiles": {str(p): _num(v) for p, v in zip(QUANTILES, q, strict=True)},
        }
    for i, c in enumerate(categorical):
        nonnull = int(row[f"c{i}_nonnull"])
        values = list(row[f"c{i}_values"] or [])
        dt = types.get(c)
        cols[c] = {
            "kind": "categorical",
            "type": dt.simpleString() if dt is not None else None,
            "numeric_type": isinstance(dt, NumericType),
            "null_ratio": (n - nonnull) / n if n else 0.0,
            "distinct_approx": int(row[f"c{i}_distinct"] or 0),
            "values": values if len(values) <= max_categories else None,
        }
    return {"row_count": n, "max_categories": max_categories, "columns": cols}


def _round_sig(x: float, digits: int = 4) -> float:
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, max(0, digits - 1 - math.floor(math.log10(abs(x)))))


def suggest_checks(profile: dict[str, Any]) -> list[CheckSpec]:
    """Pure: checks a user would likely keep, from :func:`profile_for_suggestions`'s output.

    - no NULLs seen -> ``not_null``; some NULLs -> ``null_ratio_below`` at twice the observed ratio
      (at least +1 point);
    - numeric -> ``between`` the 0.1%/99.9% quantiles widened by 10% of their range (integers rounded
      outwards; a non-negative column keeps a lower bound >= 0; scores seen in [0, 1] get [0, 1]),
      with ``max_fail_ratio`` 0.01 (the 0.2% of tails left out, plus headroom);
    - float columns without NaN/inf -> ``no_nan_or_inf``;
    - categorical with at most ``max_categories`` values -> ``in_set`` of the values seen
      (``max_fail_ratio`` 0.01, severity warn: new categories appear).
    """
    n = int(profile.get("row_count") or 0)
    out: list[CheckSpec] = []
    if n == 0:
        return out
    for col, s in profile.get("columns", {}).items():
        ratio = float(s.get("null_ratio") or 0.0)
        if ratio == 0.0:
            out.append(CheckSpec(check="not_null", column=col))
        elif ratio < 1.0:
            limit = min(1.0, max(2 * ratio, ratio + 0.01))
            out.append(
                CheckSpec(
                    check="null_ratio_below",
                    column=col,
                    args={"max_ratio": _round_sig(limit, 3)},
                    severity="warn",
                )
            )
        if s.get("kind") == "numeric":
            q = s.get("quantiles") or {}
            lo = q.get(str(QUANTILES[0]), s.get("min"))
            hi = q.get(str(QUANTILES[-1]), s.get("max"))
            lo = s.get("min") if lo is None else lo
            hi = s.get("max") if hi is None else hi
            if lo is not None and hi is not None:
                mn, mx = s.get("min"), s.get("max")
                if mn is not None and mx is not None and mn >= 0.0 and mx <= 1.0 and not s.get("integral"):
                    bounds = (0.0, 1.0)
                else:
                    pad = 0.1 * (hi - lo) if hi > lo else max(abs(hi) * 0.1, 1.0)
                    b_lo, b_hi = lo - pad, hi + pad
                    if mn is not None and mn >= 0:
                        b_lo = max(0.0, b_lo)
                    if s.get("integral"):
                        bounds = (float(math.floor(b_lo)), float(math.ceil(b_hi)))
                    else:
                        bounds = (_round_sig(b_lo), _round_sig(b_hi))
                b = [int(x) if s.get("integral") else x for x in bounds]
                out.append(
                    CheckSpec(
                        check="between",
                        column=col,
                        args={"min": b[0], "max": b[1]},
                        max_fail_ratio=0.01,
                        severity="warn",
                    )
                )
            if s.get("floating") and not s.get("nan_count"):
                out.append(CheckSpec(check="no_nan_or_inf", column=col))
        elif s.get("kind") == "categorical":
            values = s.get("values")
            if values:
                if s.get("numeric_type"):
                    values = [_parse_number(v) for v in values]
                out.append(
                    CheckSpec(
                        check="in_set",
                        column=col,
                        args={"values": values},
                        max_fail_ratio=0.01,
                        severity="warn",
                    )
                )
    return out


def _parse_number(v: str) -> int | float | str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return int(f) if f.is_integer() else f


def to_yaml(checks: Sequence[CheckSpec], header: str | None = None) -> str:
    """A ``quality:`` block to paste into the monitor config, with a header comment."""
    items = []
    for c in checks:
        d = c.model_dump(mode="json", exclude_defaults=True)
        ordered = {
            k: d[k]
            for k in ("name", "check", "column", "columns", "args", "severity", "max_fail_ratio", "table")
            if k in d
        }
        items.append(ordered)
    head = header or (
        "Suggested by `lakemon suggest` from one profile of the data. Review every bound before use:\n"
        "they describe the data as it was, not as it should be. max_fail_ratio is the share of\n"
        "checked rows allowed to fail; severity 'warn' does not fail the run."
    )
    comment = "".join(f"# {line}\n" if line else "#\n" for line in head.splitlines())
    body = yaml.safe_dump(
        {"quality": {"checks": items}}, sort_keys=False, default_flow_style=False, allow_unicode=True
    )
    return comment + body
