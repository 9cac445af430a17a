"""Coarser windows from stored sketches: a week, a month, "the last 7 days", with no rescan of raw logs.

The ``sketches`` table holds, per window x slice x column, mergeable summaries: counts and moments
(add), min/max, a KLL quantile sketch (``kll_merge_agg_double``), an HLL sketch (``hll_union_agg``) and
category frequencies (add per value). Merging them over a range gives the range's profile and drift
inputs as if the range had been one window, within the KLL bound for quantiles. Category frequencies are
the exception: each window kept its top N values, so a value that fell into ``__other__`` on some windows is
counted only on the others (its merged count is a lower bound, the rest is in ``__other__``); the merged
list is cut back to the top N.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from lakemon import io
from lakemon.config import MonitorConfig, naive_utc
from lakemon.context import Results, RunContext
from lakemon.drift import compute as drift
from lakemon.plan import OTHER, ColumnSet, Grouping
from lakemon.profile import collect_cells, with_quantiles
from lakemon.session import ensure_utc
from lakemon.tables import BASELINE_PROFILE, SKETCHES

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def merged_sketches(spark: SparkSession, cfg: MonitorConfig, start: datetime, end: datetime) -> DataFrame:
    """The ``sketches`` rows of ``[start, end)`` merged into one pseudo-window per slice and column."""
    from pyspark.sql import functions as F

    out = io.Output(cfg.output)
    rows = out.read(spark, SKETCHES).where(
        (F.col("monitor") == cfg.monitor)
        & (F.col("granularity") == cfg.granularity)
        & (F.col("window_start") >= F.lit(start))
        & (F.col("window_start") < F.lit(end))
    )
    key = ["slice_key", "slice_value", "column_name", "column_type"]
    numeric = rows.groupBy(*key).agg(
        F.sum("row_count").alias("row_count"),
        F.sum("non_null").alias("non_null"),
        F.sum("nulls").alias("nulls"),
        F.sum("value_sum").alias("value_sum"),
        F.sum("value_sum_sq").alias("value_sum_sq"),
        F.min("min_value").alias("min_value"),
        F.max("max_value").alias("max_value"),
        F.expr("kll_merge_agg_double(kll)").alias("kll"),
        F.expr("hll_union_agg(hll, true)").alias("hll"),
        F.count("*").alias("windows"),
    )
    freqs = (
        rows.select(*key, F.explode("frequencies").alias("value", "n"))
        .groupBy(*key, "value")
        .agg(F.sum("n").alias("n"))
        .groupBy(*key)
        .agg(F.map_from_entries(F.collect_list(F.struct("value", "n"))).alias("frequencies"))
    )
    merged = numeric.join(freqs, on=[numeric[k].eqNullSafe(freqs[k]) for k in key], how="left").select(
        *[numeric[k] for k in key],
        *[numeric[c] for c in numeric.columns if c not in key],
        freqs["frequencies"],
    )
    return merged.withColumn("window_start", F.lit(start).cast("timestamp"))


def top_n(freqs: dict[str, int], n: int) -> dict[str, int]:
    """The ``n`` most frequent values (ties by value), the rest added to ``__other__``."""
    listed = sorted(((v, c) for v, c in freqs.items() if v != OTHER and c), key=lambda vc: (-vc[1], vc[0]))
    out = dict(listed[:n])
    rest = sum(c for _, c in listed[n:]) + int(freqs.get(OTHER) or 0)
    if rest:
        out[OTHER] = rest
    return out


def range_drift(
    spark: SparkSession, cfg: MonitorConfig, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """Drift of the range ``[start, end)`` against the stored baseline profile, from sketches only."""
    from pyspark.sql import functions as F

    ensure_utc(spark)
    start, end = naive_utc(start), naive_utc(end)
    probs = np.linspace(0.0, 1.0, cfg.drift.quantile_points)
    cur = collect_cells(with_quantiles(merged_sketches(spark, cfg, start, end), probs))  # slices x columns
    for cell in cur.values():
        if cell.get("frequencies"):
            cell["frequencies"] = top_n(cell["frequencies"], cfg.drift.top_n)
    base = (
        io.Output(cfg.output)
        .read(spark, BASELINE_PROFILE)
        .where((F.col("monitor") == cfg.monitor) & (F.col("column_name") != ":performance"))
    )
    latest = base.agg(F.max("computed_at")).first()[0]
    base = base.where(F.col("computed_at") == F.lit(latest)).withColumn(
        "window_start", F.lit(start).cast("timestamp")
    )
    results = Results(cells=cur)
    for (_ws, sk, sv, col), cell in collect_cells(with_quantiles(base, probs)).items():
        results.baseline_cells[(sk, sv, col)] = cell
    columns = ColumnSet(
        tuple(sorted({k[3] for k, v in results.cells.items() if v["column_type"] == "numeric"})),
        tuple(sorted({k[3] for k, v in results.cells.items() if v["column_type"] == "categorical"})),
    )
    only_baseline = cfg.model_copy(
        update={"drift": cfg.drift.model_copy(update={"references": ("baseline",)})}
    )
    ctx = RunContext(
        cfg=only_baseline,
        columns=columns,
        grouping=Grouping(),
        window=end - start,
        probs=probs,
        has_labels=False,
        label_name=None,
        run_id="rollup",
        computed_at=datetime.utcnow(),
    )
    return drift.finalize(ctx, results)
