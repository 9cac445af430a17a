"""Smoke test of ``jobs/benchmark.py``: every part runs at a tiny size and the JSON has its figures.

Speed targets are the benchmark's business, not this test's: only presence and positivity are checked
(plus GX/lakemon count parity, which is a correctness property)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


@pytest.mark.slow
def test_benchmark_smoke(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable,
        str(BENCH),
        "--rows",
        "20000",
        "--days",
        "4",
        "--skip-scaling",  # the scaling and many-models parts repeat the same code at other sizes:
        "--skip-multi",  # the suite keeps to one pass of each part (the benchmark itself runs them all)
        "--naive-days",
        "1",
        "--workdir",
        str(tmp_path / "wd"),
        "--out",
        str(out),
    ]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "floor" in proc.stdout  # the printed table

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
    assert _positive(res["machine"]["cores"]) and _positive(res["machine"]["memory_gb"])
    assert res["command"].startswith("python jobs/benchmark.py --rows 20000")
