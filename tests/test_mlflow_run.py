"""One MLflow run per monitoring run, in the store its monitor names (no Spark)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from builders import empty_mlflow_store

from lakemon.tracking import mlflow_run


def _runs(db: Path) -> list[str]:
    with sqlite3.connect(db) as con:
        return [r[0] for r in con.execute("select name from runs")]


def test_a_monitor_without_a_tracking_uri_logs_to_the_process_store(tmp_path: Path, monkeypatch: Any) -> None:
    """MLflow keeps the tracking URI process-wide: after a monitor that named a store, one that names none
    (a folder of monitors in one job) logs to the process's own store, not to the other monitor's."""
    named, default = tmp_path / "named.db", tmp_path / "default.db"
    for db in (named, default):
        empty_mlflow_store(db)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(mlflow_run, "_PROCESS_URI", [f"sqlite:///{default}"])

    def log(uri: str | None, name: str) -> str:
        return mlflow_run.log_run(uri, "lakemon-tests", name, {"p": 1}, {"m": 1.0}, {}, {"summary.json": {}})

    log(f"sqlite:///{named}", "first")
    log(None, "second")
    log(f"sqlite:///{named}", "third")
    assert sorted(_runs(named)) == ["first", "third"]
    assert _runs(default) == ["second"]
