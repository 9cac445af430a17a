"""Driver-side performance maths vs scikit-learn, on seeded data aggregated with numpy exactly as Spark does."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.isotonic import IsotonicRegression

from lakemon.performance.math import (
    LOG_LOSS_EPS,
    average_precision_error_bound,
    average_precision_from_histogram,
    binary_metrics,
    binary_score_metrics,
    brier_from_sums,
    class_metric_suffixes,
    ece_from_histogram,
    estimate_binary,
    estimate_multiclass,
    fairness_metrics,
    fit_calibration,
    log_loss_from_sums,
    multiclass_metrics,
    ranking_metrics,
    ranking_per_request,
    regression_metrics,
    roc_auc_error_bound,
    roc_auc_from_histogram,
    score_bins,
)

B = 1000
# Documented tolerance of the B=1000 histogram ROC AUC / average precision vs the exact values.
HIST_TOL = 1e-3


# ------------------------------------------------------------------------------------------------------
# aggregation helpers: what the Spark job computes, written with numpy
# ------------------------------------------------------------------------------------------------------
def histograms(y: np.ndarray, p: np.ndarray, n_bins: int = B) -> dict[str, np.ndarray]:
    """Fine score histograms; ``y`` is 1/0 for labeled rows and -1 for unlabeled rows."""
    b = score_bins(p, n_bins)
    lab = y >= 0
    return {
        "bin_pos": np.bincount(b[y == 1], minlength=n_bins),
        "bin_neg": np.bincount(b[y == 0], minlength=n_bins),
        "bin_count": np.bincount(b, minlength=n_bins),
        "bin_sum_score": np.bincount(b[lab], weights=p[lab], minlength=n_bins),
    }


def confusion(y: np.ndarray, pred: np.ndarray) -> tuple[int, int, int, int]:
    tp = int(np.sum((y == 1) & (pred == 1)))
    fp = int(np.sum((y == 0) & (pred == 1)))
    tn = int(np.sum((y == 0) & (pred == 0)))
    fn = int(np.sum((y == 1) & (pred == 0)))
    return tp, fp, tn, fn


def calibrated_binary(seed: int, n: int, a: float = 2.0, b: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Scores from a calibrated model: p ~ Beta(a, b), y ~ Bernoulli(p)."""
    rng = np.random.default_rng(seed)
    p = rng.beta(a, b, n)
    y = (rng.random(n) < p).astype(np.int64)
    return y, p


def scenarios() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Seeded 50k-row score sets; the last squeezes all scores into ~240 of the 1000 bins."""
    out = []
    y, p = calibrated_binary(1, 50_000)
    out.append(("calibrated_beta22", y, p))
    rng = np.random.default_rng(2)  # imbalanced, well separated logits
    y2 = (rng.random(50_000) < 0.05).astype(np.int64)
    p2 = 1 / (1 + np.exp(-(rng.normal(0, 1, 50_000) + 2.5 * y2 - 3)))
    out.append(("imbalanced_logit", y2, p2))
    rng = np.random.default_rng(3)  # weak model, scores squeezed into [0.4, 0.6]
    y3 = (rng.random(50_000) < 0.4).astype(np.int64)
    p3 = np.clip(0.5 + 0.03 * rng.normal(0, 1, 50_000) + 0.02 * y3, 0, 1)
    out.append(("weak_squeezed", y3, p3))
    return out


# ------------------------------------------------------------------------------------------------------
# binary classification
# ------------------------------------------------------------------------------------------------------
def test_binary_threshold_metrics_match_sklearn() -> None:
    y, p = calibrated_binary(10, 20_000, 1.5, 3.0)
    pred = (p >= 0.5).astype(np.int64)
    m = binary_metrics(*confusion(y, pred))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred), abs=1e-12)
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred), abs=1e-12)
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred), abs=1e-12)
    assert m["specificity"] == pytest.approx(skm.recall_score(y, pred, pos_label=0), abs=1e-12)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
    assert m["fpr"] == pytest.approx(fp / (fp + tn), abs=1e-12)
    assert m["fnr"] == pytest.approx(1 - m["recall"], abs=1e-12)
    assert m["predicted_positive_rate"] == pytest.approx(pred.mean(), abs=1e-12)
    assert m["actual_positive_rate"] == pytest.approx(y.mean(), abs=1e-12)
    assert all(isinstance(v, float) for v in m.values())


def test_binary_threshold_metrics_edge_cases() -> None:
    empty = binary_metrics(0, 0, 0, 0)
    assert {k for k, v in empty.items() if v is not None} == {"tp", "fp", "tn", "fn"}
    # every prediction negative: precision undefined, f1 is 0 (sklearn zero_division=0 agrees)
    m = binary_metrics(0, 0, 90, 10)
    assert m["precision"] is None and m["recall"] == 0.0 and m["f1"] == 0.0
    assert m["predicted_positive_rate"] == 0.0 and m["fnr"] == 1.0
    # no actual positives: recall/fnr undefined
    m = binary_metrics(0, 5, 95, 0)
    assert m["recall"] is None and m["fnr"] is None and m["precision"] == 0.0 and m["fpr"] == 0.05
    # only positives, all predicted positive
    m = binary_metrics(7, 0, 0, 0)
    assert m["specificity"] is None and m["fpr"] is None and m["f1"] == 1.0 and m["accuracy"] == 1.0
    with pytest.raises(ValueError):
        binary_metrics(-1, 0, 0, 0)


@pytest.mark.parametrize("name", ["calibrated_beta22", "imbalanced_logit", "weak_squeezed"])
def test_histogram_auc_and_ap_within_bound(name: str) -> None:
    y, p = next((y, p) for n, y, p in scenarios() if n == name)
    h = histograms(y, p)
    auc = roc_auc_from_histogram(h["bin_pos"], h["bin_neg"])
    ap = average_precision_from_histogram(h["bin_pos"], h["bin_neg"])
    auc_err = abs(auc - skm.roc_auc_score(y, p))
    ap_err = abs(ap - skm.average_precision_score(y, p))
    auc_bound = roc_auc_error_bound(h["bin_pos"], h["bin_neg"])
    ap_bound = average_precision_error_bound(h["bin_pos"], h["bin_neg"])
    print(f"{name}: auc_err={auc_err:.2e} (bound {auc_bound:.2e}) ap_err={ap_err:.2e} (bound {ap_bound:.2e})")
    assert auc_err <= auc_bound + 1e-12
    assert ap_err <= ap_bound + 1e-12
    # documented tolerance for scores spread over the grid; squeezed scores only get the (data) bound
    tol = 5 * HIST_TOL if name == "weak_squeezed" else HIST_TOL
    assert auc_err <= HIST_TOL and ap_err <= tol


def test_histogram_auc_and_ap_exact_on_gridded_scores() -> None:
    rng = np.random.default_rng(4)
    y = (rng.random(30_000) < 0.3).astype(np.int64)
    p = np.round(np.clip(rng.normal(0.35 + 0.2 * y, 0.15), 0, 1), 2)  # many ties, coarser than the bins
    h = histograms(y, p)
    assert roc_auc_from_histogram(h["bin_pos"], h["bin_neg"]) == pytest.approx(
        skm.roc_auc_score(y, p), abs=1e-12
    )
    assert average_precision_from_histogram(h["bin_pos"], h["bin_neg"]) == pytest.approx(
        skm.average_precision_score(y, p), abs=1e-12
    )


def test_histogram_metrics_edge_cases() -> None:
    zeros = np.zeros(B)
    pos = np.zeros(B)
    pos[[100, 900]] = [3, 4]
    assert roc_auc_from_histogram(pos, zeros) is None
    assert roc_auc_from_histogram(zeros, pos) is None
    assert roc_auc_error_bound(pos, zeros) is None
    assert average_precision_from_histogram(zeros, pos) is None  # no positives
    assert average_precision_error_bound(zeros, pos) is None
    assert average_precision_from_histogram(pos, zeros) == 1.0  # no negatives, as sklearn
    assert skm.average_precision_score([1] * 7, [0.1] * 3 + [0.9] * 4) == 1.0
    assert ece_from_histogram(zeros, zeros, zeros) is None
    empty = binary_score_metrics(zeros, zeros, zeros, 0.0, 0.0)
    assert all(v is None for v in empty.values())
    # perfect separation / perfectly wrong ranking / everything in one bin
    neg = np.zeros(B)
    neg[50] = 10
    assert roc_auc_from_histogram(pos, neg) == 1.0
    assert roc_auc_from_histogram(neg, pos) == 0.0
    one = np.zeros(B)
    one[500] = 10
    assert roc_auc_from_histogram(one, one) == 0.5
    assert average_precision_from_histogram(one, one) == 0.5
    with pytest.raises(ValueError):
        roc_auc_from_histogram(np.zeros(10), np.zeros(11))
    with pytest.raises(ValueError):
        ece_from_histogram(zeros, zeros, zeros, n_bins=7)  # 1000 is not a multiple of 7
    with pytest.raises(ValueError):
        roc_auc_from_histogram(-pos, neg)


def test_ece_log_loss_brier_and_unlabeled_rows() -> None:
    y, p = calibrated_binary(5, 40_000, 2.0, 5.0)
    # a few exact 1.0 scores (last bin); only on positives, since sklearn clips with the float64 machine
    # epsilon rather than 1e-15, which matters for confidently wrong predictions only
    p = np.where((np.arange(p.size) % 97 == 0) & (y == 1), 1.0, p)
    y_all = np.where(np.arange(y.size) % 5 == 0, -1, y)  # 20% unlabeled
    lab = y_all >= 0
    yl, pl = y_all[lab], p[lab]
    h = histograms(y_all, p)
    assert h["bin_count"].sum() == y.size and h["bin_pos"].sum() + h["bin_neg"].sum() == lab.sum()

    # ECE: direct computation on raw labeled rows with 10 equal-width bins
    coarse = np.minimum(np.floor(pl * 10), 9).astype(int)
    ece = sum(
        (coarse == c).mean() * abs(pl[coarse == c].mean() - yl[coarse == c].mean())
        for c in range(10)
        if np.any(coarse == c)
    )
    assert ece_from_histogram(h["bin_pos"], h["bin_neg"], h["bin_sum_score"]) == pytest.approx(ece, abs=1e-12)
    assert ece < 0.02  # the model is calibrated

    pc = np.clip(pl, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    sum_ll = float(np.sum(-(yl * np.log(pc) + (1 - yl) * np.log(1 - pc))))
    sum_brier = float(np.sum((pl - yl) ** 2))
    assert log_loss_from_sums(sum_ll, lab.sum()) == pytest.approx(skm.log_loss(yl, pl), rel=1e-9)
    assert brier_from_sums(sum_brier, lab.sum()) == pytest.approx(skm.brier_score_loss(yl, pl), abs=1e-12)
    assert log_loss_from_sums(0.0, 0) is None and brier_from_sums(0.0, 0) is None

    m = binary_score_metrics(h["bin_pos"], h["bin_neg"], h["bin_sum_score"], sum_ll, sum_brier)
    assert set(m) == {
        "roc_auc",
        "roc_auc_error_bound",
        "pr_auc",
        "pr_auc_error_bound",
        "ece",
        "log_loss",
        "brier_score",
    }
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(yl, pl), abs=HIST_TOL)
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(yl, pl), abs=HIST_TOL)
    assert m["log_loss"] == pytest.approx(skm.log_loss(yl, pl), rel=1e-9)
    assert m["brier_score"] == pytest.approx(skm.brier_score_loss(yl, pl), abs=1e-12)


def test_score_bins() -> None:
    assert score_bins([0.0, 0.0004, 0.001, 0.5, 0.9999, 1.0, 1.5, -0.2], 1000).tolist() == [
        0,
        0,
        1,
        500,
        999,
        999,
        999,
        0,
    ]


# ------------------------------------------------------------------------------------------------------
# multiclass
# ------------------------------------------------------------------------------------------------------
def test_multiclass_matches_sklearn() -> None:
    rng = np.random.default_rng(6)
    classes = ["cat", "dog", "Bird Song", "never_true", "never_pred"]
    n = 5000
    y = rng.choice(3, n, p=[0.5, 0.3, 0.2])
    y[:20] = 4  # "never_pred" is present in the truth but never predicted
    pred = np.where(rng.random(n) < 0.7, y, rng.choice(4, n))  # predictions in 0..3 only
    pred[pred == 4] = 0
    cm = skm.confusion_matrix(y, pred, labels=range(len(classes)))
    probs = rng.dirichlet(np.ones(len(classes)), n)
    sum_ll = float(-np.sum(np.log(np.clip(probs[np.arange(n), y], LOG_LOSS_EPS, 1))))
    m = multiclass_metrics(cm, classes, sum_log_loss=sum_ll)

    labels = list(range(len(classes)))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    for avg in ("macro", "weighted", "micro"):
        p, r, f, _ = skm.precision_recall_fscore_support(y, pred, labels=labels, average=avg, zero_division=0)
        assert m[f"{avg}_precision"] == pytest.approx(p, abs=1e-12)
        assert m[f"{avg}_recall"] == pytest.approx(r, abs=1e-12)
        assert m[f"{avg}_f1"] == pytest.approx(f, abs=1e-12)
    p, r, f, _ = skm.precision_recall_fscore_support(y, pred, labels=labels, average=None, zero_division=0)
    suffixes = class_metric_suffixes(classes)
    assert suffixes == ["cat", "dog", "bird_song", "never_true", "never_pred"]
    for i, s in enumerate(suffixes):
        for name, ref in (("precision", p[i]), ("recall", r[i]), ("f1", f[i])):
            ours = m[f"{name}_{s}"]
            assert (0.0 if ours is None else ours) == pytest.approx(ref, abs=1e-12)
    assert m["precision_never_pred"] is None and m["recall_never_pred"] == 0.0 and m["f1_never_pred"] == 0.0
    assert m["recall_never_true"] is None and m["precision_never_true"] == 0.0
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, probs, labels=labels), rel=1e-9)
    assert multiclass_metrics(cm, classes)["log_loss"] is None
    # rows whose true class has no probability (no score column for it, or a NULL score) are in the
    # confusion matrix but not in the log loss: its mean is over the rows that have one
    scored = rng.random(n) < 0.9
    sum_scored = float(-np.sum(np.log(np.clip(probs[np.arange(n), y][scored], LOG_LOSS_EPS, 1))))
    expected = skm.log_loss(y[scored], probs[scored], labels=labels)
    got = multiclass_metrics(cm, classes, sum_log_loss=sum_scored, log_loss_rows=int(scored.sum()))[
        "log_loss"
    ]
    assert got == pytest.approx(expected, rel=1e-9)


def test_multiclass_edge_cases() -> None:
    m = multiclass_metrics(np.zeros((3, 3), dtype=int), ["a", "b", "c"])
    assert m["accuracy"] is None and m["weighted_f1"] is None and m["micro_f1"] is None
    assert m["macro_f1"] == 0.0  # sklearn zero_division=0 semantics
    assert m["precision_a"] is None and m["recall_a"] is None and m["f1_a"] is None
    # all predictions one class
    m = multiclass_metrics(np.array([[5, 0], [3, 0]]), [0, 1])
    assert m["accuracy"] == 5 / 8 and m["precision_1"] is None and m["recall_1"] == 0.0
    with pytest.raises(ValueError):
        multiclass_metrics(np.zeros((2, 2)), ["a", "b", "c"])


def test_class_metric_suffixes_are_unique() -> None:
    assert class_metric_suffixes(["A", "a", "b-c", "", "ünï"]) == ["a_0", "a_1", "b_c", "class", "n"]
    assert class_metric_suffixes([1, 2, 10]) == ["1", "2", "10"]


# ------------------------------------------------------------------------------------------------------
# regression
# ------------------------------------------------------------------------------------------------------
def regression_sums(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    err = pred - y
    nz = y != 0
    return {
        "n": y.size,
        "sum_err": err.sum(),
        "sum_abs_err": np.abs(err).sum(),
        "sum_sq_err": (err**2).sum(),
        "sum_y": y.sum(),
        "sum_y2": (y**2).sum(),
        "max_abs_err": np.abs(err).max() if y.size else None,
        "sum_ape": (np.abs(err[nz]) / np.abs(y[nz])).sum(),
        "n_ape": int(nz.sum()),
        "zero_targets": int((~nz).sum()),
    }


def test_regression_matches_sklearn() -> None:
    rng = np.random.default_rng(7)
    y = rng.normal(50, 12, 30_000)
    y[::100] = 0.0
    pred = y * 0.9 + rng.normal(3, 4, y.size)
    m = regression_metrics(**regression_sums(y, pred))
    nz = y != 0
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, pred), rel=1e-10)
    assert m["mse"] == pytest.approx(skm.mean_squared_error(y, pred), rel=1e-10)
    assert m["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y, pred)), rel=1e-10)
    assert m["r2"] == pytest.approx(skm.r2_score(y, pred), rel=1e-9)
    assert m["mape"] == pytest.approx(skm.mean_absolute_percentage_error(y[nz], pred[nz]), rel=1e-10)
    assert m["mape_skipped_zero_targets"] == 300.0
    assert m["mean_error"] == pytest.approx(np.mean(pred - y), rel=1e-10)
    assert m["max_abs_error"] == pytest.approx(skm.max_error(y, pred), rel=1e-12)


def test_regression_edge_cases() -> None:
    empty = regression_metrics(0, 0.0, 0.0, 0.0, 0.0, 0.0, None, 0.0, 0, 0)
    assert {k for k, v in empty.items() if v is not None} == {"mape_skipped_zero_targets"}
    y = np.full(100, 3.7)  # constant target: r2 undefined
    m = regression_metrics(**regression_sums(y, y + 0.1))
    assert m["r2"] is None and m["mae"] == pytest.approx(0.1)
    z = np.zeros(10)  # only zero targets: mape undefined
    m = regression_metrics(**regression_sums(z, z + 1))
    assert m["mape"] is None and m["mape_skipped_zero_targets"] == 10.0 and m["r2"] is None


# ------------------------------------------------------------------------------------------------------
# ranking
# ------------------------------------------------------------------------------------------------------
def test_ranking_per_request_semantics() -> None:
    r = ranking_per_request(["a", "x", "b", "y", "c"], {"a", "b", "z"}, k=3)
    assert r["precision"] == pytest.approx(2 / 3)
    assert r["recall"] == pytest.approx(2 / 3)
    assert r["hit"] == 1.0 and r["rr"] == 1.0
    assert r["ap"] == pytest.approx((1 / 1 + 2 / 3) / 3)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert r["ndcg"] == pytest.approx((1 + 1 / math.log2(4)) / idcg)
    # first hit beyond k: rr uses the whole list, the @k metrics are 0
    r = ranking_per_request(["x", "y", "a"], {"a"}, k=2)
    assert r == {
        "precision": 0.0,
        "recall": 0.0,
        "ndcg": 0.0,
        "ap": 0.0,
        "hit": 0.0,
        "rr": pytest.approx(1 / 3),
    }
    # a duplicated relevant item counts once; short list still divides precision by k
    r = ranking_per_request(["a", "a"], {"a", "b"}, k=5)
    assert r["precision"] == pytest.approx(0.2) and r["recall"] == 0.5 and r["ap"] == pytest.approx(0.5)
    assert ranking_per_request(["a"], set(), k=3) == dict.fromkeys(
        ["precision", "recall", "ndcg", "ap", "hit", "rr"], 0.0
    )
    assert ranking_per_request([], {"a"}, k=3)["ndcg"] == 0.0
    with pytest.raises(ValueError):
        ranking_per_request(["a"], {"a"}, k=0)


def test_ranking_ndcg_matches_sklearn_and_aggregation() -> None:
    rng = np.random.default_rng(8)
    catalog = 200
    ks = [1, 5, 10]
    requests = []
    for _ in range(50):
        ranked = rng.permutation(catalog)[:20].tolist()
        relevant = set(rng.choice(catalog, rng.integers(1, 8), replace=False).tolist())
        relevant |= set(rng.choice(ranked, rng.integers(0, 3), replace=False).tolist())
        requests.append((ranked, relevant))

    for ranked, relevant in requests[:10]:
        y_true = np.zeros((1, catalog))
        y_true[0, list(relevant)] = 1
        y_score = np.zeros((1, catalog))
        y_score[0, ranked] = np.arange(len(ranked), 0, -1)  # unranked items score 0, below every ranked one
        for k in ks:
            ref = skm.ndcg_score(y_true, y_score, k=k, ignore_ties=True)
            assert ranking_per_request(ranked, relevant, k)["ndcg"] == pytest.approx(ref, abs=1e-12)

    sums: dict[str, float] = {"n_requests": len(requests), "sum_rr": 0.0}
    for k in ks:
        for name in ("precision", "recall", "ndcg", "ap", "hit"):
            sums[f"sum_{name}_at_{k}"] = sum(ranking_per_request(r, s, k)[name] for r, s in requests)
    sums["sum_rr"] = sum(ranking_per_request(r, s, 1)["rr"] for r, s in requests)
    sums["distinct_recommended"] = len({i for r, _ in requests for i in r[: max(ks)]})
    sums["catalog_size"] = catalog
    m = ranking_metrics(sums, ks)
    expected_keys = {f"{n}_at_{k}" for k in ks for n in ("precision", "recall", "ndcg", "map", "hit_rate")}
    assert set(m) == expected_keys | {"mrr", "catalog_coverage"}
    assert m["ndcg_at_5"] == pytest.approx(
        np.mean([ranking_per_request(r, s, 5)["ndcg"] for r, s in requests])
    )
    assert m["map_at_10"] == pytest.approx(
        np.mean([ranking_per_request(r, s, 10)["ap"] for r, s in requests])
    )
    assert m["catalog_coverage"] == pytest.approx(sums["distinct_recommended"] / catalog)
    assert 0 < m["mrr"] <= 1 and 0 < m["hit_rate_at_10"] <= 1

    zero = {k: 0.0 for k in sums}
    zm = ranking_metrics(zero, ks)
    assert all(v is None for v in zm.values())
    del zero["distinct_recommended"], zero["catalog_size"]
    assert ranking_metrics(zero, ks)["catalog_coverage"] is None


# ------------------------------------------------------------------------------------------------------
# label-free performance estimation (CBPE)
# ------------------------------------------------------------------------------------------------------
def test_fit_calibration_is_weighted_isotonic_regression() -> None:
    rng = np.random.default_rng(9)
    n = 100_000
    p_true = rng.beta(2, 2, n)
    y = (rng.random(n) < p_true).astype(np.int64)
    score = p_true**2  # miscalibrated but monotone
    h = histograms(y, score)
    cal = fit_calibration(h["bin_pos"], h["bin_neg"], n_bins=B)
    w = h["bin_pos"] + h["bin_neg"]
    nz = w > 0
    centres = (np.arange(B) + 0.5) / B
    iso = IsotonicRegression().fit(centres[nz], h["bin_pos"][nz] / w[nz], sample_weight=w[nz])
    assert np.allclose(cal[nz], iso.predict(centres[nz]), atol=1e-12)
    assert np.all(np.diff(cal) >= -1e-15) and cal.min() >= 0 and cal.max() <= 1
    # the learned map recovers sqrt(score) on well-populated bins
    mid = (centres > 0.2) & (centres < 0.8)
    assert np.max(np.abs(cal[mid] - np.sqrt(centres[mid]))) < 0.08


def test_fit_calibration_interpolates_empty_bins() -> None:
    pos = np.zeros(10)
    neg = np.zeros(10)
    pos[[2, 7]] = [1, 9]
    neg[[2, 7]] = [9, 1]
    cal = fit_calibration(pos, neg)
    assert cal[:3].tolist() == pytest.approx([0.1, 0.1, 0.1])
    assert cal[7:].tolist() == pytest.approx([0.9, 0.9, 0.9])
    assert cal[3:7].tolist() == pytest.approx([0.26, 0.42, 0.58, 0.74])
    # violators pooled
    cal = fit_calibration([3, 1, 0], [1, 3, 0])
    assert cal.tolist() == pytest.approx([0.5, 0.5, 0.5])
    with pytest.raises(ValueError):
        fit_calibration(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError):
        fit_calibration(pos, neg, n_bins=1000)


@pytest.mark.parametrize("power", [1.0, 2.0], ids=["calibrated", "miscalibrated"])
def test_estimate_binary_close_to_realized(power: float) -> None:
    rng = np.random.default_rng(11)
    n = 100_000
    # reference: labeled baseline; analysis: covariate shift towards negatives, no labels used
    p_ref = rng.beta(2, 2, n)
    y_ref = (rng.random(n) < p_ref).astype(np.int64)
    p_ana = rng.beta(1.5, 3, n)
    y_ana = (rng.random(n) < p_ana).astype(np.int64)
    s_ref, s_ana = p_ref**power, p_ana**power  # the model's scores
    h_ref = histograms(y_ref, s_ref)
    cal = fit_calibration(h_ref["bin_pos"], h_ref["bin_neg"])
    h_ana = histograms(np.full(n, -1), s_ana)  # unlabeled
    threshold = 0.3
    est = estimate_binary(h_ana["bin_count"], cal, threshold, B)
    real = binary_metrics(*confusion(y_ana, (s_ana >= threshold).astype(np.int64)))
    real_auc = skm.roc_auc_score(y_ana, s_ana)
    diffs = {k: abs(est[f"estimated_{k}"] - real[k]) for k in ("accuracy", "precision", "recall", "f1")}
    diffs["roc_auc"] = abs(est["estimated_roc_auc"] - real_auc)
    print(f"CBPE binary power={power}: " + ", ".join(f"{k} {v:.4f}" for k, v in diffs.items()))
    assert max(diffs.values()) < 0.015


def test_estimate_binary_threshold_alignment_and_edges() -> None:
    count = np.array([10, 10, 10, 10])
    cal = np.array([0.0, 0.0, 1.0, 1.0])
    est = estimate_binary(count, cal, 0.5)
    assert est["estimated_accuracy"] == 1.0 and est["estimated_f1"] == 1.0 and est["estimated_roc_auc"] == 1.0
    with pytest.warns(UserWarning):
        est2 = estimate_binary(count, cal, 0.55)  # rounded to 0.5
    assert est2 == est
    est = estimate_binary(count, cal, 1.0)  # nothing predicted positive
    assert est["estimated_precision"] is None and est["estimated_recall"] == 0.0
    est = estimate_binary(np.zeros(4), cal, 0.5)
    assert all(v is None for v in est.values())
    with pytest.raises(ValueError):
        estimate_binary(count, cal + 0.5, 0.5)


def test_estimate_multiclass_close_to_realized() -> None:
    rng = np.random.default_rng(12)
    n, classes = 100_000, ["a", "b", "c"]
    probs = rng.dirichlet([0.6, 0.4, 0.3], n)  # calibrated by construction
    cum = probs.cumsum(axis=1)
    y = (rng.random((n, 1)) > cum).sum(axis=1)
    y = np.minimum(y, 2)
    pred = probs.argmax(axis=1)
    onehot_pred = np.eye(3)[pred]
    est = estimate_multiclass(
        sum_max_prob=probs.max(axis=1).sum(),
        n=n,
        sum_prob_per_class=probs.sum(axis=0),
        sum_prob_where_pred_per_class=(probs * onehot_pred).sum(axis=0),
        n_pred_per_class=onehot_pred.sum(axis=0),
        classes=classes,
    )
    real = multiclass_metrics(skm.confusion_matrix(y, pred, labels=[0, 1, 2]), classes)
    diffs = {"accuracy": abs(est["estimated_accuracy"] - real["accuracy"])}
    for name in ("precision", "recall", "f1"):
        diffs[f"macro_{name}"] = abs(est[f"estimated_macro_{name}"] - real[f"macro_{name}"])
        for c in classes:
            diffs[f"{name}_{c}"] = abs(est[f"estimated_{name}_{c}"] - real[f"{name}_{c}"])
    print("CBPE multiclass: " + ", ".join(f"{k} {v:.4f}" for k, v in diffs.items()))
    assert max(diffs.values()) < 0.015
    empty = estimate_multiclass(0.0, 0, [0, 0], [0, 0], [0, 0], ["x", "y"])
    assert empty["estimated_accuracy"] is None and empty["estimated_precision_x"] is None
    assert empty["estimated_macro_f1"] == 0.0


# ------------------------------------------------------------------------------------------------------
# fairness
# ------------------------------------------------------------------------------------------------------
def test_fairness_metrics() -> None:
    group = (30, 10, 50, 10)  # ppr 0.4, tpr 0.75, precision 0.75, fpr 1/6
    rest = (100, 100, 700, 100)  # ppr 0.2, tpr 0.5, precision 0.5, fpr 0.125
    m = fairness_metrics(group, rest)
    assert m["statistical_parity_difference"] == pytest.approx(0.2)
    assert m["disparate_impact_ratio"] == pytest.approx(2.0)
    assert m["equal_opportunity_difference"] == pytest.approx(0.25)
    assert m["predictive_parity_difference"] == pytest.approx(0.25)
    assert m["predictive_equality_difference"] == pytest.approx(1 / 6 - 0.125)
    # cross-check against sklearn on rows rebuilt from the counts
    yg = np.repeat([1, 0, 0, 1], group)
    pg = np.repeat([1, 1, 0, 0], group)
    yr = np.repeat([1, 0, 0, 1], rest)
    pr = np.repeat([1, 1, 0, 0], rest)
    assert m["equal_opportunity_difference"] == pytest.approx(
        skm.recall_score(yg, pg) - skm.recall_score(yr, pr)
    )
    assert m["predictive_parity_difference"] == pytest.approx(
        skm.precision_score(yg, pg) - skm.precision_score(yr, pr)
    )
    # rest predicts nothing positive: ratio undefined, precision gap undefined
    m = fairness_metrics((1, 1, 1, 1), (0, 0, 5, 5))
    assert m["disparate_impact_ratio"] is None and m["predictive_parity_difference"] is None
    assert m["statistical_parity_difference"] == 0.5
    m = fairness_metrics((0, 0, 0, 0), rest)
    assert all(v is None for v in m.values())
    with pytest.raises(ValueError):
        fairness_metrics((1, 2, 3), rest)


def test_fairness_selection_rates_over_all_scored_rows() -> None:
    """Statistical parity and disparate impact from (predicted positives, rows) of every scored row; the
    label-based gaps still come from the confusion counts."""
    group, rest = (30, 10, 50, 10), (100, 100, 700, 100)
    m = fairness_metrics(group, rest, (60, 120), (150, 1200))  # selection rates 0.5 and 0.125
    assert m["statistical_parity_difference"] == pytest.approx(0.375)
    assert m["disparate_impact_ratio"] == pytest.approx(4.0)
    assert m["equal_opportunity_difference"] == pytest.approx(0.25)
    assert m["predictive_equality_difference"] == pytest.approx(1 / 6 - 0.125)
    m = fairness_metrics(group, rest, (5, 10), (0, 0))  # the rest has no scored rows
    assert m["statistical_parity_difference"] is None and m["disparate_impact_ratio"] is None
    with pytest.raises(ValueError):
        fairness_metrics(group, rest, (1, 2), None)
    with pytest.raises(ValueError):
        fairness_metrics(group, rest, (1, 2, 3), (1, 2))


def test_module_does_not_import_pyspark() -> None:
    code = "import sys, lakemon.performance.math; assert 'pyspark' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
