"""``lakemon run --config FOLDER``: every monitor of the folder runs in one session; a broken one is
recorded as failed in its own ``runs`` table, does not stop the others, and makes the exit code 1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from builders import config, read_table, write_config, write_log

from lakemon.cli import main


def test_folder_of_monitors_with_a_broken_one(
    spark: Any, tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    monkeypatch.chdir(tmp_path)  # MLflow artifacts
    folder = tmp_path / "monitors"
    configs = {}
    for order, name, seed in ((1, "alpha", 21), (3, "beta", 22)):
        d = tmp_path / name
        info = write_log(spark, d, rows=1200, days=3, seed=seed)
        configs[name] = config(d, monitor=f"{name}_monitor")
        write_config(folder / f"{order}_{name}.yaml", configs[name])
    missing = str(tmp_path / "gamma" / "no_such_table")
    configs["gamma"] = config(tmp_path / "gamma", monitor="gamma_monitor", source={"table": missing})
    write_config(folder / "2_gamma.yaml", configs["gamma"])  # between the two valid ones

    code = main(["run", "--config", str(folder)])
    out = capsys.readouterr().out

    assert code == 1, "a failed monitor makes the exit code 1"
    for name in ("alpha", "beta"):
        cfg = configs[name]
        runs = [r.asDict() for r in read_table(spark, cfg, "runs").collect()]
        assert [(r["monitor"], r["status"]) for r in runs] == [(cfg["monitor"], "success")], runs
        assert runs[0]["windows"] == len(info["windows"])
        state = read_table(spark, cfg, "window_state").select("monitor", "window_start").collect()
        assert {r["window_start"] for r in state} == set(info["windows"])
        assert {r["monitor"] for r in state} == {cfg["monitor"]}
        assert f"{cfg['monitor']}: success" in out
    broken = [r.asDict() for r in read_table(spark, configs["gamma"], "runs").collect()]
    assert [(r["monitor"], r["status"]) for r in broken] == [("gamma_monitor", "failed")], broken
    assert "SourceError" in broken[0]["error"] and missing in broken[0]["error"], broken[0]["error"]
    assert read_table(spark, configs["gamma"], "window_state").count() == 0
