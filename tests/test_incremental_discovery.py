"""Discovery from the files appended since the last run: the same windows and facts as a scan of the log.

An hourly run on a big log must not rescan every id and timestamp of the log to learn that one hour was
appended. A run stores what discovery saw per window (``source_windows``, at the source's Delta version);
the next run adds the facts of the files appended since, and scans the log again whenever the source did
more than gain files: a compaction or a rewrite (files removed) or rows deleted through deletion vectors
(files kept, fewer rows).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse

import pytest
from builders import START, config, log_frame, read_table, write_log

from lakemon import io
from lakemon.config import parse_config
from lakemon.job import Monitor, run_monitor

DAY = timedelta(days=1)


def _append(spark: Any, path: str, rows: int, day: int, prefix: str) -> None:
    from pyspark.sql import functions as F

    df = log_frame(spark, rows=rows, days=1, seed=len(prefix), start=START + day * DAY)
    df.withColumn("prediction_id", F.concat(F.lit(prefix), "prediction_id")).write.format("delta").mode(
        "append"
    ).save(path)


def _state(spark: Any, raw: dict[str, Any]) -> dict[Any, tuple[int, int]]:
    rows = read_table(spark, raw, "window_state").where("slice_key IS NULL").collect()
    return {r["window_start"]: (r["row_count"], r["source_fingerprint"]) for r in rows}


def _version(spark: Any, path: str) -> int:
    return int(spark.sql(f"DESCRIBE HISTORY delta.`{path}` LIMIT 1").first()["version"])


def test_appended_files_give_the_facts_of_a_scan(spark, tmp_path):
    info = write_log(spark, tmp_path, rows=600, days=3)
    path = info["path"]
    # deletion vectors on: a DELETE then keeps the table's files and marks rows deleted
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')")
    raw = config(tmp_path, source={"incremental_discovery": "always"}, baseline=None, slices=[])
    cfg = parse_config(raw)

    first = run_monitor(spark, cfg, as_of=info["as_of"], deliver=False)
    assert first.discovery == "scan" and len(first.windows) == 3  # nothing stored yet
    stored = read_table(spark, raw, "source_windows").collect()
    assert {r["source_version"] for r in stored} == {_version(spark, path)}
    assert sorted(r["window_start"] for r in stored) == info["windows"]

    # what a run read is what its queries read: the first one scans every file of the log twice (discovery, then
    # the rows of its windows), a run with nothing new none of them (only the few kB of stored facts)
    log_bytes = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()["sizeInBytes"]
    assert first.bytes_read == pytest.approx(2 * log_bytes, rel=0.01)

    same = run_monitor(spark, cfg, as_of=info["as_of"], deliver=False)
    assert same.discovery == "appended" and same.windows == []  # the stored facts as they are
    smallest = min(
        os.path.getsize(urlparse(f).path) for f in spark.read.format("delta").load(path).inputFiles()
    )
    assert 0 < same.bytes_read < smallest
    runs = read_table(spark, raw, "runs").collect()
    assert {r["run_id"]: r["bytes_read"] for r in runs} == {
        first.run_id: first.bytes_read,
        same.run_id: same.bytes_read,
    }

    # a new day, and late rows for day 1, in two appends
    _append(spark, path, 200, 3, "new")
    _append(spark, path, 20, 1, "late")
    grown = run_monitor(spark, cfg, as_of=START + 4 * DAY, deliver=False)
    assert grown.discovery == "appended"
    assert grown.reasons == {START + DAY: "late_rows", START + 3 * DAY: "new"}
    stored = read_table(spark, raw, "source_windows").collect()
    assert {r["source_version"] for r in stored} == {_version(spark, path)}
    assert sum(r["row_count"] for r in stored) == 600 + 200 + 20

    # the facts recorded from appended files equal those of a scan of the whole log
    scan_cfg = parse_config(config(tmp_path, source={"incremental_discovery": "never"}, baseline=None))
    scanned, *_ = Monitor(spark, scan_cfg)._discover(spark.read.format("delta").load(path), None)
    expected = {f.window_start: (f.row_count, f.fingerprint) for f in scanned}
    assert len(expected) == 4
    assert {r["window_start"]: (r["row_count"], r["source_fingerprint"]) for r in stored} == expected
    assert _state(spark, raw) == expected  # windows 0 and 2 from the first run's scan, 1 and 3 from the files

    # a compaction removes every file: discovery scans again and finds nothing changed
    spark.sql(f"OPTIMIZE delta.`{path}`")
    compacted = run_monitor(spark, cfg, as_of=START + 4 * DAY, deliver=False)
    assert compacted.discovery == "scan" and compacted.windows == []

    # rows deleted through a deletion vector: every file is still there, the counts tell
    before = _version(spark, path)
    spark.sql(f"DELETE FROM delta.`{path}` WHERE prediction_id IN ('p1', 'p2')")
    gained = io.appended_files(spark, path, before, _version(spark, path))
    assert gained is not None and gained.files == [] and gained.rows_after == gained.rows_before - 2
    deleted = run_monitor(spark, cfg, as_of=START + 4 * DAY, deliver=False)
    assert deleted.discovery == "scan" and deleted.reasons == {START: "late_rows"}
    assert _state(spark, raw)[START][0] == 198


def test_labels_table_without_timestamps(spark, tmp_path):
    """Without ``labels.timestamp`` a label fingerprint per window finds late labels; an id labelled twice
    counts its prediction once (one label per id, as the run's join takes it)."""
    from pyspark.sql import functions as F

    log_path, lab_path = str(tmp_path / "log"), str(tmp_path / "labels")
    log = log_frame(spark, rows=400, days=2)
    log.drop("label").write.format("delta").save(log_path)
    day0 = log.where(F.col("ts") < F.lit(START + DAY)).select("prediction_id", "label")
    twice = day0.where(F.col("prediction_id") == "p1").select(
        "prediction_id", (1 - F.col("label")).alias("label")
    )
    day0.unionByName(twice).write.format("delta").save(lab_path)
    raw = config(
        tmp_path,
        labels={"table": lab_path, "id": "prediction_id", "column": "label"},
        baseline=None,
        slices=[],
    )
    cfg = parse_config(raw)
    first = run_monitor(spark, cfg, as_of=START + 2 * DAY, deliver=False)
    assert first.windows == [START, START + DAY]
    state = {r["window_start"]: r for r in read_table(spark, raw, "window_state").collect()}
    assert state[START]["row_count"] == 200 and state[START]["labeled_count"] == 200
    assert state[START + DAY]["labeled_count"] == 0

    # day 1's labels arrive: only that window is recomputed, found by its label fingerprint
    log.where(F.col("ts") >= F.lit(START + DAY)).select("prediction_id", "label").write.format("delta").mode(
        "append"
    ).save(lab_path)
    late = run_monitor(spark, cfg, as_of=START + 2 * DAY, deliver=False)
    assert late.reasons == {START + DAY: "new_labels"}
    state = {r["window_start"]: r for r in read_table(spark, raw, "window_state").collect()}
    assert state[START + DAY]["labeled_count"] == 200


def test_labels_max_lead_reads_only_the_labels_files_a_run_can_use(spark, tmp_path):
    """With ``labels.max_lead`` a run over recent windows reads only the labels files that can hold their
    labels (Delta's file statistics on the labels' timestamp), not the whole labels history, and joins the
    same labels as a run that reads them all; a label timestamped earlier than the contract allows is not
    joined."""
    from pyspark.sql import functions as F

    log_path, lab_path = str(tmp_path / "log"), str(tmp_path / "labels")
    log = log_frame(spark, rows=800, days=4)
    log.drop("label").write.format("delta").save(log_path)
    # labels arrive in daily batches (one file each), 6 hours after their predictions: batch d holds labels
    # timestamped from day d 06:00 to day d+1 06:00
    for d in range(4):
        batch = log.where(
            (F.col("ts") >= F.lit(START + d * DAY)) & (F.col("ts") < F.lit(START + (d + 1) * DAY))
        )
        labelled = batch.select(
            "prediction_id", "label", (F.col("ts") + F.expr("INTERVAL 6 HOURS")).alias("labeled_at")
        )
        labelled.coalesce(1).write.format("delta").mode("append").save(lab_path)
    labels = {"table": lab_path, "id": "prediction_id", "column": "label", "timestamp": "labeled_at"}
    day3 = START + 3 * DAY

    def one_day(name: str, **lab: Any) -> tuple[int, int, list[Any]]:
        """Files of the labels table the run's project phase read, day 3's labelled count, its metrics."""
        raw = config(tmp_path / name, source={"table": log_path}, labels={**labels, **lab}, baseline=None)
        monitor = Monitor(
            spark, parse_config(raw), as_of=START + 4 * DAY, backfill=(day3, day3 + DAY), deliver=False
        )
        since = io.last_execution_id(spark)
        res = monitor.run()
        assert res.status == "success" and res.windows == [day3]
        read = [
            s
            for s in io.file_scans(spark, since, [monitor._description("project")])
            if "ReadSchema: struct<prediction_id:string,label:int,labeled_at:timestamp>" in s.description
        ]
        labeled = read_table(spark, raw, "window_state").where("slice_key IS NULL").first()["labeled_count"]
        rows = read_table(spark, raw, "performance_metrics").drop("run_id", "computed_at").collect()
        return sum(s.files for s in read), labeled, sorted(rows, key=str)

    all_files, all_labeled, everything = one_day("all")
    near_files, near_labeled, near = one_day("near", max_lead="0 minutes")
    assert all_files == 4 and near_files == 2  # day 3's batch and day 2's, whose last labels reach day 3
    assert near == everything and len(near) > 0 and near_labeled == all_labeled == 200
    assert one_day("wider", max_lead="1 day")[0] == 3

    # one of day 3's labels re-stamped before its prediction (outside a zero lead): a run reading every label
    # still joins it (its join has no time condition: the 200 above), the bounded run no longer does
    pid = log.where(F.col("ts") >= F.lit(day3)).orderBy("ts").first()["prediction_id"]
    spark.sql(f"DELETE FROM delta.`{lab_path}` WHERE prediction_id = '{pid}'")
    spark.createDataFrame(
        [(pid, 1, START)], "prediction_id STRING, label INT, labeled_at TIMESTAMP"
    ).write.format("delta").mode("append").save(lab_path)
    assert one_day("near2", max_lead="0 minutes")[1] == 199


def test_spark_metric_texts_are_read_as_numbers() -> None:
    """Sizes and counts as Spark's status store renders them (what ``runs.bytes_read`` adds up)."""
    assert io.metric_bytes("28.4 KiB") == pytest.approx(28.4 * 2**10)
    total = (
        "total (min, med, max (stageId: taskId))\n62.0 MiB (31.0 MiB, 31.0 MiB, 31.0 MiB (stage 3.0: task 4))"
    )
    assert io.metric_bytes(total) == pytest.approx(62 * 2**20)
    assert io.metric_bytes("512.0 B") == 512 and io.metric_bytes("1.5 GiB") == 1.5 * 2**30
    assert io.metric_bytes(None) == 0.0 and io.metric_bytes("n/a") == 0.0
    assert io.metric_number("1,234") == 1234 and io.metric_number(None) is None
