"""Alerts: rules over every signal with persistence, hysteresis and escalation (see :mod:`.engine`)."""

from lakemon.alerts.engine import (
    SEVERITIES,
    SIGNALS,
    AlertRow,
    Observation,
    Received,
    SeriesState,
    alert_id,
    default_rules,
    evaluate,
    evaluate_with_state,
    reopenings,
    retractions,
    rule_matches,
    rules_for,
    summarize,
)

__all__ = [
    "SEVERITIES",
    "SIGNALS",
    "AlertRow",
    "Observation",
    "Received",
    "SeriesState",
    "alert_id",
    "default_rules",
    "evaluate",
    "evaluate_with_state",
    "reopenings",
    "retractions",
    "rule_matches",
    "rules_for",
    "summarize",
]
