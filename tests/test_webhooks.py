"""Webhook delivery against a real loopback HTTP server: payloads, retries, failures and secrecy."""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import datetime

import pytest

from lakemon.alerts import AlertRow
from lakemon.config import SinkSpec
from lakemon.tracking.webhooks import alert_summary, deliver

try:
    from tests.servers import RecordingServer, closed_port, no_proxy
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    from servers import RecordingServer, closed_port, no_proxy

SECRET_PATH = "/hook/T000-s3cr3t-path-XYZ"
ROUTING_KEY = "R0UT1NG-KEY-abcdef123456"


def row(
    severity: str = "warning",
    status: str = "firing",
    notify: str = "open",
    alert: str = "a1b2c3d4e5f60718",
    column: str | None = "age",
) -> AlertRow:
    ws = datetime(2024, 3, 1)
    return AlertRow(
        window_start=ws,
        window_end=datetime(2024, 3, 2),
        slice_key="region",
        slice_value="eu",
        alert_id=alert,
        rule="drift_js",
        signal="drift",
        metric="js_distance",
        column_name=column,
        value=0.31,
        threshold=0.1,
        severity=severity,
        status=status,
        consecutive_windows=1,
        first_window_start=ws,
        last_window_start=ws,
        notify=notify,
    )


@pytest.fixture(autouse=True)
def _loopback(monkeypatch):
    no_proxy(monkeypatch)


def sink(name: str, kind: str = "generic", **kw) -> SinkSpec:
    base = {
        "name": name,
        "kind": kind,
        "url_env": f"LAKEMON_TEST_{name.upper()}_URL",
        "backoff_s": 0.01,
        "timeout_s": 2.0,
    }
    return SinkSpec(**{**base, **kw})


def test_generic_payload_batches_the_alerts_of_a_run(monkeypatch):
    with RecordingServer() as srv:
        monkeypatch.setenv("LAKEMON_TEST_GEN_URL", srv.url)
        out = deliver([row(), row(severity="critical", alert="ffff")], (sink("gen"),), "churn", "run-1")
        assert out == {"gen": {"status": "delivered", "attempts": 1, "error": None, "alerts": 2}}
        assert len(srv.requests) == 1
        req = srv.requests[0]
        assert req.method == "POST" and req.headers["Content-Type"] == "application/json"
        body = req.json()
        assert body["monitor"] == "churn" and body["run_id"] == "run-1" and body["alert_count"] == 2
        a = body["alerts"][0]
        assert a["window_start"] == "2024-03-01T00:00:00" and a["first_window_start"] == "2024-03-01T00:00:00"
        assert {
            "alert_id",
            "rule",
            "signal",
            "metric",
            "column_name",
            "slice_key",
            "slice_value",
            "value",
            "threshold",
            "severity",
            "status",
            "consecutive_windows",
            "last_window_start",
            "notify",
            "delivery",
        } <= set(a)
        assert a["value"] == 0.31 and a["slice_value"] == "eu"


def test_slack_payload_shape(monkeypatch):
    with RecordingServer() as srv:
        monkeypatch.setenv("LAKEMON_TEST_SLACK_URL", srv.url)
        rows = [row(), row(status="resolved", notify="resolve", alert="x2")]
        out = deliver(rows, (sink("slack", "slack"),), "churn", "run-1")
        assert out["slack"]["status"] == "delivered"
        body = srv.requests[0].json()
        assert (
            set(body) == {"text", "blocks"}
            and "churn" in body["text"]
            and "1 alert(s) firing" in body["text"]
        )
        assert body["blocks"][0]["type"] == "header"
        sections = [b for b in body["blocks"] if b["type"] == "section"]
        assert any("RESOLVED" in b["text"]["text"] for b in sections)
        assert any("js_distance on age" in b["text"]["text"] for b in sections)


def test_pagerduty_one_event_per_alert(monkeypatch):
    with RecordingServer() as srv:
        monkeypatch.setenv("LAKEMON_TEST_PD_URL", srv.url)
        monkeypatch.setenv("PD_KEY", ROUTING_KEY)
        rows = [
            row(severity="critical"),
            row(severity="critical", status="resolved", notify="resolve", alert="bb"),
        ]
        pd = sink("pd", "pagerduty", routing_key_env="PD_KEY", min_severity="critical")
        out = deliver([*rows, row(severity="warning", alert="cc")], (pd,), "churn", "run-1")
        assert out["pd"] == {
            "status": "delivered",
            "attempts": 2,
            "error": None,
            "alerts": 2,
            "taken": [(r.alert_id, r.window_start, r.notify) for r in rows],
        }
        events = [r.json() for r in srv.requests]
        assert [e["event_action"] for e in events] == ["trigger", "resolve"]
        e = events[0]
        assert e["routing_key"] == ROUTING_KEY and e["dedup_key"] == "churn/a1b2c3d4e5f60718"
        assert set(e["payload"]) >= {"summary", "source", "severity", "custom_details"}
        assert (
            e["payload"]["severity"] == "critical"
            and e["payload"]["custom_details"]["alert_id"] == "a1b2c3d4e5f60718"
        )


def test_what_receivers_hold_after_a_delivery_per_alert_and_sink(monkeypatch):
    """``notifications.received``: a notification counts when one sink that admits it took it, a retraction
    only when every such sink did; PagerDuty's events count one by one (one failed event is not the others'
    failure)."""
    from types import SimpleNamespace

    from lakemon.tracking.record import notification_rows

    with RecordingServer() as hook, RecordingServer(fail_first=1) as pd_server:
        monkeypatch.setenv("LAKEMON_TEST_HOOK_URL", hook.url)
        monkeypatch.setenv("LAKEMON_TEST_PD_URL", pd_server.url)
        monkeypatch.setenv("PD_KEY", ROUTING_KEY)
        sinks = (
            sink("hook"),
            sink("pd", "pagerduty", routing_key_env="PD_KEY", min_severity="critical", retries=0),
        )
        retracted = row(severity="critical", status="resolved", notify="resolve", alert="aa")
        retracted = dataclasses.replace(retracted, consecutive_windows=0)  # PagerDuty fails it
        opened = row(severity="critical", alert="bb")  # both take it
        low = row(severity="warning", alert="cc")  # below PagerDuty's floor: the hook alone
        closing = row(severity="critical", status="resolved", notify="resolve", alert="dd")
        out = deliver([retracted, opened, low, closing], sinks, "churn", "r")
        assert out["pd"]["status"] == "failed" and out["hook"]["status"] == "delivered"
        cfg = SimpleNamespace(monitor="churn", granularity="1 day", alerts=SimpleNamespace(sinks=sinks))
        ctx = SimpleNamespace(run_id="r", computed_at=datetime(2024, 3, 2))
        notes = [(opened, "rule"), (low, "rule"), (closing, "rule"), (retracted, "retraction")]
        notes = notification_rows(notes, out, cfg, ctx)
        # the same retraction once PagerDuty takes it too
        again = deliver([retracted], sinks, "churn", "r")
        again = notification_rows([(retracted, "retraction")], again, cfg, ctx)
    got = {n["alert_id"]: (n["notify"], n["received"], n["kind"], n["seq"]) for n in notes}
    assert got == {
        "bb": ("open", True, "rule", 0),
        "cc": ("open", True, "rule", 1),
        "dd": ("resolve", True, "rule", 2),
        "aa": ("resolve", False, "retraction", 3),  # PagerDuty still holds it open: retracted again later
    }
    assert [(n["alert_id"], n["received"]) for n in again] == [("aa", True)]
    assert "for the alert sent for window 2024-03-01T00:00:00" in alert_summary(retracted, "churn")


def test_a_failed_notification_is_sent_again_unless_receivers_moved_on():
    from lakemon.alerts import Received
    from lakemon.tracking.record import plan_sends

    day = datetime(2024, 3, 1)
    failed, took = '{"hook": {"status": "failed"}}', '{"hook": {"status": "delivered"}}'
    opened = row(alert="aa")  # failed before
    again = row(alert="bb")  # failed before, but the receivers took a newer notification of it since
    done = row(alert="cc")  # taken before
    new = row(alert="dd", notify="escalate")
    old = row(alert="ee")  # new, but older than what receivers took of it
    last = row(alert="ff")  # what receivers took last (its alerts row lost in a crash, say)
    moved = row(alert="gg")  # receivers hold it open since an earlier window: late data moved the start
    higher = row(alert="hh", severity="critical")  # held open, but at a lower severity
    stored = {
        ("aa", day, "open"): failed,
        ("bb", day, "open"): failed,
        ("cc", day, "open"): took,
    }

    def got(alert: str, when: datetime, notify: str) -> Received:
        return Received(
            alert, "drift_js", "drift", "js_distance", "age", "region", "eu", when, "warning", notify, day
        )

    received = [got("bb", datetime(2024, 3, 4), "resolve"), got("ee", datetime(2024, 3, 4), "resolve")]
    received += [got("ff", day, "open"), got("gg", datetime(2024, 2, 28), "open")]
    received += [got("hh", datetime(2024, 2, 28), "open")]
    rows = [opened, again, done, new, old, last, moved, higher]
    sent, skipped, to_send, holds = plan_sends(rows, stored, received)
    assert sent == {("cc", day, "open"): took}
    assert skipped == {
        ("bb", day, "open"): "superseded",
        ("ee", day, "open"): "superseded",
        ("ff", day, "open"): "already_taken",
        ("gg", day, "open"): "already_held",
    }
    assert [r.alert_id for r in to_send] == ["aa", "dd", "hh"]
    assert {a: (h.notify, h.window_start) for a, h in holds.items() if a in ("aa", "hh", "bb")} == {
        "aa": ("open", day),
        "hh": ("open", day),
        "bb": ("resolve", datetime(2024, 3, 4)),
    }


def test_late_data_that_ends_and_restarts_an_episode_receivers_hold_sends_both_in_order():
    """Receivers hold an open of D-10; late rows make D-5 clean: the re-evaluated windows resolve the episode
    at D-5 and open a new one at D-4. Both go out, in window order; what receivers hold after them is the open."""
    from lakemon.alerts import Received
    from lakemon.tracking.record import plan_sends

    # D is 2024-03-10: D-5 is the 5th, D-4 the 6th
    resolve = dataclasses.replace(row(status="resolved", notify="resolve"), window_start=datetime(2024, 3, 5))
    reopen = dataclasses.replace(
        row(), window_start=datetime(2024, 3, 6), first_window_start=datetime(2024, 3, 6)
    )
    since = datetime(2024, 3, 1)
    held = Received(
        resolve.alert_id,
        "drift_js",
        "drift",
        "js_distance",
        "age",
        "region",
        "eu",
        since,
        "warning",
        "open",
        since,
    )
    _, skipped, to_send, holds = plan_sends([reopen, resolve], {}, [held])
    assert skipped == {}
    assert [(r.notify, r.window_start.day) for r in to_send] == [
        ("open", 6),
        ("resolve", 5),
    ]  # the rows' order
    assert (holds[resolve.alert_id].notify, holds[resolve.alert_id].window_start.day) == ("open", 6)


def test_secret_reader_and_min_severity_skip(monkeypatch):
    calls = []

    def reader(scope, key):
        calls.append((scope, key))
        return srv.url

    with RecordingServer() as srv:
        sinks = (
            SinkSpec(name="sec", url_secret="alerts/webhook", backoff_s=0),
            SinkSpec(name="crit", url_secret="alerts/webhook", min_severity="critical"),
        )
        out = deliver([row(severity="warning")], sinks, "churn", "r", secret_reader=reader)
        assert out["sec"]["status"] == "delivered" and calls == [("alerts", "webhook")]
        assert out["crit"] == {"status": "skipped", "attempts": 0, "error": None, "alerts": 0}
        assert len(srv.requests) == 1


def test_missing_secret_source_is_a_clear_failure(monkeypatch):
    monkeypatch.delenv("LAKEMON_TEST_NOPE_URL", raising=False)
    out = deliver([row()], (sink("nope"),), "m", "r")
    assert out["nope"]["status"] == "failed" and "LAKEMON_TEST_NOPE_URL" in out["nope"]["error"]
    # No dbutils anywhere: the error names the sink and the secret reference, never a value.
    out = deliver([row()], (SinkSpec(name="dbx", url_secret="scope/hook"),), "m", "r")
    assert out["dbx"]["status"] == "failed"
    assert "dbx" in out["dbx"]["error"] and "scope/hook" in out["dbx"]["error"]


def test_retries_after_two_500s_then_success(monkeypatch):
    with RecordingServer(fail_first=2) as srv:
        monkeypatch.setenv("LAKEMON_TEST_RETRY_URL", srv.url)
        out = deliver([row()], (sink("retry", retries=3),), "m", "r")
        assert out["retry"] == {"status": "delivered", "attempts": 3, "error": None, "alerts": 1}
        assert len(srv.requests) == 3


def test_retries_exhausted_on_5xx_and_429(monkeypatch):
    with RecordingServer(fail_first=100) as srv:
        monkeypatch.setenv("LAKEMON_TEST_DOWN5_URL", srv.url)
        out = deliver([row()], (sink("down5", retries=2),), "m", "r")
        assert out["down5"] == {"status": "failed", "attempts": 3, "error": "HTTP 500", "alerts": 1}
    with RecordingServer(fail_first=1, fail_status=429) as srv:
        monkeypatch.setenv("LAKEMON_TEST_RATE_URL", srv.url)
        assert deliver([row()], (sink("rate"),), "m", "r")["rate"]["attempts"] == 2


def test_4xx_is_not_retried(monkeypatch):
    with RecordingServer(status=400) as srv:
        monkeypatch.setenv("LAKEMON_TEST_BAD_URL", srv.url)
        out = deliver([row()], (sink("bad", retries=5),), "m", "r")
        assert out["bad"] == {"status": "failed", "attempts": 1, "error": "HTTP 400", "alerts": 1}
        assert len(srv.requests) == 1


def test_down_endpoint_fails_without_raising_within_the_budget(monkeypatch):
    monkeypatch.setenv("LAKEMON_TEST_CLOSED_URL", f"http://127.0.0.1:{closed_port()}{SECRET_PATH}")
    spec = sink("closed", retries=2, backoff_s=0.05, timeout_s=1.0)
    t0 = time.monotonic()
    out = deliver([row()], (spec,), "m", "r")
    elapsed = time.monotonic() - t0
    budget = (spec.retries + 1) * spec.timeout_s + spec.backoff_s * (2**spec.retries)
    assert elapsed < budget
    assert out["closed"]["status"] == "failed" and out["closed"]["attempts"] == 3
    assert out["closed"]["error"].startswith("connection error")


def test_a_failing_sink_does_not_stop_the_others(monkeypatch):
    with RecordingServer() as srv:
        monkeypatch.setenv("LAKEMON_TEST_OK_URL", srv.url)
        monkeypatch.setenv("LAKEMON_TEST_KO_URL", f"http://127.0.0.1:{closed_port()}/x")
        out = deliver([row()], (sink("ko", retries=0), sink("ok")), "m", "r")
        assert out["ko"]["status"] == "failed" and out["ok"]["status"] == "delivered"


def test_secrets_never_logged_nor_returned(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    with RecordingServer(status=403) as srv:
        url = f"http://127.0.0.1:{srv.port}{SECRET_PATH}"
        monkeypatch.setenv("LAKEMON_TEST_S1_URL", url)
        monkeypatch.setenv("LAKEMON_TEST_S2_URL", url)
        monkeypatch.setenv("PD_KEY", ROUTING_KEY)
        closed = f"http://127.0.0.1:{closed_port()}{SECRET_PATH}"
        monkeypatch.setenv("LAKEMON_TEST_S3_URL", closed)
        monkeypatch.setenv("LAKEMON_TEST_S4_URL", "ftp://user:" + ROUTING_KEY + "@example.invalid/")
        sinks = (
            sink("s1", retries=1),
            sink("s2", "pagerduty", routing_key_env="PD_KEY", retries=1),
            sink("s3", retries=1),
            sink("s4"),
        )
        out = deliver([row(severity="critical")], sinks, "m", "r")
        assert srv.requests and srv.requests[0].path == SECRET_PATH  # the secret URL was really used
    assert {k: v["status"] for k, v in out.items()} == {
        "s1": "failed",
        "s2": "failed",
        "s3": "failed",
        "s4": "failed",
    }
    text = repr(out) + "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    for secret in (SECRET_PATH, "s3cr3t", ROUTING_KEY, url, closed, str(srv.port)):
        assert secret not in text
    assert any("s1" in r.getMessage() and "failed" in r.getMessage() for r in caplog.records)
