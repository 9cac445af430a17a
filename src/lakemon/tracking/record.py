"""Recording a run: alert evaluation over the run and the stored history, delivery (webhooks, Prometheus),
the MLflow run, the summary, and the run bookkeeping in ``runs`` (interrupted and concurrent runs)."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import socket
import statistics
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from lakemon import io
from lakemon.alerts import (
    SIGNALS,
    AlertRow,
    Observation,
    Received,
    evaluate_with_state,
    reopenings,
    retractions,
    rules_for,
    summarize,
)
from lakemon.alerts.engine import SEVERITY_RANK
from lakemon.context import Results, RunContext
from lakemon.quality.compute import SIGNAL_OF_CHECK
from lakemon.tables import (
    ALERTS,
    DRIFT_METRICS,
    NOTIFICATIONS,
    PERFORMANCE_METRICS,
    QUALITY_RESULTS,
    RUNS,
    TableDef,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakemon.config import MonitorConfig
    from lakemon.job import Monitor, RunResult

log = logging.getLogger("lakemon")

#: Most windows computed after a run's earliest window whose alerts the run re-evaluates (a backfill further
#: back leaves theirs as they are)
MAX_REEVALUATED = 90

HEADLINE = {
    "binary": ("accuracy", "roc_auc", "f1", "estimated_accuracy", "label_coverage"),
    "multiclass": ("accuracy", "macro_f1", "estimated_accuracy", "label_coverage"),
    "regression": ("rmse", "mae", "r2", "label_coverage"),
    "ranking": ("mrr", "label_coverage"),
}


# ---------------------------------------------------------------------------------------------------
# Run bookkeeping
# ---------------------------------------------------------------------------------------------------


def _alive(owner: str | None) -> bool | None:
    """True/False for a run owned by a process of this host; None when it ran elsewhere."""
    if not owner or ":" not in owner:
        return None
    host, pid = owner.rsplit(":", 1)
    if host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


#: How many of a monitor's latest successful runs a run's cost is compared with (:func:`cost_vs_recent`).
RECENT_RUNS = 10


class PriorRuns(NamedTuple):
    """What :func:`settle_running_runs` read of the monitor's runs."""

    #: the monitor's runs so far, this one included (``runs``, not ``count``: that is a tuple method)
    runs: int
    #: seconds (summed phases) of its latest successful runs, newest first, at most RECENT_RUNS
    recent_seconds: list[float]


def settle_running_runs(
    spark: SparkSession,
    output: io.Output,
    monitor: str,
    run_id: str,
    started_at: datetime,
    stale_hours: float = 24.0,
) -> PriorRuns:
    """Once this run's row is in ``runs``: record the monitor's runs left ``running`` by a process that died
    (killed driver) as failed, saying so, and refuse to run while an earlier run is still running (one whose
    row was committed to ``runs`` before this run's: Delta row tracking gives each row's commit version).

    One read of ``runs`` for both (a monitoring table read is mostly Delta latency, paid by every run), which
    also counts the monitor's runs so far, this one included (it paces the tables' compaction), and reads the
    seconds of its last successful runs (what :func:`cost_vs_recent` compares this run with).
    """
    from pyspark.sql import functions as F

    others_running = (F.col("status") == "running") & (F.col("run_id") != run_id)
    seconds = F.aggregate(F.map_values("phase_seconds"), F.lit(0.0), lambda a, b: a + b)
    succeeded = F.struct(F.col("started_at"), seconds.alias("seconds"))
    # the commit that inserted a running row (a running row is not rewritten before its run ends)
    version = F.col("_metadata.row_commit_version")
    found = (
        output.read(spark, RUNS)
        .where(F.col("monitor") == monitor)
        .agg(
            F.count(F.lit(1)).alias("runs"),
            F.max(F.when(F.col("run_id") == run_id, version)).alias("version"),
            # other runs of this monitor still marked running: a handful at most
            F.collect_list(F.when(others_running, F.struct(*RUNS.columns, version.alias("_version")))).alias(
                "running"
            ),
            # the latest RECENT_RUNS successful runs' (started_at, seconds), newest first
            F.slice(
                F.sort_array(
                    F.collect_list(F.when((F.col("status") == "success") & seconds.isNotNull(), succeeded)),
                    asc=False,
                ),
                1,
                RECENT_RUNS,
            ).alias("recent"),
        )
        .first()
    )
    # one aggregated row, always (an aggregation without grouping)
    runs, rows, own = int(found["runs"]), list(found["running"]), found["version"]
    recent = [float(r["seconds"]) for r in found["recent"]]
    now = datetime.utcnow()
    for r in rows:
        alive = _alive(r["owner"])
        stale = (now - r["started_at"]).total_seconds() > stale_hours * 3600
        if alive is False or (alive is None and stale):
            d = r.asDict()
            d.update(
                status="failed",
                finished_at=now,
                error="interrupted: the run's process ended before it finished (killed or crashed); "
                "its windows were not marked done and are recomputed by the next run",
            )
            io.upsert_run(spark, output, d)
            log.warning("[%s] run %s was interrupted earlier; recorded as failed", monitor, r["run_id"])
            continue
        # The run whose row was committed first goes on. Start times cannot decide it: a run that started
        # first but inserted its row second would not see itself as the later one, and both would go on.
        if r["_version"] is not None and own is not None:
            first = (r["_version"], r["run_id"]) < (own, run_id)
        else:
            first = (r["started_at"], r["run_id"]) < (started_at, run_id)
        if first:
            msg = (
                f"another run of monitor '{monitor}' is in progress (run {r['run_id']} started "
                f"{r['started_at']:%Y-%m-%d %H:%M:%S} UTC by {r['owner']}); this run was refused and wrote nothing"
            )
            io.upsert_run(
                spark,
                output,
                {
                    "run_id": run_id,
                    "monitor": monitor,
                    "started_at": started_at,
                    "finished_at": datetime.utcnow(),
                    "status": "refused",
                    "error": msg,
                },
            )
            raise io.ConcurrentRunError(msg)
    return PriorRuns(runs, recent)


def cost_vs_recent(seconds: float, recent: Sequence[float]) -> float | None:
    """A run's seconds over the median seconds of the monitor's recent successful runs (None without any).

    Above 2, a run suddenly costs more than its monitor's usual runs: a log that grew, a wider backfill, a
    slower cluster. The analyst notebook's run history shows a like figure for every run (``vs_recent``).
    """
    positive = [s for s in recent if s > 0]
    return seconds / statistics.median(positive) if positive else None


# ---------------------------------------------------------------------------------------------------
# Alerts
# ---------------------------------------------------------------------------------------------------


def observations(rows_by_table: dict[str, list[dict[str, Any]]]) -> list[Observation]:
    """Every signal's results as alert observations."""
    obs: list[Observation] = []
    for r in rows_by_table.get(QUALITY_RESULTS.name, []):
        obs.append(
            Observation(
                signal=SIGNAL_OF_CHECK.get(r["kind"], "quality"),
                metric=r["check"],
                column_name=r["column_name"],
                slice_key=r["slice_key"],
                slice_value=r["slice_value"],
                window_start=r["window_start"],
                window_end=r["window_end"],
                value=r["fail_ratio"],
                threshold=r["max_fail_ratio"],
                flagged=not r["passed"],
                severity_hint=r["severity"],
            )
        )
    for r in rows_by_table.get(PERFORMANCE_METRICS.name, []):
        if r.get("class") is not None:
            continue
        metric = r["metric"]
        obs.append(
            Observation(
                signal="estimated_performance" if metric.startswith("estimated_") else "performance",
                metric=metric,
                column_name=None,
                slice_key=r["slice_key"],
                slice_value=r["slice_value"],
                window_start=r["window_start"],
                window_end=r["window_end"],
                value=r["value"],
            )
        )
    for r in rows_by_table.get(DRIFT_METRICS.name, []):
        if r.get("threshold") is None:
            continue
        obs.append(
            Observation(
                signal="drift",
                metric=r["statistic"],
                column_name=r["column_name"],
                slice_key=r["slice_key"],
                slice_value=r["slice_value"],
                window_start=r["window_start"],
                window_end=r["window_end"],
                value=r["value"],
                threshold=r["threshold"],
                flagged=r["drifted"],
            )
        )
    return obs


class AlertHistory(NamedTuple):
    """What the alerts of a run are evaluated against (:func:`alert_history`)."""

    #: earlier windows' rows per monitoring table
    results: dict[str, list[dict[str, Any]]]
    #: the notifications stored with the alert windows: (alert_id, window_start, notify) -> delivery
    sent: dict[tuple[Any, ...], Any]
    #: per alert, the newest notification a sink took
    received: list[Received]
    #: where the rebuilt history of the newest window begins
    span_start: datetime | None = None


def alert_windows(
    windows: Sequence[datetime], computed: Sequence[datetime], most: int = MAX_REEVALUATED
) -> list[datetime]:
    """The windows whose alerts a run (re)evaluates: its own, and the newest ``most`` of the windows computed
    earlier that follow its earliest one (their alerts follow from the recomputed ones: late rows of D-5 can
    open, or close, an episode that D-4..D-1 continue). A backfill further back than that leaves the rows of
    the windows between as they are."""
    later = [w for w in computed if w > min(windows) and w not in set(windows)]
    return sorted(set(windows) | set(later[-most:] if most else []))


def alert_history(
    monitor: Monitor, run_windows: Sequence[datetime], windows: Sequence[datetime]
) -> AlertHistory:
    """Earlier windows' results read back from the monitoring tables (the alerts' memory, as deep as the
    rules look back, and the results of the later ``windows`` the run does not recompute), the notifications
    already sent for ``windows`` (a re-run must not send them again), keyed by ``(alert_id, window_start,
    notify)``, and per alert the newest notification a sink took (``notifications``: what receivers show):
    five reads of small tables, side by side. Read before the run's results exist, alongside its other reads
    of what is stored: nothing the run writes is in it.
    """
    from pyspark.sql import functions as F

    cfg = monitor.cfg
    rules = rules_for(cfg)
    depth = max(
        [r.persistence.n for r in rules]
        + [r.persistence.resolve_after for r in rules]
        + [r.condition.history for r in rules]
        + [r.escalate_after or 0 for r in rules]  # an escalation counts the episode's windows
        + [1]
    )
    depth = min(depth + 1, 90)
    # the `depth` windows before each of the run's that the run does not recompute: a run for late rows of
    # D-5 and the new day D computes those two, and D's alerts continue the episodes of D-4..D-1 (neither
    # re-opened nor sent again)
    spans: list[list[datetime]] = []
    for w in sorted(windows):
        if spans and w - depth * monitor.window <= spans[-1][1]:
            spans[-1][1] = w
        else:
            spans.append([w - depth * monitor.window, w])
    ws = F.col("window_start")
    in_spans = functools.reduce(
        lambda a, b: a | b, [(ws >= F.lit(lo)) & (ws <= F.lit(hi)) for lo, hi in spans]
    )
    cond = (
        (F.col("monitor") == cfg.monitor)
        & (F.col("granularity") == cfg.granularity)
        & in_spans
        & ~ws.isin(list(run_windows))
    )
    # monitoring-table rows (already aggregated) of at most `depth` windows before each of the run's: bounded,
    # never raw rows
    wheres = {
        QUALITY_RESULTS: cond,
        PERFORMANCE_METRICS: cond & F.col("class").isNull(),
        DRIFT_METRICS: cond & F.col("threshold").isNotNull(),
    }

    this_run = (
        (F.col("monitor") == cfg.monitor)
        & (F.col("granularity") == cfg.granularity)
        & F.col("window_start").isin(list(windows))
    )

    def rows_of(table: TableDef) -> list[dict[str, Any]]:
        if table is ALERTS:  # alerts x windows
            df = monitor.output.read(monitor.spark, ALERTS).where(this_run)
            df = df.select("alert_id", "window_start", "notify", "delivery")
        elif table is NOTIFICATIONS:  # one row per alert a sink ever took a notification of
            fields = [f.name for f in dataclasses.fields(Received)]
            df = (
                monitor.output.read(monitor.spark, NOTIFICATIONS)
                .where(
                    (F.col("monitor") == cfg.monitor)
                    & (F.col("granularity") == cfg.granularity)
                    & F.col("received")
                )
                .groupBy("alert_id")
                .agg(
                    F.max_by(F.struct(*fields), F.struct(F.col("_metadata.row_commit_version"), "seq")).alias(
                        "r"
                    )
                )
                .select("r.*")
            )
        else:
            df = monitor.output.read(monitor.spark, table).where(wheres[table])
        # bounded, aggregated rows: results of <= depth earlier windows, alerts x the run's windows, or one
        # row per alert
        return [r.asDict() for r in df.collect()]

    tables = [*wheres, ALERTS, NOTIFICATIONS]
    found = dict(zip(tables, io.concurrently(monitor.spark, rows_of, [(t,) for t in tables]), strict=True))
    sent = {(r["alert_id"], r["window_start"], r["notify"]): r["delivery"] for r in found.pop(ALERTS)}
    received = [Received(**r) for r in found.pop(NOTIFICATIONS)]
    return AlertHistory({t.name: rows for t, rows in found.items()}, sent, received, spans[-1][0])


def delivery_failed(delivery: str | None) -> bool:
    """Whether a stored notification's ``delivery`` says no sink took it and one failed (to be sent again).

    One sink that took it is enough: sending again would repeat it there. ``no_sinks``, ``not_sent`` (a run
    without delivery) and sinks that skipped it (below their severity) are not failures.
    """
    try:
        status = json.loads(delivery or "{}")
    except ValueError:
        return False
    if not isinstance(status, dict):
        return False
    sinks = [v.get("status") for v in status.values() if isinstance(v, dict)]
    return "failed" in sinks and "delivered" not in sinks


def evaluate_alerts(
    monitor: Monitor,
    ctx: RunContext,
    results: Results,
    tables: dict[str, list[dict[str, Any]]],
    windows: Sequence[datetime],
    stored: AlertHistory,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Alert rows for ``windows`` (:func:`alert_windows`): rules over this run's results plus the stored
    history (:func:`alert_history`), then delivery of new notifications (sinks, :func:`plan_sends`), each
    recorded with its status.

    A run that reaches the monitor's newest window also reconciles what receivers hold with the rules: it
    retracts alerts held open that no longer have an episode (:func:`retractions`) and re-opens those held
    resolved that have one (:func:`reopenings`). Returns the ``alerts`` rows and the ``notifications`` rows
    (what was sent)."""
    cfg = monitor.cfg
    rules = rules_for(cfg)
    obs = observations(stored.results) + observations(tables)
    baseline = {
        ("performance", metric, None, sk, sv): value
        for (sk, sv), metrics in results.baseline_metrics.items()
        for metric, value in metrics.items()
    }
    rows, states = evaluate_with_state(rules, obs, baseline, emit_windows=set(windows))
    # the monitor's newest window (alert_windows reaches it): what receivers should hold is judged there
    newest = max(windows)
    stored_delivery = stored.sent
    sent, skipped, to_send, holds = plan_sends(rows, stored_delivery, stored.received)
    retracted: list[AlertRow] = []
    reopened: list[AlertRow] = []
    delivery: dict[str, Any] = {}
    if monitor.deliver and cfg.alerts.sinks:
        floor = min(SEVERITY_RANK[s.min_severity] for s in cfg.alerts.sinks)
        # what receivers will hold once this run's notifications are taken; an alert no sink admits any
        # more has no receiver to tell
        held = [r for r in holds.values() if SEVERITY_RANK.get(r.severity, 0) >= floor]
        args = (held, states, (newest, newest + ctx.window), set())
        # where the rebuilt history saw no episode, the stored rows say whether one was open where it begins
        # (read only when a retraction is in question)
        unsure = [
            r
            for r in retractions(*args, since=stored.span_start)
            if not states[r.alert_id].open_since(stored.span_start)
        ]
        before = _open_before(monitor, unsure, stored.span_start) if unsure else set()
        retracted = retractions(*args, open_before=before, since=stored.span_start)
        reopened = [
            r
            for r in reopenings(held, states, [r for r in rows if r.window_start == newest], set())
            if SEVERITY_RANK.get(r.severity, 0) >= floor
        ]
        for r in retracted:
            log.info(
                "[%s] retracting alert %s (%s): receivers hold it open (its notification of window %s), the "
                "rules find no open episode up to window %s",
                cfg.monitor,
                r.alert_id,
                r.rule,
                r.last_window_start,
                r.window_start,
            )
        for r in reopened:
            log.info(
                "[%s] re-opening alert %s (%s): receivers hold it resolved, an episode open since window %s "
                "goes on at window %s",
                cfg.monitor,
                r.alert_id,
                r.rule,
                r.first_window_start,
                r.window_start,
            )
        if to_send or retracted or reopened:
            from lakemon.tracking.webhooks import deliver

            delivery = deliver(to_send + reopened + retracted, cfg.alerts.sinks, cfg.monitor, monitor.run_id)
            for name, status in delivery.items():
                log.info(
                    "[%s] sink %s: %s (%s attempt(s))",
                    cfg.monitor,
                    name,
                    status.get("status"),
                    status.get("attempts"),
                )
    out = []
    pending = {(r.alert_id, r.window_start, r.notify) for r in to_send}
    for r in rows:
        d = dataclasses.asdict(r)
        key = (r.alert_id, r.window_start, r.notify)
        if key in sent:
            d["delivery"] = sent[key]
        elif key in pending and delivery:
            d["delivery"] = _delivery_text(delivery)
        elif key in skipped:
            d["delivery"] = json.dumps({"status": skipped[key]})
        elif key in stored_delivery:  # failed before and not sent by this run (delivery off): still failed
            d["delivery"] = stored_delivery[key]
        elif r.notify != "none":
            d["delivery"] = json.dumps(
                {"status": "no_sinks"} if not cfg.alerts.sinks else {"status": "not_sent"}
            )
        d.update(ctx.key_columns(r.window_start, r.slice_key, r.slice_value))
        out.append(d)
    monitor._alert_rows = rows  # kept for the summary
    monitor._retracted, monitor._reopened = retracted, reopened
    notes = (
        [(r, "rule") for r in to_send]
        + [(r, "reopen") for r in reopened]
        + [(r, "retraction") for r in retracted]
    )
    notifications = notification_rows(notes, delivery, cfg, ctx) if delivery else []
    return out, notifications


def plan_sends(
    rows: Sequence[AlertRow], stored: dict[tuple[Any, ...], Any], received: Sequence[Received]
) -> tuple[dict[tuple[Any, ...], Any], dict[tuple[Any, ...], str], list[AlertRow], dict[str, Received]]:
    """Which notifications of the run's alert rows go out: ``(sent, skipped, to_send, holds)``.

    ``stored``: the deliveries stored with the run's windows, by ``(alert_id, window_start, notify)``; those a
    sink took are ``sent`` (never twice); one every sink failed is sent again. ``received``: per alert, the
    newest notification a sink took, what receivers hold. Going through each alert's notifications in window
    order, with what receivers hold as it would be after the ones sent before, a notification is skipped as
    ``already_taken`` (receivers took this very one: its alerts row was lost in a crash, or it was re-opened
    or retracted), ``superseded`` (its window is older than what receivers hold: late data re-evaluated
    history they were told about since) or ``already_held`` (an open or escalation of an alert held open at
    the same or a higher severity, a resolve of one held resolved: late data moved the start of an episode).
    ``holds`` is what receivers hold once ``to_send`` is taken."""
    sent = {key: delivery for key, delivery in stored.items() if not delivery_failed(delivery)}
    holds = {r.alert_id: r for r in received}
    skipped: dict[tuple[Any, ...], str] = {}
    to_send: list[AlertRow] = []
    for r in sorted(rows, key=lambda a: a.window_start):
        key = (r.alert_id, r.window_start, r.notify)
        if r.notify == "none" or key in sent:
            continue
        h = holds.get(r.alert_id)
        if h is not None and (h.window_start, h.notify) == (r.window_start, r.notify):
            skipped[key] = "already_taken"
        elif h is not None and r.window_start < h.window_start:
            skipped[key] = "superseded"
        elif h is not None and (
            (r.notify == "resolve" and h.notify == "resolve")
            or (
                r.notify != "resolve"
                and h.notify != "resolve"
                and SEVERITY_RANK.get(r.severity, 0) <= SEVERITY_RANK.get(h.severity, 0)
            )
        ):
            skipped[key] = "already_held"
        else:
            to_send.append(r)
            holds[r.alert_id] = received_from(r)
    order = {id(r): i for i, r in enumerate(rows)}
    to_send.sort(key=lambda a: order[id(a)])
    return sent, skipped, to_send, holds


def received_from(row: AlertRow) -> Received:
    """What receivers hold once they take ``row``."""
    return Received(**{f.name: getattr(row, f.name) for f in dataclasses.fields(Received)})


def _open_before(monitor: Monitor, candidates: Sequence[AlertRow], start: datetime | None) -> set[str]:
    """Which of the candidates' alerts were open where the rebuilt history begins: their newest stored
    ``alerts`` row before ``start`` fires (one small aggregation over the candidates' rows)."""
    from pyspark.sql import functions as F

    if start is None:
        return set()
    cfg = monitor.cfg
    found = (
        monitor.output.read(monitor.spark, ALERTS)
        .where(
            (F.col("monitor") == cfg.monitor)
            & (F.col("granularity") == cfg.granularity)
            & (F.col("window_start") < F.lit(start))
            & F.col("alert_id").isin(sorted({c.alert_id for c in candidates}))
        )
        .groupBy("alert_id")
        .agg(F.max_by("status", "window_start").alias("status"))
        .collect()  # one row per candidate at most
    )
    return {r["alert_id"] for r in found if r["status"] == "firing"}


def _delivery_text(delivery: dict[str, Any]) -> str:
    return json.dumps(
        {k: {kk: v.get(kk) for kk in ("status", "attempts", "error")} for k, v in delivery.items()}
    )


def notification_rows(
    notes: Sequence[tuple[AlertRow, str]],
    delivery: dict[str, Any],
    cfg: MonitorConfig,
    ctx: RunContext,
) -> list[dict[str, Any]]:
    """The ``notifications`` rows of one delivery: one per ``(alert row, kind)`` sent (``rule``, ``reopen``,
    ``retraction``), in sending order (``seq``).

    ``received``: a sink whose severity floor admits the alert took it; a retraction, every such sink (what
    receivers hold is kept per alert, not per sink: the sinks that took a retraction another missed get it
    again with the next one)."""
    from lakemon.tracking.webhooks import took

    text = _delivery_text(delivery)
    out = []
    for seq, (r, kind) in enumerate(notes):
        eligible = [
            s for s in cfg.alerts.sinks if SEVERITY_RANK.get(r.severity, 0) >= SEVERITY_RANK[s.min_severity]
        ]
        taken = [took(delivery.get(s.name), r, s.min_severity) for s in eligible]
        # a retraction no sink missed: one that did still holds the alert open, and the next run retracts again
        received = all(taken) if kind == "retraction" else any(taken)
        out.append(
            {
                "monitor": cfg.monitor,
                "granularity": cfg.granularity,
                "alert_id": r.alert_id,
                "window_start": r.window_start,
                "window_end": r.window_end,
                "slice_key": r.slice_key,
                "slice_value": r.slice_value,
                "rule": r.rule,
                "signal": r.signal,
                "metric": r.metric,
                "column_name": r.column_name,
                "severity": r.severity,
                "notify": r.notify,
                "first_window_start": r.first_window_start,
                "kind": kind,
                "received": bool(eligible) and received,
                "delivery": text,
                "seq": seq,
                "run_id": ctx.run_id,
                "sent_at": ctx.computed_at,
            }
        )
    return out


# ---------------------------------------------------------------------------------------------------
# Summary, MLflow, Prometheus
# ---------------------------------------------------------------------------------------------------


def summary(
    monitor: Monitor, ctx: RunContext, tables: dict[str, list[dict[str, Any]]], result: RunResult
) -> dict[str, Any]:
    """The run's readable summary (printed by the demo, logged to MLflow as JSON)."""
    cfg = monitor.cfg
    latest = max(result.windows) if result.windows else None
    alert_rows = getattr(monitor, "_alert_rows", [])
    alerts = summarize(alert_rows)
    quality_failed = [r for r in tables.get(QUALITY_RESULTS.name, []) if not r["passed"]]
    drifted = [r for r in tables.get(DRIFT_METRICS.name, []) if r.get("drifted")]
    # headline: each metric's value in the latest window that has one (recent windows may lack labels)
    latest_value: dict[str, tuple[datetime, float]] = {}
    for r in tables.get(PERFORMANCE_METRICS.name, []):
        wanted = r["slice_key"] is None and r["class"] is None and r["metric"] in HEADLINE[cfg.problem_type]
        newer = r["window_start"] >= latest_value.get(r["metric"], (datetime.min, 0.0))[0]
        if wanted and r["value"] is not None and newer:
            latest_value[r["metric"]] = (r["window_start"], r["value"])
    headline = {f"performance.{m}": v for m, (_ws, v) in latest_value.items()}
    firing = [r for r in alert_rows if r.status == "firing"]
    return {
        "monitor": cfg.monitor,
        "run_id": monitor.run_id,
        "windows": len(result.windows),
        "first_window": min(result.windows) if result.windows else None,
        "last_window": latest,
        "rows_read": result.rows_read,
        "rows_written": result.rows_written,
        "quality_checks_failed": len(quality_failed),
        "quality_failed": sorted(
            {(r["check"], str(r["window_start"])[:10]) for r in quality_failed if r["slice_key"] is None}
        ),
        "drift_cells_drifted": len(drifted),
        "alerts": alerts,
        "alerts_firing_latest_window": result.alerts_firing,
        "alert_episodes": sorted(
            {
                (
                    r.rule,
                    r.signal,
                    r.metric,
                    r.column_name or "",
                    f"{r.slice_key}={r.slice_value}" if r.slice_key else "all",
                    str(r.first_window_start)[:10],
                    r.severity,
                )
                for r in firing
            }
        ),
        "alerts_reopened": [
            (r.rule, r.alert_id, r.first_window_start.isoformat()) for r in getattr(monitor, "_reopened", [])
        ],
        "alerts_retracted": [
            (r.rule, r.alert_id, r.last_window_start.isoformat()) for r in getattr(monitor, "_retracted", [])
        ],
        "headline": headline,
        "phase_seconds": {k: round(v, 2) for k, v in monitor.phases.seconds.items()},
    }


def preload(cfg: MonitorConfig) -> None:
    """Start importing mlflow in the background when the run will log to it (see ``mlflow_run.preload``)."""
    from lakemon.tracking.mlflow_run import preload as preload_mlflow

    if cfg.mlflow.enabled:
        preload_mlflow()


def log_success(
    monitor: Monitor,
    result: RunResult,
    tables: dict[str, Any],
    alert_rows: list[dict[str, Any]],
    run_row: dict[str, Any],
) -> str | None:
    """Log the run to MLflow: params, headline metrics, alert tags, JSON summary and alert list."""
    from lakemon.tracking.mlflow_run import log_run

    cfg = monitor.cfg
    if not cfg.mlflow.enabled:
        return None
    summ = result.summary or {}
    alerts = summ.get("alerts") or summarize(getattr(monitor, "_alert_rows", []))
    # a signal's flag is raised when it fired in any window of this run (one window for a scheduled run)
    fired = {r["signal"] for r in alert_rows if r.get("status") == "firing"}
    tags = {f"lakemon.alert.{s}": "true" if s in fired else "false" for s in SIGNALS}
    tags.update(
        {
            "lakemon.status": "success",
            "lakemon.monitor": cfg.monitor,
            "lakemon.run_id": monitor.run_id,
            "lakemon.alerts_firing": str(alerts.get("firing", 0)),
            "lakemon.model": cfg.model.name,
        }
    )
    params = {
        "monitor": cfg.monitor,
        "model": cfg.model.name,
        "problem_type": cfg.problem_type,
        "granularity": cfg.granularity,
        "config_hash": cfg.config_hash(),
        "windows": len(result.windows),
        "first_window": min(result.windows) if result.windows else "",
        "last_window": max(result.windows) if result.windows else "",
        "source_version": run_row.get("source_version"),
        "labels_version": run_row.get("labels_version"),
        "lakemon_run_id": monitor.run_id,
    }
    metrics: dict[str, float | None] = {
        "rows_read": float(result.rows_read),
        "bytes_read": None if result.bytes_read is None else float(result.bytes_read),
        "windows": float(len(result.windows)),
        "alerts_firing": float(alerts.get("firing", 0)),
        "quality_checks_failed": float(summ.get("quality_checks_failed", 0)),
        "drift_cells_drifted": float(summ.get("drift_cells_drifted", 0)),
    }
    metrics.update(summ.get("headline", {}))
    metrics.update({f"seconds.{k}": v for k, v in monitor.phases.seconds.items()})
    metrics["cost_vs_recent"] = result.cost_vs_recent
    artifacts = {
        "summary.json": summ,
        "alerts.json": [
            _jsonable(a) for a in alert_rows if a.get("status") == "firing" or a.get("notify") != "none"
        ],
    }
    try:
        return log_run(
            cfg.mlflow.tracking_uri,
            cfg.mlflow.experiment,
            f"{cfg.monitor}-{monitor.run_id[:8]}",
            params,
            metrics,
            tags,
            artifacts,
        )
    except Exception as err:  # a tracking outage must not lose the monitoring results already written
        log.error("[%s] MLflow logging failed: %s", cfg.monitor, err)
        return None


def log_failed_run(monitor: Monitor, result: RunResult) -> None:
    """A failed run still gets an MLflow run (status FAILED) so on-call sees it in the run history."""
    from lakemon.tracking.mlflow_run import log_run

    cfg = monitor.cfg
    if not cfg.mlflow.enabled:
        return
    try:
        result.mlflow_run_id = log_run(
            cfg.mlflow.tracking_uri,
            cfg.mlflow.experiment,
            f"{cfg.monitor}-{monitor.run_id[:8]}",
            {"monitor": cfg.monitor, "config_hash": cfg.config_hash(), "lakemon_run_id": monitor.run_id},
            {},
            {"lakemon.status": "failed", "lakemon.monitor": cfg.monitor, "lakemon.run_id": monitor.run_id},
            {"error.json": {"error": result.error}},
            status="FAILED",
        )
    except Exception as err:
        log.error("[%s] MLflow logging of the failure failed: %s", cfg.monitor, err)


def deliver(
    monitor: Monitor, result: RunResult, alert_rows: list[dict[str, Any]], tables: dict[str, Any]
) -> None:
    """Push the run's headline metrics and alert states to a Prometheus Pushgateway, when configured."""
    cfg = monitor.cfg
    if cfg.alerts.prometheus is None:
        return
    from lakemon.tracking.prometheus import push_metrics

    latest = max(result.windows) if result.windows else None
    newest = monitor.newest_computed
    if latest is not None and newest is not None and latest < newest:
        # a backfill, or late data re-opening old windows: the push replaces the monitor's whole group, so the
        # gauges and firing alerts of its newest window stay as the run that computed it pushed them
        log.info(
            "[%s] prometheus: not pushed (the run's newest window %s is older than the monitor's, %s)",
            cfg.monitor,
            latest,
            newest,
        )
        return
    gauges: list[tuple[str, dict[str, str], float]] = []
    for r in tables.get(DRIFT_METRICS.name, []):
        if (
            r["window_start"] == latest
            and r.get("threshold") is not None
            and r["value"] is not None
            and r["reference"] == "baseline"
        ):
            sl = f"{r['slice_key']}={r['slice_value']}" if r["slice_key"] else "all"
            gauges.append(
                (
                    "lakemon_drift_value",
                    {"column": r["column_name"], "slice": sl, "statistic": r["statistic"]},
                    r["value"],
                )
            )
    for r in tables.get(PERFORMANCE_METRICS.name, []):
        if (
            r["window_start"] == latest
            and r["class"] is None
            and r["value"] is not None
            and r["metric"] in HEADLINE[cfg.problem_type]
        ):
            sl = f"{r['slice_key']}={r['slice_value']}" if r["slice_key"] else "all"
            gauges.append(("lakemon_performance_value", {"metric": r["metric"], "slice": sl}, r["value"]))
    status = push_metrics(
        cfg.alerts.prometheus,
        cfg.monitor,
        summarize(getattr(monitor, "_alert_rows", [])),
        gauges,
        # the run's wall time so far (baseline_scan is inside baseline: the phases' sum would count it twice)
        (datetime.utcnow() - monitor.started_at).total_seconds(),
        result.rows_read,
    )
    log.info("[%s] prometheus push: %s", cfg.monitor, status.get("status"))


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in d.items()}
