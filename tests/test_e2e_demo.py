"""End to end on a small demo: every table written, incidents found, idempotent re-runs, backfills,
late data re-opening only its window, and failures recorded without losing earlier results."""

from __future__ import annotations

import json
import sqlite3
import statistics
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml
from pyspark.sql import functions as F

from lakemon import io
from lakemon.config import parse_config
from lakemon.demo import write_demo_config
from lakemon.demo_data import generate_demo
from lakemon.job import run_monitor
from lakemon.tables import ALL_TABLES, WINDOWED_TABLES

ROWS, DAYS = 120_000, 10
START = datetime(2026, 10, 1)
AS_OF = START + timedelta(days=DAYS)
CLEAN = (
    "credit_limit",
    "debt_ratio",
    "tenure_months",
    "num_late_payments",
    "employment",
    "region",
    "channel",
)


@pytest.fixture(scope="module")
def demo(spark, tmp_path_factory):
    wd = tmp_path_factory.mktemp("demo")
    info = generate_demo(spark, str(wd / "data"), rows=ROWS, days=DAYS, start=START)
    cfg_path = write_demo_config(wd)
    raw = yaml.safe_load(cfg_path.read_text())
    # the demo's log is small: discovery from appended files on anyway, so the re-runs below take that path
    raw["source"]["incremental_discovery"] = "always"
    cfg = parse_config(raw, str(cfg_path))
    result = run_monitor(spark, cfg, as_of=AS_OF, deliver=False)
    assert result.discovery == "scan"  # nothing stored yet
    return {"wd": wd, "info": info, "cfg": cfg, "result": result, "cfg_path": cfg_path}


def _table(spark, demo, name):
    return io.Output(demo["cfg"].output).read(spark, io_table(name))


def io_table(name):
    from lakemon.tables import TABLES_BY_NAME

    return TABLES_BY_NAME[name]


def _counts(spark, demo):
    return {t.name: _table(spark, demo, t.name).count() for t in ALL_TABLES}


def _day(i: int) -> datetime:
    return START + timedelta(days=i)


def _incident(demo, kind):
    return next(i for i in demo["info"]["incidents"] if i["kind"] == kind)


def test_run_writes_every_table(spark, demo):
    res = demo["result"]
    assert res.status == "success"
    assert res.windows == [_day(i) for i in range(DAYS)]
    assert res.rows_read == ROWS
    out = io.Output(demo["cfg"].output)
    from delta.tables import DeltaTable

    for t in ALL_TABLES:
        assert DeltaTable.isDeltaTable(spark, out.location(t)), t.name
        assert _table(spark, demo, t.name).columns == t.columns
    counts = _counts(spark, demo)
    for name in (
        "profile_metrics",
        "quality_results",
        "performance_metrics",
        "drift_metrics",
        "sketches",
        "alerts",
    ):
        assert counts[name] > 0, name
    assert counts["window_state"] == DAYS
    # a run writes each table's rows in one file (the result frames' partitions are coalesced), not one per
    # driver or shuffle partition: tables that grow every hour must not fill up with tiny files
    for t in ALL_TABLES:
        if t.name != "runs":
            files = spark.sql(f"DESCRIBE DETAIL delta.`{out.location(t)}`").first()["numFiles"]
            assert files <= 1, (t.name, files)
    runs = _table(spark, demo, "runs").collect()
    assert [r["status"] for r in runs] == ["success"]
    assert runs[0]["rows_read"] == ROWS and runs[0]["windows"] == DAYS and runs[0]["spark_jobs"] > 0
    assert set(runs[0]["phase_seconds"]) >= {"read", "aggregate", "write"}


def test_profile_values_match_the_data(spark, demo):
    pred = spark.read.format("delta").load(str(demo["wd"] / "data" / "predictions"))
    day = _day(2)
    exact = (
        pred.where(
            (F.col("ts") >= day) & (F.col("ts") < day + timedelta(days=1)) & (F.col("region") == "north")
        )
        .agg(
            F.count("*").alias("n"),
            F.avg("income").alias("mean"),
            F.stddev("income").alias("std"),
            F.min("income").alias("min"),
            F.max("income").alias("max"),
            F.expr("percentile(income, 0.5)").alias("median"),
        )
        .first()
    )
    prof = {
        r["metric"]: r["value"]
        for r in _table(spark, demo, "profile_metrics")
        .where(
            (F.col("window_start") == day)
            & (F.col("slice_key") == "region")
            & (F.col("slice_value") == "north")
            & (F.col("column_name") == "income")
        )
        .collect()
    }
    assert prof["count"] == exact["n"]
    assert prof["avg"] == pytest.approx(exact["mean"], rel=1e-9)
    assert prof["stddev"] == pytest.approx(exact["std"], rel=1e-6)
    assert prof["min"] == exact["min"] and prof["max"] == exact["max"]
    assert prof["median"] == pytest.approx(exact["median"], rel=0.02)
    assert prof["distinct_count"] == pytest.approx(exact["n"], rel=0.05)


def test_quality_incidents_fail_exactly_on_their_days(spark, demo):
    q = _table(spark, demo, "quality_results").where(F.col("slice_key").isNull())
    failed = {(r["check"], r["window_start"]) for r in q.where(~F.col("passed")).collect()}
    spike = _day(_incident(demo, "null_spike")["first_day"])
    oor = _day(_incident(demo, "out_of_range")["first_day"])
    assert {w for c, w in failed if c == "not_null_utilization"} == {spike}
    assert {w for c, w in failed if c == "between_age"} == {oor}
    for check in (
        "in_set_region",
        "between_utilization",
        "unique_prediction_id",
        "score_in_unit_interval_score",
    ):
        assert not {w for c, w in failed if c == check}, check
    samples = _table(spark, demo, "quality_samples")
    got = samples.where(F.col("check") == "between_age").collect()
    assert got and {r["window_start"] for r in got} == {oor} and len(got) <= 20
    assert all("age" in json.loads(r["row_json"]) for r in got)


def _primary_drift(spark, demo):
    return _table(spark, demo, "drift_metrics").where(
        F.col("threshold").isNotNull() & (F.col("reference") == "baseline")
    )


def test_drift_incidents_flagged_and_clean_columns_are_not(spark, demo):
    d = _primary_drift(spark, demo)
    shift = _incident(demo, "mean_shift")["first_day"]
    south = {
        r["window_start"]: r["drifted"]
        for r in d.where((F.col("column_name") == "income") & (F.col("slice_value") == "south")).collect()
    }
    assert all(south[_day(i)] for i in range(shift, DAYS))
    assert not any(south[_day(i)] for i in range(shift))
    mix = _incident(demo, "category_mix")["first_day"]
    product = {
        r["window_start"]: r["drifted"]
        for r in d.where((F.col("column_name") == "product") & F.col("slice_key").isNull()).collect()
    }
    assert all(product[_day(i)] for i in range(mix, DAYS)) and not any(product[_day(i)] for i in range(mix))
    # the `senior` slice is defined on age: on the out-of-range day corrupted ages move rows into it, so its
    # mix legitimately changes that day (an effect of the incident, not a false alarm)
    oor = _day(_incident(demo, "out_of_range")["first_day"])
    affected = (F.col("slice_key") == "senior") & (F.col("window_start") == F.lit(oor))
    # At this test's scale (12k rows a day) the <= 15% slices hold ~1.2-1.5k rows, where noise of normalized
    # W1 reaches the 0.1 default now and then; the population and the larger slices must be clean. The 1M-row
    # demo has no false alarm in any slice (see README, Figures).
    small = F.coalesce(F.col("slice_value"), F.lit("")).isin("central", "west", "partner", "true")
    clean = d.where(F.col("column_name").isin(*CLEAN) & F.col("drifted") & ~affected & ~small)
    assert clean.count() == 0, clean.select(
        "window_start", "slice_key", "slice_value", "column_name", "value"
    ).collect()


def test_performance_drop_only_in_partner(spark, demo):
    drop = _incident(demo, "performance_drop")["first_day"]
    p = _table(spark, demo, "performance_metrics").where(
        (F.col("metric") == "roc_auc") & (F.col("slice_key") == "channel")
    )
    auc = {(r["slice_value"], r["window_start"]): r["value"] for r in p.collect()}
    for ch in ("web", "mobile", "branch", "partner"):
        before = [auc[(ch, _day(i))] for i in range(drop)]
        after = auc[(ch, _day(drop))]
        if ch == "partner":
            assert after < min(before) - 0.1
        else:
            assert after > min(before) - 0.05
    unlabeled = _incident(demo, "unlabeled")
    cov = _table(spark, demo, "performance_metrics").where(
        (F.col("metric") == "label_coverage") & F.col("slice_key").isNull()
    )
    coverage = {r["window_start"]: r["value"] for r in cov.collect()}
    assert all(coverage[_day(i)] == 0 for i in range(unlabeled["first_day"], DAYS))
    assert all(coverage[_day(i)] > 0.99 for i in range(unlabeled["first_day"]))
    est = _table(spark, demo, "performance_metrics").where(
        (F.col("metric") == "estimated_accuracy") & F.col("slice_key").isNull()
    )
    assert all(r["value"] is not None for r in est.collect())


def test_alerts_raised_for_incidents(spark, demo):
    a = _table(spark, demo, "alerts").where(F.col("status") == "firing")
    rows = a.collect()
    shift = _day(_incident(demo, "mean_shift")["first_day"])
    assert any(
        r["signal"] == "drift"
        and r["column_name"] == "income"
        and r["slice_value"] == "south"
        and r["first_window_start"] == shift
        for r in rows
    )
    spike = _day(_incident(demo, "null_spike")["first_day"])
    assert any(
        r["signal"] == "quality" and r["metric"] == "not_null_utilization" and r["window_start"] == spike
        for r in rows
    )
    # senior is defined on age: the out-of-range day changes its mix, and the next day differs from that
    # day (previous-window reference) -- effects of the incident, not false alarms
    oor = _day(_incident(demo, "out_of_range")["first_day"])
    affected = {oor, oor + timedelta(days=1)}
    # At this test's scale (12k rows a day) the 10-15% slices hold ~1.5k rows, where window-vs-window noise of
    # normalized W1 approaches the 0.1 default; the population and the larger slices must be clean (the 1M-row
    # demo has no such alert in any slice).
    large = {None, "north", "south", "east", "web", "mobile", "branch", "false"}
    stray = [
        (r["column_name"], r["slice_key"], r["slice_value"], r["first_window_start"])
        for r in rows
        if r["signal"] == "drift"
        and r["column_name"] in CLEAN
        and r["slice_value"] in large
        and not (r["slice_key"] == "senior" and r["first_window_start"] in affected)
    ]
    assert not stray


def test_mlflow_run_logged(spark, demo):
    db = demo["wd"] / "mlflow.db"
    con = sqlite3.connect(db)
    metrics = dict(
        con.execute(
            "select key, value from metrics where run_uuid = ?", (demo["result"].mlflow_run_id,)
        ).fetchall()
    )
    # what the run read, as in its `runs` row: discovery and the projection each read every file of the log
    [run] = _table(spark, demo, "runs").where(F.col("run_id") == demo["result"].run_id).collect()
    log_bytes = spark.sql(f"DESCRIBE DETAIL delta.`{demo['wd'] / 'data' / 'predictions'}`").first()[
        "sizeInBytes"
    ]
    assert metrics["rows_read"] == ROWS and metrics["bytes_read"] == run["bytes_read"] >= 2 * log_bytes * 0.99
    tags = dict(
        con.execute(
            "select key, value from tags where run_uuid = ?", (demo["result"].mlflow_run_id,)
        ).fetchall()
    )
    assert tags["lakemon.status"] == "success"
    assert tags["lakemon.alert.drift"] == "true" and tags["lakemon.alert.quality"] == "true"
    params = dict(
        con.execute(
            "select key, value from params where run_uuid = ?", (demo["result"].mlflow_run_id,)
        ).fetchall()
    )
    assert params["monitor"] == "credit_default_demo" and params["windows"] == str(DAYS)


def test_rerun_backfill_and_late_rows(spark, demo):
    cfg = demo["cfg"]
    before = _counts(spark, demo)
    runs = (
        _table(spark, demo, "runs")
        .where(F.col("status") == "success")
        .orderBy(F.desc("started_at"))
        .collect()
    )
    recent = [sum(r["phase_seconds"].values()) for r in runs[:10]]
    again = run_monitor(spark, cfg, as_of=AS_OF, deliver=False)
    assert again.status == "success" and again.windows == [] and again.discovery == "appended"
    assert _counts(spark, demo) == {**before, "runs": before["runs"] + 1}
    # what the run cost against the monitor's earlier successful runs (the first full run's seconds among them):
    # a run with nothing to compute costs a fraction of the full one; the same figure in MLflow
    assert again.cost_vs_recent == pytest.approx(
        sum(again.phase_seconds.values()) / statistics.median(recent)
    )
    assert 0 < again.cost_vs_recent < 1
    con = sqlite3.connect(demo["wd"] / "mlflow.db")
    [(logged,)] = con.execute(
        "select value from metrics where run_uuid = ? and key = 'cost_vs_recent'", (again.mlflow_run_id,)
    ).fetchall()
    assert logged == pytest.approx(again.cost_vs_recent)

    def alerts_of(days):
        # every signal, drift included: KLL compaction is randomised, so a recomputed window's statistics move
        # within the sketch's error; a borderline cell keeps its stored verdict and the alerts are reproduced
        rows = (
            _table(spark, demo, "alerts").where(F.col("window_start").isin([_day(d) for d in days])).collect()
        )
        return sorted((r["alert_id"], r["window_start"], r["status"], r["consecutive_windows"]) for r in rows)

    def verdicts_of(days):
        rows = (
            _table(spark, demo, "drift_metrics")
            .where(F.col("window_start").isin([_day(d) for d in days]) & F.col("threshold").isNotNull())
            .select("window_start", "slice_key", "slice_value", "column_name", "reference", "drifted")
            .collect()
        )
        return sorted(tuple(str(v) for v in r) for r in rows)

    alerts_before, verdicts_before = alerts_of((1, 2)), verdicts_of((1, 2))
    back = run_monitor(spark, cfg, as_of=AS_OF, start=_day(1), end=_day(3), deliver=False)
    assert back.windows == [_day(1), _day(2)]
    after = _counts(spark, demo)
    same = ("runs", "alerts")
    assert {k: v for k, v in after.items() if k not in same} == {
        k: v for k, v in before.items() if k not in same
    }
    assert alerts_of((1, 2)) == alerts_before
    assert verdicts_of((1, 2)) == verdicts_before

    # late rows for day 2 and for a later day whose alerts continue an episode: only those two windows are
    # recomputed, and the later day's alerts go on from the stored days between them (not opened again)
    episode = _table(spark, demo, "alerts").where(
        (F.col("consecutive_windows") >= 2) & (F.col("window_start") >= _day(4))
    )
    later = episode.agg(F.max("window_start")).first()[0]
    assert later is not None, "the demo's incidents give an alert episode of 2+ windows after day 4"

    def states(ws):
        rows = _table(spark, demo, "alerts").where(F.col("window_start") == ws).collect()
        return sorted((r["alert_id"], r["status"]) for r in rows), {
            r["alert_id"] for r in rows if r["notify"] == "open"
        }

    states_before = states(later)
    pred_path = str(demo["wd"] / "data" / "predictions")
    pred = spark.read.format("delta").load(pred_path)

    def rows_of(start):
        return pred.where((F.col("ts") >= start) & (F.col("ts") < start + timedelta(days=1)))

    late = (
        rows_of(_day(2))
        .limit(50)
        .unionByName(rows_of(later).limit(50))
        .withColumn("prediction_id", F.concat(F.lit("late-"), F.col("prediction_id")))
    )
    day_rows = rows_of(_day(2)).count()  # before the append
    late.write.format("delta").mode("append").save(pred_path)
    res = run_monitor(spark, cfg, as_of=AS_OF, deliver=False)
    assert res.windows == [_day(2), later] and set(res.reasons.values()) == {"late_rows"}
    assert states(later) == states_before
    assert res.discovery == "appended"  # the late rows' file read, not the whole log
    prof = _table(spark, demo, "profile_metrics").where(
        (F.col("column_name") == ":table") & (F.col("metric") == "row_count") & F.col("slice_key").isNull()
    )
    n = {r["window_start"]: r["value"] for r in prof.collect()}
    assert n[_day(2)] == day_rows + 50
    final = _counts(spark, demo)
    for t in WINDOWED_TABLES:
        if t.name not in ("alerts", "quality_samples"):
            assert final[t.name] == before[t.name], t.name
    for t in WINDOWED_TABLES:
        df = _table(spark, demo, t.name)
        key = ["window_start", "slice_key", "slice_value"] + [
            c
            for c in (
                "column_name",
                "metric",
                "statistic",
                "check",
                "reference",
                "class",
                "alert_id",
                "sample_index",
            )
            if c in df.columns
        ]
        assert df.groupBy(*key).count().where("count > 1").count() == 0, t.name


def test_cost_vs_recent_is_the_ratio_to_the_median_of_recent_runs() -> None:
    from lakemon.tracking.record import cost_vs_recent

    assert cost_vs_recent(30.0, [10.0, 40.0, 20.0]) == pytest.approx(30.0 / statistics.median([10, 40, 20]))
    assert cost_vs_recent(30.0, [10.0, 40.0, 20.0, 12.0]) == pytest.approx(30.0 / 16.0)
    assert cost_vs_recent(5.0, [0.0, 10.0]) == pytest.approx(0.5)  # a run without seconds is not a cost
    assert cost_vs_recent(5.0, []) is None and cost_vs_recent(5.0, [0.0]) is None


def test_run_line_says_what_the_run_cost() -> None:
    from lakemon.cli import _run_line
    from lakemon.job import RunResult

    res = RunResult(run_id="r1", monitor="m", status="success", phase_seconds={"project": 4.0, "write": 10.2})
    assert "14.2 s, 0 alert(s) firing" in _run_line(res)  # a monitor's first run: nothing to compare with
    res.cost_vs_recent = 3.04
    assert "14.2 s (3.0x its recent runs), 0 alert(s) firing" in _run_line(res)


def test_failed_run_is_recorded_and_keeps_results(spark, demo):
    raw = yaml.safe_load(Path(demo["cfg_path"]).read_text())
    raw["source"]["table"] = str(demo["wd"] / "data" / "no_such_table")
    bad = parse_config(raw)
    before = _counts(spark, demo)
    with pytest.raises(io.SourceError, match="no_such_table"):
        run_monitor(spark, bad, as_of=AS_OF, deliver=False)
    runs = _table(spark, demo, "runs").where(F.col("status") == "failed").collect()
    assert runs and "no_such_table" in runs[-1]["error"]
    after = _counts(spark, demo)
    assert {k: v for k, v in after.items() if k != "runs"} == {k: v for k, v in before.items() if k != "runs"}


def test_weekly_rollup_from_daily_sketches(spark, demo):
    """Seven daily sketches merged give the week's counts exactly and its quantiles within the KLL bound."""
    from lakemon.drift import stats
    from lakemon.rollup import merged_sketches, range_drift

    cfg = demo["cfg"]
    week = merged_sketches(spark, cfg, _day(0), _day(7)).where(
        F.col("slice_key").isNull() & (F.col("column_name") == "income")
    )
    probs = [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99]
    arr = "array(" + ",".join(str(p) for p in probs) + ")"
    row = week.select(
        "row_count", "non_null", F.expr(f"kll_sketch_get_quantile_double(kll, {arr})").alias("q"), "windows"
    ).first()
    pred = spark.read.format("delta").load(str(demo["wd"] / "data" / "predictions"))
    raw = pred.where((F.col("ts") >= _day(0)) & (F.col("ts") < _day(7))).select("income")
    values = sorted(r[0] for r in raw.collect())  # test-only: the exact reference
    assert row["windows"] == 7 and row["row_count"] == len(values)
    import bisect

    eps = stats.kll_rank_error(cfg.drift.sketch_k)
    for p, q in zip(probs, row["q"], strict=True):
        rank = bisect.bisect_right(values, q) / len(values)
        assert abs(rank - p) <= 2 * eps, (p, q, rank)
    direct = raw.agg(
        F.expr(f"kll_sketch_get_quantile_double(kll_sketch_agg_double(income, {cfg.drift.sketch_k}), {arr})")
    ).first()[0]
    for qm, qd in zip(row["q"], direct, strict=True):
        rm, rd = bisect.bisect_right(values, qm) / len(values), bisect.bisect_right(values, qd) / len(values)
        assert abs(rm - rd) <= 2 * eps

    # drift over a merged range, from sketches only: the south income shift is there, clean columns are not
    shift = _incident(demo, "mean_shift")["first_day"]
    rows = range_drift(spark, cfg, _day(shift), _day(DAYS))
    flagged = {(r["column_name"], r["slice_value"]) for r in rows if r["drifted"]}
    assert ("income", "south") in flagged
    assert not {c for c, _ in flagged} & set(CLEAN)


def test_analyst_notebook_runs_on_the_demo_tables(demo, monkeypatch):
    """The analyst notebook executes top to bottom against the demo's monitoring tables."""
    import nbformat
    from nbclient import NotebookClient

    root = Path(__file__).resolve().parents[1]
    nb = nbformat.read(root / "notebooks" / "monitoring_overview.ipynb", as_version=4)
    monkeypatch.setenv("LAKEMON_MONITORING", str(demo["wd"] / "monitoring"))
    monkeypatch.setenv("LAKEMON_SPARK_MASTER", "local[1]")
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(root / "notebooks")}}
    ).execute()
    text = "\n".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    assert "monitor: credit_default_demo" in text
    assert "income" in text  # the drifted column is listed
    assert "mean |estimated - realized| accuracy" in text
    assert "vs_recent" in text and "mb_read" in text  # the run history with what each run cost
