"""Driver-side drift statistics from quantile sketches and category counts (pure numpy/scipy).

Spark summarises every (window x slice x column) cell; this module never imports pyspark.

* Numeric columns arrive as a sorted quantile array ``q`` evaluated at a fixed probability grid
  ``probs`` (``q[0]`` is the minimum, ``q[-1]`` the maximum), read from a KLL sketch, plus moments.
  The distribution is modelled by the piecewise-linear quantile function through the knots
  ``(probs[i], q[i])``; its CDF is the generalised inverse (flat runs of ``q`` are point masses).
* Categorical columns arrive as value counts (top-N values plus an ``"__other__"`` bucket).

All statistics compare a *reference* (baseline or previous window) with a *current* distribution.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import special
from scipy import stats as _st

__all__ = [
    "MOMENTS_REL_PRECISION",
    "OTHER",
    "CategoricalSummary",
    "NumericSummary",
    "align_categories",
    "benjamini_hochberg",
    "bin_fractions",
    "bonferroni",
    "categorical_drift",
    "cdf_from_quantiles",
    "chi2_test",
    "choose_k",
    "complete_cut_lists",
    "critical_value",
    "decide",
    "js_distance",
    "kll_rank_error",
    "ks_error_bound",
    "ks_from_quantiles",
    "ks_pvalue",
    "l_infinity",
    "numeric_drift",
    "psi",
    "quantile_edges",
    "std_from_sums",
    "tv_distance",
    "wasserstein_from_quantiles",
]

#: Name of the bucket that collects every category outside the top-N.
OTHER = "__other__"

ArrayLike = np.ndarray | Sequence[float]


#: Below this share of the sum of squares, ``sum((x - mean)^2)`` computed as ``sum(x^2) - sum(x)^2 / n`` is
#: rounding noise of the float64 sums (e.g. ``1e9 + N(0, 1)``): the spread is not known from the sums.
MOMENTS_REL_PRECISION = 1e-8


def std_from_sums(
    n: int, total: float | None, total_sq: float | None, lo: float | None = None, hi: float | None = None
) -> float | None:
    """Sample standard deviation from the count, sum and sum of squares of finite values.

    0.0 when the minimum equals the maximum (``lo``/``hi``, when known: a constant column, exactly); None
    with fewer than two values, or when the spread is below the precision of the sums
    (:data:`MOMENTS_REL_PRECISION`), where the textbook formula returns noise (34 for ``1e9 + N(0, 1)``).
    """
    if n < 2 or total is None or total_sq is None:
        return None
    if lo is not None and hi is not None and lo == hi:
        return 0.0
    centered = float(total_sq) - float(total) * float(total) / n
    if not centered > MOMENTS_REL_PRECISION * abs(float(total_sq)):
        return None
    return math.sqrt(centered / (n - 1))


# ----------------------------------------------------------------------------------------------------------
# Quantile-array primitives
# ----------------------------------------------------------------------------------------------------------
def _as_quantiles(
    q: ArrayLike, probs: ArrayLike, *, probs_checked: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (quantiles, probabilities) pair and force the quantiles to be non-decreasing.

    ``probs_checked=True`` skips the checks of ``probs`` alone (finite, strictly increasing) when they
    already passed with the other side's quantiles; shapes and ``q`` are always checked.
    """
    qa = np.asarray(q, dtype=float)
    pa = np.asarray(probs, dtype=float)
    if qa.ndim != 1 or qa.shape != pa.shape or qa.size < 2:
        raise ValueError(
            f"q and probs must be 1-D arrays of equal length >= 2, got {qa.shape} and {pa.shape}"
        )
    if not (np.isfinite(qa).all() and (probs_checked or np.isfinite(pa).all())):
        raise ValueError("q and probs must be finite")
    if not probs_checked and (pa[1:] <= pa[:-1]).any():
        raise ValueError("probs must be strictly increasing")
    # Sketch read-outs are monotone up to floating noise; repair it so the CDF is well defined.
    return np.maximum.accumulate(qa), pa


def _cdf(q: np.ndarray, probs: np.ndarray, x: np.ndarray, side: str) -> np.ndarray:
    """CDF of the piecewise-linear quantile model; ``side='right'`` gives F(x), ``'left'`` gives F(x-)."""
    last = q.size - 1
    j = np.searchsorted(q, x, side=side) - 1  # right: last q_j <= x ; left: last q_j < x
    out = np.empty(x.shape, dtype=float)
    below = j < 0
    above = j >= last
    mid = ~(below | above)
    out[below] = 0.0
    out[above] = 1.0
    jm = j[mid]
    q0, q1 = q[jm], q[jm + 1]  # q0 <= x < q1 (right) or q0 < x <= q1 (left): q1 > q0 in both cases
    p0, p1 = probs[jm], probs[jm + 1]
    out[mid] = p0 + (x[mid] - q0) / (q1 - q0) * (p1 - p0)
    return out


class _Grid:
    """A validated probability grid with the per-rank tables its quantile models share (see below)."""

    __slots__ = ("base", "dp", "probs", "rise", "top")

    def __init__(self, probs: np.ndarray) -> None:
        """``probs`` as returned by :func:`_as_quantiles`."""
        self.probs = probs
        self.dp = probs[1:] - probs[:-1]  # np.diff(probs)
        self.base = np.concatenate(([0.0], probs[:-1], [1.0]))
        self.rise = np.concatenate(([0.0], self.dp, [0.0]))
        self.top = self.base + self.rise


class _QuantileModel:
    """A validated quantile array with per-rank coefficients of its CDF, for repeated finite evaluations.

    With ``k`` the number of knots ``<= x`` (for ``F(x)``) or ``< x`` (for ``F(x-)``), the CDF of
    :func:`_cdf` is ``base[k] + (x - knot[k]) / width[k] * rise[k]`` (``base``, ``rise`` from the
    :class:`_Grid`, ``knot``, ``width`` from ``q``): ``k = 0`` and ``k = P`` have
    ``rise = 0`` and give exactly 0 and 1, and ``0 < k < P`` is the segment ``[q[k-1], q[k]]`` evaluated
    with the same floating-point operations as :func:`_cdf`, so results are bit-identical for finite
    ``x``. A flat segment is never selected (``q[k-1] < q[k]`` whenever ``x`` falls between them), so its
    zero width is stored as 1 to keep the tables free of divisions by zero.
    """

    __slots__ = ("grid", "knot", "q", "width")

    def __init__(self, q: np.ndarray, grid: _Grid) -> None:
        """``q`` as returned by :func:`_as_quantiles` on the probabilities of ``grid``."""
        dq = q[1:] - q[:-1]
        self.q = q
        self.grid = grid
        self.knot = np.concatenate(([0.0], q[:-1], [0.0]))
        self.width = np.concatenate(([1.0], np.where(dq > 0, dq, 1.0), [1.0]))

    def at_ranks(self, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        """CDF at finite points ``x`` whose knot counts ``k`` are known (see the class docstring)."""
        g = self.grid
        return g.base[k] + (x - self.knot[k]) / self.width[k] * g.rise[k]

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """``F(x)`` at finite points ``x``."""
        return self.at_ranks(x, np.searchsorted(self.q, x, side="right"))

    def at_own_knots(self) -> tuple[np.ndarray, np.ndarray]:
        """``(F(q), F(q-))`` at the model's own knots ``q``, read off the tables without arithmetic.

        At ``x = q[i]`` the count ``k`` of knots ``<= x`` selects ``knot[k] = x``, so the CDF formula is
        exactly ``base[k]``. The count ``s`` of knots ``< x`` (the start of the run of ties of ``x``) selects
        the segment ending at ``x``, whose ``(x - knot[s]) / width[s]`` is exactly 1 (or ``rise[s] = 0`` when
        ``s = 0``), so ``F(x-)`` is exactly ``base[s] + rise[s]``.
        """
        q, g = self.q, self.grid
        if (q[1:] > q[:-1]).all():  # no ties: k = i + 1 and s = i
            return g.base[1:], g.top[:-1]
        idx = np.arange(q.size)
        first = np.empty(q.size, dtype=bool)  # first knot of each run of ties
        first[0] = True
        np.not_equal(q[1:], q[:-1], out=first[1:])
        last = np.empty_like(first)
        last[-1] = True
        last[:-1] = first[1:]
        starts = np.maximum.accumulate(np.where(first, idx, 0))
        after_ends = np.minimum.accumulate(np.where(last, idx + 1, q.size)[::-1])[::-1]
        return g.base[after_ends], g.top[starts]


def _merge_ranks(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(np.searchsorted(a, b, "right"), np.searchsorted(b, a, "left"))`` of two sorted arrays, by a merge.

    In a stable sort of ``a`` followed by ``b`` the elements of ``a`` come first among equal values, so
    ``b[j]`` lands after ``j`` elements of ``b`` and exactly the elements of ``a`` that are ``<= b[j]``, and
    ``a[i]`` after ``i`` elements of ``a`` and exactly the elements of ``b`` that are ``< a[i]``. Sorting two
    sorted runs is a linear merge, several times cheaper than the binary searches.
    """
    n = a.size
    order = np.argsort(np.concatenate([a, b]), kind="stable")
    pos = np.empty_like(order)
    pos[order] = np.arange(order.size)
    return pos[n:] - np.arange(b.size), pos[:n] - np.arange(n)


def cdf_from_quantiles(
    q: ArrayLike, probs: ArrayLike, x: ArrayLike | float, *, side: Literal["right", "left"] = "right"
) -> np.ndarray:
    """Estimate the CDF at points ``x`` from a quantile array.

    The quantile function is taken as the linear interpolation of the knots ``(probs[i], q[i])`` and the
    CDF is its generalised inverse ``F(x) = sup{p : Q(p) <= x}``: linear interpolation of the inverse
    between distinct quantiles, right-continuous jumps at flat runs (ties, e.g. a constant column is a
    single jump from 0 to 1 at its value), 0 below ``q[0]`` and 1 at or above ``q[-1]``.

    Args:
        q: Non-decreasing quantiles at ``probs`` (``q[0]`` = min, ``q[-1]`` = max).
        probs: Strictly increasing probabilities, normally ``np.linspace(0, 1, P)``.
        x: Evaluation points.
        side: ``"right"`` (default) returns ``F(x) = P(X <= x)``; ``"left"`` returns ``F(x-) = P(X < x)``.

    Returns:
        Array with the shape of ``x``.
    """
    if side not in ("right", "left"):
        raise ValueError("side must be 'right' or 'left'")
    qa, pa = _as_quantiles(q, probs)
    xa = np.asarray(x, dtype=float)
    return _cdf(qa, pa, np.atleast_1d(xa), side).reshape(xa.shape)


def ks_from_quantiles(q_ref: ArrayLike, q_cur: ArrayLike, probs: ArrayLike) -> float:
    """Two-sample Kolmogorov-Smirnov statistic ``sup_x |F_ref(x) - F_cur(x)|`` from two quantile arrays.

    Both CDFs are piecewise linear between the union of the knots, so the supremum is attained at a knot;
    it is evaluated on both sides of each knot (``F(x)`` and ``F(x-)``) so jumps from ties count fully.
    Against the exact sample KS the error is at most one grid step ``1/(P-1)`` per side plus the sketch rank
    error of both sides (see :func:`ks_error_bound`).
    """
    qr, pr = _as_quantiles(q_ref, probs)
    qc, _ = _as_quantiles(q_cur, pr, probs_checked=True)
    grid = _Grid(pr)
    return _ks(_QuantileModel(qr, grid), _QuantileModel(qc, grid))


def _ks(ref: _QuantileModel, cur: _QuantileModel) -> float:
    """:func:`ks_from_quantiles` of two validated quantile models.

    Without ties across the sides (continuous columns), the union of the knots is visited as each side's
    own knots: there that side's CDF is read off its tables (:meth:`_QuantileModel.at_own_knots`), and the
    other side, continuous at such a knot, is evaluated once at ranks from a merge. With ties across the
    sides (discrete columns, typically few distinct knots) both one-sided CDFs of both sides are evaluated
    at the distinct union knots.
    """
    qr, qc = ref.q, cur.q
    r_le_c, c_lt_r = _merge_ranks(qr, qc)
    # qr[r_le_c - 1] is the largest reference knot <= qc (index -1 when none: the maximum, > qc then).
    if (qr[r_le_c - 1] == qc).any():
        u = np.unique(np.concatenate([qr, qc]))
        d = 0.0
        for side in ("right", "left"):
            fr_u = ref.at_ranks(u, np.searchsorted(qr, u, side))
            fc_u = cur.at_ranks(u, np.searchsorted(qc, u, side))
            d = max(d, np.abs(fr_u - fc_u).max())
        return float(min(1.0, d))
    fr, fr_left = ref.at_own_knots()
    fc, fc_left = cur.at_own_knots()
    # No ties across: each knot has as many knots of the other side below it as at or below it.
    fc_at_r = cur.at_ranks(qr, c_lt_r)
    fr_at_c = ref.at_ranks(qc, r_le_c)
    d = max(
        np.abs(fr - fc_at_r).max(),
        np.abs(fr_left - fc_at_r).max(),
        np.abs(fr_at_c - fc).max(),
        np.abs(fr_at_c - fc_left).max(),
    )
    return float(min(1.0, d))


KS_EXACT_MAX_N = 2_000


def ks_pvalue(d: float, n: int, m: int) -> float:
    """Asymptotic two-sided two-sample KS p-value, as ``scipy.stats.ks_2samp(..., method="asymp")`` up to an
    effective size ``round(n*m/(n+m))`` of 2,000.

    Uses the exact one-sample Kolmogorov distribution at the effective size; above 2,000 its limit (the
    Kolmogorov distribution), which is larger by about 2% of the p-value near 0.05 (0.0510 for scipy's 0.0500
    at 2,000; 0.0507 at 5,000), the difference shrinking as the size grows.
    Returns NaN when either size is not positive or ``d`` is NaN.
    """
    if n <= 0 or m <= 0 or d is None or not math.isfinite(d):
        return float("nan")
    big, small = sorted([float(n), float(m)], reverse=True)
    en = big * small / (big + small)
    if en > KS_EXACT_MAX_N:
        # The finite-n distribution costs ~5 ms a call at large n; its limit is ~2% larger near p = 0.05.
        # special.kolmogorov is what scipy.stats.kstwobign.sf evaluates, without its ~30 us of overhead.
        return float(np.clip(special.kolmogorov(d * math.sqrt(np.round(en))), 0.0, 1.0))
    return float(np.clip(_st.kstwo.sf(d, np.round(en)), 0.0, 1.0))


def wasserstein_from_quantiles(q_ref: ArrayLike, q_cur: ArrayLike, probs: ArrayLike) -> float:
    """Wasserstein-1 distance ``integral_0^1 |Q_ref(p) - Q_cur(p)| dp`` on the probability grid.

    The difference of the two quantile functions is linear on each grid interval; the integral of its
    absolute value is the trapezoid rule, except on intervals where it changes sign, which are integrated
    exactly (``h*(a^2+b^2)/(2(|a|+|b|))``) instead of over-estimated.

    On the two outer intervals (``[0, probs[1]]`` and ``[probs[-2], 1]``, when the grid has inner ones) each
    quantile function is held at its inner knot. Interpolating to the minimum and maximum would give one row
    each the weight of half an interval (5e-4 with 1001 points) instead of ``1/n``: on heavy-tailed columns
    the two samples' maxima then decide the distance (two samples of one lognormal(0, 2) distribution, 1M
    rows each: normalised W1 0.11 against 0.003 exactly), and it grows with the window. A KLL sketch does
    not resolve ranks that fine anyway (rank error ~2.7e-3 at k=1000); a shift confined to the outermost
    interval is not measured.
    """
    qr, pr = _as_quantiles(q_ref, probs)
    qc, _ = _as_quantiles(q_cur, pr, probs_checked=True)
    return _wasserstein(qr, qc, pr[1:] - pr[:-1])


def _wasserstein(qr: np.ndarray, qc: np.ndarray, dp: np.ndarray) -> float:
    """:func:`wasserstein_from_quantiles` of validated quantiles; ``dp = np.diff(probs)``."""
    diff = qr - qc
    if diff.size > 3:  # the outer intervals held at their inner knots (see wasserstein_from_quantiles)
        diff[0], diff[-1] = diff[1], diff[-2]
    a, b = diff[:-1], diff[1:]
    absum = np.abs(a) + np.abs(b)
    seg = 0.5 * absum
    # Sign changes (a*b < 0, so |a|+|b| > 0) are rare: integrate only those exactly. Written as
    # ~(a*b >= 0) so that a NaN product (from an overflowed difference) also gives NaN there.
    cross = np.flatnonzero(~(a * b >= 0))
    if cross.size:
        ac, bc = a[cross], b[cross]
        seg[cross] = (ac * ac + bc * bc) / (2.0 * absum[cross])
    return float(np.sum(dp * seg))


def quantile_edges(q_ref: ArrayLike, probs: ArrayLike, bins: int = 10) -> np.ndarray:
    """Inner bin edges at the reference quantiles ``Q_ref(i/bins)``, ``i = 1..bins-1``, deduplicated.

    With a continuous reference every bin holds ``1/bins`` of its mass; point masses collapse edges, so the
    number of bins actually used is ``len(edges) + 1`` (a constant column yields one edge: two bins).
    """
    if bins < 1:
        raise ValueError("bins must be >= 1")
    qr, pr = _as_quantiles(q_ref, probs)
    inner = np.arange(1, bins) / bins
    return np.unique(np.interp(inner, pr, qr))


def _quantile_edges(qr: np.ndarray, pr: np.ndarray, bins: int) -> np.ndarray:
    """:func:`quantile_edges` of validated quantiles (``bins >= 1``), for use as CDF evaluation points.

    Sorts and drops repeats as ``np.unique`` does, without its overhead; which of ``0.0``/``-0.0`` is kept
    among equal edges may differ, which no CDF evaluation distinguishes.
    """
    e = np.sort(np.interp(np.arange(1, bins) / bins, pr, qr))
    keep = np.ones(e.size, dtype=bool)
    np.not_equal(e[1:], e[:-1], out=keep[1:])
    return e[keep]


def bin_fractions(q: ArrayLike, probs: ArrayLike, edges: ArrayLike) -> np.ndarray:
    """Mass of the bins ``(-inf, e1], (e1, e2], ..., (ek, inf)`` under the quantile model of ``q``.

    Returns ``len(edges) + 1`` non-negative fractions summing to 1.
    """
    qa, pa = _as_quantiles(q, probs)
    e = np.unique(np.asarray(edges, dtype=float))
    cdf = _cdf(qa, pa, e, "right") if e.size else np.empty(0)
    return _fractions_from_cdf(cdf)


def _fractions_from_cdf(cdf: np.ndarray) -> np.ndarray:
    """Bin masses (clipped at 0) from the CDF at the sorted inner edges."""
    c = np.concatenate(([0.0], cdf, [1.0]))
    return np.maximum(c[1:] - c[:-1], 0.0)  # np.clip(np.diff(c), 0.0, None)


# ----------------------------------------------------------------------------------------------------------
# Distances between discrete distributions (counts or fractions)
# ----------------------------------------------------------------------------------------------------------
#: Default floor of the proportions in :func:`psi`.
PSI_EPS = 1e-4
_LN2 = np.log(2.0)


def _proportions(p: ArrayLike) -> np.ndarray:
    """Normalise non-negative counts or fractions to proportions (all-NaN when the total is 0)."""
    a = np.asarray(p, dtype=float)
    if a.ndim != 1:
        raise ValueError("expected a 1-D array")
    if np.any(a < 0) or not np.all(np.isfinite(a)):
        raise ValueError("counts/fractions must be finite and non-negative")
    return _normalise(a)


def _normalise(a: np.ndarray) -> np.ndarray:
    """:func:`_proportions` of an already validated 1-D float array."""
    total = a.sum()
    if total <= 0:
        return np.full(a.shape, np.nan)
    return a / total


def _pair(p: ArrayLike, q: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    pa, qa = _proportions(p), _proportions(q)
    if pa.shape != qa.shape:
        raise ValueError(f"shape mismatch: {pa.shape} vs {qa.shape}")
    return pa, qa


def psi(ref_frac_or_counts: ArrayLike, cur_frac_or_counts: ArrayLike, eps: float = PSI_EPS) -> float:
    """Population stability index ``sum_i (c_i - r_i) * ln(c_i / r_i)`` (natural log).

    Both inputs are normalised to proportions (counts are accepted). Empty bins would make the log
    infinite, so every proportion is floored at ``eps`` (``max(p, eps)``, no renormalisation) before the
    formula is applied; with ``eps=1e-4`` a bin that empties completely contributes about
    ``r * ln(r / 1e-4)``. Returns NaN when either side has zero total.
    """
    return _psi(*_pair(ref_frac_or_counts, cur_frac_or_counts), eps)


def _psi(r: np.ndarray, c: np.ndarray, eps: float = PSI_EPS) -> float:
    """:func:`psi` of proportions of equal shape (NaN-filled for an empty side)."""
    if np.isnan(r).any() or np.isnan(c).any():
        return float("nan")
    r, c = np.maximum(r, eps), np.maximum(c, eps)
    return float(np.sum((c - r) * np.log(c / r)))


def js_distance(p: ArrayLike, q: ArrayLike) -> float:
    """Jensen-Shannon *distance* (square root of the divergence), base 2, in [0, 1].

    Equals ``scipy.spatial.distance.jensenshannon(p, q, base=2)``; inputs are normalised first.
    Returns NaN when either side has zero total.
    """
    return _js(*_pair(p, q))


def _js(pa: np.ndarray, qa: np.ndarray) -> float:
    """:func:`js_distance` of proportions of equal shape (NaN-filled for an empty side)."""
    if np.isnan(pa).any() or np.isnan(qa).any():
        return float("nan")
    mid = (pa + qa) / 2.0
    js = np.sum(special.rel_entr(pa, mid) + special.rel_entr(qa, mid)) / 2.0 / _LN2
    return float(min(1.0, math.sqrt(max(js, 0.0))))


def tv_distance(p: ArrayLike, q: ArrayLike) -> float:
    """Total variation distance ``0.5 * sum_i |p_i - q_i|`` between normalised inputs, in [0, 1]."""
    return _tv(*_pair(p, q))


def _tv(pa: np.ndarray, qa: np.ndarray) -> float:
    """:func:`tv_distance` of proportions of equal shape."""
    return float(0.5 * np.sum(np.abs(pa - qa)))


def l_infinity(p: ArrayLike, q: ArrayLike) -> float:
    """L-infinity distance ``max_i |p_i - q_i|`` between normalised inputs (proportions), in [0, 1]."""
    return _linf(*_pair(p, q))


def _linf(pa: np.ndarray, qa: np.ndarray) -> float:
    """:func:`l_infinity` of proportions of equal shape."""
    return float(np.max(np.abs(pa - qa))) if pa.size else 0.0


def chi2_test(ref_counts: ArrayLike, cur_counts: ArrayLike) -> tuple[float, float]:
    """Chi-square test of homogeneity on the 2 x k table ``[ref_counts; cur_counts]``.

    Categories that are zero on both sides are dropped; no Yates correction. Equals
    ``scipy.stats.chi2_contingency(table, correction=False)[:2]``. With fewer than two remaining
    categories the samples cannot differ: ``(0.0, 1.0)``. If either side is empty: ``(nan, nan)``.
    """
    r = np.asarray(ref_counts, dtype=float)
    c = np.asarray(cur_counts, dtype=float)
    if r.shape != c.shape or r.ndim != 1:
        raise ValueError("ref_counts and cur_counts must be 1-D arrays of equal length")
    _check_counts(r, c)
    return _chi2(r, c)


def _check_counts(r: np.ndarray, c: np.ndarray) -> None:
    """Reject negative counts (as :func:`chi2_test` does)."""
    if (r < 0).any() or (c < 0).any():
        raise ValueError("counts must be non-negative")


def _chi2(r: np.ndarray, c: np.ndarray) -> tuple[float, float]:
    """:func:`chi2_test` of validated count arrays of equal shape."""
    keep = (r + c) > 0
    table = np.vstack([r[keep], c[keep]])
    rows = table.sum(axis=1)
    if np.any(rows <= 0):
        return float("nan"), float("nan")
    if table.shape[1] < 2:
        return 0.0, 1.0
    expected = np.outer(rows, table.sum(axis=0)) / table.sum()
    stat = float(np.sum((table - expected) ** 2 / expected))
    # special.chdtrc is what scipy.stats.chi2.sf evaluates, without its ~30 us of overhead.
    return stat, float(special.chdtrc(table.shape[1] - 1, stat))


def align_categories(
    ref: dict[str, int], cur: dict[str, int]
) -> tuple[list[str], np.ndarray, np.ndarray, list[str], list[str]]:
    """Align two category-count dicts on the union of their categories.

    A category with count 0 is treated as absent. Categories are sorted, with ``"__other__"`` last.

    Returns:
        ``(categories, ref_counts, cur_counts, new, missing)``: ``new`` are categories present in ``cur``
        but not in ``ref``; ``missing`` the reverse. ``"__other__"`` is never new or missing. Because both
        sides are top-N truncated, a "new" value may also be one that fell into the reference's
        ``"__other__"`` bucket.
    """
    ref_pos = {k: float(v) for k, v in ref.items() if v}
    cur_pos = {k: float(v) for k, v in cur.items() if v}
    keys = set(ref_pos) | set(cur_pos)
    cats = sorted(keys - {OTHER})
    if OTHER in keys:
        cats.append(OTHER)
    rc = np.array([ref_pos.get(k, 0) for k in cats], dtype=float)
    cc = np.array([cur_pos.get(k, 0) for k in cats], dtype=float)
    new = [k for k in cats if k != OTHER and k in cur_pos and k not in ref_pos]
    missing = [k for k in cats if k != OTHER and k in ref_pos and k not in cur_pos]
    return cats, rc, cc, new, missing


def complete_cut_lists(ref: dict[str, int], cur: dict[str, int]) -> tuple[dict[str, float], dict[str, float]]:
    """Both sides' counts over the union of the listed categories: a category one side lists and the other
    does not, where that other side's list was cut (its ``"__other__"`` holds rows), gets a count taken out
    of that side's ``"__other__"``.

    Top-N lists cut at different places: a value in the reference's top N may sit in the current window's
    ``"__other__"``. Compared as listed, its rows would count as gone on one side and its share of the other
    side's ``"__other__"`` as new, inflating every distance (two samples of one 300-value distribution, top
    50 each: Jensen-Shannon distance 0.09-0.13 instead of ~0.03). The hidden count is at most the smallest
    count that side lists (a larger one would have been listed) and at most what its ``"__other__"`` still
    holds; within those bounds it is taken as close to the listed side's share as they allow, so a value
    that really vanished still shows (down to the bound) and one near the cut shows no change. A category
    missing from a side whose list is complete truly has no rows there and stays 0.
    """
    r = {k: float(v) for k, v in ref.items() if v}
    c = {k: float(v) for k, v in cur.items() if v}
    n_r, n_c = sum(r.values()), sum(c.values())
    only_r = sorted((k for k in r if k != OTHER and k not in c), key=lambda k: (-r[k], k))
    only_c = sorted((k for k in c if k != OTHER and k not in r), key=lambda k: (-c[k], k))
    for listed, hidden_in, keys, n_listed, n_hidden in ((r, c, only_r, n_r, n_c), (c, r, only_c, n_c, n_r)):
        if not keys or not hidden_in.get(OTHER):
            continue
        cut = min((v for k, v in hidden_in.items() if k != OTHER), default=hidden_in[OTHER])
        for k in keys:
            v = min(cut, listed[k] * n_hidden / n_listed, hidden_in[OTHER])
            if v > 0:
                hidden_in[k] = v
                hidden_in[OTHER] -= v
        if hidden_in[OTHER] <= 0:
            del hidden_in[OTHER]
    return r, c


# ----------------------------------------------------------------------------------------------------------
# Multiple testing
# ----------------------------------------------------------------------------------------------------------
def benjamini_hochberg(pvalues: ArrayLike) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (FDR), as ``scipy.stats.false_discovery_control(p, "bh")``.

    NaN entries pass through unchanged and do not count towards the number of tests.
    """
    p = np.asarray(pvalues, dtype=float).ravel()
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    ps = p[ok]
    m = ps.size
    if m == 0:
        return out
    order = np.argsort(ps)
    adj = ps[order] * (m / np.arange(1, m + 1, dtype=float))
    adj = np.minimum.accumulate(adj[::-1])[::-1]
    res = np.empty(m)
    res[order] = adj
    out[ok] = np.clip(res, 0.0, 1.0)
    return out


def bonferroni(pvalues: ArrayLike) -> np.ndarray:
    """Bonferroni adjusted p-values ``min(1, m*p)``; NaN entries pass through and are not counted."""
    p = np.asarray(pvalues, dtype=float).ravel()
    m = int(np.sum(~np.isnan(p)))
    return np.where(np.isnan(p), np.nan, np.minimum(1.0, p * m))


# ----------------------------------------------------------------------------------------------------------
# Sample-size aware critical values ("robust" mode)
# ----------------------------------------------------------------------------------------------------------
# Null distribution of sqrt(n*m/(n+m)) * W1 / sigma for normal data: the limit is
# L = integral |B(Phi(z))| dz with B a Brownian bridge (mean 1.2884, variance 0.1984 by numerical
# integration). Upper quantiles of L from a seeded Monte Carlo of 150,000 bridges on a 701-point z grid
# over [-7, 7]; interpolated linearly in sqrt(-ln alpha), which is close to linear for a Gaussian tail.
_W1N_ALPHA = np.array([0.5, 0.25, 0.1, 0.05, 0.025, 0.01, 0.005, 0.0025, 0.001])
_W1N_QUANT = np.array([1.200, 1.518, 1.889, 2.152, 2.402, 2.705, 2.923, 3.123, 3.368])


@functools.lru_cache(maxsize=256)
def _w1_normal_constant(alpha: float) -> float:
    """Upper ``alpha`` quantile of the limit law of ``sqrt(nm/(n+m)) * W1/sigma`` (normal data), memoised."""
    t = np.sqrt(-np.log(_W1N_ALPHA))
    x = math.sqrt(-math.log(alpha))
    if x <= t[0]:
        slope = (_W1N_QUANT[1] - _W1N_QUANT[0]) / (t[1] - t[0])
        return max(0.0, float(_W1N_QUANT[0] + slope * (x - t[0])))
    if x >= t[-1]:
        slope = (_W1N_QUANT[-1] - _W1N_QUANT[-2]) / (t[-1] - t[-2])
        return float(_W1N_QUANT[-1] + slope * (x - t[-1]))
    return float(np.interp(x, t, _W1N_QUANT))


@functools.lru_cache(maxsize=1024)
def _chi2_upper_quantile(alpha: float, df: int) -> float:
    """``chi2.ppf(1 - alpha, df)``, memoised: the verdicts of a run reuse a handful of ``(alpha, df)``."""
    return float(_st.chi2.ppf(1.0 - alpha, df))


def critical_value(
    statistic: str,
    n: int,
    m: int,
    alpha: float = 0.05,
    k: int | None = None,
    *,
    sketch_error: float = 0.0,
) -> float:
    """Value a statistic exceeds with probability about ``alpha`` under H0 (no drift) at sizes n and m.

    Robust mode reports ``value - critical_value`` (as Deequ does for L-infinity), so a threshold applies
    to the drift that sampling noise cannot explain. Formulas (``chi2q = chi2.ppf(1 - alpha, k - 1)``):

    * ``ks``, ``l_infinity``: ``c(alpha) * sqrt((n+m)/(n*m))``, ``c(alpha) = sqrt(-ln(alpha/2)/2)``
      (Kolmogorov-Smirnov / DKW bound).
    * ``psi``: ``(1/n + 1/m) * chi2q`` (PSI is the symmetrised KL divergence, ``~ (1/n+1/m) chi2_{k-1}``).
    * ``js_distance``: ``sqrt(chi2q * (n+m) / (8*n*m) / ln 2)``: in nats ``8nm/(n+m) * JSD ~ chi2_{k-1}``,
      converted to base 2 and to the distance (square root).
    * ``tv_distance``: ``0.5 * sqrt((1/n + 1/m) * chi2q)``; by Cauchy-Schwarz ``2 TV <= sqrt(sum d_i^2/pi_i)``
      and ``sum d_i^2/pi_i ~ (1/n+1/m) chi2_{k-1}``, so this is conservative (false-positive rate <= alpha).
    * ``wasserstein_normalized`` (W1 / sigma_ref): ``C(alpha) * sqrt((n+m)/(n*m))``, where ``C(alpha)`` is
      the upper quantile of ``integral |B(Phi(z))| dz`` (B a Brownian bridge), the limit of
      ``sqrt(nm/(n+m)) W1/sigma`` for normal data (C(0.05) = 2.152). Calibrated for normal data; it is
      somewhat anti-conservative for heavy-tailed columns and conservative for light-tailed ones.

    Args:
        statistic: One of the names above.
        n: Reference sample size (non-null values). m: current sample size.
        alpha: Per-test false-positive rate.
        k: Number of bins/categories (required for ``psi``, ``js_distance`` and ``tv_distance``): the
            ``psi_bins`` for numeric columns (an upper bound on the bins used, hence conservative), the
            number of aligned categories for categorical ones.
        sketch_error: Added to the result, e.g. ``ks_error_bound(sketch_k, P)`` for ``ks`` so that sketch
            approximation error is not reported as drift on very large windows.

    Raises:
        ValueError: for unsupported statistics, non-positive sizes, alpha outside (0, 1) or a missing k.
    """
    if n <= 0 or m <= 0:
        raise ValueError("sample sizes must be positive")
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be in (0, 1)")
    scale = (n + m) / (n * m)
    if statistic in ("ks", "l_infinity"):
        crit = math.sqrt(-math.log(alpha / 2.0) / 2.0) * math.sqrt(scale)
    elif statistic == "wasserstein_normalized":
        crit = _w1_normal_constant(alpha) * math.sqrt(scale)
    elif statistic in ("psi", "js_distance", "tv_distance"):
        if k is None:
            raise ValueError(f"k (number of bins/categories) is required for {statistic}")
        if k < 2:
            return 0.0 + sketch_error
        chi2q = _chi2_upper_quantile(alpha, k - 1)
        if statistic == "psi":
            crit = scale * chi2q
        elif statistic == "js_distance":
            crit = min(1.0, math.sqrt(chi2q * scale / 8.0 / math.log(2.0)))
        else:
            crit = min(1.0, 0.5 * math.sqrt(scale * chi2q))
    else:
        raise ValueError(f"no critical value for statistic {statistic!r}")
    return crit + sketch_error


# ----------------------------------------------------------------------------------------------------------
# KLL sketch error bounds
# ----------------------------------------------------------------------------------------------------------
def kll_rank_error(k: int) -> float:
    """Normalised single-rank error of a KLL sketch at 99% confidence: ``2.296 / k**0.9723``.

    Source: Apache DataSketches ``KllSketch.getNormalizedRankError(k, pmf=false)`` (the empirical
    single-sided rank error fit; the PMF/double-sided variant is ``2.446 / k**0.9433``).
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    return 2.296 / k**0.9723


def ks_error_bound(k: int, points: int) -> float:
    """Bound on ``|KS_from_quantiles - KS_exact|``: ``2*kll_rank_error(k) + 2/(points-1)``.

    One rank error per sketch (reference and current) plus, per side, the resolution of the probability
    grid: between two knots the interpolated CDF and the sample's are within one grid step. A side with
    fewer values than grid intervals has coarser steps of its own (``1/n``), which then take the grid's
    place (e.g. 0.0032 at n = 200 with exact quantiles); its sampling noise is far larger anyway.
    """
    if points < 2:
        raise ValueError("points must be >= 2")
    return 2.0 * kll_rank_error(k) + 2.0 / (points - 1)


def choose_k(target_ks_error: float, points: int = 1001) -> int:
    """Smallest KLL ``k`` (at least 8, DataSketches' minimum) with ``ks_error_bound(k, points) <= target``.

    Raises:
        ValueError: if the grid alone (``2/(points-1)``) already exceeds the target.
    """
    budget = target_ks_error - 2.0 / (points - 1)
    if budget <= 0:
        raise ValueError(f"target {target_ks_error} is below the grid resolution 2/{points - 1}")
    k = max(8, math.ceil((2.0 * 2.296 / budget) ** (1.0 / 0.9723)))
    while k > 8 and ks_error_bound(k - 1, points) <= target_ks_error:
        k -= 1
    while ks_error_bound(k, points) > target_ks_error:
        k += 1
    return k


# ----------------------------------------------------------------------------------------------------------
# High level
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NumericSummary:
    """Sketch summary of one numeric column in one cell."""

    n: int  # non-null, finite values sketched
    nulls: int  # null (+NaN) count
    mean: float | None
    std: float | None
    quantiles: np.ndarray | None  # at probs; None when n == 0


@dataclass(frozen=True)
class CategoricalSummary:
    """Top-N value counts (plus ``"__other__"``) of one categorical column in one cell."""

    n: int
    nulls: int
    counts: dict[str, int]


StatDict = dict[str, tuple[float | None, float | None]]


def _null_ratio(n: int, nulls: int) -> float | None:
    total = n + nulls
    return nulls / total if total > 0 else None


def _finite_or_none(v: float | None) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def _common(ref_n: int, ref_nulls: int, cur_n: int, cur_nulls: int) -> StatDict:
    rr, cr = _null_ratio(ref_n, ref_nulls), _null_ratio(cur_n, cur_nulls)
    return {
        "count_delta": (float(cur_n - ref_n), None),
        "null_ratio_delta": (cr - rr if rr is not None and cr is not None else None, None),
    }


def _scale(ref: NumericSummary, q_ref: np.ndarray, probs: np.ndarray) -> float:
    """Reference std; else its IQR from the quantiles; else 1 (W1 on its own scale)."""
    if ref.std is not None and math.isfinite(ref.std) and ref.std > 0:
        return float(ref.std)
    q25, q75 = np.interp([0.25, 0.75], probs, q_ref)
    iqr = float(q75 - q25)
    return iqr if iqr > 0 else 1.0


_NUMERIC_NAMES = ("ks", "wasserstein", "wasserstein_normalized", "psi", "js_distance", "mean_delta")
#: Statistics that depend on the quantile sketches (the rest come from exact counts and moments).
_SKETCH_STATISTICS = frozenset(_NUMERIC_NAMES) - {"mean_delta"}


def numeric_drift(
    ref: NumericSummary, cur: NumericSummary, probs: np.ndarray, psi_bins: int = 10
) -> dict[str, tuple[float | None, float | None]]:
    """Drift statistics of a numeric column: ``{name: (value, p_value_or_None)}``.

    Names: ``ks`` (with the asymptotic p-value), ``wasserstein``, ``wasserstein_normalized``, ``psi``,
    ``js_distance`` (PSI and JS on the same ``psi_bins`` reference-quantile bins), ``count_delta``
    (``cur.n - ref.n``), ``null_ratio_delta`` (current minus reference null ratio) and ``mean_delta``.

    ``wasserstein_normalized`` is W1 divided by the reference std; if that is 0 or unknown, by the
    reference IQR from its quantiles; if that is 0 too (a constant reference), W1 itself on the column's
    own scale. Constant columns therefore give finite values, never inf/NaN.

    When either side has ``n == 0`` the distributional statistics and ``mean_delta`` are None;
    ``count_delta`` is always given and ``null_ratio_delta`` whenever both sides have rows.
    """
    return _numeric_drift(ref, cur, probs, psi_bins)


def _numeric_drift(
    ref: NumericSummary, cur: NumericSummary, probs: np.ndarray, psi_bins: int, only: str | None = None
) -> StatDict:
    """:func:`numeric_drift`; ``only`` restricts the distributional work (see :func:`_distribution_stats`)."""
    out: StatDict = {name: (None, None) for name in _NUMERIC_NAMES}
    out.update(_common(ref.n, ref.nulls, cur.n, cur.nulls))
    if ref.n <= 0 or cur.n <= 0 or ref.quantiles is None or cur.quantiles is None:
        return out
    # Validated once here; the helpers below take the validated arrays.
    qr, pr = _as_quantiles(ref.quantiles, probs)
    qc, _ = _as_quantiles(cur.quantiles, pr, probs_checked=True)
    out.update(_distribution_stats(ref, cur, qr, qc, _Grid(pr), psi_bins, only))
    if ref.mean is not None and cur.mean is not None:
        out["mean_delta"] = (_finite_or_none(cur.mean - ref.mean), None)
    return out


def _distribution_stats(
    ref: NumericSummary,
    cur: NumericSummary,
    qr: np.ndarray,
    qc: np.ndarray,
    grid: _Grid,
    psi_bins: int,
    only: str | None = None,
) -> StatDict:
    """KS (with its p-value), W1, normalised W1, PSI and JS of validated quantile arrays ``qr``, ``qc``.

    The same values as :func:`ks_from_quantiles`, :func:`wasserstein_from_quantiles` and :func:`psi` /
    :func:`js_distance` of :func:`bin_fractions` at :func:`quantile_edges`, without re-validating the
    arrays for each and with the CDF tables shared between KS and the bins. ``ref``/``cur`` supply the
    sizes (p-value) and the reference std (normalisation). ``only``: compute just what the value of that
    statistic needs, without p-value (sketch_uncertainty's re-evaluations); the rest is left out.
    """
    if psi_bins < 1:
        raise ValueError("bins must be >= 1")
    out: StatDict = {}
    if only in (None, "wasserstein", "wasserstein_normalized"):
        w1 = _wasserstein(qr, qc, grid.dp)
        out["wasserstein"] = (w1, None)
        out["wasserstein_normalized"] = (w1 / _scale(ref, qr, grid.probs), None)
    if only not in (None, "ks", "psi", "js_distance"):
        return out
    mr, mc = _QuantileModel(qr, grid), _QuantileModel(qc, grid)
    if only in (None, "ks"):
        d = _ks(mr, mc)
        out["ks"] = (d, ks_pvalue(d, ref.n, cur.n) if only is None else None)
    if only in (None, "psi", "js_distance"):
        edges = _quantile_edges(qr, grid.probs, psi_bins)
        fr = _normalise(_fractions_from_cdf(mr.cdf(edges)))
        fc = _normalise(_fractions_from_cdf(mc.cdf(edges)))
        out["psi"] = (_psi(fr, fc), None)
        out["js_distance"] = (_js(fr, fc), None)
    return out


def sketch_uncertainty(
    statistic: str,
    ref: NumericSummary,
    cur: NumericSummary,
    probs: np.ndarray,
    rank_error: float,
    psi_bins: int = 10,
    *,
    ref_fixed: bool = False,
) -> float:
    """How far a numeric statistic can move when its sketches are recomputed: ``max |stat' - stat|``.

    A KLL sketch answers each quantile query with a normalised rank error of at most ``rank_error``
    (99% confidence), and its compaction is randomised, so a recomputed window yields a slightly
    different quantile function. The statistic is re-evaluated with each side's quantile function read
    at ``p - rank_error`` and ``p + rank_error`` (the extreme admissible shifts; 8 combinations besides
    the original) and the largest change is returned. For ``ks`` this is ``2 * rank_error``; for
    ``wasserstein`` it is ``integral |Q(p +- e) - Q(p)| dp`` per side. ``ref_fixed``: the reference is a
    stored profile that is not recomputed (the baseline), so only the current side moves. 0.0 when the
    statistic is not computable for the cell.
    """
    base = _numeric_drift(ref, cur, probs, psi_bins, only=statistic).get(statistic, (None, None))[0]
    if base is None or not math.isfinite(base) or ref.quantiles is None or cur.quantiles is None:
        return 0.0
    if statistic not in _SKETCH_STATISTICS:
        return 0.0  # count, null-ratio and mean deltas are exact: the sketches cannot move them
    pa = np.asarray(probs, dtype=float)
    qr, _ = _as_quantiles(ref.quantiles, pa)
    qc, _ = _as_quantiles(cur.quantiles, pa, probs_checked=True)
    grid = _Grid(pa)

    def shifted(q: np.ndarray, e: float) -> np.ndarray:
        """``q`` read at ``p + e`` (clipped to the grid), repaired to be non-decreasing as validation does."""
        return np.maximum.accumulate(np.interp(np.clip(pa + e, pa[0], pa[-1]), pa, q))

    shifts = (-rank_error, 0.0, rank_error)
    cur_moved = [shifted(qc, eb) for eb in shifts]
    worst = 0.0
    for ea in (0.0,) if ref_fixed else shifts:
        ref_moved = shifted(qr, ea)
        for eb, qc_moved in zip(shifts, cur_moved, strict=True):
            if ea == 0.0 and eb == 0.0:
                continue
            v = _distribution_stats(ref, cur, ref_moved, qc_moved, grid, psi_bins, statistic)[statistic][0]
            if v is not None and math.isfinite(v):
                worst = max(worst, abs(v - base))
    return worst


def categorical_drift(
    ref: CategoricalSummary, cur: CategoricalSummary
) -> dict[str, tuple[float | None, float | None]]:
    """Drift statistics of a categorical column: ``{name: (value, p_value_or_None)}``.

    Names: ``chi2`` (statistic and p-value), ``psi``, ``js_distance``, ``tv_distance``, ``l_infinity``,
    ``new_categories`` and ``missing_categories`` (counts, see :func:`align_categories`), ``count_delta``
    and ``null_ratio_delta``. Same None rules as :func:`numeric_drift`.
    """
    names = (
        "chi2",
        "psi",
        "js_distance",
        "tv_distance",
        "l_infinity",
        "new_categories",
        "missing_categories",
    )
    out: StatDict = {name: (None, None) for name in names}
    out.update(_common(ref.n, ref.nulls, cur.n, cur.nulls))
    _, _, _, new, missing = align_categories(ref.counts, cur.counts)
    _, rc, cc, _, _ = align_categories(*complete_cut_lists(ref.counts, cur.counts))
    if ref.n <= 0 or cur.n <= 0 or rc.sum() <= 0 or cc.sum() <= 0:
        return out
    # Validated and normalised once; the same values as chi2_test, psi, js_distance, ... of (rc, cc).
    _check_counts(rc, cc)
    out["chi2"] = _chi2(rc, cc)
    r, c = _normalise(rc), _normalise(cc)
    out["psi"] = (_psi(r, c), None)
    out["js_distance"] = (_js(r, c), None)
    out["tv_distance"] = (_tv(r, c), None)
    out["l_infinity"] = (_linf(r, c), None)
    out["new_categories"] = (float(len(new)), None)
    out["missing_categories"] = (float(len(missing)), None)
    return out


def decide(
    statistic: str,
    value: float | None,
    p_value: float | None,
    threshold: float,
    mode: str,
    n: int,
    m: int,
    alpha: float = 0.05,
    k: int | None = None,
    *,
    sketch_error: float = 0.0,
) -> tuple[bool | None, float | None]:
    """Drift verdict for one statistic: ``(drifted, effective_value)``.

    * ``"distance"``: ``value > threshold``; effective value = value.
    * ``"robust"``: effective value = ``value - critical_value(statistic, n, m, alpha, k)``;
      drifted when it exceeds ``threshold`` (see :func:`critical_value` for ``k``/``sketch_error``).
    * ``"pvalue"``: ``p_value < alpha`` (pass the BH-adjusted p-value); effective value = value.
      ``drifted`` is None when the statistic has no p-value.

    Returns ``(None, None)`` when ``value`` is None/NaN, or in robust mode when ``n`` or ``m`` is 0.
    """
    if value is None or not math.isfinite(value):
        return None, None
    if mode == "distance":
        return bool(value > threshold), float(value)
    if mode == "robust":
        if n <= 0 or m <= 0:
            return None, None
        eff = float(value - critical_value(statistic, n, m, alpha, k, sketch_error=sketch_error))
        return bool(eff > threshold), eff
    if mode == "pvalue":
        if p_value is None or not math.isfinite(p_value):
            return None, float(value)
        return bool(p_value < alpha), float(value)
    raise ValueError(f"unknown mode {mode!r}; expected 'distance', 'robust' or 'pvalue'")
