"""Concurrent Delta transactions on distinct tables: the run's job group follows the threads, every write
finishes before a failure is raised, and the tables are created and written as if one after another."""

from __future__ import annotations

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
