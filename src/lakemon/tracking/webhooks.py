"""Webhook delivery of alert notifications: generic JSON, Slack-compatible and PagerDuty Events API v2.

One payload per sink and run (PagerDuty: one event per alert, as its API requires), sent with
:mod:`urllib.request`, a timeout, and retries with exponential backoff on connection errors, timeouts,
HTTP 5xx and 429 (other 4xx are not retried). A failing sink never raises: its outcome is returned.
URLs and routing keys come from environment variables or Databricks secrets and are never logged nor
put into an outcome's ``error``; logs name the sink and its status only.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any

from lakemon.alerts.engine import SEVERITY_RANK, AlertRow
from lakemon.config import SinkSpec

log = logging.getLogger(__name__)

SecretReader = Callable[[str, str], str]

USER_AGENT = "lakemon-alerts/1"
#: Slack allows at most 50 blocks per message; alerts beyond this are summarized in one line.
SLACK_MAX_ALERT_BLOCKS = 40
PAGERDUTY_SEVERITY = {"info": "info", "warning": "warning", "critical": "critical"}
_EMOJI = {"info": ":information_source:", "warning": ":warning:", "critical": ":rotating_light:"}


class SinkError(Exception):
    """A sink that cannot be used (missing URL, unreadable secret); the message holds no secret."""


# ---------------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------------


def _find_dbutils() -> Any | None:
    frame = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_globals.get("dbutils")
        if candidate is not None:
            return candidate
        frame = frame.f_back
    try:  # a notebook: dbutils lives in the IPython user namespace
        from IPython import get_ipython  # type: ignore[import-not-found]

        ip = get_ipython()
        if ip is not None and ip.user_ns.get("dbutils") is not None:
            return ip.user_ns["dbutils"]
    except Exception:
        pass
    return None


def default_secret_reader(scope: str, key: str) -> str:
    """Read a Databricks secret with the caller's ``dbutils`` (notebook globals or IPython namespace)."""
    dbutils = _find_dbutils()
    if dbutils is None:
        raise SinkError(
            f"cannot read Databricks secret '{scope}/{key}': dbutils is not available here "
            "(run on Databricks, pass secret_reader, or use an environment variable instead)"
        )
    return str(dbutils.secrets.get(scope=scope, key=key))


def _resolve(
    sink: SinkSpec, what: str, env: str | None, secret: str | None, reader: SecretReader | None
) -> str | None:
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise SinkError(f"sink '{sink.name}': environment variable '{env}' ({what}) is not set")
        return value
    if secret is not None:
        scope, sep, key = secret.partition("/")
        if not sep or not scope or not key:
            raise SinkError(f"sink '{sink.name}': {what} secret must be 'scope/key', got '{secret}'")
        try:
            value = (reader or default_secret_reader)(scope, key)
        except SinkError as err:
            raise SinkError(f"sink '{sink.name}': {err}") from None
        except Exception as err:
            raise SinkError(
                f"sink '{sink.name}': cannot read secret '{scope}/{key}' ({what}): {type(err).__name__}"
            ) from None
        if not value:
            raise SinkError(f"sink '{sink.name}': secret '{scope}/{key}' ({what}) is empty")
        return value
    return None


# ---------------------------------------------------------------------------------------------------
# Payloads
# ---------------------------------------------------------------------------------------------------


def _jsonable(v: Any) -> Any:
    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, float) and v != v:  # NaN is not valid JSON
        return None
    return v


def alert_dict(row: AlertRow) -> dict[str, Any]:
    """All fields of an alert row, timestamps as ISO 8601 strings."""
    return {f.name: _jsonable(getattr(row, f.name)) for f in dataclasses.fields(row)}


def _slice_text(row: AlertRow) -> str:
    return "all" if row.slice_key is None else f"{row.slice_key}={row.slice_value}"


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def alert_summary(row: AlertRow, monitor: str) -> str:
    """A one-line human summary of an alert."""
    state = "RESOLVED" if row.status == "resolved" else row.severity.upper()
    target = row.metric if row.column_name is None else f"{row.metric} on {row.column_name}"
    if row.status == "resolved" and row.consecutive_windows == 0:  # a retraction (alerts.engine.retractions)
        return (
            f"[{state}] {monitor}: {row.rule} ({row.signal}) {target}, slice {_slice_text(row)}, retracted: "
            f"the rules find no open episode up to window {row.window_start.isoformat()} for the alert sent "
            f"for window {row.last_window_start.isoformat()}"
        )
    return (
        f"[{state}] {monitor}: {row.rule} ({row.signal}) {target}, slice {_slice_text(row)}, "
        f"value {_fmt(row.value)} vs threshold {_fmt(row.threshold)}, window {row.window_start.isoformat()}"
    )


def generic_payload(rows: Sequence[AlertRow], monitor: str, run_id: str) -> dict[str, Any]:
    """The generic JSON payload: monitor, run id and every alert with all its fields."""
    return {
        "source": "lakemon",
        "monitor": monitor,
        "run_id": run_id,
        "alert_count": len(rows),
        "alerts": [alert_dict(r) for r in rows],
    }


def slack_payload(rows: Sequence[AlertRow], monitor: str, run_id: str) -> dict[str, Any]:
    """A Slack incoming-webhook message: a ``text`` fallback and Block Kit ``blocks``."""
    firing = sum(1 for r in rows if r.status != "resolved")
    resolved = len(rows) - firing
    text = f"lakemon monitor {monitor}: {firing} alert(s) firing, {resolved} resolved (run {run_id})"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"lakemon: {monitor}"[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {"type": "divider"},
    ]
    for r in rows[:SLACK_MAX_ALERT_BLOCKS]:
        icon = ":white_check_mark:" if r.status == "resolved" else _EMOJI.get(r.severity, "")
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"{icon} {alert_summary(r, monitor)}"[:3000]},
            }
        )
    if len(rows) > SLACK_MAX_ALERT_BLOCKS:
        more = len(rows) - SLACK_MAX_ALERT_BLOCKS
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"... and {more} more"}]})
    return {"text": text, "blocks": blocks}


def pagerduty_event(row: AlertRow, monitor: str, run_id: str, routing_key: str) -> dict[str, Any]:
    """A PagerDuty Events API v2 event; ``dedup_key`` is ``<monitor>/<alert_id>`` so that monitors
    sharing a PagerDuty service never merge incidents."""
    details = alert_dict(row)
    details["monitor"] = monitor
    details["run_id"] = run_id
    return {
        "routing_key": routing_key,
        "event_action": "resolve" if row.notify == "resolve" or row.status == "resolved" else "trigger",
        "dedup_key": f"{monitor}/{row.alert_id}",
        "payload": {
            "summary": alert_summary(row, monitor)[:1024],
            "source": f"lakemon/{monitor}",
            "severity": PAGERDUTY_SEVERITY.get(row.severity, "warning"),
            "component": row.column_name or row.metric,
            "group": row.signal,
            "class": row.rule,
            "custom_details": details,
        },
    }


# ---------------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------------


class _Attempt:
    def __init__(self, ok: bool, retry: bool, error: str | None) -> None:
        self.ok, self.retry, self.error = ok, retry, error


def _post_once(url: str, body: bytes, timeout: float) -> _Attempt:
    req = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        status = err.code
        err.close()
    except TimeoutError:
        return _Attempt(False, True, "timeout")
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, TimeoutError | socket.timeout):
            return _Attempt(False, True, "timeout")
        name = type(reason).__name__ if isinstance(reason, BaseException) else "URLError"
        return _Attempt(False, True, f"connection error ({name})")
    except (ConnectionError, OSError) as err:
        return _Attempt(False, True, f"connection error ({type(err).__name__})")
    except ValueError:
        return _Attempt(False, False, "invalid URL")
    if 200 <= status < 300:
        return _Attempt(True, False, None)
    retry = status == 429 or status >= 500
    return _Attempt(False, retry, f"HTTP {status}")


def _post_with_retries(url: str, payload: dict[str, Any], sink: SinkSpec) -> tuple[bool, int, str | None]:
    body = json.dumps(payload, default=str).encode("utf-8")
    attempts, error = 0, None
    for i in range(sink.retries + 1):
        if i:
            time.sleep(sink.backoff_s * (2 ** (i - 1)))
        attempts += 1
        result = _post_once(url, body, sink.timeout_s)
        if result.ok:
            return True, attempts, None
        error = result.error
        if not result.retry:
            break
    return False, attempts, error


def _scrub(text: str | None, secrets: Sequence[str | None]) -> str | None:
    if text is None:
        return None
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return text


# ---------------------------------------------------------------------------------------------------
# Delivery
# ---------------------------------------------------------------------------------------------------


def notification_key(row: AlertRow) -> tuple[str, datetime, str]:
    """What identifies a notification: ``(alert_id, window_start, notify)``."""
    return (row.alert_id, row.window_start, row.notify)


def took(status: dict[str, Any] | None, row: AlertRow, min_severity: str) -> bool:
    """Whether a sink whose delivery ended with ``status`` (:func:`deliver`) took ``row``: its severity floor
    admits it and the delivery succeeded (PagerDuty: that alert's own event did)."""
    if not status or SEVERITY_RANK.get(row.severity, 0) < SEVERITY_RANK[min_severity]:
        return False
    if "taken" in status:
        return notification_key(row) in status["taken"]
    return status.get("status") == "delivered"


def _eligible(rows: Sequence[AlertRow], min_severity: str) -> list[AlertRow]:
    floor = SEVERITY_RANK[min_severity]
    return [r for r in rows if SEVERITY_RANK.get(r.severity, 0) >= floor]


def _deliver_one(
    sink: SinkSpec, rows: list[AlertRow], monitor: str, run_id: str, reader: SecretReader | None
) -> dict[str, Any]:
    secrets: list[str | None] = []
    try:
        url = _resolve(sink, "url", sink.url_env, sink.url_secret, reader)
        secrets.append(url)
        if url is None or not url.lower().startswith(("http://", "https://")):
            raise SinkError(f"sink '{sink.name}': the webhook URL must start with http:// or https://")
        routing_key = None
        if sink.kind == "pagerduty":
            routing_key = _resolve(sink, "routing key", sink.routing_key_env, sink.routing_key_secret, reader)
            if routing_key is None:
                raise SinkError(
                    f"sink '{sink.name}': a pagerduty sink needs routing_key_env or routing_key_secret"
                )
            secrets.append(routing_key)
    except SinkError as err:
        return {"status": "failed", "attempts": 0, "error": _scrub(str(err), secrets), "alerts": len(rows)}
    assert url is not None

    if sink.kind == "pagerduty":
        total, failures, first_error = 0, 0, None
        taken = []
        for r in rows:
            ok, n, err = _post_with_retries(url, pagerduty_event(r, monitor, run_id, routing_key or ""), sink)
            total += n
            if ok:
                taken.append(notification_key(r))
            else:
                failures += 1
                first_error = first_error or err
        out: dict[str, Any] = {
            "status": "delivered" if failures == 0 else "failed",
            "attempts": total,
            "error": None
            if failures == 0
            else f"{failures} of {len(rows)} event(s) failed, first: {first_error}",
            "alerts": len(rows),
            "taken": taken,  # one event per alert: which of them PagerDuty took
        }
    else:
        payload = (slack_payload if sink.kind == "slack" else generic_payload)(rows, monitor, run_id)
        ok, n, err = _post_with_retries(url, payload, sink)
        out = {"status": "delivered" if ok else "failed", "attempts": n, "error": err, "alerts": len(rows)}
    out["error"] = _scrub(out["error"], secrets)
    return out


def deliver(
    rows_to_notify: Sequence[AlertRow],
    sinks: Sequence[SinkSpec],
    monitor: str,
    run_id: str,
    secret_reader: SecretReader | None = None,
) -> dict[str, dict[str, Any]]:
    """Send ``rows_to_notify`` to every sink and return, per sink name,
    ``{"status": "delivered"|"failed"|"skipped", "attempts": n, "error": str|None, "alerts": n}``, and for
    PagerDuty (one event per alert) ``"taken"``, the notification keys of the events it took (:func:`took`).

    Only alerts with severity >= the sink's ``min_severity`` are sent; a sink with none is ``skipped``.
    Never raises for a sink's failure, and never puts a URL or key into a log line or an ``error``.
    """
    results: dict[str, dict[str, Any]] = {}
    for sink in sinks:
        rows = _eligible(rows_to_notify, sink.min_severity)
        if not rows:
            results[sink.name] = {"status": "skipped", "attempts": 0, "error": None, "alerts": 0}
        else:
            try:
                results[sink.name] = _deliver_one(sink, rows, monitor, run_id, secret_reader)
            except Exception as err:  # a sink must never break the run
                results[sink.name] = {
                    "status": "failed",
                    "attempts": 0,
                    "error": f"unexpected error ({type(err).__name__})",
                    "alerts": len(rows),
                }
        res = results[sink.name]
        level = logging.WARNING if res["status"] == "failed" else logging.INFO
        log.log(
            level,
            "alert sink %s (%s): %s, %d alert(s), %d attempt(s)",
            sink.name,
            sink.kind,
            res["status"],
            res["alerts"],
            res["attempts"],
        )
    return results
