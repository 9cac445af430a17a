"""Spark's KLL sketches as lakemon uses them: KS and Wasserstein from sketches vs scipy's exact values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F
from scipy import stats as sst

from lakemon.drift import stats

K, POINTS = 1000, 1001


@pytest.fixture(scope="module")
def samples(spark):
    rng = np.random.default_rng(42)
    a = rng.normal(0.0, 1.0, 200_000)
    b = rng.normal(0.05, 1.1, 150_000)
    pdf = pd.concat([pd.DataFrame({"g": "a", "x": a}), pd.DataFrame({"g": "b", "x": b})])
    df = spark.createDataFrame(pdf)
    probs = np.linspace(0, 1, POINTS)
    arr = "array(" + ",".join(f"{p:.6f}" for p in probs) + ")"
    rows = (
        df.groupBy("g")
        .agg(F.kll_sketch_agg_double("x", F.lit(K)).alias("s"))
        .select("g", F.expr(f"kll_sketch_get_quantile_double(s, {arr})").alias("q"))
        .collect()
    )
    q = {r["g"]: np.asarray(r["q"]) for r in rows}
    return a, b, q, probs


def test_ks_from_sketches_within_stated_bound(samples):
    a, b, q, probs = samples
    exact = sst.ks_2samp(a, b).statistic
    approx = stats.ks_from_quantiles(q["a"], q["b"], probs)
    bound = stats.ks_error_bound(K, POINTS)
    assert bound <= 0.01
    assert abs(approx - exact) <= bound
    assert abs(approx - exact) <= 0.01


def test_wasserstein_and_psi_from_sketches(samples):
    a, b, q, probs = samples
    exact = sst.wasserstein_distance(a, b)
    assert stats.wasserstein_from_quantiles(q["a"], q["b"], probs) == pytest.approx(exact, rel=0.03)
    # PSI and JS on the baseline's decile bins: from sketches vs from exact bin counts
    edges = stats.quantile_edges(q["a"], probs, 10)
    exact_a = np.histogram(a, bins=[-np.inf, *edges, np.inf])[0]
    exact_b = np.histogram(b, bins=[-np.inf, *edges, np.inf])[0]
    fa, fb = stats.bin_fractions(q["a"], probs, edges), stats.bin_fractions(q["b"], probs, edges)
    assert stats.psi(fa, fb) == pytest.approx(stats.psi(exact_a, exact_b), abs=0.01)
    assert stats.js_distance(fa, fb) == pytest.approx(stats.js_distance(exact_a, exact_b), abs=0.01)


def test_finest_grain_and_fan_out_aggregations_agree(spark):
    """Every way of aggregating per window and slice (finest grain, sketches fanned out, everything in one
    fan-out pass) gives the same counts and moments, and sketches within their error of the exact values,
    for the population and every slice."""
    from datetime import datetime, timedelta

    from lakemon.plan import WINDOW, ColumnSet, Grouping, SliceDim, aggregate
    from lakemon.profile import profile_aggs

    rng = np.random.default_rng(3)
    n = 60_000
    day0 = datetime(2026, 1, 1)
    pdf = pd.DataFrame(
        {
            WINDOW: [day0 + timedelta(days=int(d)) for d in rng.integers(0, 3, n)],
            "__s0": rng.choice(["a", "b", "c", "d"], n),
            "__s1": rng.choice(["u", "v", "w"], n),
            "x": rng.normal(size=n) * 10,
            "c": rng.integers(0, 500, n).astype(str),
        }
    )
    df = spark.createDataFrame(pdf)
    aggs = profile_aggs(ColumnSet(("x",), ("c",)), K)
    dims = (SliceDim("s0", "__s0"), SliceDim("s1", "__s1"))

    def run(fan_out: bool, one_pass: bool = False) -> dict:
        out = aggregate(df, Grouping(dims, fan_out=fan_out, one_pass=one_pass), aggs, cached=[]).select(
            "window_start",
            "slice_key",
            "slice_value",
            "row_count",
            "c000_sum",
            "c000_min",
            F.expr("kll_sketch_get_n_double(c000_kll)").alias("kll_n"),
            F.expr("kll_sketch_get_quantile_double(c000_kll, array(0.1, 0.5, 0.9))").alias("q"),
            F.expr("hll_sketch_estimate(c001_hll)").alias("distinct"),
        )
        return {(r[0], r[1], r[2]): r.asDict() for r in out.collect()}

    fan, finest, one = run(True), run(False), run(False, one_pass=True)
    assert fan.keys() == finest.keys() == one.keys()
    assert len(fan) == 3 * (1 + 4 + 3)
    for (ws, key, value), got in finest.items():
        rows = (
            pdf[pdf[WINDOW] == ws] if key is None else pdf[(pdf[WINDOW] == ws) & (pdf[f"__{key}"] == value)]
        )
        x = np.sort(rows["x"].to_numpy())
        for r in (got, fan[(ws, key, value)], one[(ws, key, value)]):
            assert r["row_count"] == r["kll_n"] == len(rows)
            assert r["c000_sum"] == pytest.approx(x.sum(), rel=1e-9, abs=1e-6)
            assert r["c000_min"] == x[0]
            ranks = np.searchsorted(x, r["q"], side="right") / len(x)
            assert np.abs(ranks - [0.1, 0.5, 0.9]).max() <= 0.01  # KLL k=1000: rank error well below 1%
            assert r["distinct"] == pytest.approx(rows["c"].nunique(), rel=0.03)


def test_keyed_aggregation_plans_agree_and_many_keys_fan_out(spark):
    """A keyed aggregation (a score histogram) gives identical counts and sums whether computed at the finest
    grain and merged up or fanned out; ``Grouping.for_keys`` picks the fan-out when cells x key values would
    hold few rows each, and keeps the grouping otherwise."""
    from datetime import datetime, timedelta

    from lakemon.plan import KEYED_ROWS_PER_GROUP, WINDOW, Agg, Grouping, SliceDim, aggregate

    dims = (SliceDim("s0", "__s0"), SliceDim("s1", "__s1"))
    grouping = Grouping(dims, rows_per_cell=5_000.0)
    assert grouping.for_keys(1001).fan_out  # ~5 rows a finest group
    assert not grouping.for_keys(5_000 // KEYED_ROWS_PER_GROUP).fan_out
    assert not Grouping(dims).for_keys(1001).fan_out  # rows unknown: unchanged
    assert Grouping(dims, one_pass=True, rows_per_cell=1.0).for_keys(1001) == Grouping(
        dims, one_pass=True, rows_per_cell=1.0
    )

    rng = np.random.default_rng(5)
    n = 40_000
    day0 = datetime(2026, 1, 1)
    pdf = pd.DataFrame(
        {
            WINDOW: [day0 + timedelta(days=int(d)) for d in rng.integers(0, 2, n)],
            "__s0": rng.choice(["a", "b", "c"], n),
            "__s1": rng.choice(["u", "v"], n),
            "bin": rng.integers(0, 50, n),
            "y": rng.integers(0, 2, n),
            "score": rng.random(n),
        }
    )
    df = spark.createDataFrame(pdf)
    aggs = [
        Agg("h_count", F.count(F.lit(1))),
        Agg("h_pos", F.count_if(F.col("y") == 1)),
        Agg("h_sum", F.sum("score")),
    ]

    def run(g: Grouping) -> pd.DataFrame:
        out = aggregate(df, g, aggs, extra_keys=("bin",), cached=[]).toPandas()
        return out.sort_values(
            ["window_start", "slice_key", "slice_value", "bin"], na_position="first"
        ).reset_index(drop=True)

    finest, fanned = run(Grouping(dims)), run(Grouping(dims, fan_out=True))
    assert len(finest) == 2 * (1 + 3 + 2) * 50
    pd.testing.assert_frame_equal(
        finest[["window_start", "slice_key", "slice_value", "bin", "h_count", "h_pos"]],
        fanned[["window_start", "slice_key", "slice_value", "bin", "h_count", "h_pos"]],
    )
    np.testing.assert_allclose(finest["h_sum"], fanned["h_sum"], rtol=1e-12)
    pop = pdf.groupby([WINDOW, "bin"]).agg(h_count=("y", "size"), h_pos=("y", "sum")).reset_index()
    got = finest[finest["slice_key"].isna()]
    assert got["h_count"].tolist() == pop["h_count"].tolist()
    assert got["h_pos"].tolist() == pop["h_pos"].tolist()
