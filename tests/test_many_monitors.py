"""``lakemon run --config FOLDER``: every monitor of the folder runs in one session, side by side
(``--parallel``), into shared monitoring tables; a broken one is recorded as failed, does not stop the
others, and makes the exit code 1."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from builders import config, read_table, write_config, write_log

from lakemon.cli import main

VALID = ((1, "alpha", 21), (3, "beta", 22))


def test_folder_of_monitors_side_by_side_with_a_broken_one(
    spark: Any, tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    monkeypatch.chdir(tmp_path)  # MLflow artifacts
    folder = tmp_path / "monitors"
    shared = tmp_path / "shared"  # one output location and one MLflow store for all monitors
    common = {
        "output": {"path": str(shared / "monitoring")},
        "mlflow": {"tracking_uri": f"sqlite:///{shared / 'mlflow.db'}"},
    }
    configs = {}
    logs = {}
    for order, name, seed in VALID:
        d = tmp_path / name
        logs[name] = write_log(spark, d, rows=1200, days=3, seed=seed)
        configs[name] = config(d, monitor=f"{name}_monitor", **common)
        write_config(folder / f"{order}_{name}.yaml", configs[name])
    missing = str(tmp_path / "gamma" / "no_such_table")
    configs["gamma"] = config(
        tmp_path / "gamma", monitor="gamma_monitor", source={"table": missing}, **common
    )
    write_config(folder / "2_gamma.yaml", configs["gamma"])  # between the valid ones

    code = main(["run", "--config", str(folder), "--parallel", "2"])
    out = capsys.readouterr().out

    assert code == 1, "a failed monitor makes the exit code 1"
    any_cfg = configs["alpha"]
    runs = {r["monitor"]: r.asDict() for r in read_table(spark, any_cfg, "runs").collect()}
    assert sorted(runs) == sorted(f"{n}_monitor" for n in ("alpha", "beta", "gamma")), runs
    for _, name, _ in VALID:
        mon = configs[name]["monitor"]
        run = runs[mon]
        assert run["status"] == "success", run
        assert run["windows"] == 3 and run["rows_read"] == 1200, run
        assert run["spark_jobs"] > 0 and run["mlflow_run_id"], run
        assert f"{mon}: success" in out
    gamma = runs["gamma_monitor"]
    assert gamma["status"] == "failed"
    assert "SourceError" in gamma["error"] and missing in gamma["error"], gamma["error"]

    # every monitor's windows once, nothing of the broken one, no duplicated row in any shared table
    state = read_table(spark, any_cfg, "window_state").where("slice_key IS NULL").collect()
    assert Counter(r["monitor"] for r in state) == {f"{n}_monitor": 3 for _, n, _ in VALID}
    for _, name, _ in VALID:
        mon = configs[name]["monitor"]
        assert {r["window_start"] for r in state if r["monitor"] == mon} == set(logs[name]["windows"])
        assert sum(r["row_count"] for r in state if r["monitor"] == mon) == 1200
    key = ["monitor", "window_start", "slice_key", "slice_value", "column_name", "metric"]
    prof = read_table(spark, any_cfg, "profile_metrics")
    assert prof.count() == prof.select(*key).distinct().count() > 0
    per_monitor = Counter(r["monitor"] for r in prof.select("monitor").collect())
    assert set(per_monitor) == {f"{n}_monitor" for _, n, _ in VALID}
    assert len(set(per_monitor.values())) == 1, per_monitor  # same columns, slices and windows each
    for table in ("drift_metrics", "quality_results", "performance_metrics"):
        df = read_table(spark, any_cfg, table)
        assert {r["monitor"] for r in df.select("monitor").distinct().collect()} == set(per_monitor), table

    # one MLflow run per monitor in the shared store, each the one its runs row names
    with sqlite3.connect(shared / "mlflow.db") as db:
        ids = {r[0] for r in db.execute("select run_uuid from runs")}
    assert {runs[configs[n]["monitor"]]["mlflow_run_id"] for _, n, _ in VALID} <= ids
