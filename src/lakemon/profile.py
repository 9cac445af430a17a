"""Column profiles: the aggregates every run computes for every monitored column, and their sketches.

Numeric columns get counts, moments over finite values, a KLL quantile sketch and an HLL distinct-count
sketch; categorical columns get counts, lengths and an HLL sketch, plus value frequencies (top N and
``__other__``) from one keyed aggregation. The mergeable parts go to the ``sketches`` table, so coarser
windows and drift over any range are computed later without rescanning the log.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lakemon.drift.stats import std_from_sums
from lakemon.plan import OTHER, Agg, ColumnSet, Grouping, aggregate

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

TABLE_COLUMN = ":table"
PROFILE_QUANTILES: tuple[tuple[str, float], ...] = (
    ("p01", 0.01),
    ("p05", 0.05),
    ("p25", 0.25),
    ("median", 0.5),
    ("p75", 0.75),
    ("p95", 0.95),
    ("p99", 0.99),
)


def col_id(i: int) -> str:
    """Safe aggregate-name prefix for the i-th monitored column."""
    return f"c{i:03d}"


def _q(name: str) -> Column:
    from pyspark.sql import functions as F

    return F.col(f"`{name}`")


def profile_aggs(columns: ColumnSet, sketch_k: int) -> list[Agg]:
    """Finest-grain aggregates of the profile (and of the drift sketches)."""
    from pyspark.sql import functions as F

    aggs: list[Agg] = [Agg("row_count", F.count(F.lit(1)))]
    for i, c in enumerate(columns.all):
        p = col_id(i)
        x = _q(c)
        hashed = (f"{p}__hash", F.when(x.isNotNull(), F.xxhash64(x)))
        aggs.append(Agg(f"{p}_nn", F.count(x)))
        aggs.append(Agg(f"{p}_nulls", F.count_if(x.isNull())))
        aggs.append(Agg(f"{p}_hll", F.hll_sketch_agg(_q(hashed[0])), "hll", (hashed,)))
        if c in columns.numeric:
            d = x.cast("double")
            fin_name = f"{p}__finite"
            finite_in = (fin_name, F.when(~F.isnan(d) & (F.abs(d) != F.lit(float("inf"))), d))
            finite = _q(fin_name)
            aggs += [
                Agg(f"{p}_nan", F.count_if(F.isnan(d))),
                Agg(f"{p}_inf", F.count_if(F.abs(d) == F.lit(float("inf")))),
                Agg(f"{p}_zeros", F.count_if(d == F.lit(0.0))),
                Agg(f"{p}_fin", F.count(finite), inputs=(finite_in,)),
                Agg(f"{p}_sum", F.sum(finite), inputs=(finite_in,)),
                Agg(f"{p}_sumsq", F.sum(finite * finite), inputs=(finite_in,)),
                Agg(f"{p}_min", F.min(finite), "min", (finite_in,)),
                Agg(f"{p}_max", F.max(finite), "max", (finite_in,)),
                Agg(f"{p}_kll", F.kll_sketch_agg_double(finite, F.lit(int(sketch_k))), "kll", (finite_in,)),
            ]
        else:
            length = F.length(x.cast("string"))
            aggs += [
                Agg(f"{p}_len_sum", F.sum(length)),
                Agg(f"{p}_len_min", F.min(length), "min"),
                Agg(f"{p}_len_max", F.max(length), "max"),
            ]
    return aggs


def category_frequencies(
    df: DataFrame,
    grouping: Grouping,
    categorical: Sequence[str],
    top_n: int,
    cached: list[DataFrame] | None = None,
) -> DataFrame:
    """Value counts of every categorical column per window and slice, in ONE keyed aggregation.

    Returns ``window_start, slice_key, slice_value, column_name, frequencies`` where ``frequencies`` maps
    the top ``top_n`` values (per window and slice) to their counts and the rest to ``__other__``.
    NULLs are not counted here (they are the profile's ``nulls``).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if not categorical:
        return None  # type: ignore[return-value]
    stacked = df.select(
        *grouping.finest,
        F.explode(
            F.array(
                *[
                    F.struct(F.lit(c).alias("column_name"), _q(c).cast("string").alias("value"))
                    for c in categorical
                ]
            )
        ).alias("cv"),
    ).select(*grouping.finest, "cv.column_name", "cv.value")
    # Counts stay at the finest grain, merged upward, when a run fans its rows out for sketches: that is the
    # path measured at 1M and 10M rows (fanning counts out is not). A small run (``one_pass``) counts them
    # in its single fanned-out aggregation.
    merged = aggregate(
        stacked.where(F.col("value").isNotNull()),
        dataclasses.replace(grouping, fan_out=False),
        [Agg("n", F.count(F.lit(1)))],
        extra_keys=("column_name", "value"),
        cached=cached,
    )
    key = ["window_start", "slice_key", "slice_value", "column_name"]
    ranked = merged.withColumn(
        "r", F.row_number().over(Window.partitionBy(*key).orderBy(F.desc("n"), F.col("value")))
    ).withColumn("value", F.when(F.col("r") <= top_n, F.col("value")).otherwise(F.lit(OTHER)))
    folded = ranked.groupBy(*key, "value").agg(F.sum("n").alias("n"))
    return folded.groupBy(*key).agg(
        F.map_from_entries(F.collect_list(F.struct("value", F.col("n").cast("bigint")))).alias("frequencies")
    )


def sketch_rows(merged: DataFrame, freqs: DataFrame | None, columns: ColumnSet) -> DataFrame:
    """One row per window x slice x column in the ``sketches`` layout (Spark-side; binaries stay in Spark)."""
    from pyspark.sql import functions as F

    structs = []
    for i, c in enumerate(columns.all):
        p = col_id(i)
        numeric = c in columns.numeric
        structs.append(
            F.struct(
                F.lit(c).alias("column_name"),
                F.lit("numeric" if numeric else "categorical").alias("column_type"),
                F.col("row_count").cast("bigint").alias("row_count"),
                F.col(f"{p}_nn").cast("bigint").alias("non_null"),
                F.col(f"{p}_nulls").cast("bigint").alias("nulls"),
                (F.col(f"{p}_sum") if numeric else F.lit(None)).cast("double").alias("value_sum"),
                (F.col(f"{p}_sumsq") if numeric else F.lit(None)).cast("double").alias("value_sum_sq"),
                (F.col(f"{p}_min") if numeric else F.lit(None)).cast("double").alias("min_value"),
                (F.col(f"{p}_max") if numeric else F.lit(None)).cast("double").alias("max_value"),
                (F.col(f"{p}_kll") if numeric else F.lit(None)).cast("binary").alias("kll"),
                F.col(f"{p}_hll").cast("binary").alias("hll"),
            )
        )
    rows = merged.select(
        "window_start", "slice_key", "slice_value", F.explode(F.array(*structs)).alias("s")
    ).select("window_start", "slice_key", "slice_value", "s.*")
    if freqs is None:
        return rows.withColumn("frequencies", F.lit(None).cast("map<string,bigint>"))
    key = ["window_start", "slice_key", "slice_value", "column_name"]
    return rows.join(freqs, on=[rows[k].eqNullSafe(freqs[k]) for k in key], how="left").select(
        *[rows[k] for k in key], *[rows[c] for c in rows.columns if c not in key], freqs["frequencies"]
    )


def with_quantiles(sketches: DataFrame, probs: Sequence[float]) -> DataFrame:
    """Replace the binary sketches by what the driver needs: quantiles at ``probs`` and distinct counts."""
    from pyspark.sql import functions as F

    arr = "array(" + ", ".join(f"{p:.6f}" for p in probs) + ")"
    q = F.when(
        F.col("kll").isNotNull() & (F.expr("kll_sketch_get_n_double(kll)") > 0),
        F.expr(f"kll_sketch_get_quantile_double(kll, {arr})"),
    )
    distinct = F.when(F.col("hll").isNotNull(), F.expr("hll_sketch_estimate(hll)"))
    # how many values the quantile sketch holds: the finite ones (non_null also counts NaN and infinities)
    finite = F.when(F.col("kll").isNotNull(), F.expr("kll_sketch_get_n_double(kll)"))
    return sketches.select(
        *[
            c
            for c in sketches.columns
            if c not in ("kll", "hll", "run_id", "computed_at", "monitor", "window_end", "granularity")
        ],
        q.alias("quantiles"),
        distinct.cast("bigint").alias("distinct_count"),
        finite.cast("bigint").alias("finite_count"),
    )


def nan_to_none(v: Any) -> Any:
    """NULLs come back from pandas as NaN; turn them back into None."""
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def cell_from_record(r: dict[str, Any]) -> dict[str, Any]:
    """A ``with_quantiles`` row (from ``toPandas``) as a driver-side cell: quantiles as a numpy array,
    frequencies as a dict, NaN as None."""
    import numpy as np

    out = {k: nan_to_none(v) if not isinstance(v, list | np.ndarray | dict) else v for k, v in r.items()}
    q = r.get("quantiles")
    out["quantiles"] = None if q is None or isinstance(q, float) else np.asarray(q, dtype=float)
    f = r.get("frequencies")
    out["frequencies"] = dict(f) if f is not None and not isinstance(f, dict) else f
    return out


def collect_cells(df: DataFrame) -> dict[tuple[Any, str | None, str | None, str], dict[str, Any]]:
    """Collect a ``with_quantiles`` frame (windows x slices x columns rows, never raw rows) as cells keyed by
    ``(window_start, slice_key, slice_value, column_name)``."""
    out = {}
    for r in df.toPandas().to_dict("records"):
        ws = r["window_start"]
        ws = ws.to_pydatetime() if hasattr(ws, "to_pydatetime") else ws
        out[(ws, nan_to_none(r["slice_key"]), nan_to_none(r["slice_value"]), r["column_name"])] = (
            cell_from_record(r)
        )
    return out


def _f(v: Any) -> float | None:
    if v is None:
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


@functools.cache
def _quantile_indices(points: int) -> tuple[int, ...]:
    """Grid positions of the profile's quantiles on ``np.linspace(0, 1, points)``."""
    return tuple(round(p * (points - 1)) for _, p in PROFILE_QUANTILES)


def profile_metrics(
    cell: Mapping[str, Any],
    merged_row: Mapping[str, Any],
    column_index: int,
    numeric: bool,
    probs: Sequence[float],
) -> dict[str, float | None]:
    """The profile of one column in one window and slice, from its sketch cell and merged aggregates."""
    p = col_id(column_index)
    rows = int(cell["row_count"] or 0)
    nn = int(cell["non_null"] or 0)
    nulls = int(cell["nulls"] or 0)
    out: dict[str, float | None] = {
        "count": float(nn),
        "num_nulls": float(nulls),
        "null_ratio": nulls / rows if rows else None,
        # HLL estimates can overshoot by ~1-2%: never report more distinct values than values
        "distinct_count": min(_f(cell.get("distinct_count")) or 0.0, float(nn))
        if cell.get("distinct_count") is not None
        else None,
    }
    out["percent_distinct"] = (
        100.0 * out["distinct_count"] / nn if nn and out["distinct_count"] is not None else None  # type: ignore[operator]
    )
    if numeric:
        fin = int(merged_row.get(f"{p}_fin") or 0)
        s, ss = _f(cell.get("value_sum")), _f(cell.get("value_sum_sq"))
        mean = s / fin if fin and s is not None else None
        std = std_from_sums(fin, s, ss, _f(cell.get("min_value")), _f(cell.get("max_value")))
        out.update(
            {
                "num_nan": _f(merged_row.get(f"{p}_nan")),
                "num_inf": _f(merged_row.get(f"{p}_inf")),
                "num_zeros": _f(merged_row.get(f"{p}_zeros")),
                "percent_zeros": 100.0 * float(merged_row.get(f"{p}_zeros") or 0) / nn if nn else None,
                "min": _f(cell.get("min_value")),
                "max": _f(cell.get("max_value")),
                "avg": mean,
                "stddev": std,
            }
        )
        q = cell.get("quantiles")
        if q is not None and len(q) == len(probs):
            for (name, _), idx in zip(PROFILE_QUANTILES, _quantile_indices(len(probs)), strict=True):
                out[name] = _f(q[idx])
        else:
            for name, _ in PROFILE_QUANTILES:
                out[name] = None
    else:
        lens = _f(merged_row.get(f"{p}_len_sum"))
        out.update(
            {
                "avg_length": lens / nn if nn and lens is not None else None,
                "min_length": _f(merged_row.get(f"{p}_len_min")),
                "max_length": _f(merged_row.get(f"{p}_len_max")),
            }
        )
    return out
