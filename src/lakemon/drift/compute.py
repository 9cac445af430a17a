"""Drift per window x slice x column against the baseline and the previous window, from sketch cells.

The cells come from the ``sketches`` layout (counts, moments, quantiles read off the KLL sketch at a fixed
probability grid, category frequencies), so the same code serves fresh windows, windows read back from
the table, merged coarser windows and the stored baseline profile. The verdict rests on effect size by
default (distance above a threshold); ``robust`` subtracts each statistic's critical value at the two
sample sizes; ``pvalue`` uses KS / chi-squared p-values with Benjamini-Hochberg (or Bonferroni) across
the columns x slices of a window.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from lakemon.context import Results, RunContext
from lakemon.drift import stats

CellId = tuple[datetime, str | None, str | None, str]


def numeric_summary(cell: Mapping[str, Any]) -> stats.NumericSummary:
    """A numeric sketch cell as the statistics module's summary."""
    # the finite values (the sketch's count): NaN and infinities are in non_null but not in the sums, the
    # sketch or the moments; they count with the nulls (stats.NumericSummary)
    non_null = int(cell.get("non_null") or 0)
    finite = cell.get("finite_count")
    n = int(finite) if finite is not None else non_null
    nulls = int(cell.get("nulls") or 0) + max(non_null - n, 0)
    s, ss = cell.get("value_sum"), cell.get("value_sum_sq")
    mean = std = None
    if n > 0 and s is not None:
        mean = float(s) / n
        std = stats.std_from_sums(n, s, ss, cell.get("min_value"), cell.get("max_value"))
    q = cell.get("quantiles")
    quantiles = np.asarray(q, dtype=float) if q is not None and len(q) else None
    return stats.NumericSummary(
        n=n if quantiles is not None else 0,
        nulls=nulls,
        mean=mean,
        std=std,
        quantiles=quantiles,
    )


def categorical_summary(cell: Mapping[str, Any]) -> stats.CategoricalSummary:
    """A categorical sketch cell as the statistics module's summary."""
    freqs = cell.get("frequencies") or {}
    if not isinstance(freqs, dict):
        freqs = dict(freqs)
    return stats.CategoricalSummary(
        n=int(cell.get("non_null") or 0),
        nulls=int(cell.get("nulls") or 0),
        counts={str(k): int(v) for k, v in freqs.items()},
    )


def rule_for(ctx: RunContext, column: str, column_type: str) -> tuple[str, float]:
    """The deciding statistic and threshold of a column (per-column override or the type default)."""
    d = ctx.cfg.drift
    if column in d.columns:
        return d.columns[column].statistic, d.columns[column].threshold
    if column_type == "numeric":
        return d.numeric_statistic, d.numeric_threshold
    return d.categorical_statistic, d.categorical_threshold


def compare(
    ctx: RunContext, cur: Mapping[str, Any], ref: Mapping[str, Any] | None
) -> tuple[dict[str, tuple[float | None, float | None]], int, int, int, str | None]:
    """All statistics of one cell vs its reference: (stats, n, m, categories, reason-if-not-computed)."""
    ctype = cur["column_type"]
    if ref is None:
        return {}, 0, 0, 0, "no reference data for this column and slice"
    if ctype == "numeric":
        a, b = numeric_summary(ref), numeric_summary(cur)
        n, m = a.n, b.n
        k = ctx.cfg.drift.psi_bins
        values = stats.numeric_drift(a, b, ctx.probs, psi_bins=ctx.cfg.drift.psi_bins)
    else:
        ca, cb = categorical_summary(ref), categorical_summary(cur)
        n, m = ca.n, cb.n
        k = len(set(ca.counts) | set(cb.counts))
        values = stats.categorical_drift(ca, cb)
    min_n = ctx.cfg.drift.min_samples
    if n < min_n or m < min_n:
        return values, n, m, k, f"too few rows (current {m}, reference {n}; drift.min_samples={min_n})"
    return values, n, m, k, None


def _primary(ctx: RunContext, column: str, ctype: str) -> tuple[str, float]:
    stat, threshold = rule_for(ctx, column, ctype)
    if ctx.cfg.drift.mode == "pvalue":
        stat = "ks" if ctype == "numeric" else "chi2"
    return stat, threshold


def finalize(ctx: RunContext, results: Results) -> list[dict[str, Any]]:
    """Rows of ``drift_metrics`` for every window, slice and column of the run, for each reference."""
    d = ctx.cfg.drift
    if not d.enabled:
        return []
    rows: list[dict[str, Any]] = []
    pending: list[Pending] = []  # primary rows awaiting a verdict
    sketch_err = stats.ks_error_bound(d.sketch_k, d.quantile_points)
    for (ws, sk, sv, col), cur in sorted(
        results.cells.items(), key=lambda kv: (kv[0][0], kv[0][1] or "", kv[0][2] or "", kv[0][3])
    ):
        role = ctx.columns.role(col)
        if (role == "label" and not d.include_label) or (
            role in ("score", "prediction") and not d.include_prediction
        ):
            continue
        ctype = cur["column_type"]
        for reference in d.references:
            if reference == "baseline":
                ref = results.baseline_cells.get((sk, sv, col))
                if ref is None:
                    ref = results.baseline_cells.get((None, None, col))
                ref_ws = None
            else:
                ref_ws = ws - ctx.window
                ref = results.cells.get((ref_ws, sk, sv, col)) or results.reference_cells.get(
                    (ref_ws, sk, sv, col)
                )
            values, n, m, k, reason = compare(ctx, cur, ref)
            primary, threshold = _primary(ctx, col, ctype)
            base = {
                **ctx.key_columns(ws, sk, sv),
                "column_name": col,
                "column_type": ctype,
                "reference": reference,
                "reference_window_start": ref_ws,
                "current_count": int(cur.get("non_null") or 0),
                "reference_count": int(ref.get("non_null") or 0) if ref is not None else None,
            }
            if not values:
                rows.append(
                    {
                        **base,
                        "statistic": primary,
                        "value": None,
                        "p_value": None,
                        "threshold": threshold,
                        "drifted": None,
                        "reason": reason,
                    }
                )
                continue
            for stat_name, (value, p_value) in values.items():
                blocked = reason is not None and stat_name not in ("count_delta", "null_ratio_delta")
                v = None if blocked or value is None or not np.isfinite(value) else float(value)
                p = None if blocked or p_value is None or not np.isfinite(p_value) else float(p_value)
                row = {
                    **base,
                    "statistic": stat_name,
                    "value": v,
                    "p_value": p,
                    "threshold": None,
                    "drifted": None,
                    "reason": reason if v is None else None,
                }
                if stat_name == primary:
                    row["threshold"] = threshold
                    if v is None:
                        row["reason"] = row["reason"] or reason or "statistic undefined for this cell"
                    else:
                        pending.append(Pending(row, p, n, m, k, cur, ref))
                rows.append(row)
    _decide(ctx, pending, sketch_err, results.previous_verdicts)
    return rows


@dataclass(frozen=True)
class Pending:
    """A primary-statistic row awaiting its verdict, with what the verdict needs."""

    row: dict[str, Any]
    p: float | None
    n: int
    m: int
    k: int
    cur: Mapping[str, Any]
    ref: Mapping[str, Any] | None


def _decide(
    ctx: RunContext,
    pending: list[Pending],
    sketch_err: float,
    previous: Mapping[tuple[Any, ...], tuple[str, bool]],
) -> None:
    d = ctx.cfg.drift
    if d.mode == "pvalue":
        _decide_pvalues(ctx, pending, previous)
        return
    for pend in pending:
        row = pend.row
        drifted, eff = stats.decide(
            row["statistic"],
            row["value"],
            pend.p,
            row["threshold"],
            d.mode,
            pend.n,
            pend.m,
            alpha=d.alpha,
            k=max(pend.k, 2),
            sketch_error=sketch_err if row["statistic"] == "ks" else 0.0,
        )
        before = _earlier_verdict(pend, drifted, previous)
        if before is not None and eff is not None:
            band = _band(ctx, pend)
            if abs(eff - row["threshold"]) <= band:
                drifted = _keep(row, before, band)
        row["drifted"] = drifted


def _decide_pvalues(
    ctx: RunContext, pending: list[Pending], previous: Mapping[tuple[Any, ...], tuple[str, bool]]
) -> None:
    """p-value mode: adjusted across the columns x slices of a window (BH or Bonferroni), then verdicts."""
    d = ctx.cfg.drift

    def adjust(ps: np.ndarray) -> np.ndarray:
        if d.correction == "bh":
            return stats.benjamini_hochberg(ps)
        if d.correction == "bonferroni":
            return stats.bonferroni(ps)
        return ps

    groups: dict[tuple[Any, str], list[int]] = {}
    for i, pend in enumerate(pending):
        groups.setdefault((pend.row["window_start"], pend.row["reference"]), []).append(i)
    for idx in groups.values():
        ps = np.array([pending[i].p if pending[i].p is not None else np.nan for i in idx], dtype=float)
        adj = adjust(ps)
        for j, i in enumerate(idx):
            pend, a = pending[i], adj[j]
            row = pend.row
            row["threshold"] = d.alpha
            row["p_value"] = None if not np.isfinite(a) else float(a)
            drifted = None if row["p_value"] is None else bool(row["p_value"] < d.alpha)
            before = _earlier_verdict(pend, drifted, previous)
            if before is not None and row["statistic"] == "ks":
                # the KS statistic at the other end of its sketch band, the other p-values unchanged
                band = _band(ctx, pend)
                moved = row["value"] + band if before[1] else max(row["value"] - band, 0.0)
                alt = ps.copy()
                alt[j] = stats.ks_pvalue(moved, pend.n, pend.m)
                if bool(adjust(alt)[j] < d.alpha) == before[1]:
                    drifted = _keep(row, before, band)
            row["drifted"] = drifted


def _earlier_verdict(
    pend: Pending, drifted: bool | None, previous: Mapping[tuple[Any, ...], tuple[str, bool]]
) -> tuple[str, bool] | None:
    """The verdict stored for this cell by an earlier computation, when it differs from the new one."""
    row = pend.row
    key = (row["window_start"], row["slice_key"], row["slice_value"], row["column_name"], row["reference"])
    before = previous.get(key)
    if (
        drifted is None
        or before is None
        or before[0] != row["statistic"]
        or before[1] == drifted
        or row["column_type"] != "numeric"  # category counts are exact: no sketch error
        or pend.ref is None
    ):
        return None
    return before


def _band(ctx: RunContext, pend: Pending) -> float:
    """How far the cell's statistic can move when its KLL sketches are recomputed."""
    d = ctx.cfg.drift
    assert pend.ref is not None
    return stats.sketch_uncertainty(
        pend.row["statistic"],
        numeric_summary(pend.ref),
        numeric_summary(pend.cur),
        ctx.probs,
        stats.kll_rank_error(d.sketch_k),
        d.psi_bins,
        ref_fixed=pend.row["reference"] == "baseline",
    )


def _keep(row: dict[str, Any], before: tuple[str, bool], band: float) -> bool:
    # A recomputed KLL sketch differs within its error bound (randomised compaction): a cell that sits
    # within that bound of the threshold keeps its earlier verdict, so re-runs are idempotent.
    row["reason"] = (
        f"verdict of the earlier computation kept: within the sketch error ({band:.4g}) of the threshold"
    )
    return before[1]
