"""Performance through the whole run vs scikit-learn (per window and slice), and a Spark job count that
does not grow with the number of slices or windows."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from builders import empty_mlflow_store
from pyspark.sql import functions as F
from sklearn import metrics as skm

from lakemon import io
from lakemon.config import parse_config
from lakemon.job import run_monitor
from lakemon.tables import PERFORMANCE_METRICS

D0 = datetime(2026, 3, 2)


def _binary_frame(n: int, days: int, seed: int = 3, n_slices: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    score = rng.beta(2, 3, n)
    df = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "ts": [D0 + timedelta(seconds=int(s)) for s in rng.integers(0, days * 86400, n)],
            "x1": rng.normal(size=n),
            "score": score,
            "prediction": (score >= 0.5).astype(int),
            "label": (rng.random(n) < score).astype(int),
        }
    )
    for k in range(n_slices):
        df[f"s{k}"] = rng.choice(["a", "b", "c"], n)
    df.loc[rng.random(n) < 0.1, "label"] = None  # unlabeled rows
    df["label"] = df["label"].astype("Int64")
    return df


def _config(path: str, out: str, problem: str = "binary", slices: int = 2, **extra) -> dict:
    empty_mlflow_store(Path(out) / "mlflow.db")
    cfg = {
        "monitor": f"perf_{problem}_{slices}",
        "model": {"name": "m"},
        "problem_type": problem,
        "source": {
            "table": path,
            "timestamp": "ts",
            "id": "id",
            "prediction": "prediction",
            "features": {"numeric": ["x1"]},
        },
        "labels": {"column": "label"},
        "granularity": "1 day",
        "slices": [{"column": f"s{k}"} for k in range(slices)],
        "output": {"path": out},
        "mlflow": {"experiment": "t", "tracking_uri": f"sqlite:///{out}/mlflow.db"},
        "performance": {"min_labeled": 20},
        "drift": {"enabled": False},
        "quality": {"default_checks": False},
        "alerts": {"default_rules": False},
    }
    if problem == "binary":
        cfg["source"]["score"] = "score"
    cfg.update(extra)
    return cfg


def _write(spark, df: pd.DataFrame, path: str) -> None:
    spark.createDataFrame(df).write.format("delta").mode("overwrite").save(path)


def _perf(spark, cfg) -> dict:
    out = io.Output(cfg.output).read(spark, PERFORMANCE_METRICS).where(F.col("class").isNull())
    return {(r["window_start"], r["slice_key"], r["slice_value"], r["metric"]): r for r in out.collect()}


@pytest.fixture(scope="module")
def binary_run(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("perf")
    df = _binary_frame(6000, 2)
    df.loc[np.random.default_rng(8).random(len(df)) < 0.05, "s1"] = None
    _write(spark, df, str(tmp / "log"))
    raw = _config(str(tmp / "log"), str(tmp / "mon"))
    raw["slices"][1]["max_values"] = 2  # s1: a, b, c and NULL -> its 2 most frequent values and __other__
    cfg = parse_config(raw)
    res = run_monitor(spark, cfg, as_of=D0 + timedelta(days=5), deliver=False)
    return df, cfg, res


def test_binary_metrics_equal_sklearn_per_window_and_slice(spark, binary_run):
    df, cfg, _res = binary_run
    got = _perf(spark, cfg)
    df = df.assign(window=df["ts"].dt.floor("D"))
    groups = [(None, None, df)]
    for v in "abc":
        groups.append(("s0", v, df[df["s0"] == v]))
    checked = 0
    for w, wdf in df.groupby("window"):
        for key, val, _ in groups:
            part = wdf if key is None else wdf[wdf[key] == val]
            lab = part[part["label"].notna()]
            y, p = lab["label"].astype(int).to_numpy(), lab["score"].to_numpy()
            yhat = (p >= 0.5).astype(int)

            def k(m, w=w, key=key, val=val):
                return (w.to_pydatetime(), key, val, m)

            assert got[k("labeled_count")]["value"] == len(lab)
            assert got[k("accuracy")]["value"] == pytest.approx(skm.accuracy_score(y, yhat), abs=1e-12)
            assert got[k("precision")]["value"] == pytest.approx(skm.precision_score(y, yhat), abs=1e-12)
            assert got[k("recall")]["value"] == pytest.approx(skm.recall_score(y, yhat), abs=1e-12)
            assert got[k("f1")]["value"] == pytest.approx(skm.f1_score(y, yhat), abs=1e-12)
            assert got[k("brier_score")]["value"] == pytest.approx(skm.brier_score_loss(y, p), abs=1e-12)
            assert got[k("log_loss")]["value"] == pytest.approx(skm.log_loss(y, p), abs=1e-9)
            # histogram-based (1,000 score bins): documented tolerance
            assert got[k("roc_auc")]["value"] == pytest.approx(skm.roc_auc_score(y, p), abs=2e-3)
            assert got[k("pr_auc")]["value"] == pytest.approx(skm.average_precision_score(y, p), abs=5e-3)
            assert got[k("tp")]["row_count"] == len(part)
            checked += 1
    assert checked == 2 * 4


def test_a_slice_column_keeps_its_most_frequent_values_and_groups_the_rest(spark, binary_run):
    df, cfg, res = binary_run
    got = _perf(spark, cfg)
    values = df["s1"].fillna("__null__")
    counts = values.value_counts()
    kept = sorted(counts.index, key=lambda v: (-counts[v], v))[:2]
    guarded = values.where(values.isin(kept), "__other__")
    assert {sv for (_, sk, sv, _) in got if sk == "s1"} == {*kept, "__other__"}
    labeled = df["label"].notna()
    for (w, sk, sv, m), r in got.items():
        if sk == "s1" and m == "labeled_count":
            in_window = df["ts"].dt.floor("D") == pd.Timestamp(w)
            assert r["value"] == (in_window & labeled & (guarded == sv)).sum(), (w, sv)
    assert res.rows_read == len(df)


def test_slice_values_and_the_row_count_come_from_one_aggregation(spark):
    from lakemon.plan import guard_slice_values

    rows = [("b", "x"), ("a", "x"), ("c", "y"), ("b", "__null__"), ("a", "x"), ("c", "z")]
    df = spark.createDataFrame(rows, "s0 string, s1 string")
    values, n = guard_slice_values(df, [("s0", 2), ("s1", 5)])
    # a, b and c twice each: the two kept are the first by value; s1 under its limit keeps all
    assert values == {"s0": ["a", "b", "__other__"], "s1": ["x", "__null__", "y", "z"]}
    assert n == 6
    assert guard_slice_values(df, []) == ({}, 6)
    assert guard_slice_values(df.limit(0), [("s0", 2)]) == ({"s0": []}, 0)


def test_min_labeled_gives_null_with_reason(spark, tmp_path):
    df = _binary_frame(400, 2, seed=5)
    _write(spark, df, str(tmp_path / "log"))
    cfg = parse_config(
        _config(str(tmp_path / "log"), str(tmp_path / "mon"), slices=1, performance={"min_labeled": 150})
    )
    run_monitor(spark, cfg, as_of=D0 + timedelta(days=5), deliver=False)
    got = _perf(spark, cfg)
    small = [r for (w, sk, sv, m), r in got.items() if sk == "s0" and m == "accuracy"]
    assert small and all(r["value"] is None and "min_labeled" in r["reason"] for r in small)
    pop = [r for (w, sk, sv, m), r in got.items() if sk is None and m == "accuracy"]
    assert all(r["value"] is not None for r in pop)


def test_job_count_does_not_grow_with_slices_or_windows(spark, tmp_path):
    jobs = {}
    for slices, days in ((2, 2), (6, 2), (2, 4)):
        df = _binary_frame(3000, days, seed=11, n_slices=6)
        path, out = str(tmp_path / f"log{slices}_{days}"), str(tmp_path / f"mon{slices}_{days}")
        _write(spark, df, path)
        cfg = parse_config(_config(path, out, slices=slices, drift={"enabled": True}))
        res = run_monitor(spark, cfg, as_of=D0 + timedelta(days=10), deliver=False)
        jobs[(slices, days)] = {k: res.phase_jobs.get(k, 0) for k in ("project", "aggregate", "finalize")}
    # more slices never add jobs (with many slice columns the rows fan out to their slices in one aggregation,
    # which even saves the merge step); more windows add none either
    assert all(jobs[(6, 2)][k] <= jobs[(2, 2)][k] for k in jobs[(2, 2)]), jobs
    assert jobs[(2, 4)] == jobs[(2, 2)], jobs


def test_multiclass_and_regression_equal_sklearn(spark, tmp_path):
    rng = np.random.default_rng(9)
    n = 3000
    probs = rng.dirichlet([2, 2, 2], n)
    classes = np.array(["a", "b", "c"])
    label = np.array([rng.choice(classes, p=p) for p in probs])
    df = pd.DataFrame(
        {
            "id": [f"m{i}" for i in range(n)],
            "ts": [D0 + timedelta(seconds=int(s)) for s in rng.integers(0, 86400, n)],
            "x1": rng.normal(size=n),
            "p_a": probs[:, 0],
            "p_b": probs[:, 1],
            "p_c": probs[:, 2],
            "prediction": classes[probs.argmax(1)],
            "label": label,
            "s0": rng.choice(["u", "v"], n),
        }
    )
    _write(spark, df, str(tmp_path / "mc"))
    raw = _config(str(tmp_path / "mc"), str(tmp_path / "mc_out"), problem="multiclass", slices=1)
    raw["source"]["class_scores"] = {"a": "p_a", "b": "p_b", "c": "p_c"}
    cfg = parse_config(raw)
    run_monitor(spark, cfg, as_of=D0 + timedelta(days=2), deliver=False)
    got = _perf(spark, cfg)
    w = D0
    y, yhat = df["label"], df["prediction"]
    assert got[(w, None, None, "accuracy")]["value"] == pytest.approx(skm.accuracy_score(y, yhat), abs=1e-12)
    assert got[(w, None, None, "macro_f1")]["value"] == pytest.approx(
        skm.f1_score(y, yhat, average="macro"), abs=1e-12
    )
    assert got[(w, None, None, "weighted_precision")]["value"] == pytest.approx(
        skm.precision_score(y, yhat, average="weighted"), abs=1e-12
    )
    assert got[(w, None, None, "log_loss")]["value"] == pytest.approx(
        skm.log_loss(y, probs, labels=classes), abs=1e-9
    )

    yr = rng.normal(10, 3, n)
    yr[:5] = 0.0
    pr = yr + rng.normal(0, 1, n)
    rdf = df[["id", "ts", "x1", "s0"]].assign(prediction=pr, label=yr)
    _write(spark, rdf, str(tmp_path / "rg"))
    cfg = parse_config(
        _config(str(tmp_path / "rg"), str(tmp_path / "rg_out"), problem="regression", slices=1)
    )
    run_monitor(spark, cfg, as_of=D0 + timedelta(days=2), deliver=False)
    got = _perf(spark, cfg)
    nz = yr != 0
    assert got[(w, None, None, "mae")]["value"] == pytest.approx(skm.mean_absolute_error(yr, pr), rel=1e-9)
    assert got[(w, None, None, "rmse")]["value"] == pytest.approx(
        np.sqrt(skm.mean_squared_error(yr, pr)), rel=1e-9
    )
    assert got[(w, None, None, "r2")]["value"] == pytest.approx(skm.r2_score(yr, pr), rel=1e-6)
    assert got[(w, None, None, "mape")]["value"] == pytest.approx(
        skm.mean_absolute_percentage_error(yr[nz], pr[nz]), rel=1e-9
    )
    assert got[(w, None, None, "max_abs_error")]["value"] == pytest.approx(skm.max_error(yr, pr), rel=1e-12)
