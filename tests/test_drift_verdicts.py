"""Drift verdicts of recomputed windows: a cell within the sketch's error of its threshold keeps the verdict
stored by the earlier computation (KLL compaction is randomised), so re-runs yield the same alerts."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest

from lakemon.config import parse_config
from lakemon.context import Results, RunContext
from lakemon.drift import compute, stats
from lakemon.plan import ColumnSet, Grouping

WS = datetime(2026, 3, 2)


def _ctx(**drift) -> RunContext:
    cfg = parse_config(
        {
            "monitor": "m",
            "model": {"name": "m"},
            "problem_type": "regression",
            "source": {
                "table": "/tmp/none",
                "timestamp": "ts",
                "id": "id",
                "prediction": "prediction",
                "features": {"numeric": ["x"]},
            },
            "granularity": "1 day",
            "output": {"path": "/tmp/none_out"},
            "mlflow": {"experiment": "t"},
            "drift": {"references": ["baseline"], "numeric_threshold": 0.1, **drift},
        }
    )
    probs = np.linspace(0.0, 1.0, cfg.drift.quantile_points)
    return RunContext(
        cfg=cfg,
        columns=ColumnSet(numeric=("x",), categorical=()),
        grouping=Grouping(),
        window=timedelta(days=1),
        probs=probs,
        has_labels=False,
        label_name=None,
    )


def _cell(values: np.ndarray, probs: np.ndarray) -> dict:
    return {
        "column_type": "numeric",
        "non_null": len(values),
        "nulls": 0,
        "value_sum": float(values.sum()),
        "value_sum_sq": float((values**2).sum()),
        "quantiles": np.quantile(values, probs),
    }


def _primary(ctx: RunContext, shift: float, previous: dict | None = None) -> dict:
    z = np.random.default_rng(5).normal(size=50_000)
    res = Results()
    # the same draw shifted: normalised Wasserstein = shift / std(z), exactly
    res.baseline_cells[(None, None, "x")] = _cell(z, ctx.probs)
    res.cells[(WS, None, None, "x")] = _cell(z + shift * z.std(ddof=1), ctx.probs)
    res.previous_verdicts.update(previous or {})
    (row,) = [r for r in compute.finalize(ctx, res) if r["threshold"] is not None]
    return row


def test_sketch_uncertainty_ks_is_two_rank_errors() -> None:
    rng = np.random.default_rng(1)
    probs = np.linspace(0, 1, 1001)
    a = stats.NumericSummary(50_000, 0, 0.0, 1.0, np.quantile(rng.normal(size=50_000), probs))
    b = stats.NumericSummary(50_000, 0, 0.3, 1.0, np.quantile(rng.normal(size=50_000) + 0.3, probs))
    e = stats.kll_rank_error(1000)
    assert stats.sketch_uncertainty("ks", a, b, probs, e) == pytest.approx(2 * e, rel=0.05)
    # Wasserstein moves by at most integral |Q(p +- e) - Q(p)| per side <= e * range per side
    w = stats.sketch_uncertainty("wasserstein", a, b, probs, e)
    ranges = np.ptp(a.quantiles) + np.ptp(b.quantiles)
    assert 0 < w <= e * ranges
    assert stats.sketch_uncertainty("psi", a, b, probs, e) > 0
    # a stored baseline is not recomputed: only the current side moves
    assert stats.sketch_uncertainty("ks", a, b, probs, e, ref_fixed=True) == pytest.approx(e, rel=0.05)


def test_borderline_cell_keeps_its_earlier_verdict() -> None:
    ctx = _ctx()
    key = (WS, None, None, "x", "baseline")
    fresh = _primary(ctx, 0.105)
    assert fresh["statistic"] == "wasserstein_normalized"
    assert fresh["value"] == pytest.approx(0.105, abs=1e-3) and fresh["drifted"] is True
    # the earlier run said "not drifted": the new value is within the sketch error of 0.1, the verdict stays
    kept = _primary(ctx, 0.105, {key: ("wasserstein_normalized", False)})
    assert kept["value"] == fresh["value"] and kept["drifted"] is False
    assert "earlier computation kept" in kept["reason"]
    band = float(kept["reason"].split("(")[1].split(")")[0])
    assert abs(fresh["value"] - 0.1) <= band < 0.05  # k=1000: about 0.02 here


def test_clear_cells_are_decided_afresh() -> None:
    ctx = _ctx()
    key = (WS, None, None, "x", "baseline")
    # far above the threshold: an earlier "not drifted" (before late data) does not survive
    far = _primary(ctx, 0.5, {key: ("wasserstein_normalized", False)})
    assert far["drifted"] is True and far["reason"] is None
    # far below: an earlier "drifted" does not survive either
    low = _primary(ctx, 0.0, {key: ("wasserstein_normalized", True)})
    assert low["drifted"] is False and low["reason"] is None
    # a verdict stored for another statistic (config changed) is not reused
    other = _primary(ctx, 0.105, {key: ("ks", False)})
    assert other["drifted"] is True


def test_pvalue_mode_keeps_a_borderline_verdict() -> None:
    ctx = _ctx(mode="pvalue")
    key = (WS, None, None, "x", "baseline")
    # KS 0.0089 at n = m = 50k: p-value 0.040, just under alpha; the KS band (baseline fixed) is one
    # rank error (0.0028), and KS 0.0061 would have p > 0.05
    fresh = _primary(ctx, 0.02)
    assert fresh["statistic"] == "ks" and fresh["threshold"] == 0.05
    assert fresh["p_value"] == pytest.approx(0.04, abs=0.005) and fresh["drifted"] is True
    kept = _primary(ctx, 0.02, {key: ("ks", False)})
    assert kept["drifted"] is False and "earlier computation kept" in kept["reason"]
    far = _primary(ctx, 0.3, {key: ("ks", False)})
    assert far["drifted"] is True and far["reason"] is None


def test_numeric_cells_count_their_finite_values() -> None:
    """NaN and infinities are in a cell's ``non_null`` but not in its sums or sketch: the mean, the spread and
    the sample size of the p-value are those of the finite values."""
    rng = np.random.default_rng(3)
    x = rng.normal(50.0, 10.0, 5000)
    cell = {
        "non_null": 10_000,  # 5,000 of them NaN
        "nulls": 0,
        "finite_count": 5000,
        "value_sum": x.sum(),
        "value_sum_sq": (x * x).sum(),
        "min_value": x.min(),
        "max_value": x.max(),
        "quantiles": np.quantile(x, np.linspace(0, 1, 101)),
    }
    summary = compute.numeric_summary(cell)
    assert summary.n == 5000 and summary.nulls == 5000  # NaN counts with the nulls (null_ratio_delta)
    assert summary.mean == pytest.approx(x.mean(), rel=1e-12)
    assert summary.std == pytest.approx(x.std(ddof=1), rel=1e-9)
    # a cell stored before the sketches' count was read: non_null as before
    assert compute.numeric_summary({k: v for k, v in cell.items() if k != "finite_count"}).n == 10_000


def test_merged_frequencies_are_cut_back_to_the_top_n() -> None:
    """A roll-up adds the windows' top-N maps: more than N values come out, cut back to N plus the rest."""
    from lakemon.rollup import top_n

    merged = {"a": 10, "b": 7, "c": 7, "d": 1, "__other__": 5}
    assert top_n(merged, 2) == {"a": 10, "b": 7, "__other__": 13}
    assert top_n(merged, 10) == merged
    assert top_n({"a": 3}, 1) == {"a": 3}
