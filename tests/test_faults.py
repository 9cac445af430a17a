"""Fault and bad-input matrix: every case gives correct results or a clear error naming what is wrong,
and never loses (or half-writes) earlier results.

Monitoring runs are expensive here, so cases share data where they can: one module-level monitored
history (two windows already computed) serves the kill, schema-change and altered-table cases, and every
data oddity is folded into a single dataset monitored by a single run.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from builders import config, log_frame, read_table, write_config, write_log

from lakemon import io
from lakemon.cli import main as cli_main
from lakemon.config import ConfigError, parse_config
from lakemon.job import run_monitor

REPO = Path(__file__).resolve().parents[1]

# The key of one row of each windowed table (besides monitor and granularity).
TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "sketches": ("column_name",),
    "profile_metrics": ("column_name", "metric"),
    "quality_results": ("check",),
    "performance_metrics": ("metric", "class"),
    "drift_metrics": ("column_name", "statistic", "reference"),
    "alerts": ("alert_id", "notify"),
    "quality_samples": ("check", "sample_index"),
    "window_state": (),
}
# Tables that have rows for every computed window (alerts and samples may legitimately have none).
ALWAYS_WRITTEN = ("sketches", "profile_metrics", "quality_results", "performance_metrics", "drift_metrics")


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------


def _delta_version(table_path: str | Path) -> int:
    """The latest committed version of a Delta table at a path (-1 when none)."""
    log_dir = Path(table_path) / "_delta_log"
    versions = [int(p.stem) for p in log_dir.glob("*.json") if p.stem.isdigit()] if log_dir.is_dir() else []
    return max(versions, default=-1)


def _versions(out: str) -> dict[str, int]:
    return {t: _delta_version(Path(out) / t) for t in TABLE_KEYS}


def _assert_consistent(spark: Any, cfg: dict[str, Any]) -> set[Any]:
    """No duplicated key in any windowed table and no partial window; returns the computed windows."""
    from pyspark.sql import functions as F

    state = read_table(spark, cfg, "window_state")
    windows = {r[0] for r in state.select("window_start").distinct().collect()}
    for table, key in TABLE_KEYS.items():
        df = read_table(spark, cfg, table)
        cols = ["monitor", "granularity", "window_start", "slice_key", "slice_value", *key]
        dups = df.groupBy(*cols).count().where(F.col("count") > 1).limit(5).collect()
        assert not dups, f"{table}: duplicated rows {dups}"
        have = {r[0] for r in df.select("window_start").distinct().collect()}
        if table in ALWAYS_WRITTEN:
            assert have == windows, f"{table} has windows {sorted(have)}, window_state {sorted(windows)}"
        else:
            assert have <= windows, f"{table} has windows not in window_state: {sorted(have - windows)}"
    return windows


def _runs(spark: Any, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    return [r.asDict() for r in read_table(spark, cfg, "runs").collect()]


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    env["PYSPARK_PYTHON"] = sys.executable
    env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    env.pop("PYSPARK_GATEWAY_PORT", None)
    env.pop("PYSPARK_GATEWAY_SECRET", None)
    return env


def _start_cli_run(config_file: str, workdir: Path, log_name: str) -> tuple[subprocess.Popen, Path]:
    """``python -m lakemon.cli run --config F`` in its own process group (so the JVM can be killed too)."""
    log_path = workdir / log_name
    fh = open(log_path, "wb")  # noqa: SIM115 - closed by the child's exit; read back on failure
    proc = subprocess.Popen(
        [sys.executable, "-m", "lakemon.cli", "run", "--config", config_file, "--master", "local[1]"],
        cwd=workdir,
        env=_subprocess_env(),
        stdout=fh,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    fh.close()
    return proc, log_path


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "<no log>"


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


# ---------------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow writes its artifacts under the working directory: keep them out of the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def history(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A monitor whose first two windows (of four in the log) are already computed."""
    d = tmp_path_factory.mktemp("history")
    info = write_log(spark, d, rows=2000, days=4, seed=1)
    cfg = config(d)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)  # MLflow's artifacts land in the working directory
        first = run_monitor(spark, parse_config(cfg), as_of=info["start"] + timedelta(days=2), deliver=False)
    assert first.status == "success" and first.windows == info["windows"][:2]
    return {"dir": d, "info": info, "cfg": cfg, "first_run": first.run_id}


# ---------------------------------------------------------------------------------------------------
# killed and concurrent runs
# ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_killed_run_loses_nothing_and_is_recorded(spark: Any, history: dict[str, Any]) -> None:
    d, info, cfg = history["dir"], history["info"], history["cfg"]
    cfg_file = write_config(d / "kill.yaml", cfg)
    profile = Path(cfg["output"]["path"]) / "profile_metrics"
    before = _delta_version(profile)

    proc, log_path = _start_cli_run(cfg_file, d, "killed_run.log")
    try:
        deadline = time.monotonic() + 600
        while _delta_version(profile) <= before:  # the run is now writing its windows' results
            assert proc.poll() is None, (
                f"the run ended before writing (exit {proc.returncode}):\n{_tail(log_path)}"
            )
            assert time.monotonic() < deadline, f"no write within 600 s:\n{_tail(log_path)}"
            time.sleep(0.1)
    finally:
        _kill_group(proc)
    killed = [r for r in _runs(spark, cfg) if r["owner"] and r["owner"].endswith(f":{proc.pid}")]
    assert len(killed) == 1 and killed[0]["status"] == "running"
    state = {r[0] for r in read_table(spark, cfg, "window_state").select("window_start").collect()}
    assert state == set(info["windows"][:2]), "the killed run must not have marked its windows done"

    again = run_monitor(spark, parse_config(cfg), deliver=False)
    assert again.status == "success"
    assert again.windows == info["windows"][2:], "the killed run's windows are recomputed, only those"

    windows = _assert_consistent(spark, cfg)
    assert windows == set(info["windows"])
    runs = {r["run_id"]: r for r in _runs(spark, cfg)}
    k = runs[killed[0]["run_id"]]
    assert k["status"] == "failed" and "interrupted" in (k["error"] or ""), k
    assert runs[again.run_id]["status"] == "success"
    # every row comes from the run that computed its window: the first run's windows untouched,
    # the killed run's partial writes replaced
    for table in ALWAYS_WRITTEN:
        owners = {
            (r[0], r[1])
            for r in read_table(spark, cfg, table).select("window_start", "run_id").distinct().collect()
        }
        expected = {(w, history["first_run"]) for w in info["windows"][:2]}
        expected |= {(w, again.run_id) for w in info["windows"][2:]}
        assert owners == expected, f"{table}: {sorted(owners)}"


@pytest.mark.slow
def test_two_runs_at_the_same_time(spark: Any, tmp_path: Path) -> None:
    info = write_log(spark, tmp_path, rows=1500, days=3, seed=2)
    cfg = config(tmp_path)
    # the monitor exists already (its tables were created by an earlier run); the scheduler fires twice
    io.ensure_tables(spark, io.Output(parse_config(cfg).output))
    cfg_file = write_config(tmp_path / "twice.yaml", cfg)
    procs = [_start_cli_run(cfg_file, tmp_path, f"run{i}.log") for i in range(2)]
    try:
        for proc, log_path in procs:
            try:
                proc.wait(timeout=800)
            except subprocess.TimeoutExpired:
                pytest.fail(f"a run did not finish within 800 s:\n{_tail(log_path)}")
    finally:
        for proc, _ in procs:
            _kill_group(proc)

    codes = sorted(p.returncode for p, _ in procs)
    logs = "\n----\n".join(_tail(lp) for _, lp in procs)
    runs = _runs(spark, cfg)
    statuses = sorted(r["status"] for r in runs)
    assert statuses in (["success", "success"], ["refused", "success"]), f"{runs}\n{logs}"
    if statuses == ["refused", "success"]:
        assert codes == [0, 1], logs
        refused = next(r for r in runs if r["status"] == "refused")
        ok = next(r for r in runs if r["status"] == "success")
        assert "another run" in refused["error"] and ok["run_id"] in refused["error"], refused["error"]
    else:
        assert codes == [0, 0], logs
    windows = _assert_consistent(spark, cfg)
    assert windows == set(info["windows"])
    # nothing lost: every window has the full set of rows (same count per window in each table)
    for table in ("profile_metrics", "quality_results", "sketches"):
        counts = {r[0]: r[1] for r in read_table(spark, cfg, table).groupBy("window_start").count().collect()}
        assert len(set(counts.values())) == 1, f"{table}: rows per window {counts}"


def test_first_runs_racing_to_create_the_tables(spark: Any, tmp_path: Path) -> None:
    """Two first-ever runs of a monitor create its tables at the same moment: neither may fail."""
    output = io.Output(parse_config(config(tmp_path, empty_tables=False)).output)
    errors: list[str] = []

    def create() -> None:
        try:
            io.ensure_tables(spark, output)
        except Exception as err:
            errors.append(f"{type(err).__name__}: {str(err)[:200]}")

    threads = [threading.Thread(target=create) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    io.ensure_tables(spark, output)  # every table exists with its declared schema


def test_run_refused_while_an_earlier_one_is_running_writes_nothing(spark: Any, tiny: dict[str, Any]) -> None:
    """A run that finds an earlier run of its monitor still running (a live process) is refused: its row says
    so and names the other run, the other run's row is left alone, and nothing else is written."""
    from datetime import UTC, datetime

    d = tiny["dir"]
    cfg = config(d, output={"path": str(d / "out_refused")})
    parsed = parse_config(cfg)
    output = io.Output(parsed.output)
    io.ensure_tables(spark, output)
    earlier = {
        "run_id": "earlier-run",
        "monitor": parsed.monitor,
        "started_at": datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=5),
        "status": "running",
        "owner": f"{socket.gethostname()}:{os.getpid()}",  # this process: alive
    }
    io.insert_run(spark, output, earlier)
    before = _versions(cfg["output"]["path"])

    with pytest.raises(io.ConcurrentRunError, match="earlier-run"):
        run_monitor(spark, parsed, as_of=tiny["info"]["as_of"], deliver=False)
    runs = {r["run_id"]: r for r in _runs(spark, cfg)}
    assert runs.pop("earlier-run")["status"] == "running", "the other run is left alone"
    [refused] = runs.values()
    assert refused["status"] == "refused" and "earlier-run" in refused["error"], refused
    assert _versions(cfg["output"]["path"]) == before, "no results table written"
    assert read_table(spark, cfg, "window_state").count() == 0


def test_runs_whose_inserts_cross_are_ordered_by_commit_not_by_clock(spark: Any, tmp_path: Path) -> None:
    """The run that started first may commit its ``runs`` row second (a slower start, a clock behind): it must
    then be refused, not go on beside the other. A ``runs`` table created by an earlier lakemon (no row
    tracking, no ``labels_at_watermark``) gets both at start, its rows kept."""
    from datetime import UTC, datetime

    from pyspark.sql.types import StructType

    from lakemon.tables import RUNS
    from lakemon.tracking.record import settle_running_runs

    cfg = config(tmp_path, output={"path": str(tmp_path / "out_crossing")}, empty_tables=False)
    parsed = parse_config(cfg)
    output = io.Output(parsed.output)
    earlier_ddl = RUNS.ddl.replace(", labels_at_watermark BIGINT", "")
    assert earlier_ddl != RUNS.ddl
    spark.sql(
        f"CREATE TABLE delta.`{output.location(RUNS)}` ({earlier_ddl}) USING DELTA"
    )  # as lakemon 0.x did
    now = datetime.now(UTC).replace(tzinfo=None)
    alive = f"{socket.gethostname()}:{os.getpid()}"  # this process: both runs are alive
    old = {
        "run_id": "old",
        "monitor": parsed.monitor,
        "started_at": now - timedelta(days=1),
        "status": "success",
    }
    schema = StructType.fromDDL(earlier_ddl)
    spark.createDataFrame([{c: old.get(c) for c in schema.fieldNames()}], schema).write.format("delta").mode(
        "append"
    ).save(output.location(RUNS))
    io.ensure_tables(spark, output)
    assert "row_commit_version" in output.read(spark, RUNS).select("_metadata.*").columns

    first = {"run_id": "started-first", "monitor": parsed.monitor, "started_at": now, "status": "running"}
    second = {**first, "run_id": "started-second", "started_at": now + timedelta(seconds=2)}
    io.insert_run(spark, output, {**second, "owner": alive})  # the second to start commits its row first
    prior = settle_running_runs(spark, output, parsed.monitor, "started-second", second["started_at"])
    assert prior.runs == 2  # the run before row tracking is kept and counted
    io.insert_run(spark, output, {**first, "owner": alive})
    with pytest.raises(io.ConcurrentRunError, match="started-second"):
        settle_running_runs(spark, output, parsed.monitor, "started-first", first["started_at"])
    runs = _runs(spark, cfg)
    assert {r["run_id"]: r["status"] for r in runs} == {
        "old": "success",
        "started-first": "refused",
        "started-second": "running",
    }
    assert all(
        r["labels_at_watermark"] is None for r in runs
    )  # the added column, NULL where nothing wrote it


# ---------------------------------------------------------------------------------------------------
# source schema changes
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("dropped", ["'num_b'", "source.features.numeric[1]", "has no column"]),
        ("retyped", ["'num_b'", "source.features.numeric[1]", "must be numeric", "string"]),
    ],
)
def test_source_schema_change_is_a_clear_error(
    spark: Any, history: dict[str, Any], variant: str, expected: list[str]
) -> None:
    d, cfg = history["dir"], history["cfg"]
    df = log_frame(spark, rows=300, days=1, seed=1)
    df = df.drop("num_b") if variant == "dropped" else df.withColumn("num_b", df["num_b"].cast("string"))
    path = str(d / f"log_{variant}")
    df.write.format("delta").mode("overwrite").save(path)
    bad = config(d, source={"table": path})
    before = _versions(cfg["output"]["path"])

    with pytest.raises(io.SourceError) as err:
        run_monitor(spark, parse_config(bad), deliver=False)
    msg = str(err.value)
    for part in [path, *expected]:
        assert part in msg, msg

    after = _versions(cfg["output"]["path"])
    assert {t: v for t, v in after.items()} == before, "earlier results must be untouched"
    failed = [r for r in _runs(spark, cfg) if r["status"] == "failed" and "num_b" in (r["error"] or "")]
    assert any("SourceError" in r["error"] and path in r["error"] for r in failed), failed


# ---------------------------------------------------------------------------------------------------
# bad data: all oddities in one dataset, one run
# ---------------------------------------------------------------------------------------------------

# 2000 rows over 5 days, 400 a day: row ``rid`` belongs to day ``rid // 400``.
ODD_DATA = {
    "unused_new_col": "concat('new_', cast(rid AS string))",  # a new column the config does not list
    # day 2 keeps a single row (the rest moves to day 1), day 3 moves to day 4 (an empty window),
    # a few rows are stamped far in the future (an incomplete window, never computed)
    "ts": "CASE WHEN day = 2 AND rid != 800 THEN ts - INTERVAL 1 DAY "
    "WHEN day = 3 THEN ts + INTERVAL 1 DAY "
    "WHEN rid % 397 = 11 THEN TIMESTAMP'2099-01-01 00:00:00' ELSE ts END",
    "num_a": "CASE WHEN rid % 97 = 3 THEN double('NaN') WHEN rid % 89 = 4 THEN double('Infinity') "
    "WHEN rid % 83 = 5 THEN double('-Infinity') ELSE num_a END",
    "num_b": "5.0",  # constant
    "num_c": "CAST(NULL AS DOUBLE)",  # all NULL
    "cat_b": "CAST(NULL AS STRING)",  # all NULL, categorical
    "score": "CASE WHEN rid % 101 = 6 THEN double('NaN') WHEN rid % 103 = 7 THEN 1.5 ELSE score END",
    "label": "CASE WHEN rid % 53 = 8 THEN 2 WHEN rid % 59 = 9 THEN -1 ELSE label END",
    "prediction_id": "IF(rid % 211 = 10, 'dup', prediction_id)",
}


def test_odd_data_gives_null_with_reason_or_failed_checks(spark: Any, tmp_path: Path) -> None:
    info = write_log(spark, tmp_path, rows=2000, days=5, seed=3, extra=ODD_DATA)
    w = info["windows"]
    cfg = config(
        tmp_path,
        quality={
            "checks": [
                {"check": "between", "column": "num_b", "args": {"min": 0, "max": 100}},
                {"check": "in_set", "column": "cat_a", "args": {"values": ["a", "b", "c"]}},
                {"check": "in_set", "column": "label", "args": {"values": [0, 1]}},
            ]
        },
    )
    result = run_monitor(spark, parse_config(cfg), as_of=info["as_of"], deliver=False)
    assert result.status == "success"
    assert result.windows == [w[0], w[1], w[2], w[4]], "no empty window, no future window"
    assert _assert_consistent(spark, cfg) == {w[0], w[1], w[2], w[4]}

    # quality: each oddity flagged by the check made for it (population rows)
    q = read_table(spark, cfg, "quality_results").where("slice_key IS NULL").collect()
    verdict = {(r["check"], r["window_start"]): r for r in q}
    for check, window in [
        ("unique_prediction_id", w[0]),
        ("unique_prediction_id", w[4]),
        ("no_nan_or_inf_num_a", w[0]),
        ("score_in_unit_interval_score", w[0]),
        ("in_set_label", w[0]),
    ]:
        r = verdict[(check, window)]
        assert not r["passed"] and r["rows_failed"] > 0, r
    assert verdict[("unique_prediction_id", w[2])]["passed"]  # a single row is unique
    assert all(verdict[("between_num_b", x)]["passed"] for x in (w[0], w[1], w[2], w[4]))
    assert all(verdict[("in_set_cat_a", x)]["passed"] for x in (w[0], w[1], w[2], w[4]))
    # the score check counts the NaN and the 1.5 scores of the first day
    n_bad_scores = sum(1 for rid in range(0, 400) if rid % 101 == 6 or rid % 103 == 7)
    assert verdict[("score_in_unit_interval_score", w[0])]["rows_failed"] >= n_bad_scores - 1

    # profile: all-NULL and constant columns are described, never NaN
    prof = read_table(spark, cfg, "profile_metrics").where("slice_key IS NULL").collect()
    pm = {(r["window_start"], r["column_name"], r["metric"]): r["value"] for r in prof}
    assert pm[(w[0], "num_c", "count")] == 0 and pm[(w[0], "num_c", "null_ratio")] == 1.0
    assert pm[(w[0], "num_c", "avg")] is None
    assert pm[(w[0], "num_b", "min")] == pm[(w[0], "num_b", "max")] == 5.0
    assert pm[(w[0], "num_b", "stddev")] == 0.0
    assert pm[(w[0], "num_a", "num_nan")] > 0 and pm[(w[0], "num_a", "num_inf")] > 0
    assert pm[(w[2], ":table", "row_count")] == 1
    assert "unused_new_col" not in {k[1] for k in pm}, "a column the config does not list is ignored"

    # no NaN or infinity stored anywhere; every NULL value of drift and performance says why
    for table in ("profile_metrics", "drift_metrics", "performance_metrics"):
        for r in read_table(spark, cfg, table).collect():
            v = r["value"]
            assert v is None or math.isfinite(v), f"{table}: non-finite value in {r.asDict()}"
            if table != "profile_metrics" and v is None:
                assert r["reason"], f"{table}: NULL value without a reason: {r.asDict()}"
    for r in read_table(spark, cfg, "quality_results").collect():
        assert r["fail_ratio"] is None or math.isfinite(r["fail_ratio"]), r.asDict()

    # the single-row window: too few rows for performance and drift, said so
    perf = read_table(spark, cfg, "performance_metrics").where("slice_key IS NULL").collect()
    single = {r["metric"]: r for r in perf if r["window_start"] == w[2] and r["class"] is None}
    assert single["accuracy"]["value"] is None and "min_labeled" in single["accuracy"]["reason"]
    drift = read_table(spark, cfg, "drift_metrics").where("slice_key IS NULL").collect()
    d_single = [
        r
        for r in drift
        if r["window_start"] == w[2]
        and r["column_name"] == "num_a"
        and r["reference"] == "baseline"
        and r["statistic"] == "wasserstein_normalized"
    ]
    assert d_single and d_single[0]["value"] is None and d_single[0]["reason"], d_single
    # the all-NULL columns cannot drift: NULL with a reason, not a false alarm
    for col in ("num_c", "cat_b"):
        rows = [r for r in drift if r["column_name"] == col and r["window_start"] == w[1] and r["threshold"]]
        assert rows and all(r["value"] is None and r["reason"] and not r["drifted"] for r in rows), rows
    # labels outside {0, 1} do not break performance: the labeled window still has its metrics
    acc = next(
        r for r in perf if r["window_start"] == w[1] and r["metric"] == "accuracy" and r["class"] is None
    )
    assert acc["value"] is not None and 0.0 <= acc["value"] <= 1.0


# ---------------------------------------------------------------------------------------------------
# baseline, monitoring tables, config
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("tiny")
    return {"dir": d, "info": write_log(spark, d, rows=300, days=1, seed=4)}


@pytest.mark.parametrize("kind", ["missing", "corrupt"])
def test_bad_baseline_table_is_a_clear_error(spark: Any, tiny: dict[str, Any], kind: str) -> None:
    d = tiny["dir"]
    baseline = str(d / f"baseline_{kind}")
    if kind == "corrupt":  # a Delta table whose transaction log was damaged
        log_frame(spark, rows=50, days=1, seed=5).write.format("delta").save(baseline)
        (Path(baseline) / "_delta_log" / "00000000000000000000.json").write_text("{not json\n")
    cfg = config(d, baseline={"range": None, "table": baseline}, output={"path": str(d / f"out_{kind}")})

    with pytest.raises(io.SourceError) as err:
        run_monitor(spark, parse_config(cfg), as_of=tiny["info"]["as_of"], deliver=False)
    msg = str(err.value)
    assert "baseline" in msg and baseline in msg, msg
    runs = _runs(spark, cfg)
    assert [r["status"] for r in runs] == ["failed"] and baseline in runs[0]["error"], runs
    assert read_table(spark, cfg, "window_state").count() == 0, "nothing marked done"


def test_labels_timestamp_of_another_type_is_a_clear_error(spark: Any, tiny: dict[str, Any]) -> None:
    """The labels' timestamp orders an id's labels and bounds what a run reads (``labels.max_lead``): a string
    column there is refused before any data is read, naming the table, the column and the config key."""
    d = tiny["dir"]
    labels = str(d / "labels_string_ts")
    log_frame(spark, rows=50, days=1, seed=4).selectExpr(
        "prediction_id", "label", "CAST(ts AS STRING) AS labeled_at"
    ).write.format("delta").save(labels)
    cfg = config(
        d,
        labels={"table": labels, "id": "prediction_id", "column": "label", "timestamp": "labeled_at"},
        output={"path": str(d / "out_labels_ts")},
    )

    with pytest.raises(io.SourceError) as err:
        run_monitor(spark, parse_config(cfg), as_of=tiny["info"]["as_of"], deliver=False)
    msg = str(err.value)
    for part in (labels, "'labeled_at'", "labels.timestamp", "must be a timestamp or date", "string"):
        assert part in msg, msg
    assert read_table(spark, cfg, "window_state").count() == 0, "nothing marked done"


def test_labels_timestamp_of_type_date(spark: Any, tiny: dict[str, Any]) -> None:
    """Labels stamped with a DATE: the run is recorded with its watermark (a timestamp column of ``runs``) and
    the count of labels of that date. Labels of the same date appended later, and labels of a later date,
    re-open the windows of their predictions (the window then counts them); a run with no new label computes
    nothing."""
    from datetime import datetime, timedelta

    from pyspark.sql import functions as F

    d = tiny["dir"]
    labels = str(d / "labels_date")
    rows = log_frame(spark, rows=300, days=1, seed=4)
    part = F.substring("prediction_id", 2, 10).cast("int") % 4

    def add_labels(parts: list[int], day: str) -> int:
        batch = rows.where(part.isin(parts)).selectExpr(
            "prediction_id", "label", f"DATE'{day}' AS labeled_on"
        )
        batch.write.format("delta").mode("append").save(labels)
        return batch.count()

    cfg = config(
        d,
        labels={"table": labels, "id": "prediction_id", "column": "label", "timestamp": "labeled_on"},
        output={"path": str(d / "out_labels_date")},
        performance={"min_labeled": 20},
        baseline=None,
    )
    parsed = parse_config(cfg)
    [window] = tiny["info"]["windows"]

    def run(hours: int) -> tuple[Any, dict[str, Any], float]:
        res = run_monitor(spark, parsed, as_of=tiny["info"]["as_of"] + timedelta(hours=hours), deliver=False)
        assert res.status == "success", res.error
        last = max(_runs(spark, cfg), key=lambda r: r["started_at"])
        labeled = (
            read_table(spark, cfg, "performance_metrics")
            .where(F.col("slice_key").isNull() & (F.col("metric") == "labeled_count"))
            .select("value")
            .first()[0]  # one row: the population's count of the only window
        )
        return res, last, labeled

    first_batch = add_labels([0], "2026-03-04")
    res, row, labeled = run(0)
    assert res.windows == [window]
    assert row["labels_watermark"] == datetime(2026, 3, 4) and row["labels_at_watermark"] == first_batch, row
    assert labeled == first_batch

    # a second batch of the same date: more labels stamped with the watermark than the last run counted
    second_batch = add_labels([2], "2026-03-04")
    res, row, labeled = run(1)
    assert res.windows == [window] and res.reasons[window] == "new_labels", res.reasons
    assert row["labels_at_watermark"] == first_batch + second_batch, row
    assert labeled == first_batch + second_batch

    # nothing new: nothing computed, the count kept
    res, row, _ = run(2)
    assert res.windows == [] and row["labels_at_watermark"] == first_batch + second_batch, row

    later = add_labels([1, 3], "2026-03-05")
    res, row, labeled = run(3)
    assert res.windows == [window] and res.reasons[window] == "new_labels", res.reasons
    assert row["labels_watermark"] == datetime(2026, 3, 5) and row["labels_at_watermark"] == later, row
    assert labeled == first_batch + second_batch + later == 300
    assert [r["status"] for r in _runs(spark, cfg)] == ["success"] * 4


def test_monitoring_table_altered_by_hand(spark: Any, history: dict[str, Any], tmp_path: Path) -> None:
    out = str(tmp_path / "monitoring")
    shutil.copytree(history["cfg"]["output"]["path"], out)
    cfg = config(history["dir"], output={"path": out})
    drift_path = f"{out}/drift_metrics"
    altered = spark.read.format("delta").load(drift_path).drop("reason")
    n = altered.count()
    altered.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(drift_path)
    before = _versions(out)

    with pytest.raises(io.MonitoringTableError) as err:
        run_monitor(spark, parse_config(cfg), deliver=False)
    msg = str(err.value)
    assert "drift_metrics" in msg and "'reason'" in msg and "missing" in msg, msg
    assert _versions(out) == before, "nothing written when a monitoring table is broken"
    assert spark.read.format("delta").load(drift_path).count() == n


@pytest.mark.parametrize(
    ("override", "key", "what"),
    [
        ({"drift": {"thresold": 0.2}}, "drift.thresold", "unknown key"),
        ({"performance": {"min_labeled": "plenty"}}, "performance.min_labeled", "integer"),
        ({"source": {"timestamp": None}}, "source.timestamp", "required key is missing"),
    ],
)
def test_bad_config_names_the_key_before_reading_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], override, key, what
) -> None:
    raw = config(tmp_path, **override)  # the source table does not even exist: it must not be read
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert f"'{key}'" in str(err.value) and what in str(err.value), str(err.value)

    import lakemon.cli

    def no_spark(*_: Any, **__: Any) -> None:
        raise AssertionError("a bad config must be rejected before Spark reads anything")

    monkeypatch.setattr(lakemon.cli, "_spark", no_spark)
    code = cli_main(["run", "--config", write_config(tmp_path / "bad.yaml", raw)])
    assert code == 2
    assert key in capsys.readouterr().err
