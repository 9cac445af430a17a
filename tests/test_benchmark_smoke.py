"""Smoke test of ``jobs/benchmark.py``: every part runs at a tiny size and the JSON has its figures.

Speed targets are the benchmark's business, not this test's: only presence and positivity are checked
(plus GX/lakemon count parity, which is a correctness property). It runs in the suite's Spark session:
the benchmark's parts are what is tested here, not the start of a JVM (``tests/test_cluster.py`` and the
fault matrix run the entry points in processes of their own)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "jobs" / "benchmark.py"

POSITIVE = [
    "rows",
    "rows_actual",
    "floor_s",
    "full_s",
    "full_warm_s",
    "ratio",
    "ratio_cold",
    "gx_ratio",
    "naive_ratio",
    "spark_jobs",
    "driver_peak_rss_mb",
    "jvm_peak_rss_mb",
    "incremental_s",
    "incremental_ratio",
]


def _positive(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and x > 0


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("lakemon_benchmark", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_benchmark_smoke(spark, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = [
        "--rows",
        "20000",
        "--days",
        "4",
        "--skip-scaling",  # the scaling and many-models parts repeat the same code at other sizes:
        "--skip-multi",  # the suite keeps to one pass of each part (the benchmark itself runs them all)
        "--naive-days",
        "1",
        "--gx-repeats",
        "1",
        "--workdir",
        str(tmp_path / "wd"),
        "--out",
        str(out),
    ]
    length = spark.conf.get("spark.sql.maxMetadataStringLength")
    assert _benchmark_module().main(argv, spark=spark) == 0
    assert "floor" in capsys.readouterr().out  # the printed table
    assert spark.range(3).count() == 3  # the session it was given is still usable, its settings as they were
    assert spark.conf.get("spark.sql.maxMetadataStringLength") == length

    res = json.loads(out.read_text())
    assert res["errors"] == {}, res["errors"]
    assert "partial" not in res
    for key in POSITIVE:
        assert _positive(res.get(key)), (key, res.get(key))
    assert res["gx_counts_equal"] is True, res.get("gx_mismatches")
    assert res["naive_extrapolated"] is True
    assert res["phases"] and all(isinstance(v, int | float) and v >= 0 for v in res["phases"].values())
    assert sum(res["phases"].values()) > 0
    assert res["incremental_windows"] == 1
    # the run reads the log's files (column-pruned scans: discovery, the rows it caches) and
    # the labels'; the one-day run reads less of the log than the full run
    for key in ("scans", "scans_warm", "incremental_scans"):
        assert res[key]["predictions"]["scans"] >= 1 and res[key]["labels"]["scans"] >= 1, (key, res[key])
    assert res["scans"]["baseline"]["scans"] >= 1  # the cold run profiles the baseline table
    assert 0 < res["incremental_scans"]["predictions"]["bytes"] < res["scans_warm"]["predictions"]["bytes"]
    assert _positive(res["machine"]["cores"]) and _positive(res["machine"]["memory_gb"])
    assert res["command"].startswith("python jobs/benchmark.py --rows 20000")
