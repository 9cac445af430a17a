"""Config validation: every error names the key and what was expected (no Spark)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from lakemon.config import ConfigError, load_config, parse_config, parse_granularity

DEMO = Path(__file__).resolve().parents[1] / "conf" / "demo.yaml"


def _raw() -> dict:
    return yaml.safe_load(DEMO.read_text())


def test_demo_config_is_valid():
    cfg = load_config(DEMO)
    assert cfg.monitor == "credit_default_demo"
    assert cfg.window == timedelta(days=1)
    assert [s.key for s in cfg.slices] == ["region", "channel", "senior"]
    assert cfg.drift.numeric_threshold == 0.1 and cfg.drift.categorical_statistic == "js_distance"
    assert len(cfg.config_hash()) == 16


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r.update(monitr="x"), "config key 'monitr': unknown key"),
        (lambda r: r["source"].update(timestmp="ts"), "config key 'source.timestmp': unknown key"),
        (lambda r: r["source"].pop("id"), "config key 'source.id': required key is missing"),
        (lambda r: r.update(problem_type="clustering"), "config key 'problem_type'"),
        (lambda r: r.update(granularity="fortnightly"), "config key 'granularity'"),
        (lambda r: r["drift"].update(numeric_threshold="high"), "config key 'drift.numeric_threshold'"),
        (lambda r: r["quality"]["checks"][1].update(check="betwen"), "config key 'quality.checks.1.check'"),
        (lambda r: r["slices"].append({"column": "region"}), "slice keys must be unique"),
        (lambda r: r.update(baseline={}), "baseline needs exactly one of 'table' or 'range'"),
        (lambda r: r["labels"].pop("id"), "labels.id is required"),
        (lambda r: r["labels"].update(max_lead="soon"), "config key 'labels.max_lead'"),
        (
            lambda r: r["labels"].update(max_lead="1 hour", timestamp=None),
            "labels.max_lead needs labels.table and labels.timestamp",
        ),
        # a drift rule that could never decide: a misspelt statistic, one of the other column kind, none in
        # robust mode
        (
            lambda r: r["drift"].update(columns={"income": {"statistic": "psy", "threshold": 0.1}}),
            "config key 'drift.columns.income.statistic'",
        ),
        (
            lambda r: r["drift"].update(columns={"income": {"statistic": "chi2", "threshold": 0.1}}),
            "drift.columns.income.statistic: chi2 is not computed for a numeric column",
        ),
        (
            lambda r: r["drift"].update(mode="robust", numeric_statistic="wasserstein"),
            "mode robust needs a statistic with a critical value, not drift.numeric_statistic: wasserstein",
        ),
        # a sink names where its secrets are, never holds them
        (
            lambda r: r.setdefault("alerts", {}).update(
                sinks=[{"name": "s", "kind": "slack", "url_env": "https://hooks.example/T0/B0/SECRETTOKEN"}]
            ),
            "'url_env' must be the name of an environment variable",
        ),
        (
            lambda r: r.setdefault("alerts", {}).update(
                sinks=[{"name": "p", "kind": "pagerduty", "url_env": "PD_URL"}]
            ),
            "a pagerduty sink needs exactly one of 'routing_key_env' or 'routing_key_secret'",
        ),
    ],
)
def test_bad_config_names_the_key(mutate, expected):
    raw = _raw()
    mutate(raw)
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "demo.yaml")
    assert expected in str(err.value)
    assert "SECRETTOKEN" not in str(err.value)


def test_datetimes_with_an_offset_are_naive_utc():
    """A baseline range or start written with an offset (mixed with naive ones) means the same UTC instant."""
    raw = _raw()
    raw["baseline"] = {"range": {"start": "2026-10-01 00:00:00", "end": "2026-10-05T00:00:00+02:00"}}
    raw["start"] = "2026-10-01T00:00:00Z"
    cfg = parse_config(raw, "demo.yaml")
    assert cfg.baseline.range.end == datetime(2026, 10, 4, 22, 0) and cfg.baseline.range.end.tzinfo is None
    assert cfg.start == datetime(2026, 10, 1)


def test_configs_are_frozen():
    cfg = load_config(DEMO)
    with pytest.raises(ValueError):
        cfg.monitor = "other"  # type: ignore[misc]


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("monitor: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize(
    ("text", "delta"),
    [("1 hour", timedelta(hours=1)), ("15 minutes", timedelta(minutes=15)), ("1 week", timedelta(days=7))],
)
def test_granularity(text, delta):
    assert parse_granularity(text) == delta


def test_labels_max_lead_is_a_duration_from_zero():
    raw = _raw()
    raw["labels"]["max_lead"] = "2 hours"
    assert parse_config(raw, "demo.yaml").labels.lead == timedelta(hours=2)
    raw["labels"]["max_lead"] = "0 minutes"
    assert parse_config(raw, "demo.yaml").labels.lead == timedelta(0)
    assert load_config(DEMO).labels.lead == timedelta(0)  # the demo's labels never precede their predictions
    with pytest.raises(ValueError, match="granularity must be positive"):
        parse_granularity("0 days")
