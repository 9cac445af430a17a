"""Pushes to a real Prometheus Pushgateway on loopback, read back over HTTP; and the shipped Prometheus
rules and Grafana dashboard files."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from lakemon.config import PrometheusSpec
from lakemon.tracking.prometheus import push_metrics

try:
    from tests import servers
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    import servers

closed_port, no_proxy, pushgateway, read_metrics = (
    servers.closed_port,
    servers.no_proxy,
    servers.pushgateway,
    servers.read_metrics,
)

CONF = Path(__file__).resolve().parents[1] / "conf"
SUMMARY = {
    "firing": 3,
    "by_signal_severity": {"drift": {"warning": 2}, "quality": {"critical": 1}},
}
GAUGES = [
    ("lakemon_drift_value", {"column": "age", "slice": "all", "statistic": "wasserstein_normalized"}, 0.12),
    ("lakemon_drift_value", {"column": "country", "slice": "region=eu", "statistic": "js_distance"}, 0.31),
    ("lakemon_performance_value", {"metric": "roc_auc", "slice": "all"}, 0.91),
    ("lakemon_performance_value", {"metric": "accuracy", "slice": "all"}, None),  # no value: not pushed
    ("bad name!", {}, 1.0),  # invalid: skipped, not fatal
]


@pytest.fixture(scope="module")
def gateway():
    with pushgateway() as base:
        yield base


@pytest.fixture(autouse=True)
def _loopback(monkeypatch):
    no_proxy(monkeypatch)


def samples(base: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for fam in text_string_to_metric_families(read_metrics(base)):
        for s in fam.samples:
            out.append((s.name, dict(s.labels), s.value))
    return out


def find(all_samples, name: str, **labels: str) -> list[float]:
    return [v for n, lab, v in all_samples if n == name and all(lab.get(k) == x for k, x in labels.items())]


def test_push_and_read_back(gateway):
    before = time.time()
    spec = PrometheusSpec(pushgateway=gateway, job="lakemon_test")
    out = push_metrics(spec, "churn", SUMMARY, GAUGES, duration_s=12.5, rows=4200)
    assert out["status"] == "pushed" and out["error"] is None
    assert out["skipped_gauges"] == 2 and out["series"] == 6 * 3 + 3 + 3
    got = samples(gateway)
    base = {"job": "lakemon_test", "monitor": "churn"}
    assert find(got, "lakemon_alerts_firing", **base, signal="drift", severity="warning") == [2.0]
    assert find(got, "lakemon_alerts_firing", **base, signal="quality", severity="critical") == [1.0]
    assert find(got, "lakemon_alerts_firing", **base, signal="volume", severity="info") == [0.0]
    signals = {
        lab["signal"] for n, lab, _ in got if n == "lakemon_alerts_firing" and lab.get("monitor") == "churn"
    }
    assert signals == {"quality", "performance", "drift", "volume", "freshness", "estimated_performance"}
    assert find(got, "lakemon_run_duration_seconds", **base) == [12.5]
    assert find(got, "lakemon_rows_processed", **base) == [4200.0]
    (last,) = find(got, "lakemon_last_run_timestamp_seconds", **base)
    assert before - 1 <= last <= time.time() + 1
    assert find(
        got, "lakemon_drift_value", **base, column="country", slice="region=eu", statistic="js_distance"
    ) == [0.31]
    assert find(
        got, "lakemon_drift_value", **base, column="age", slice="all", statistic="wasserstein_normalized"
    ) == [0.12]
    assert find(got, "lakemon_performance_value", **base, metric="roc_auc", slice="all") == [0.91]
    assert find(got, "lakemon_performance_value", **base, metric="accuracy") == []

    # The next run replaces the monitor's group: series that are gone do not linger.
    again = push_metrics(spec, "churn", {"by_signal_severity": {}}, GAUGES[:1], duration_s=1.0, rows=10)
    assert again["status"] == "pushed"
    got = samples(gateway)
    assert find(got, "lakemon_drift_value", **base, column="country") == []
    assert find(got, "lakemon_alerts_firing", **base, signal="drift", severity="warning") == [0.0]
    assert find(got, "lakemon_rows_processed", **base) == [10.0]


def test_gateway_address_from_the_environment(gateway, monkeypatch):
    monkeypatch.setenv("LAKEMON_TEST_PUSHGATEWAY", gateway)
    spec = PrometheusSpec(pushgateway_env="LAKEMON_TEST_PUSHGATEWAY", pushgateway="127.0.0.1:1")
    assert push_metrics(spec, "fraud", {}, [], duration_s=2.0, rows=5)["status"] == "pushed"
    assert find(samples(gateway), "lakemon_rows_processed", monitor="fraud", job="lakemon") == [5.0]


def test_missing_binary_fails_with_the_install_hint(monkeypatch):
    monkeypatch.setattr(servers.shutil, "which", lambda _name: None)
    monkeypatch.setattr(servers, "PUSHGATEWAY_PATHS", ())
    with pytest.raises(pytest.fail.Exception, match="apt-get install prometheus-pushgateway"):
        servers.pushgateway_binary()


def test_down_gateway_is_recorded_not_raised(caplog):
    address = f"127.0.0.1:{closed_port()}"
    t0 = time.monotonic()
    out = push_metrics(PrometheusSpec(pushgateway=address, timeout_s=2.0), "m", SUMMARY, GAUGES, 1.0, 1)
    assert time.monotonic() - t0 < 2.0
    assert out["status"] == "failed" and out["error"] and address not in out["error"]
    assert address not in caplog.text


def test_missing_gateway(monkeypatch):
    assert push_metrics(PrometheusSpec(), "m", {}, [], 1.0, 1)["status"] == "skipped"
    monkeypatch.delenv("LAKEMON_TEST_NO_GATEWAY", raising=False)
    out = push_metrics(PrometheusSpec(pushgateway_env="LAKEMON_TEST_NO_GATEWAY"), "m", {}, [], 1.0, 1)
    assert out["status"] == "failed" and "LAKEMON_TEST_NO_GATEWAY" in out["error"]


PUSHED = {
    "lakemon_alerts_firing",
    "lakemon_run_duration_seconds",
    "lakemon_rows_processed",
    "lakemon_last_run_timestamp_seconds",
    "lakemon_drift_value",
    "lakemon_performance_value",
}


def test_prometheus_alert_rules_file():
    doc = yaml.safe_load((CONF / "prometheus_alerts.yml").read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert all(g["name"] and g["rules"] for g in doc["groups"])
    assert len(rules) >= 4
    for r in rules:
        assert set(r) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", r["alert"])
        assert r["labels"]["severity"] in {"info", "warning", "critical"}
        assert set(re.findall(r"lakemon_[a-z_]+", r["expr"])) <= PUSHED
    used = {m for r in rules for m in re.findall(r"lakemon_[a-z_]+", r["expr"])}
    assert {"lakemon_alerts_firing", "lakemon_last_run_timestamp_seconds", "lakemon_drift_value"} <= used


def test_grafana_dashboard_file():
    raw = (CONF / "grafana_dashboard.json").read_text()
    dash = json.loads(raw)
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    assert dash["__inputs"][0]["pluginId"] == "prometheus"
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 30
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for p in panels:
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}"
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]) and p["targets"]
        for t in p["targets"]:
            assert set(re.findall(r"lakemon_[a-z_]+", t["expr"])) <= PUSHED
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for metric in (
        "lakemon_alerts_firing",
        "lakemon_drift_value",
        "lakemon_performance_value",
        "lakemon_run_duration_seconds",
    ):
        assert metric in exprs
    assert "monitor" in {v["name"] for v in dash["templating"]["list"]}
