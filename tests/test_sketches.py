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
