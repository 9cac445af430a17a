"""Push a monitor run's gauges to a Prometheus Pushgateway.

Each run replaces its monitor's group (``PUT /metrics/job/<job>/monitor/<monitor>``), so series of
columns or slices that disappeared do not linger. Pushed series:

* ``lakemon_alerts_firing{monitor,signal,severity}``: alerts firing, every signal x severity (0 included)
* ``lakemon_run_duration_seconds{monitor}``, ``lakemon_rows_processed{monitor}``,
  ``lakemon_last_run_timestamp_seconds{monitor}``
* caller gauges, e.g. ``lakemon_drift_value{monitor,column,slice,statistic}`` and
  ``lakemon_performance_value{monitor,metric,slice}``.

A failing push never raises: the outcome is returned (and logged without the gateway address).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

from lakemon.alerts.engine import SEVERITIES, SIGNALS
from lakemon.config import PrometheusSpec

log = logging.getLogger(__name__)

ALERTS_FIRING = "lakemon_alerts_firing"
RUN_DURATION = "lakemon_run_duration_seconds"
ROWS_PROCESSED = "lakemon_rows_processed"
LAST_RUN = "lakemon_last_run_timestamp_seconds"
DRIFT_VALUE = "lakemon_drift_value"
PERFORMANCE_VALUE = "lakemon_performance_value"
BUILTIN_METRICS = frozenset({ALERTS_FIRING, RUN_DURATION, ROWS_PROCESSED, LAST_RUN})

_HELP = {
    DRIFT_VALUE: "Drift statistic of a column in the latest window, by slice and statistic.",
    PERFORMANCE_VALUE: "Model performance metric in the latest window, by slice.",
}
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_BAD = re.compile(r"[^a-zA-Z0-9_]")

GaugeSpec = tuple[str, Mapping[str, str], float | None]


def gateway_address(spec: PrometheusSpec) -> str | None:
    """The Pushgateway address: ``$<pushgateway_env>`` when set, else ``pushgateway``, else None."""
    if spec.pushgateway_env and os.environ.get(spec.pushgateway_env):
        return os.environ[spec.pushgateway_env]
    return spec.pushgateway


def _label_name(name: str) -> str:
    clean = _LABEL_BAD.sub("_", str(name)) or "_"
    if clean[0].isdigit():
        clean = "_" + clean
    return clean


def build_registry(
    monitor: str,
    summary: Mapping[str, Any],
    gauges: Sequence[GaugeSpec],
    duration_s: float,
    rows: int,
    now: float | None = None,
) -> tuple[CollectorRegistry, int, int]:
    """The registry to push, the number of series in it and the number of caller gauges skipped
    (invalid metric name, a built-in name, or a None value)."""
    reg = CollectorRegistry()
    series = 0
    firing = Gauge(
        ALERTS_FIRING, "Alerts firing after the latest run.", ["monitor", "signal", "severity"], registry=reg
    )
    by = summary.get("by_signal_severity") or {}
    signals = list(SIGNALS) + sorted(set(by) - set(SIGNALS))
    for signal in signals:
        for severity in SEVERITIES:
            firing.labels(monitor, signal, severity).set(float((by.get(signal) or {}).get(severity, 0)))
            series += 1
    for name, doc, value in (
        (RUN_DURATION, "Wall-clock duration of the latest run.", duration_s),
        (ROWS_PROCESSED, "Rows read by the latest run.", rows),
        (LAST_RUN, "Unix time the latest run finished.", time.time() if now is None else now),
    ):
        Gauge(name, doc, ["monitor"], registry=reg).labels(monitor).set(float(value))
        series += 1

    grouped: dict[str, list[tuple[dict[str, str], float]]] = {}
    skipped = 0
    for name, labels, value in gauges:
        if not _METRIC_NAME.match(name) or name in BUILTIN_METRICS or value is None:
            skipped += 1
            continue
        clean = {_label_name(k): "" if v is None else str(v) for k, v in labels.items()}
        clean.setdefault("monitor", monitor)
        grouped.setdefault(name, []).append((clean, float(value)))
    for name in sorted(grouped):
        items = grouped[name]
        keys = sorted({k for labels, _ in items for k in labels}, key=lambda k: (k != "monitor", k))
        g = Gauge(name, _HELP.get(name, f"lakemon gauge {name}."), keys, registry=reg)
        seen: set[tuple[str, ...]] = set()
        for labels, value in items:
            key = tuple(labels.get(k, "") for k in keys)
            if key not in seen:
                seen.add(key)
                series += 1
            g.labels(*key).set(value)
    return reg, series, skipped


def push_metrics(
    spec: PrometheusSpec,
    monitor: str,
    summary: Mapping[str, Any],
    gauges: Sequence[GaugeSpec],
    duration_s: float,
    rows: int,
) -> dict[str, Any]:
    """Push the run's gauges to the Pushgateway (grouping key ``monitor``, job ``spec.job``).

    Returns ``{"status": "pushed"|"failed"|"skipped", "error": str|None, "series": n,
    "skipped_gauges": n}``; never raises.
    """
    address = gateway_address(spec)
    if address is None:
        if spec.pushgateway_env:
            error = f"environment variable '{spec.pushgateway_env}' (pushgateway address) is not set"
            log.warning("prometheus push: failed (%s)", error)
            return {"status": "failed", "error": error, "series": 0, "skipped_gauges": 0}
        return {"status": "skipped", "error": "no pushgateway configured", "series": 0, "skipped_gauges": 0}
    try:
        reg, series, skipped = build_registry(monitor, summary, gauges, duration_s, rows)
        push_to_gateway(
            address, job=spec.job, registry=reg, grouping_key={"monitor": monitor}, timeout=spec.timeout_s
        )
    except Exception as err:
        error = _describe(err, address)
        log.warning("prometheus push for monitor %s: failed (%s)", monitor, error)
        return {"status": "failed", "error": error, "series": 0, "skipped_gauges": 0}
    log.info("prometheus push for monitor %s: pushed %d series", monitor, series)
    return {"status": "pushed", "error": None, "series": series, "skipped_gauges": skipped}


def _describe(err: Exception, address: str) -> str:
    code = getattr(err, "code", None)
    if isinstance(code, int):
        text = f"HTTP {code}"
    else:
        reason = getattr(err, "reason", None)
        name = type(reason).__name__ if isinstance(reason, BaseException) else type(err).__name__
        text = f"push error ({name})"
    return text.replace(address, "***") if address else text
