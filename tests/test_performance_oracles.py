"""Oracle tests through a full monitoring run (``run_monitor`` writing Delta tables): every ranking metric,
the fairness gaps of protected slices and the label-free estimate (CBPE) against references computed here
independently, per window and slice, from the raw rows with numpy / plain python / scikit-learn."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F
from sklearn import metrics as skm

from lakemon import io
from lakemon.config import parse_config
from lakemon.job import run_monitor
from lakemon.tables import PERFORMANCE_METRICS

D0 = datetime(2026, 3, 2)  # a Monday, UTC
TIGHT = 1e-12


def _base_config(name: str, problem: str, source: dict, out: str, **extra) -> dict:
    cfg = {
        "monitor": name,
        "model": {"name": "m"},
        "problem_type": problem,
        "source": {"timestamp": "ts", "id": "id", "features": {"numeric": ["x1"]}, **source},
        "granularity": "1 day",
        "output": {"path": out},
        "mlflow": {"experiment": "t", "enabled": False},  # not under test here; saves time
        "drift": {"enabled": False},
        "quality": {"default_checks": False},
        "alerts": {"default_rules": False},
    }
    cfg.update(extra)
    return cfg


def _perf_rows(spark, cfg) -> dict:
    out = io.Output(cfg.output).read(spark, PERFORMANCE_METRICS).where(F.col("class").isNull())
    return {(r["window_start"], r["slice_key"], r["slice_value"], r["metric"]): r for r in out.collect()}


# ---------------------------------------------------------------------------------------------------------
# ranking
# ---------------------------------------------------------------------------------------------------------
CATALOG = [f"i{j:03d}" for j in range(150)]  # small enough for the item sketch's exact mode (< 384 items)
KS = (3, 10)


def _ranking_log(seed: int = 21, n: int = 1400, days: int = 2) -> tuple[list[tuple], list[tuple]]:
    """Recommendation requests (ranked item lists) and their later clicks (the labels table).

    Lists of 4 to 14 items drawn by popularity; about 8% repeat an earlier item (a list merged from two
    candidate sources); clicks fall on listed items with a probability decreasing with rank, sometimes on
    an item that was not recommended. About 10% of requests are never labeled, 10% get an empty click list
    and 8% get a first click list that a later label row supersedes (the latest label wins).
    """
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, len(CATALOG) + 1) ** 0.8
    popularity /= popularity.sum()
    requests, labels = [], []
    for i in range(n):
        rid = f"q{i}"
        ts = D0 + timedelta(seconds=int(rng.integers(0, days * 86400)))
        length = int(rng.integers(4, 15))
        ranked = [CATALOG[j] for j in rng.choice(len(CATALOG), length, replace=False, p=popularity)]
        if rng.random() < 0.08:  # a repeated item, somewhere after its first position
            pos = int(rng.integers(1, length))
            ranked.insert(pos, ranked[int(rng.integers(0, pos))])
        platform = "app" if rng.random() < 0.6 else "web"
        requests.append((rid, ts, float(rng.normal()), platform, ranked))
        u = rng.random()
        if u < 0.10:
            continue  # never labeled
        label_ts = ts + timedelta(hours=1)
        if u < 0.20:
            clicked: list[str] = []
        else:
            p_click = 0.45 / np.sqrt(np.arange(1, len(ranked) + 1))
            clicked = [it for it, c in zip(ranked, rng.random(len(ranked)) < p_click, strict=True) if c]
            if rng.random() < 0.3:  # relevant but not recommended
                clicked.append(CATALOG[int(rng.integers(0, len(CATALOG)))])
            clicked = list(dict.fromkeys(clicked))
        if rng.random() < 0.08:  # an earlier, superseded label row
            labels.append((rid, label_ts, [CATALOG[int(rng.integers(0, len(CATALOG)))]]))
            label_ts += timedelta(hours=2)
        labels.append((rid, label_ts, clicked))
    return requests, labels


def _ref_request(ranked: list[str], relevant: set[str], k: int) -> dict[str, float]:
    """Textbook per-request metrics at cut-off k over the list as served (positions 1..k of ``ranked``).

    An item repeated in the list is relevant at its first position only (a repeat shows nothing new);
    relevance is binary. precision = hits / k; recall = hits / |relevant|; DCG = sum over hit positions i
    of 1 / log2(i + 1), IDCG = the same for min(k, |relevant|) hits at positions 1..; AP@k = sum over hit
    positions i of precision@i, / min(k, |relevant|); hit = any hit; RR = 1 / first relevant position in the
    whole list (0 if none). A request without relevant items scores 0 on every metric (Spark MLlib's
    RankingMetrics convention, documented in ``lakemon.performance.math.ranking_per_request``).
    """
    if not relevant:
        return dict.fromkeys(("precision", "recall", "ndcg", "ap", "hit", "rr"), 0.0)
    first_pos = {}
    for pos, item in enumerate(ranked, start=1):
        first_pos.setdefault(item, pos)
    hit_positions = sorted(p for item, p in first_pos.items() if item in relevant)
    top = [p for p in hit_positions if p <= k]
    dcg = sum(1.0 / math.log2(p + 1) for p in top)
    n_ideal = min(k, len(relevant))
    idcg = sum(1.0 / math.log2(p + 1) for p in range(1, n_ideal + 1))
    ap = sum((n + 1) / p for n, p in enumerate(top)) / n_ideal
    return {
        "precision": len(top) / k,
        "recall": len(top) / len(relevant),
        "ndcg": dcg / idcg,
        "ap": ap,
        "hit": 1.0 if top else 0.0,
        "rr": 1.0 / hit_positions[0] if hit_positions else 0.0,
    }


def _sklearn_ndcg(ranked: list[str], relevant: set[str], k: int) -> float | None:
    """scikit-learn's ``ndcg_score`` for one request, where its definition matches ours: it ranks catalog
    items by score, so it cannot see a repeated item nor a list shorter than k (it would fill the top k
    with unranked items). ``None`` for such requests."""
    if len(set(ranked[:k])) < k or not relevant:
        return None
    items = sorted(set(CATALOG) | set(ranked) | relevant)
    col = {it: j for j, it in enumerate(items)}
    y_true = np.zeros((1, len(items)))
    y_true[0, [col[it] for it in relevant]] = 1.0
    y_score = np.zeros((1, len(items)))
    for pos, it in reversed(list(enumerate(ranked))):  # reversed: a repeated item keeps its first position
        y_score[0, col[it]] = len(ranked) - pos
    return float(skm.ndcg_score(y_true, y_score, k=k, ignore_ties=True))


@pytest.fixture(scope="module")
def ranking_run(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ranking")
    requests, labels = _ranking_log()
    log_path, lab_path, out = str(tmp / "requests"), str(tmp / "clicks"), str(tmp / "mon")
    spark.createDataFrame(
        requests, "id string, ts timestamp, x1 double, platform string, recommended array<string>"
    ).write.format("delta").save(log_path)
    spark.createDataFrame(
        labels, "request_id string, clicked_at timestamp, clicked array<string>"
    ).write.format("delta").save(lab_path)
    raw = _base_config(
        "oracle_ranking",
        "ranking",
        {"table": log_path, "prediction": "recommended"},
        out,
        labels={"table": lab_path, "id": "request_id", "column": "clicked", "timestamp": "clicked_at"},
        slices=[{"column": "platform"}],
        performance={"min_labeled": 20, "ranking": {"k": list(KS), "catalog_size": len(CATALOG)}},
    )
    cfg = parse_config(raw)
    run_monitor(spark, cfg, as_of=D0 + timedelta(days=3), deliver=False)
    return requests, labels, cfg


def test_ranking_metrics_equal_reference_per_window_and_slice(spark, ranking_run):
    requests, labels, cfg = ranking_run
    got = _perf_rows(spark, cfg)
    latest: dict[str, tuple[datetime, list[str]]] = {}
    for rid, ts, clicked in labels:
        if rid not in latest or ts > latest[rid][0]:
            latest[rid] = (ts, clicked)
    df = pd.DataFrame(requests, columns=["id", "ts", "x1", "platform", "recommended"])
    df["window"] = df["ts"].dt.floor("D")
    df["relevant"] = [set(latest[r][1]) if r in latest else None for r in df["id"]]

    sklearn_checked = 0
    cells = 0
    for w, wdf in df.groupby("window"):
        for key, val in [(None, None), ("platform", "app"), ("platform", "web")]:
            part = wdf if key is None else wdf[wdf[key] == val]
            lab = part[part["relevant"].notna()]
            per_k = {
                k: [_ref_request(r, s, k) for r, s in zip(lab["recommended"], lab["relevant"], strict=True)]
                for k in KS
            }
            for k in KS:
                for (ranked, relevant), ref in zip(
                    zip(lab["recommended"], lab["relevant"], strict=True), per_k[k], strict=True
                ):
                    sk = _sklearn_ndcg(ranked, relevant, k)
                    if sk is not None:
                        assert ref["ndcg"] == pytest.approx(sk, abs=TIGHT)
                        sklearn_checked += 1
            expected = {"labeled_count": float(len(lab))}
            for k in KS:
                for name, metric in (
                    ("precision", "precision"),
                    ("recall", "recall"),
                    ("ndcg", "ndcg"),
                    ("ap", "map"),
                    ("hit", "hit_rate"),
                ):
                    expected[f"{metric}_at_{k}"] = float(np.mean([r[name] for r in per_k[k]]))
            expected["mrr"] = float(np.mean([r["rr"] for r in per_k[KS[0]]]))
            shown = {it for ranked in part["recommended"] for it in ranked[: max(KS)]}
            expected["catalog_coverage"] = len(shown) / len(CATALOG)
            wkey = w.to_pydatetime()
            for metric, value in expected.items():
                row = got[(wkey, key, val, metric)]
                assert row["value"] == pytest.approx(value, abs=TIGHT), (w, key, val, metric)
                assert row["row_count"] == len(part)
                assert row["labeled_count"] == len(lab)
            written = {m for (ws, k_, v_, m) in got if (ws, k_, v_) == (wkey, key, val)}
            assert written == set(expected) | {"label_coverage"}
            cells += 1
    assert cells == 2 * 3
    assert sklearn_checked > 500


# ---------------------------------------------------------------------------------------------------------
# binary: fairness of protected slices and the label-free estimate, one run
# ---------------------------------------------------------------------------------------------------------
CONCENTRATION = (1.0, 2.5, 6.0, 14.0, 4.0)  # per day: low = confident scores = high accuracy
GROUP_MEAN = {"A": 0.45, "B": 0.6, "C": 0.3}
UNLABELED_DAY = 4


def _binary_rows(rng: np.random.Generator, n: int, start: datetime, days: int, prefix: str) -> pd.DataFrame:
    """Calibrated scores (label ~ Bernoulli(score)) whose spread changes from day to day and whose mean
    depends on the group, so accuracy moves across windows and the groups differ."""
    day = rng.integers(0, days, n)
    group = rng.choice(list(GROUP_MEAN), n, p=[0.5, 0.3, 0.2])
    mean = np.array([GROUP_MEAN[g] for g in group])
    conc = np.array(CONCENTRATION)[day % len(CONCENTRATION)]
    score = rng.beta(conc * mean, conc * (1 - mean))
    age = rng.integers(18, 85, n).astype(float)
    age[rng.random(n) < 0.05] = np.nan  # the senior slice also gets a __null__ value
    return pd.DataFrame(
        {
            "id": [f"{prefix}{i}" for i in range(n)],
            "ts": [
                start + timedelta(days=int(d), seconds=int(s))
                for d, s in zip(day, rng.integers(0, 86400, n), strict=True)
            ],
            "x1": rng.normal(size=n),
            "score": score,
            "prediction": (score >= 0.5).astype(int),
            "label": (rng.random(n) < score).astype(int),
            "group": group,
            "age": age,
            "channel": rng.choice(["web", "store"], n),
        }
    )


@pytest.fixture(scope="module")
def binary_run(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fair")
    rng = np.random.default_rng(31)
    truth = _binary_rows(rng, 10_000, D0, len(CONCENTRATION), "r")
    log = truth.copy()
    # labels arrive for most rows, selectively (predicted negatives of group B are followed up less),
    # and not at all on the last day
    follow_up = np.where((log["group"] == "B") & (log["prediction"] == 0), 0.6, 0.92)
    unlabeled = (rng.random(len(log)) > follow_up) | (log["ts"] >= D0 + timedelta(days=UNLABELED_DAY))
    log["label"] = log["label"].astype("Int64").mask(unlabeled)
    # the baseline (training set): scores over the whole range, labeled, before the monitored days
    base = _binary_rows(rng, 10_000, D0 - timedelta(days=30), 1, "b")
    base["score"] = rng.uniform(0, 1, len(base))
    base["prediction"] = (base["score"] >= 0.5).astype(int)
    base["label"] = (rng.random(len(base)) < base["score"]).astype(int)
    for frame, name in ((log, "log"), (base, "base")):
        spark.createDataFrame(frame).write.format("delta").save(str(tmp / name))
    raw = _base_config(
        "oracle_binary",
        "binary",
        {"table": str(tmp / "log"), "prediction": "prediction", "score": "score"},
        str(tmp / "mon"),
        labels={"column": "label"},
        baseline={"table": str(tmp / "base")},
        slices=[
            {"column": "group", "protected": True},
            {"name": "senior", "expression": "age >= 60", "protected": True},
            {"column": "channel"},
        ],
        performance={"min_labeled": 20},
    )
    cfg = parse_config(raw)
    run_monitor(spark, cfg, as_of=D0 + timedelta(days=len(CONCENTRATION)), deliver=False)
    return truth, log, cfg


def _protected_groups(df: pd.DataFrame) -> list[tuple[str, str, pd.Series]]:
    age = df["age"]
    return [
        *[("group", g, df["group"] == g) for g in GROUP_MEAN],
        ("senior", "true", age >= 60),
        ("senior", "false", age < 60),
        ("senior", "__null__", age.isna()),
    ]


FAIRNESS = (
    "statistical_parity_difference",
    "disparate_impact_ratio",
    "equal_opportunity_difference",
    "predictive_parity_difference",
    "predictive_equality_difference",
)


def test_fairness_of_protected_slices_vs_the_rest(spark, binary_run):
    """Each protected slice value (``__null__`` of the expression slice included) against the rest of its
    window's population, i.e. every other row of the window. Statistical parity and disparate impact
    compare selection rates over every scored row (they need no labels, and labels here are missing
    selectively); TPR, precision and FPR gaps use the labeled rows' confusion matrices."""
    _truth, log, cfg = binary_run
    got = _perf_rows(spark, cfg)
    log = log.assign(window=log["ts"].dt.floor("D"))
    checked = 0
    for w, wdf in log.groupby("window"):
        wkey = w.to_pydatetime()
        for key, val, mask in _protected_groups(wdf):
            group, rest = wdf[mask], wdf[~mask]  # the rest of the window's population
            # selection rates need no labels: every scored row of each side
            sel_g, sel_r = group["prediction"].mean(), rest["prediction"].mean()
            expected = {
                "statistical_parity_difference": sel_g - sel_r,
                "disparate_impact_ratio": sel_g / sel_r,
            }
            if w != D0 + timedelta(days=UNLABELED_DAY):
                rates = {}
                for side, part in (("g", group), ("r", rest)):
                    lab = part[part["label"].notna()]
                    y, yhat = lab["label"].astype(int), lab["prediction"]
                    tn, fp, fn, tp = skm.confusion_matrix(y, yhat, labels=[0, 1]).ravel()
                    rates[side] = {
                        "tpr": skm.recall_score(y, yhat),
                        "precision": skm.precision_score(y, yhat),
                        "fpr": fp / (fp + tn),
                    }
                    assert tp + fn > 0 and tn + fp > 0
                expected["equal_opportunity_difference"] = rates["g"]["tpr"] - rates["r"]["tpr"]
                expected["predictive_parity_difference"] = rates["g"]["precision"] - rates["r"]["precision"]
                expected["predictive_equality_difference"] = rates["g"]["fpr"] - rates["r"]["fpr"]
            for metric in FAIRNESS:
                row = got[(wkey, key, val, metric)]
                if metric in expected:
                    assert row["value"] == pytest.approx(expected[metric], abs=TIGHT), (w, key, val, metric)
                    checked += 1
                else:  # no labels in the window: the label-based gaps are undefined, with a reason
                    assert row["value"] is None and "too few labeled rows" in row["reason"]
    assert checked == 4 * 6 * 5 + 6 * 2
    # only protected slices get fairness rows, and never the population
    assert not any(m in FAIRNESS for (_w, k, _v, m) in got if k in (None, "channel"))


def _accuracy_sd(scores: pd.Series) -> float:
    """Sampling sd of the accuracy realized on rows with calibrated scores (threshold 0.5): each row is
    correct with probability max(s, 1 - s), independently."""
    q = np.maximum(scores, 1 - scores).to_numpy()
    return float(np.sqrt(np.sum(q * (1 - q))) / len(q))


def test_label_free_estimate_tracks_realized_accuracy(spark, binary_run):
    """CBPE (calibrated on the labeled baseline) against the accuracy realized in the same windows.

    The job writes ``estimated_*`` for every window and slice with enough rows, labeled or not, from the
    score histogram of all its rows. estimated - realized = (estimated - expected accuracy given the
    scores: calibration error of the isotonic fit on the 10,000-row baseline, measured 0.0079 at most,
    asserted < 0.01) + (expected - realized: label sampling noise, sd ~0.01 per window of ~1,900 labeled
    rows, computed below). The mean of |N(0, sd)| over the 4 labeled windows is 0.8 sd with an sd of
    0.3 sd, so 2 sd bounds the noise part at ~4 sigma; 0.01 covers the calibration part (and the <= 0.002
    shift of the expected accuracy on the selectively labeled rows). Measured (seeded, deterministic):
    realized accuracy 0.665 to 0.841, mean abs error 0.0107 against a tolerance of 0.0299; on the
    unlabeled window 0.7127 estimated vs 0.7154 from the withheld labels.
    """
    truth, log, cfg = binary_run
    got = _perf_rows(spark, cfg)
    windows = sorted({ws for (ws, k, _v, m) in got if k is None and m == "estimated_accuracy"})
    assert len(windows) == len(CONCENTRATION)
    for (ws, k, v, m), row in got.items():  # wherever accuracy is realized, it is estimated too
        if m == "accuracy" and row["value"] is not None:
            assert got[(ws, k, v, "estimated_accuracy")]["value"] is not None
    truth = truth.assign(window=truth["ts"].dt.floor("D"))
    log = log.assign(window=log["ts"].dt.floor("D"))
    est, real, noise, calib_err = [], [], [], []
    for ws in windows:
        e = got[(ws, None, None, "estimated_accuracy")]["value"]
        # calibration part alone: the expected accuracy of the window's rows given their (calibrated) scores
        rows = truth[truth["window"] == ws]
        calib_err.append(abs(e - float(np.mean(np.maximum(rows["score"], 1 - rows["score"])))))
        if ws == D0 + timedelta(days=UNLABELED_DAY):
            # the use case: no labels yet; the estimate still matches the labels withheld from the log
            assert got[(ws, None, None, "accuracy")]["value"] is None
            hidden_acc = skm.accuracy_score(rows["label"], rows["prediction"])
            print(f"CBPE unlabeled window: estimated {e:.4f}, withheld labels {hidden_acc:.4f}")
            assert abs(e - hidden_acc) < 4 * _accuracy_sd(rows["score"]) + 0.01
            continue
        lab = log[(log["window"] == ws) & log["label"].notna()]
        r = got[(ws, None, None, "accuracy")]["value"]
        assert r == pytest.approx(skm.accuracy_score(lab["label"].astype(int), lab["prediction"]), abs=TIGHT)
        noise.append(_accuracy_sd(lab["score"]))
        est.append(e)
        real.append(r)
    est_a, real_a = np.array(est), np.array(real)
    mae = float(np.mean(np.abs(est_a - real_a)))
    tol = 2 * float(np.mean(noise)) + 0.01
    spread = float(np.mean(np.abs(real_a - np.median(real_a))))  # MAE of the best constant guess
    print(f"CBPE: realized {np.round(real_a, 4)}, estimated {np.round(est_a, 4)}")
    print(f"CBPE: mean abs error {mae:.4f} < {tol:.4f}; constant-guess MAE {spread:.4f}")
    print(f"CBPE: |estimated - expected given the scores| at most {max(calib_err):.4f}")
    assert len(real) == len(CONCENTRATION) - 1
    assert max(calib_err) < 0.01
    assert mae < tol
    # it tracks: accuracy moves across windows (0.665 to 0.841) and the estimate follows it
    assert spread > 0.04 and mae < 0.25 * spread
