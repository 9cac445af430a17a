"""Concurrent Delta transactions on distinct tables: the run's job group follows the threads, every write
finishes before a failure is raised, and the tables are created and written as if one after another."""

from __future__ import annotations

import json
import threading
import time

import pytest

from lakemon import io
from lakemon.config import OutputSpec
from lakemon.tables import ALL_TABLES


def test_concurrently_keeps_order_and_raises_after_all_finished(spark) -> None:
    done: list[int] = []

    def fn(i: int) -> int:
        time.sleep(0.05 * (3 - i))
        if i == 0:
            raise ValueError("boom 0")
        done.append(i)
        return i * 10

    assert io.concurrently(spark, lambda i: i * 10, [(1,), (2,), (3,)]) == [10, 20, 30]
    with pytest.raises(ValueError, match="boom 0"):
        io.concurrently(spark, fn, [(0,), (1,), (2,)])
    assert sorted(done) == [1, 2]  # the others completed although the first call failed


def test_threads_inherit_the_job_group_and_create_every_table(spark, tmp_path) -> None:
    sc = spark.sparkContext
    group = "lakemon-test-group"
    sc.setJobGroup(group, "concurrency test")
    try:
        threads: set[str] = set()

        def count(n: int) -> int:
            threads.add(threading.current_thread().name)
            return spark.range(n).count()

        assert io.concurrently(spark, count, [(n,) for n in (10, 20, 30, 40)]) == [10, 20, 30, 40]
        assert len(sc.statusTracker().getJobIdsForGroup(group)) >= 4
        assert any(t.startswith("lakemon-io") for t in threads)
    finally:
        sc.setJobGroup("", "")
    out = io.Output(OutputSpec(path=str(tmp_path / "mon")))
    io.ensure_tables(spark, out)
    io.ensure_tables(spark, out)  # a second time: schemas checked, nothing created twice
    for t in ALL_TABLES:
        assert spark.read.format("delta").load(out.location(t)).columns == list(t.columns)
        assert set(t.stats_columns) <= set(t.columns), t.name
        props = spark.sql(f"DESCRIBE DETAIL delta.`{out.location(t)}`").first()["properties"]
        assert props["delta.dataSkippingStatsColumns"] == ",".join(t.stats_columns), (t.name, props)

    # a file written to a monitoring table carries statistics on those columns only
    from datetime import datetime

    from lakemon.tables import PROFILE_METRICS

    row = {c: None for c in PROFILE_METRICS.columns}
    row |= {"monitor": "m", "window_start": datetime(2026, 3, 2), "window_end": datetime(2026, 3, 3)}
    row |= {"granularity": "1 day", "column_name": "x", "metric": "mean", "value": 1.0, "run_id": "r"}
    row |= {"computed_at": datetime(2026, 3, 3)}
    frame = spark.createDataFrame(
        [row], spark.read.format("delta").load(out.location(PROFILE_METRICS)).schema
    )
    io.append_rows(spark, out, PROFILE_METRICS, frame, rows=1)
    adds = (
        spark.read.json(f"{out.location(PROFILE_METRICS)}/_delta_log/*.json")
        .where("add IS NOT NULL")
        .select("add.stats")
        .collect()
    )
    assert len(adds) == 1
    stats = json.loads(adds[0]["stats"])
    assert set(stats["minValues"]) == {"monitor", "granularity", "window_start"}, stats


def test_file_count_sizes_writes_by_rows_and_row_size() -> None:
    from lakemon.io import TARGET_FILE_BYTES, file_count
    from lakemon.tables import PROFILE_METRICS, SKETCHES

    assert file_count(PROFILE_METRICS, None) == 1
    assert file_count(PROFILE_METRICS, 0) == 1
    assert file_count(PROFILE_METRICS, 100_000) == 1  # a month of hourly metrics: one ~25 MB file
    per_file = TARGET_FILE_BYTES // SKETCHES.row_bytes
    assert file_count(SKETCHES, per_file) == 1
    assert file_count(SKETCHES, per_file + 1) == 2
    assert file_count(SKETCHES, 10 * per_file) == 10


def test_compact_merges_the_runs_files_and_keeps_every_row(spark, tmp_path) -> None:
    """One file per run per table adds up (hourly: thousands a year); compaction merges them, rows intact."""
    from datetime import datetime, timedelta

    from pyspark.sql import functions as F

    from lakemon.tables import PROFILE_METRICS, RUNS

    out = io.Output(OutputSpec(path=str(tmp_path / "mon")))
    io.ensure_tables(spark, out, [PROFILE_METRICS, RUNS])
    loc = out.location(PROFILE_METRICS)

    def files() -> int:
        return spark.sql(f"DESCRIBE DETAIL delta.`{loc}`").first()["numFiles"]

    day0, key = datetime(2026, 1, 1), "lakemon-test-compact"
    for i in range(6):  # six hourly runs, each replacing its window (the 3rd twice: a re-run)
        ws = day0 + timedelta(hours=i if i < 5 else 2)
        rows = spark.range(10).select(
            F.lit(key).alias("monitor"),
            F.lit(ws).alias("window_start"),
            F.lit(ws + timedelta(hours=1)).alias("window_end"),
            F.lit("1 hour").alias("granularity"),
            F.lit(None).cast("string").alias("slice_key"),
            F.lit(None).cast("string").alias("slice_value"),
            F.concat(F.lit("c"), F.col("id").cast("string")).alias("column_name"),
            F.lit("row_count").alias("metric"),
            F.lit(float(i)).alias("value"),
            F.lit(f"run{i}").alias("run_id"),
            F.current_timestamp().alias("computed_at"),
        )
        io.replace_windows(spark, out, PROFILE_METRICS, rows, key, "1 hour", [ws], rows=10)
    before = out.read(spark, PROFILE_METRICS).collect()
    assert files() == 5  # one per run; the re-run replaced the file of its window

    io.compact(spark, out, [PROFILE_METRICS, RUNS])  # RUNS: an empty table is fine
    assert files() == 1
    last = spark.sql(f"DESCRIBE HISTORY delta.`{loc}`").first()
    assert last["operation"] == "OPTIMIZE"
    after = out.read(spark, PROFILE_METRICS).collect()
    assert sorted(map(tuple, after)) == sorted(map(tuple, before))  # same rows, nothing lost or duplicated
    assert sorted({(r["window_start"], r["value"]) for r in after})[2] == (day0 + timedelta(hours=2), 5.0)


def test_conflicts_are_retried_and_a_failed_hook_after_the_commit_is_not_a_failure() -> None:
    from lakemon.io import ConcurrentRunError, _retry_conflicts

    calls: list[int] = []

    def conflict_then_ok() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("[DELTA_CONCURRENT_APPEND] Files were added by a concurrent update")

    _retry_conflicts(conflict_then_ok, "writing t", "/tmp/t-retry")
    assert len(calls) == 2

    def always_conflicts() -> None:
        raise RuntimeError("[DELTA_CONCURRENT_DELETE_READ] a concurrent update deleted a file read")

    with pytest.raises(ConcurrentRunError, match="writing t: another process kept committing"):
        _retry_conflicts(always_conflicts, "writing t", "/tmp/t-retry", attempts=2)

    hook: list[int] = []

    def committed_but_hook_failed() -> None:
        hook.append(1)
        raise RuntimeError(
            "[DELTA_POST_COMMIT_HOOK_FAILED] Committing to the Delta table version 7 succeeded but error while "
            "executing post-commit hook Checkpoint Hook: [DELTA_CONCURRENT_WRITE] ..."
        )

    _retry_conflicts(committed_but_hook_failed, "writing t", "/tmp/t-retry")  # no error, no second commit
    assert hook == [1]

    def other_error() -> None:
        raise ValueError("[DELTA_MISSING_COLUMN] no such column")

    with pytest.raises(ValueError, match="DELTA_MISSING_COLUMN"):
        _retry_conflicts(other_error, "writing t", "/tmp/t-retry")
