"""A baseline that is a time range of the log is profiled once and re-profiled only when its rows change;
late labels are never passed over.

Appending to the log moves its Delta version at every run; the stored profile must survive that (an hourly
run would otherwise rescan the whole range every hour) and must still be replaced when late rows land in
the range or late labels reach its predictions, even when they arrive while no window is computed. A
backfill of other windows must not use up the news of late labels either.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from builders import START, config, log_frame, read_table

from lakemon.config import parse_config
from lakemon.job import run_monitor

ROWS, DAYS = 1200, 4


def _write(df: Any, path: Path, mode: str = "append") -> None:
    df.write.format("delta").mode(mode).save(str(path))


def _log(spark: Any, rows: int, days: int, start: Any, prefix: str) -> Any:
    """The builder log without its label column, ids prefixed (unique across appends)."""
    from pyspark.sql import functions as F

    return (
        log_frame(spark, rows=rows, days=days, seed=len(prefix), start=start)
        .withColumn("prediction_id", F.concat(F.lit(prefix), "prediction_id"))
        .drop("label")
    )


def _labels(log: Any, delay_hours: int, keep: Any = None) -> Any:
    """Labels of ``log``'s predictions (those where ``keep`` holds), stamped ``delay_hours`` after the last."""
    from pyspark.sql import functions as F

    rows = log if keep is None else log.where(keep)
    return rows.select(
        "prediction_id",
        (F.rand(7) < F.col("score")).cast("int").alias("label"),
        (F.lit(START + timedelta(days=30, hours=delay_hours))).cast("timestamp").alias("labeled_at"),
    )


def _profiles(spark: Any, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per stored baseline profile: its id, rows of ``num_a`` and labeled predictions."""
    from pyspark.sql import functions as F

    t = read_table(spark, cfg, "baseline_profile").where(F.col("slice_key").isNull())
    out = t.groupBy("baseline_id").agg(
        F.max(F.when(F.col("column_name") == "num_a", F.col("row_count"))).alias("rows"),
        F.max(
            F.when(
                F.col("column_name") == ":performance",
                F.aggregate("histogram_pos", F.lit(0).cast("bigint"), lambda a, x: a + x)
                + F.aggregate("histogram_neg", F.lit(0).cast("bigint"), lambda a, x: a + x),
            )
        ).alias("labeled"),
        F.min("computed_at").alias("at"),
    )
    return [r.asDict() for r in out.orderBy("at").collect()]  # one row per stored profile


def _label_null_delta(spark: Any, cfg: dict[str, Any], day: int) -> float:
    """The label column's null-ratio delta vs the baseline, population, window ``day``."""
    from pyspark.sql import functions as F

    rows = (
        read_table(spark, cfg, "drift_metrics")
        .where(
            (F.col("window_start") == F.lit(START + timedelta(days=day)))
            & F.col("slice_key").isNull()
            & (F.col("column_name") == "label")
            & (F.col("reference") == "baseline")
            & (F.col("statistic") == "null_ratio_delta")
        )
        .collect()
    )
    assert len(rows) == 1, rows
    return rows[0]["value"]


@pytest.mark.slow
def test_range_baseline_is_reused_until_its_rows_or_labels_change_and_late_labels_are_kept(
    spark, tmp_path, monkeypatch
):
    from pyspark.sql import functions as F

    monkeypatch.chdir(tmp_path)
    log_path, lab_path = tmp_path / "log", tmp_path / "labels"
    first = _log(spark, ROWS, DAYS, START, "p")
    _write(first, log_path, "overwrite")
    # two thirds of the predictions are labelled at first; day 0 is the baseline range, monitoring starts at
    # day 1, so no run computes the range's own window
    unlabeled = F.regexp_extract("prediction_id", r"(\d+)$", 1).cast("int") % 3 == 0
    _write(_labels(first, 0, ~unlabeled), lab_path, "overwrite")
    cfg_dict = config(
        tmp_path,
        source={"table": str(log_path)},
        labels={"table": str(lab_path), "id": "prediction_id", "column": "label", "timestamp": "labeled_at"},
        start=(START + timedelta(days=1)).isoformat(),
        drift={"min_samples": 20},
        performance={"min_labeled": 20},
        # the 3rd and 6th runs compact the tables (the 3rd computes no window): what follows holds on them
        output={"compact_every": 3},
    )
    cfg = parse_config(cfg_dict)
    day0 = ROWS // DAYS

    def run(days: int) -> tuple[dict[str, float], int]:
        result = run_monitor(spark, cfg, as_of=START + timedelta(days=days), deliver=False)
        assert result.status == "success", result.error
        return result.phase_seconds, len(result.windows)

    def add_day(day: int, prefix: str, hours: int) -> None:
        rows = _log(spark, day0, 1, START + timedelta(days=day), prefix)
        _write(rows, log_path)
        _write(_labels(rows, hours), lab_path)

    phases, windows = run(DAYS)
    assert "baseline_scan" in phases and windows == DAYS - 1
    [p1] = _profiles(spark, cfg_dict)
    assert (p1["rows"], p1["labeled"]) == (day0, day0 - day0 // 3)

    # late rows inside the range (unlabelled) and a new labelled day: the range's rows changed -> re-profiled
    late = _log(spark, 30, 1, START, "late")
    _write(late, log_path)
    add_day(DAYS, "n", 1)
    assert "baseline_scan" in run(DAYS + 1)[0]
    _, p2 = _profiles(spark, cfg_dict)
    assert p2["baseline_id"] != p1["baseline_id"]
    assert (p2["rows"], p2["labeled"]) == (day0 + 30, day0 - day0 // 3)

    # late labels for every unlabelled prediction of the range, and no window to compute: nothing is profiled,
    # and the labels stay new for the next run
    in_range = F.col("ts") < F.lit(START + timedelta(days=1))
    todo = (unlabeled | F.col("prediction_id").startswith("late")) & in_range
    _write(_labels(first.unionByName(late), 2, todo), lab_path)
    assert run(DAYS + 1)[1] == 0

    # a new labelled day: the range is profiled again, every baseline row labelled
    add_day(DAYS + 1, "m", 3)
    assert "baseline_scan" in run(DAYS + 2)[0]
    *_, p3 = _profiles(spark, cfg_dict)
    assert p3["baseline_id"] not in {p1["baseline_id"], p2["baseline_id"]}
    assert (p3["rows"], p3["labeled"]) == (day0 + 30, day0 + 30)
    assert _label_null_delta(spark, cfg_dict, DAYS + 1) == pytest.approx(0.0, abs=1e-12)

    # another new day and its labels: the log's version moves, the range's rows and labels do not -> the
    # latest profile is reused (with an older one the label's null ratio vs the baseline would not be 0)
    add_day(DAYS + 2, "o", 4)
    phases, windows = run(DAYS + 3)
    assert "baseline_scan" not in phases and "baseline" in phases and windows == 1
    assert len(_profiles(spark, cfg_dict)) == 3
    assert _label_null_delta(spark, cfg_dict, DAYS + 2) == pytest.approx(0.0, abs=1e-12)

    # late labels for day 1's unlabelled predictions, then a backfill of day 2 alone: the labels stay new, and
    # the next run recomputes day 1 for them
    day = [START + timedelta(days=i) for i in range(DAYS + 4)]
    _write(_labels(first, 5, unlabeled & (F.col("ts") >= day[1]) & (F.col("ts") < day[2])), lab_path)
    back = run_monitor(spark, cfg, as_of=day[DAYS + 3], start=day[2], end=day[3], deliver=False)
    assert back.status == "success" and back.windows == [day[2]]
    res = run_monitor(spark, cfg, as_of=day[DAYS + 3], deliver=False)
    assert res.windows == [day[1]] and res.reasons[day[1]] == "new_labels"

    runs = read_table(spark, cfg_dict, "runs").orderBy("started_at").collect()
    assert [r["status"] for r in runs] == ["success"] * 7
    assert [i for i, r in enumerate(runs, 1) if "compact" in (r["phase_seconds"] or {})] == [3, 6]
    for table in ("profile_metrics", "sketches", "window_state", "runs"):
        ops = [
            r["operation"]
            for r in spark.sql(f"DESCRIBE HISTORY delta.`{cfg_dict['output']['path']}/{table}`").collect()
        ]
        assert ops.count("OPTIMIZE") >= 1, (table, ops)
