"""Driver-side model-performance maths: finish Spark aggregates into metrics (pure numpy, no Spark).

Spark aggregates, per (window x slice) and in a single pass, a handful of sums, confusion counts and
fixed-grid score histograms. The functions here turn those aggregates into metrics. Conventions:

* Every metric function returns ``dict[str, float | None]`` keyed by stable snake_case metric names
  (the scalar helpers ``roc_auc_from_histogram`` & co. return ``float | None``).
* A metric whose definition divides by zero is ``None``; NaN and infinities are never returned.
* Counts are returned as floats so that every value of a metrics dict has the same type.

Score histogram (binary classification)
---------------------------------------
Scores ``p`` (probability of the positive class) are binned into ``B`` equal-width bins of ``[0, 1]``::

    bin = min(floor(clip(p, 0, 1) * B), B - 1)          # see score_bins()

Spark keeps per bin ``bin_pos`` / ``bin_neg`` (labeled positives / negatives), ``bin_count`` (all rows,
including unlabeled ones) and ``bin_sum_score`` (sum of the scores of the labeled rows).

Error bounds of the histogram ROC AUC and average precision
------------------------------------------------------------
Bins are ordered, so binning only loses the ordering of scores *inside* a bin.

* ROC AUC. Exact AUC counts each (positive, negative) pair as 1, 1/2 or 0; the histogram AUC counts
  pairs in different bins exactly and pairs in the same bin as 1/2 (the trapezoid). Hence::

      |AUC_hist - AUC_exact| <= 0.5 * sum_b pos_b * neg_b / (P * N)       # roc_auc_error_bound()

  For score densities ``f+`` and ``f-`` this is about ``0.5 / B * integral(f+ f-)``, i.e. ~5e-4 at
  ``B = 1000`` for heavily overlapping classes, and the realised error is far smaller because the
  within-bin orderings are not adversarial (measured ~1e-5 on 50k rows, see the tests).
* Average precision. Each positive in bin ``b`` contributes ``precision / P`` at the threshold at which
  it enters. Within the bin that precision lies between ``(T + 1) / (T + 1 + F + neg_b)`` and
  ``(T + pos_b) / (T + pos_b + F)`` (``T``, ``F``: positives and negatives in higher bins), whereas the
  histogram uses ``(T + pos_b) / (T + pos_b + F + neg_b)``, the precision at the bin's lower edge; the
  bound sums ``pos_b / P`` times the larger deviation (``average_precision_error_bound()``). Unlike the
  AUC, this error is mostly a one-signed bias (precision usually drifts down across each bin and the histogram takes
  the end value), of order ``1 / (number of populated bins)``.

Measured at ``B = 1000`` on 50k seeded rows (``tests/test_performance_math.py``): ROC AUC error
4e-6 to 2e-5 (bounds 3e-4 to 4e-3); AP error 3e-4 to 7e-4 when scores spread over [0, 1] (bounds
1.3e-3 to 1.8e-3) and 1.7e-3 (bound 1e-2) when all scores fall into ~240 bins (scores in [0.4, 0.6]).
The documented tolerance is therefore 1e-3 for both metrics when scores use most of the grid; for scores
squeezed into a narrow range use the data-dependent bounds (or a larger ``B``).

When scores already live on a grid no finer than the bins (e.g. rounded to 0.01 with ``B = 1000``)
both metrics are exact, because scikit-learn also treats tied scores as a single threshold / half-pairs.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_SCORE_BINS",
    "LOG_LOSS_EPS",
    "average_precision_error_bound",
    "average_precision_from_histogram",
    "binary_metrics",
    "binary_score_metrics",
    "brier_from_sums",
    "class_metric_suffixes",
    "ece_from_histogram",
    "estimate_binary",
    "estimate_multiclass",
    "fairness_metrics",
    "fit_calibration",
    "log_loss_from_sums",
    "multiclass_metrics",
    "ranking_metrics",
    "ranking_per_request",
    "regression_metrics",
    "roc_auc_error_bound",
    "roc_auc_from_histogram",
    "score_bins",
]

DEFAULT_SCORE_BINS = 1000
"""Default number ``B`` of equal-width score bins of [0, 1]."""

LOG_LOSS_EPS = 1e-15
"""Probabilities are clipped to ``[LOG_LOSS_EPS, 1 - LOG_LOSS_EPS]`` before taking logs."""

Metrics = dict[str, float | None]


# ---------------------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------------------
def _div(num: float, den: float) -> float | None:
    """``num / den`` as a float, or ``None`` when the denominator is zero (or the result not finite)."""
    if den == 0:
        return None
    out = float(num) / float(den)
    return out if np.isfinite(out) else None


def _sub(a: float | None, b: float | None) -> float | None:
    """``a - b``, ``None`` if either side is undefined."""
    if a is None or b is None:
        return None
    return float(a) - float(b)


def _hist(*arrays: Any) -> list[np.ndarray]:
    """Validate histogram arrays: 1-D, same non-zero length, finite and non-negative; returned as float64."""
    out = [np.asarray(a, dtype=np.float64) for a in arrays]
    first = out[0]
    if first.ndim != 1 or first.size == 0:
        raise ValueError(f"histogram arrays must be 1-D and non-empty, got shape {first.shape}")
    for a in out:
        if a.shape != first.shape:
            raise ValueError(f"histogram arrays must have the same shape, got {a.shape} and {first.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError("histogram arrays must be finite")
    return out


def _check_counts(*arrays: np.ndarray) -> None:
    for a in arrays:
        if np.any(a < 0):
            raise ValueError("counts must be non-negative")


def score_bins(scores: Any, n_bins: int = DEFAULT_SCORE_BINS) -> np.ndarray:
    """Reference binning of scores, to be replicated exactly by Spark: ``min(floor(p * B), B - 1)``.

    Scores are clipped to [0, 1] first, so ``p = 1.0`` lands in the last bin.
    """
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    p = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    return np.minimum(np.floor(p * n_bins), n_bins - 1).astype(np.int64)


_NON_WORD = re.compile(r"[^0-9a-z]+")


def class_metric_suffixes(classes: Sequence[Any]) -> list[str]:
    """Snake_case suffixes used in per-class metric names (``precision_<suffix>``), one per class.

    ``str(class)`` is lower-cased and runs of characters other than ``[0-9a-z]`` become ``_``
    (leading/trailing ``_`` stripped, empty -> ``class``). If two classes map to the same suffix, every
    class in the collision gets ``_<position>`` appended, so the mapping is deterministic and unique.
    """
    base = []
    for c in classes:
        s = _NON_WORD.sub("_", str(c).lower()).strip("_")
        base.append(s or "class")
    counts: dict[str, int] = {}
    for s in base:
        counts[s] = counts.get(s, 0) + 1
    out = [f"{s}_{i}" if counts[s] > 1 else s for i, s in enumerate(base)]
    if len(set(out)) != len(out):  # pathological: a suffixed name collides with another class
        out = [f"{s}_{i}" for i, s in enumerate(base)]
    return out


# ---------------------------------------------------------------------------------------------------------
# binary classification
# ---------------------------------------------------------------------------------------------------------
def binary_metrics(tp: float, fp: float, tn: float, fn: float) -> Metrics:
    """Threshold metrics from confusion counts (the positive class is 1).

    Returns accuracy, precision, recall, f1, specificity, fpr, fnr, tp, fp, tn, fn,
    predicted_positive_rate and actual_positive_rate. ``f1 = 2tp / (2tp + fp + fn)`` (so it is 0, not
    ``None``, when precision is undefined but there are positives). Counts may be fractional (expected
    counts); they must be non-negative.
    """
    tp, fp, tn, fn = (float(x) for x in (tp, fp, tn, fn))
    if min(tp, fp, tn, fn) < 0:
        raise ValueError("confusion counts must be non-negative")
    n = tp + fp + tn + fn
    return {
        "accuracy": _div(tp + tn, n),
        "precision": _div(tp, tp + fp),
        "recall": _div(tp, tp + fn),
        "f1": _div(2 * tp, 2 * tp + fp + fn),
        "specificity": _div(tn, tn + fp),
        "fpr": _div(fp, fp + tn),
        "fnr": _div(fn, fn + tp),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "predicted_positive_rate": _div(tp + fp, n),
        "actual_positive_rate": _div(tp + fn, n),
    }


def roc_auc_from_histogram(bin_pos: Any, bin_neg: Any) -> float | None:
    """ROC AUC from per-bin positive/negative counts (bins in increasing score order).

    ``AUC = sum_b pos_b * (neg below b + neg_b / 2) / (P * N)``: pairs in the same bin count as half
    (trapezoidal ROC through the bin-level points). ``None`` if either class is absent. See the module
    docstring for the error bound (``roc_auc_error_bound``).
    """
    pos, neg = _hist(bin_pos, bin_neg)
    _check_counts(pos, neg)
    p_tot, n_tot = pos.sum(), neg.sum()
    if p_tot == 0 or n_tot == 0:
        return None
    neg_below = np.cumsum(neg) - neg
    auc = float(np.sum(pos * (neg_below + 0.5 * neg)) / (p_tot * n_tot))
    return min(max(auc, 0.0), 1.0)


def roc_auc_error_bound(bin_pos: Any, bin_neg: Any) -> float | None:
    """Worst-case ``|AUC_hist - AUC_exact|`` given the histogram: ``0.5 * sum_b pos_b neg_b / (P N)``."""
    pos, neg = _hist(bin_pos, bin_neg)
    _check_counts(pos, neg)
    p_tot, n_tot = pos.sum(), neg.sum()
    if p_tot == 0 or n_tot == 0:
        return None
    return float(0.5 * np.sum(pos * neg) / (p_tot * n_tot))


def _ap_terms(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Descending-score cumulative counts: (pos_b, neg_b, positives above b, negatives above b)."""
    pos_d, neg_d = pos[::-1], neg[::-1]
    tp_above = np.cumsum(pos_d) - pos_d
    fp_above = np.cumsum(neg_d) - neg_d
    return pos_d, neg_d, tp_above, fp_above


def average_precision_from_histogram(bin_pos: Any, bin_neg: Any) -> float | None:
    """Average precision (PR AUC) with bin-level thresholds, scikit-learn's step-wise definition.

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over thresholds at the bins' lower edges in decreasing order, with
    ``P_n``/``R_n`` the precision/recall of "score in bin >= n" (no interpolation). ``None`` without
    positives; 1.0 without negatives (as scikit-learn). Error bound: ``average_precision_error_bound``.
    """
    pos, neg = _hist(bin_pos, bin_neg)
    _check_counts(pos, neg)
    p_tot = pos.sum()
    if p_tot == 0:
        return None
    pos_d, neg_d, tp_above, fp_above = _ap_terms(pos, neg)
    mask = pos_d > 0
    tp = tp_above[mask] + pos_d[mask]
    precision = tp / (tp + fp_above[mask] + neg_d[mask])
    ap = float(np.sum(pos_d[mask] / p_tot * precision))
    return min(max(ap, 0.0), 1.0)


def average_precision_error_bound(bin_pos: Any, bin_neg: Any) -> float | None:
    """Worst-case ``|AP_hist - AP_exact|`` given the histogram (see module docstring)."""
    pos, neg = _hist(bin_pos, bin_neg)
    _check_counts(pos, neg)
    p_tot = pos.sum()
    if p_tot == 0:
        return None
    pos_d, neg_d, tp_above, fp_above = _ap_terms(pos, neg)
    mask = pos_d > 0
    pb, nb, t, f = pos_d[mask], neg_d[mask], tp_above[mask], fp_above[mask]
    hist = (t + pb) / (t + pb + f + nb)
    hi = (t + pb) / (t + pb + f)
    lo = (t + 1.0) / (t + 1.0 + f + nb)
    dev = np.maximum(hi - hist, np.maximum(hist - lo, 0.0))
    return float(np.sum(pb / p_tot * dev))


def ece_from_histogram(bin_pos: Any, bin_neg: Any, bin_sum_score: Any, n_bins: int = 10) -> float | None:
    """Expected calibration error with ``n_bins`` equal-width bins obtained by merging the fine bins.

    ``ECE = sum_c (n_c / n) * |mean score_c - positive rate_c|`` over labeled rows, ``c`` a coarse bin.
    The fine bin count must be a multiple of ``n_bins`` (so coarse bins are exactly
    ``min(floor(p * n_bins), n_bins - 1)``). ``None`` without labeled rows.
    """
    pos, neg, ssum = _hist(bin_pos, bin_neg, bin_sum_score)
    _check_counts(pos, neg)
    fine = pos.size
    if n_bins < 1 or fine % n_bins != 0:
        raise ValueError(f"the number of fine bins ({fine}) must be a multiple of n_bins ({n_bins})")
    pos_c = pos.reshape(n_bins, -1).sum(axis=1)
    cnt_c = pos_c + neg.reshape(n_bins, -1).sum(axis=1)
    sum_c = ssum.reshape(n_bins, -1).sum(axis=1)
    n = cnt_c.sum()
    if n == 0:
        return None
    nz = cnt_c > 0
    gap = np.abs(sum_c[nz] / cnt_c[nz] - pos_c[nz] / cnt_c[nz])
    return float(np.sum(cnt_c[nz] / n * gap))


def log_loss_from_sums(sum_log_loss: float, n: float) -> float | None:
    """Mean log loss ``sum_log_loss / n`` (probabilities clipped to [1e-15, 1 - 1e-15] by Spark)."""
    return _div(sum_log_loss, n)


def brier_from_sums(sum_brier: float, n: float) -> float | None:
    """Brier score ``sum (p - y)^2 / n``."""
    return _div(sum_brier, n)


def binary_score_metrics(
    bin_pos: Any,
    bin_neg: Any,
    bin_sum_score: Any,
    sum_log_loss: float | None = None,
    sum_brier: float | None = None,
    ece_bins: int = 10,
) -> Metrics:
    """Score-based binary metrics from one histogram: roc_auc, roc_auc_error_bound, pr_auc,
    pr_auc_error_bound, ece, log_loss, brier_score (``n`` = labeled rows of the histogram)."""
    pos, neg = _hist(bin_pos, bin_neg)
    n = float(pos.sum() + neg.sum())
    return {
        "roc_auc": roc_auc_from_histogram(pos, neg),
        "roc_auc_error_bound": roc_auc_error_bound(pos, neg),
        "pr_auc": average_precision_from_histogram(pos, neg),
        "pr_auc_error_bound": average_precision_error_bound(pos, neg),
        "ece": ece_from_histogram(pos, neg, bin_sum_score, n_bins=ece_bins),
        "log_loss": None if sum_log_loss is None else log_loss_from_sums(sum_log_loss, n),
        "brier_score": None if sum_brier is None else brier_from_sums(sum_brier, n),
    }


# ---------------------------------------------------------------------------------------------------------
# multiclass classification
# ---------------------------------------------------------------------------------------------------------
def multiclass_metrics(
    cm: Any, classes: Sequence[Any], sum_log_loss: float | None = None, log_loss_rows: float | None = None
) -> Metrics:
    """Metrics from a confusion matrix ``cm[true, pred]`` whose rows/columns follow ``classes``.

    Returns accuracy; macro_/weighted_/micro_ precision, recall and f1; ``precision_<c>``,
    ``recall_<c>``, ``f1_<c>`` per class (suffix from ``class_metric_suffixes``); and log_loss
    (``sum_log_loss / log_loss_rows``: the rows whose true class has a probability, by default every row of
    ``cm``; ``None`` when not given).

    Undefined per-class values (no predictions of the class for precision, no true rows for recall,
    neither for f1) are ``None``. Macro and weighted averages follow scikit-learn's
    ``precision_recall_fscore_support(..., labels=classes, zero_division=0)``: undefined per-class values
    count as 0 and every class in ``classes`` is averaged. Micro averages equal accuracy.
    """
    m = np.asarray(cm, dtype=np.float64)
    k = len(classes)
    if m.shape != (k, k):
        raise ValueError(f"cm must have shape ({k}, {k}), got {m.shape}")
    if np.any(m < 0) or not np.all(np.isfinite(m)):
        raise ValueError("cm must hold finite non-negative counts")
    tp = np.diag(m)
    pred_sum = m.sum(axis=0)
    true_sum = m.sum(axis=1)
    n = float(m.sum())
    prec = [_div(tp[i], pred_sum[i]) for i in range(k)]
    rec = [_div(tp[i], true_sum[i]) for i in range(k)]
    f1 = [_div(2 * tp[i], pred_sum[i] + true_sum[i]) for i in range(k)]

    def zero(vals: list[float | None]) -> np.ndarray:
        return np.array([0.0 if v is None else v for v in vals])

    out: Metrics = {"accuracy": _div(tp.sum(), n)}
    for name, vals in (("precision", prec), ("recall", rec), ("f1", f1)):
        z = zero(vals)
        out[f"macro_{name}"] = float(z.mean()) if k else None
        out[f"weighted_{name}"] = _div(float(np.sum(z * true_sum)), float(true_sum.sum()))
        out[f"micro_{name}"] = _div(tp.sum(), n)
    for i, suffix in enumerate(class_metric_suffixes(classes)):
        out[f"precision_{suffix}"] = prec[i]
        out[f"recall_{suffix}"] = rec[i]
        out[f"f1_{suffix}"] = f1[i]
    rows = n if log_loss_rows is None else float(log_loss_rows)
    out["log_loss"] = None if sum_log_loss is None else _div(sum_log_loss, rows)
    return out


# ---------------------------------------------------------------------------------------------------------
# regression
# ---------------------------------------------------------------------------------------------------------
def regression_metrics(
    n: float,
    sum_err: float,
    sum_abs_err: float,
    sum_sq_err: float,
    sum_y: float,
    sum_y2: float,
    max_abs_err: float | None,
    sum_ape: float,
    n_ape: float,
    zero_targets: float,
) -> Metrics:
    """Regression metrics from sums over labeled rows (``err = pred - y``).

    Returns mae, mse, rmse, mape (``sum_ape / n_ape``: mean ``|err| / |y|`` over rows with ``y != 0``,
    i.e. scikit-learn's MAPE restricted to those rows), mape_skipped_zero_targets (``zero_targets``),
    r2, mean_error (bias, positive = over-prediction) and max_abs_error.

    ``r2 = 1 - sum_sq_err / SS_tot`` with ``SS_tot = sum_y2 - sum_y^2 / n``. ``r2`` is ``None`` when the
    targets are constant (``SS_tot`` is zero up to the rounding of the raw-moment formula,
    relative tolerance 1e-12 of ``sum_y2``), where scikit-learn would return 1.0 or 0.0 by convention.
    The raw-moment formula loses precision when ``|mean(y)| >> std(y)``; Spark may then aggregate
    targets shifted by a constant (both ``sum_y`` and ``sum_y2``), which leaves ``SS_tot`` unchanged.
    """
    n = float(n)
    if n < 0 or n_ape < 0 or zero_targets < 0:
        raise ValueError("row counts must be non-negative")
    mse = _div(sum_sq_err, n)
    r2: float | None = None
    if n > 0:
        ss_tot = float(sum_y2) - float(sum_y) ** 2 / n
        if ss_tot > 1e-12 * abs(float(sum_y2)) and ss_tot > 0:
            r2 = _div(ss_tot - float(sum_sq_err), ss_tot)
    return {
        "mae": _div(sum_abs_err, n),
        "mse": mse,
        "rmse": None if mse is None else float(np.sqrt(max(mse, 0.0))),
        "mape": _div(sum_ape, n_ape),
        "mape_skipped_zero_targets": float(zero_targets),
        "r2": r2,
        "mean_error": _div(sum_err, n),
        "max_abs_error": float(max_abs_err) if n > 0 and max_abs_err is not None else None,
    }


# ---------------------------------------------------------------------------------------------------------
# ranking / recommendation
# ---------------------------------------------------------------------------------------------------------
def ranking_per_request(
    ranked: Sequence[Any], relevant: set[Any] | frozenset[Any], k: int
) -> dict[str, float]:
    """Reference per-request ranking metrics at cut-off ``k`` (the semantics Spark must reproduce).

    * precision = hits in the top k / k (k, not the list length, is the denominator);
    * recall = hits in the top k / |relevant|;
    * ndcg = DCG / IDCG, binary gains, discount ``1 / log2(rank + 1)`` (rank from 1), IDCG over
      ``min(k, |relevant|)`` relevant items;
    * ap = sum of precision@i at each relevant rank i <= k, divided by ``min(k, |relevant|)``;
    * hit = 1 if any relevant item is in the top k;
    * rr = 1 / rank of the first relevant item in the *whole* ranked list (independent of k), else 0.

    A repeated item counts only at its first position. A request without relevant items gets 0 for
    every metric (as Spark MLlib's RankingMetrics); callers may rather filter such requests out.
    Keys: precision, recall, ndcg, ap, hit, rr.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    rel = set(relevant)
    zeros = {"precision": 0.0, "recall": 0.0, "ndcg": 0.0, "ap": 0.0, "hit": 0.0, "rr": 0.0}
    if not rel:
        return zeros
    seen: set[Any] = set()
    hits = 0
    dcg = 0.0
    ap = 0.0
    rr = 0.0
    for i, item in enumerate(ranked):
        rank = i + 1
        is_hit = item in rel and item not in seen
        seen.add(item)
        if not is_hit:
            continue
        if rr == 0.0:
            rr = 1.0 / rank
        if rank <= k:
            hits += 1
            dcg += 1.0 / np.log2(rank + 1)
            ap += hits / rank
    n_ideal = min(k, len(rel))
    idcg = float(np.sum(1.0 / np.log2(np.arange(2, n_ideal + 2))))
    return {
        "precision": hits / k,
        "recall": hits / len(rel),
        "ndcg": float(dcg / idcg),
        "ap": ap / n_ideal,
        "hit": 1.0 if hits else 0.0,
        "rr": rr,
    }


def ranking_metrics(sums: Mapping[str, float], ks: Sequence[int]) -> Metrics:
    """Average per-request ranking metrics from their sums.

    ``sums`` holds ``n_requests``; for every ``k`` in ``ks``: ``sum_precision_at_<k>``,
    ``sum_recall_at_<k>``, ``sum_ndcg_at_<k>``, ``sum_ap_at_<k>``, ``sum_hit_at_<k>``; ``sum_rr``; and
    optionally ``distinct_recommended`` and ``catalog_size``. Per-request semantics:
    ``ranking_per_request``. Returns ``precision_at_<k>``, ``recall_at_<k>``, ``ndcg_at_<k>``,
    ``map_at_<k>``, ``hit_rate_at_<k>``, ``mrr`` and ``catalog_coverage`` (distinct recommended items /
    catalog size, ``None`` when either is missing or the catalog is empty).
    """
    n = float(sums["n_requests"])
    out: Metrics = {}
    for k in ks:
        out[f"precision_at_{k}"] = _div(sums[f"sum_precision_at_{k}"], n)
        out[f"recall_at_{k}"] = _div(sums[f"sum_recall_at_{k}"], n)
        out[f"ndcg_at_{k}"] = _div(sums[f"sum_ndcg_at_{k}"], n)
        out[f"map_at_{k}"] = _div(sums[f"sum_ap_at_{k}"], n)
        out[f"hit_rate_at_{k}"] = _div(sums[f"sum_hit_at_{k}"], n)
    out["mrr"] = _div(sums["sum_rr"], n)
    distinct, catalog = sums.get("distinct_recommended"), sums.get("catalog_size")
    out["catalog_coverage"] = None if distinct is None or catalog is None else _div(distinct, catalog)
    return out


# ---------------------------------------------------------------------------------------------------------
# label-free performance estimation (confidence-based performance estimation, CBPE)
# ---------------------------------------------------------------------------------------------------------
def _pava(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted isotonic (non-decreasing) least-squares fit by pool-adjacent-violators; ``w > 0``."""
    vals: list[float] = []
    wts: list[float] = []
    sizes: list[int] = []
    for yi, wi in zip(y.tolist(), w.tolist(), strict=True):
        vals.append(yi)
        wts.append(wi)
        sizes.append(1)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            w_new = wts[-2] + wts[-1]
            v_new = (vals[-2] * wts[-2] + vals[-1] * wts[-1]) / w_new
            s_new = sizes[-2] + sizes[-1]
            del vals[-1], wts[-1], sizes[-1]
            vals[-1], wts[-1], sizes[-1] = v_new, w_new, s_new
    return np.repeat(np.array(vals), np.array(sizes, dtype=np.int64))


def fit_calibration(bin_pos: Any, bin_neg: Any, n_bins: int | None = None) -> np.ndarray:
    """Calibrated P(y = 1) per fine score bin, learned from a labeled baseline's histogram.

    Isotonic regression by pool-adjacent-violators over the bins in score order, on the bins' positive
    rates ``pos_b / (pos_b + neg_b)`` weighted by the bins' labeled counts (identical to scikit-learn's
    ``IsotonicRegression`` fitted on bin centres with those weights, and to isotonic regression on the
    raw rows restricted to step functions on the bin grid). Bins without labeled rows get values
    linearly interpolated between the neighbouring non-empty bins' centres (constant beyond the first
    and last non-empty bin), which keeps the result non-decreasing. ``n_bins`` if given must equal the
    histogram length. Raises ``ValueError`` when the baseline has no labeled rows.
    """
    pos, neg = _hist(bin_pos, bin_neg)
    _check_counts(pos, neg)
    if n_bins is not None and n_bins != pos.size:
        raise ValueError(f"n_bins={n_bins} does not match the histogram length {pos.size}")
    w = pos + neg
    nz = w > 0
    if not np.any(nz):
        raise ValueError("cannot fit a calibration without labeled rows")
    fitted = _pava(pos[nz] / w[nz], w[nz])
    centres = (np.arange(pos.size) + 0.5) / pos.size
    return np.clip(np.interp(centres, centres[nz], fitted), 0.0, 1.0)


def estimate_binary(bin_count: Any, calibrated: Any, threshold: float, n_bins: int | None = None) -> Metrics:
    """CBPE for binary classification: expected metrics of unlabeled rows from their score histogram.

    With ``q_b`` the calibrated positive probability of fine bin ``b`` (``fit_calibration``) and ``c_b``
    the rows in the bin, the expected confusion counts are ``E[TP] = sum_{b >= t} c_b q_b``,
    ``E[FP] = sum_{b >= t} c_b (1 - q_b)``, ``E[FN] = sum_{b < t} c_b q_b``,
    ``E[TN] = sum_{b < t} c_b (1 - q_b)``: a row of bin ``b`` is predicted positive iff the bin's lower
    edge ``b / B >= threshold``. The threshold is therefore aligned to the bin grid: ``threshold * B`` is
    rounded to the nearest integer ``t`` (a ``UserWarning`` is issued when it is more than 1e-6 away).

    Returns estimated_accuracy, estimated_precision, estimated_recall, estimated_f1 (ratios of expected
    counts) and estimated_roc_auc (histogram AUC of the expected per-bin positives/negatives).
    """
    count, q = _hist(bin_count, calibrated)
    _check_counts(count)
    if np.any(q < 0) or np.any(q > 1):
        raise ValueError("calibrated probabilities must lie in [0, 1]")
    size = count.size
    if n_bins is not None and n_bins != size:
        raise ValueError(f"n_bins={n_bins} does not match the histogram length {size}")
    scaled = float(threshold) * size
    t = round(scaled)
    if abs(scaled - t) > 1e-6:
        warnings.warn(
            f"threshold {threshold} is not on the {size}-bin grid; using {t / size}",
            UserWarning,
            stacklevel=2,
        )
    t = min(max(t, 0), size)
    exp_pos = count * q
    exp_neg = count * (1.0 - q)
    counts = binary_metrics(
        tp=float(exp_pos[t:].sum()),
        fp=float(exp_neg[t:].sum()),
        tn=float(exp_neg[:t].sum()),
        fn=float(exp_pos[:t].sum()),
    )
    return {
        "estimated_accuracy": counts["accuracy"],
        "estimated_precision": counts["precision"],
        "estimated_recall": counts["recall"],
        "estimated_f1": counts["f1"],
        "estimated_roc_auc": roc_auc_from_histogram(exp_pos, exp_neg),
    }


def estimate_multiclass(
    sum_max_prob: float,
    n: float,
    sum_prob_per_class: Any,
    sum_prob_where_pred_per_class: Any,
    n_pred_per_class: Any,
    classes: Sequence[Any],
) -> Metrics:
    """CBPE for multiclass classification, assuming calibrated class probabilities and argmax predictions.

    Inputs (per class ``c``, over ``n`` unlabeled rows): ``sum_prob_per_class[c] = sum p_c`` (expected
    rows of class c), ``sum_prob_where_pred_per_class[c] = sum p_c over rows predicted c`` (expected
    true positives of c), ``n_pred_per_class[c]`` (rows predicted c); ``sum_max_prob = sum max_c p_c``.

    Returns estimated_accuracy (``sum_max_prob / n``), ``estimated_precision_<c>``
    (E[TP_c] / predicted_c), ``estimated_recall_<c>`` (E[TP_c] / E[true_c]), ``estimated_f1_<c>``
    (2 E[TP_c] / (predicted_c + E[true_c])) and estimated_macro_precision / _recall / _f1 (undefined
    per-class values count as 0, as in ``multiclass_metrics``).
    """
    k = len(classes)
    s_prob, s_tp, n_pred = (
        np.asarray(a, dtype=np.float64)
        for a in (sum_prob_per_class, sum_prob_where_pred_per_class, n_pred_per_class)
    )
    for a in (s_prob, s_tp, n_pred):
        if a.shape != (k,):
            raise ValueError(f"per-class arrays must have shape ({k},), got {a.shape}")
    prec = [_div(s_tp[i], n_pred[i]) for i in range(k)]
    rec = [_div(s_tp[i], s_prob[i]) for i in range(k)]
    f1 = [_div(2 * s_tp[i], n_pred[i] + s_prob[i]) for i in range(k)]
    out: Metrics = {"estimated_accuracy": _div(sum_max_prob, n)}
    for name, vals in (("precision", prec), ("recall", rec), ("f1", f1)):
        out[f"estimated_macro_{name}"] = (
            float(np.mean([0.0 if v is None else v for v in vals])) if k else None
        )
    for i, suffix in enumerate(class_metric_suffixes(classes)):
        out[f"estimated_precision_{suffix}"] = prec[i]
        out[f"estimated_recall_{suffix}"] = rec[i]
        out[f"estimated_f1_{suffix}"] = f1[i]
    return out


# ---------------------------------------------------------------------------------------------------------
# fairness
# ---------------------------------------------------------------------------------------------------------
def fairness_metrics(
    group: Sequence[float],
    rest: Sequence[float],
    group_selection: Sequence[float] | None = None,
    rest_selection: Sequence[float] | None = None,
) -> Metrics:
    """Group-fairness gaps of a protected slice vs the rest, from ``(tp, fp, tn, fn)`` of each.

    Differences are ``group - rest``: statistical_parity_difference (selection rate, i.e.
    predicted-positive rate), equal_opportunity_difference (TPR), predictive_parity_difference
    (precision), predictive_equality_difference (FPR); disparate_impact_ratio = selection rate of the
    group / that of the rest. ``None`` when a side's rate is undefined (or the rest's rate is 0 for the
    ratio).

    Statistical parity and disparate impact need no labels: pass ``(predicted positives, rows)`` over
    every scored row of each side (labeled or not) as ``group_selection`` / ``rest_selection``, so that
    they do not depend on which outcomes were observed. Without them the selection rates come from the
    confusion counts (labeled rows only).
    """
    if len(group) != 4 or len(rest) != 4:
        raise ValueError("group and rest must be (tp, fp, tn, fn) tuples")
    if (group_selection is None) != (rest_selection is None):
        raise ValueError("group_selection and rest_selection must be given together")
    g = binary_metrics(*group)
    r = binary_metrics(*rest)
    g_ppr, r_ppr = g["predicted_positive_rate"], r["predicted_positive_rate"]
    if group_selection is not None and rest_selection is not None:
        if len(group_selection) != 2 or len(rest_selection) != 2:
            raise ValueError("group_selection and rest_selection must be (predicted positives, rows) pairs")
        if min(*group_selection, *rest_selection) < 0:
            raise ValueError("selection counts must be non-negative")
        g_ppr, r_ppr = _div(*group_selection), _div(*rest_selection)
    return {
        "statistical_parity_difference": _sub(g_ppr, r_ppr),
        "disparate_impact_ratio": None if g_ppr is None or r_ppr is None else _div(g_ppr, r_ppr),
        "equal_opportunity_difference": _sub(g["recall"], r["recall"]),
        "predictive_parity_difference": _sub(g["precision"], r["precision"]),
        "predictive_equality_difference": _sub(g["fpr"], r["fpr"]),
    }
