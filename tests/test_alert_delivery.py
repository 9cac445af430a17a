"""Alerts through a whole run: a real webhook on loopback and a real Pushgateway receive them, secrets never
leak into logs, tables or MLflow, a re-run does not notify twice, and --fail-on sets the exit code."""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from builders import empty_mlflow_store

from lakemon import io
from lakemon.config import parse_config
from lakemon.job import run_monitor
from lakemon.tables import ALL_TABLES

try:
    from tests import servers
except ImportError:  # pragma: no cover - rootdir-relative import
    import servers

D0 = datetime(2026, 5, 4)
SECRET = "s3cr3t-token-0f-the-hook"


def _log(n: int = 4000, days: int = 3, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    day = rng.integers(0, days, n)
    x = rng.normal(0, 1, n) + np.where(day == days - 1, 2.0, 0.0)  # the last day drifts hard
    score = 1 / (1 + np.exp(-x))
    return pd.DataFrame(
        {
            "id": [f"i{i}" for i in range(n)],
            "ts": [
                D0 + timedelta(days=int(d), seconds=int(s))
                for d, s in zip(day, rng.integers(0, 86400, n), strict=True)
            ],
            "x": x,
            "c": rng.choice(["p", "q"], n),
            "score": score,
            "prediction": (score >= 0.5).astype(int),
            "label": (rng.random(n) < score).astype(int),
        }
    )


@pytest.fixture
def setup(spark, tmp_path, monkeypatch):
    servers.no_proxy(monkeypatch)
    spark.createDataFrame(_log()).write.format("delta").save(str(tmp_path / "log"))
    return tmp_path


def test_run_delivers_alerts_once_without_leaking_secrets(spark, setup, monkeypatch, caplog):
    tmp = setup
    empty_mlflow_store(tmp / "mlflow.db")
    # the hook answers 500 to the first run's two attempts (retries: 1): that notification failed
    with servers.RecordingServer(fail_first=2) as hook, servers.pushgateway() as gateway:
        monkeypatch.setenv("LAKEMON_TEST_HOOK", f"{hook.url}/hook/{SECRET}")
        monkeypatch.setenv("LAKEMON_TEST_GATEWAY", gateway)
        raw = {
            "monitor": "delivery",
            "model": {"name": "m"},
            "problem_type": "binary",
            "source": {
                "table": str(tmp / "log"),
                "timestamp": "ts",
                "id": "id",
                "prediction": "prediction",
                "score": "score",
                "features": {"numeric": ["x"], "categorical": ["c"]},
            },
            "labels": {"column": "label"},
            "slices": [{"column": "c"}],
            "baseline": {"range": {"start": D0.isoformat(), "end": (D0 + timedelta(days=1)).isoformat()}},
            "output": {"path": str(tmp / "mon")},
            "mlflow": {"experiment": "delivery", "tracking_uri": f"sqlite:///{tmp}/mlflow.db"},
            "alerts": {
                "sinks": [{"name": "hook", "kind": "generic", "url_env": "LAKEMON_TEST_HOOK", "retries": 1}],
                "prometheus": {"pushgateway_env": "LAKEMON_TEST_GATEWAY"},
            },
        }
        cfg = parse_config(raw)
        with caplog.at_level(logging.DEBUG):
            res = run_monitor(spark, cfg, as_of=D0 + timedelta(days=5))
            assert res.status == "success"
            assert len(hook.requests) == 2
            failed = out_alerts(spark, cfg).where("notify != 'none'").collect()
            assert failed and all('"failed"' in (r["delivery"] or "") for r in failed)
            # a backfill without delivery sends nothing and leaves them failed
            quiet = run_monitor(
                spark, cfg, as_of=D0 + timedelta(days=5), start=D0, end=D0 + timedelta(days=3), deliver=False
            )
            assert quiet.status == "success" and len(hook.requests) == 2
            still = out_alerts(spark, cfg).where("notify != 'none'").collect()
            assert sorted(r["delivery"] for r in still) == sorted(r["delivery"] for r in failed)
            # a backfill of the same windows sends what no sink took, once
            retried = run_monitor(
                spark, cfg, as_of=D0 + timedelta(days=5), start=D0, end=D0 + timedelta(days=3)
            )
        assert retried.status == "success" and len(hook.requests) == 3

        def notes(i: int) -> list:
            return sorted(
                (a["alert_id"], a["window_start"], a["notify"]) for a in hook.requests[i].json()["alerts"]
            )

        assert notes(2) == notes(0)
        payload = hook.requests[2].json()
        alerts = payload["alerts"]
        assert any(a["signal"] == "drift" and a["column_name"] == "x" for a in alerts)
        assert all(a["notify"] in ("open", "escalate", "resolve") for a in alerts)
        metrics = servers.read_metrics(gateway)
        assert "lakemon_alerts_firing{" in metrics and 'monitor="delivery"' in metrics
        assert "lakemon_drift_value" in metrics

        # a backfill of the same windows re-evaluates the same alerts and does not notify again
        again = run_monitor(spark, cfg, as_of=D0 + timedelta(days=5), start=D0, end=D0 + timedelta(days=3))
        assert again.windows and len(hook.requests) == 3

        # a backfill of the first day alone leaves the Pushgateway with the newest window's state
        pushed = [
            ln for ln in servers.read_metrics(gateway).splitlines() if ln.startswith("push_time_seconds")
        ]
        first_day = run_monitor(
            spark, cfg, as_of=D0 + timedelta(days=5), start=D0, end=D0 + timedelta(days=1)
        )
        assert first_day.windows == [D0]
        after = [
            ln for ln in servers.read_metrics(gateway).splitlines() if ln.startswith("push_time_seconds")
        ]
        assert pushed and after == pushed

    # the secret appears nowhere: logs, every monitoring table, the MLflow store
    assert SECRET not in caplog.text
    out = io.Output(cfg.output)
    for t in ALL_TABLES:
        df = out.read(spark, t)
        text = " ".join(str(r) for r in df.collect())
        assert SECRET not in text, t.name
    con = sqlite3.connect(tmp / "mlflow.db")
    for table in ("params", "tags", "metrics"):
        assert SECRET not in str(con.execute(f"select * from {table}").fetchall())
    delivered = out_alerts(spark, cfg).where("notify != 'none'").collect()
    assert delivered and all('"delivered"' in (r["delivery"] or "") for r in delivered)


def out_alerts(spark, cfg):
    from lakemon.tables import ALERTS

    return io.Output(cfg.output).read(spark, ALERTS)


def test_fail_on_sets_the_exit_code(spark, setup):
    from lakemon.cli import main

    tmp = setup
    empty_mlflow_store(tmp / "mlflow2.db")
    cfg = {
        "monitor": "failon",
        "model": {"name": "m"},
        "problem_type": "binary",
        "source": {
            "table": str(tmp / "log"),
            "timestamp": "ts",
            "id": "id",
            "prediction": "prediction",
            "score": "score",
            "features": {"numeric": ["x"]},
        },
        "baseline": {"range": {"start": D0.isoformat(), "end": (D0 + timedelta(days=1)).isoformat()}},
        "output": {"path": str(tmp / "mon2")},
        "mlflow": {"experiment": "failon", "tracking_uri": f"sqlite:///{tmp}/mlflow2.db"},
        "alerts": {
            "rules": [
                {
                    "name": "x_drift",
                    "signal": "drift",
                    "metric": "wasserstein_normalized",
                    "severity": "critical",
                }
            ]
        },
    }
    import yaml

    path = tmp / "failon.yaml"
    path.write_text(yaml.safe_dump(cfg))
    as_of = (D0 + timedelta(days=5)).isoformat()
    assert main(["run", "--config", str(path), "--as-of", as_of, "--fail-on", "critical"]) == 3
    assert (
        main(
            [
                "run",
                "--config",
                str(path),
                "--as-of",
                as_of,
                "--start",
                D0.isoformat(),
                "--fail-on",
                "critical",
            ]
        )
        == 3
    )


def test_alerts_late_data_clears_are_retracted_once(spark, tmp_path, monkeypatch, caplog):
    """Late rows make the windows that opened alerts clean: their recomputation has no row for them, and
    receivers, which hold them open, get one resolve each (a retraction), recorded in ``notifications``, from
    the first run that reaches the newest window; a later run over the same windows sends nothing more."""
    from pyspark.sql import functions as F

    from lakemon.tables import NOTIFICATIONS

    servers.no_proxy(monkeypatch)
    caplog.set_level(logging.INFO, logger="lakemon")
    rng = np.random.default_rng(7)

    def rows(n: int, days: list[int], start: int, holes: bool = True) -> pd.DataFrame:
        day = rng.choice(days, n)
        return pd.DataFrame(
            {
                "id": [f"i{start + i}" for i in range(n)],
                "ts": [
                    D0 + timedelta(days=int(d), seconds=int(s))
                    for d, s in zip(day, rng.integers(0, 86400, n), strict=True)
                ],
                "x": rng.normal(0, 1, n),
                "y": rng.normal(0, 1, n),
                # about half of x is NULL on day 2, of y on days 1 and 2 (its episode spans both)
                "x_hole": holes & (day == 2) & (rng.random(n) < 0.5),
                "y_hole": holes & (day >= 1) & (rng.random(n) < 0.5),
            }
        )

    def append(pdf: pd.DataFrame) -> None:
        df = spark.createDataFrame(pdf)
        for c in ("x", "y"):
            df = df.withColumn(c, F.when(F.col(f"{c}_hole"), F.lit(None)).otherwise(F.col(c)))
        df = df.drop("x_hole", "y_hole").withColumn("score", F.lit(0.5)).withColumn("prediction", F.lit(1))
        df.write.format("delta").mode("append").save(str(tmp_path / "log"))

    append(rows(1500, [0, 1, 2], start=0))
    raw = {
        "monitor": "retract",
        "model": {"name": "m"},
        "problem_type": "binary",
        "source": {
            "table": str(tmp_path / "log"),
            "timestamp": "ts",
            "id": "id",
            "score": "score",
            "prediction": "prediction",
            "features": {"numeric": ["x", "y"]},
        },
        "quality": {
            "checks": [{"check": "not_null", "column": c, "max_fail_ratio": 0.2} for c in ("x", "y")]
        },
        "drift": {"enabled": False},
        "performance": {"enabled": False},
        "baseline": {"range": {"start": D0.isoformat(), "end": (D0 + timedelta(days=1)).isoformat()}},
        "output": {"path": str(tmp_path / "mon")},
        "mlflow": {"enabled": False, "experiment": "retract"},
        "alerts": {"sinks": [{"name": "hook", "kind": "generic", "url_env": "LAKEMON_TEST_HOOK"}]},
    }
    cfg = parse_config(raw)
    as_of = D0 + timedelta(days=3)
    day1, day2 = D0 + timedelta(days=1), D0 + timedelta(days=2)
    with servers.RecordingServer() as hook:
        monkeypatch.setenv("LAKEMON_TEST_HOOK", hook.url)
        assert run_monitor(spark, cfg, as_of=as_of).status == "success"
        assert len(hook.requests) == 1
        opened = {a["alert_id"]: a for a in hook.requests[0].json()["alerts"] if a["notify"] == "open"}
        nulls = {a["column_name"]: a for a in opened.values() if a["rule"] == "quality_check_failed"}
        assert {c: a["window_start"] for c, a in nulls.items()} == {
            "x": day2.isoformat(),
            "y": day1.isoformat(),
        }

        # late rows of day 1 without NULLs: y passes there, but its episode goes on in day 2, whose alerts the
        # run re-evaluates (they follow from day 1): it starts at day 2 now, and receivers, which hold it open,
        # are not told again; nothing is retracted
        append(rows(4000, [1], start=10_000, holes=False))
        res = run_monitor(spark, cfg, as_of=as_of)
        assert res.status == "success" and res.windows == [day1]
        assert len(hook.requests) == 1
        y_rows = out_alerts(spark, cfg).where(F.col("alert_id") == nulls["y"]["alert_id"]).collect()
        assert [(r["window_start"], r["status"], r["first_window_start"]) for r in y_rows] == [
            (day2, "firing", day2)
        ]
        assert '"already_held"' in y_rows[0]["delivery"]

        # late rows of day 2 without NULLs: x and y pass on the newest day, and no window holds either alert
        append(rows(4000, [2], start=20_000, holes=False))
        res = run_monitor(spark, cfg, as_of=as_of)
        assert res.status == "success" and res.windows == [day2]
        firing_now = {
            r["alert_id"]
            for r in out_alerts(spark, cfg).where(F.col("window_start") == day2).collect()
            if r["status"] == "firing"
        }
        assert len(hook.requests) == 2
        sent = hook.requests[1].json()["alerts"]
        retracted = {a["alert_id"] for a in sent if a["consecutive_windows"] == 0}
        # every alert opened before and no longer open is retracted, both NULL checks' among them
        assert retracted == set(opened) - firing_now
        assert {nulls["x"]["alert_id"], nulls["y"]["alert_id"]} <= retracted
        for a in sent:
            if a["alert_id"] in retracted:
                assert (a["status"], a["notify"], a["window_start"]) == (
                    "resolved",
                    "resolve",
                    day2.isoformat(),
                )
                assert a["severity"] == opened[a["alert_id"]]["severity"]
                assert a["last_window_start"] == opened[a["alert_id"]]["window_start"]
        assert f"retracting alert {nulls['x']['alert_id']} (quality_check_failed)" in caplog.text

        # the record of what was sent: the opens, then the retractions, all taken by the hook
        notes = io.Output(cfg.output).read(spark, NOTIFICATIONS).orderBy("sent_at", "seq").collect()
        assert [(n["alert_id"], n["notify"]) for n in notes if n["kind"] == "retraction"] == [
            (aid, "resolve") for aid in sorted(retracted)
        ]
        assert all(n["received"] for n in notes)
        assert {n["alert_id"] for n in notes if n["notify"] == "open"} == set(opened)

        # the newest window again (a backfill): what receivers hold is what the rules hold, nothing is sent
        again = run_monitor(spark, cfg, as_of=as_of, start=day2)
        assert again.status == "success" and again.windows == [day2]
        assert len(hook.requests) == 2
        assert io.Output(cfg.output).read(spark, NOTIFICATIONS).count() == len(notes)
