"""The alert engine: rules over the observations of every signal, with persistence, hysteresis and escalation.

Pure Python (no Spark, no I/O): the job turns the rows of the monitoring tables into
:class:`Observation` objects, for the windows being evaluated plus enough history windows to rebuild
each alert's state, and writes the :class:`AlertRow` objects this module returns to the ``alerts`` table.

Semantics, in one place:

* A rule matches an observation when ``signal`` is equal and ``metric``, ``columns`` and ``slices`` match
  as :mod:`fnmatch` globs (case-sensitive). A slice glob is matched against ``"key=value"``; the whole
  population (``slice_key`` None) is matched by ``"*"`` and by the literal ``"all"``. A column glob
  ``"*"`` also matches observations without a column.
* Every (rule, metric, column, slice) is one *series* with a stable ``alert_id`` (:func:`alert_id`).
* Each window of a series is *met* (the condition holds), *clean* (it does not) or *no data* (the value
  it needs is None, the baseline is missing, or an anomaly rule has fewer than 3 prior points). No-data
  windows neither open nor resolve an alert and are not counted by persistence or hysteresis; while an
  alert is firing they still emit a ``firing`` row (value None) so an open alert stays visible.
* An alert *opens* on a met window when at least ``m`` of the last ``n`` evaluated windows were met. It
  stays firing (hysteresis) until ``resolve_after`` consecutive clean windows; the last of them emits a
  ``resolved`` row. ``escalate_after`` windows into an episode the severity becomes ``escalate_to``.
* Several observations of one series in one window (for instance drift against two references) are
  combined: the window is met if any of them is met, clean if any is clean and none is met; the value
  reported is the first met observation's (in a deterministic order).
* :func:`evaluate_with_state` also says, per series, whether an episode is open after its newest window;
  :func:`retractions` compares that with what receivers hold (the newest notification a sink took) and
  resolves alerts receivers hold open that no longer have an episode (late data took it back, or its
  resolve was never sent); :func:`reopenings` opens those receivers hold resolved while an episode is open.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from lakemon.config import AlertRule, ConditionSpec, PersistenceSpec

if TYPE_CHECKING:
    from lakemon.config import MonitorConfig

SIGNALS: tuple[str, ...] = (
    "quality",
    "performance",
    "drift",
    "volume",
    "freshness",
    "estimated_performance",
)
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}

FIRING = "firing"
RESOLVED = "resolved"
NOTIFY_OPEN, NOTIFY_ESCALATE, NOTIFY_RESOLVE, NOTIFY_NONE = "open", "escalate", "resolve", "none"

#: ``severity_hint`` values that cap an alert's severity: a quality check declared ``severity: warn`` is
#: recorded as an ``info`` alert (below the default sink threshold), never paged.
_HINT_CAP: dict[str, str] = {"warn": "info", "info": "info", "warning": "warning"}

#: Fewest prior points an anomaly condition needs before it can be met.
MIN_ANOMALY_HISTORY = 3

BaselineKey = tuple[str, str, str | None, str | None, str | None]


@dataclass(frozen=True)
class Observation:
    """One value of one signal for one window and slice: what alert rules are evaluated on."""

    signal: str
    metric: str
    column_name: str | None
    slice_key: str | None
    slice_value: str | None
    window_start: datetime
    window_end: datetime
    value: float | None
    threshold: float | None = None
    flagged: bool | None = None
    severity_hint: str | None = None


@dataclass(frozen=True)
class AlertRow:
    """One alert in one window: the ``alerts`` table row without monitor, granularity and run columns."""

    window_start: datetime
    window_end: datetime
    slice_key: str | None
    slice_value: str | None
    alert_id: str
    rule: str
    signal: str
    metric: str
    column_name: str | None
    value: float | None
    threshold: float | None
    severity: str
    status: str
    consecutive_windows: int
    first_window_start: datetime
    last_window_start: datetime
    notify: str
    delivery: str | None = None


# ---------------------------------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------------------------------


def alert_id(
    rule: str,
    signal: str,
    metric: str,
    column_name: str | None,
    slice_key: str | None,
    slice_value: str | None,
) -> str:
    """A short stable id (16 hex chars of sha256) of ``rule|signal|metric|column|slice_key|slice_value``."""
    parts = [rule, signal, metric, column_name or "", slice_key or "", slice_value or ""]
    return hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()[:16]


def _slice_matches(globs: Sequence[str], slice_key: str | None, slice_value: str | None) -> bool:
    if slice_key is None:
        return any(g in ("*", "all") for g in globs)
    target = f"{slice_key}={'' if slice_value is None else slice_value}"
    return any(fnmatch.fnmatchcase(target, g) for g in globs)


def _column_matches(globs: Sequence[str], column: str | None) -> bool:
    if column is None:
        return "*" in globs
    return any(fnmatch.fnmatchcase(column, g) for g in globs)


def rule_matches(rule: AlertRule, obs: Observation) -> bool:
    """Whether ``rule`` applies to ``obs`` (signal equal; metric, column and slice globs match)."""
    return (
        rule.signal == obs.signal
        and fnmatch.fnmatchcase(obs.metric, rule.metric)
        and _column_matches(rule.columns, obs.column_name)
        and _slice_matches(rule.slices, obs.slice_key, obs.slice_value)
    )


# ---------------------------------------------------------------------------------------------------
# Conditions
# ---------------------------------------------------------------------------------------------------


def _finite(v: float | None) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def baseline_value(baseline: Mapping[BaselineKey, float], obs: Observation) -> float | None:
    """The baseline value for ``obs``: its own slice, else the whole population's; estimated metrics
    (``estimated_performance`` / ``estimated_<m>``) fall back to the labeled ``performance`` / ``<m>``."""
    candidates: list[BaselineKey] = [
        (obs.signal, obs.metric, obs.column_name, obs.slice_key, obs.slice_value),
        (obs.signal, obs.metric, obs.column_name, None, None),
    ]
    if obs.signal == "estimated_performance" and obs.metric.startswith("estimated_"):
        plain = obs.metric[len("estimated_") :]
        candidates += [
            ("performance", plain, obs.column_name, obs.slice_key, obs.slice_value),
            ("performance", plain, obs.column_name, None, None),
        ]
    for key in candidates:
        v = baseline.get(key)
        if _finite(v):
            return float(v)  # type: ignore[arg-type]
    return None


@dataclass(frozen=True)
class _Outcome:
    met: bool | None  # None = no data
    value: float | None
    threshold: float | None


def _evaluate(
    cond: ConditionSpec,
    obs: Observation,
    baseline: Mapping[BaselineKey, float],
    history: Sequence[float],
) -> _Outcome:
    value = obs.value if _finite(obs.value) else None
    kind = cond.kind
    if kind == "flag":
        met = None if obs.flagged is None else bool(obs.flagged)
        return _Outcome(met, value, obs.threshold)
    if kind in ("above", "below"):
        bound = float(cond.value)  # type: ignore[arg-type]
        if value is None:
            return _Outcome(None, None, bound)
        return _Outcome(value > bound if kind == "above" else value < bound, value, bound)
    if kind in ("relative_drop", "relative_rise"):
        base = baseline_value(baseline, obs)
        if base is None:
            return _Outcome(None, value, None)
        frac = float(cond.value)  # type: ignore[arg-type]
        bound = base - abs(base) * frac if kind == "relative_drop" else base + abs(base) * frac
        if value is None:
            return _Outcome(None, None, bound)
        return _Outcome(value < bound if kind == "relative_drop" else value > bound, value, bound)
    if kind == "anomaly":
        prior = list(history)[-cond.history :]
        if value is None or len(prior) < MIN_ANOMALY_HISTORY:
            return _Outcome(None, value, None)
        mean = sum(prior) / len(prior)
        std = math.sqrt(sum((p - mean) ** 2 for p in prior) / (len(prior) - 1))
        lower, upper = mean - cond.k * std, mean + cond.k * std
        bound = upper if value >= mean else lower
        return _Outcome(value > upper or value < lower, value, bound)
    raise ValueError(f"unknown condition kind {kind!r}")  # pragma: no cover - guarded by the config


# ---------------------------------------------------------------------------------------------------
# State machine
# ---------------------------------------------------------------------------------------------------


def _obs_sort_key(o: Observation) -> tuple[Any, ...]:
    return (
        o.window_start,
        o.window_end,
        o.value is None,
        o.value if o.value is not None else 0.0,
        o.threshold is None,
        o.threshold if o.threshold is not None else 0.0,
        bool(o.flagged),
        o.severity_hint or "",
    )


def _max_severity(a: str, b: str) -> str:
    return a if SEVERITY_RANK[a] >= SEVERITY_RANK[b] else b


def _min_severity(a: str, b: str) -> str:
    return a if SEVERITY_RANK[a] <= SEVERITY_RANK[b] else b


@dataclass
class _Episode:
    first_window_start: datetime
    last_firing_start: datetime
    severity: str
    windows: int = 0
    clean_streak: int = 0
    escalated: bool = False


@dataclass(frozen=True)
class SeriesState:
    """What the rules' evaluation of a series ends with: ``open``, whether an episode is open after its newest
    window (what receivers should hold now; None when no window had data: no-data windows neither open nor
    resolve); ``open_windows``, the windows after which an episode was open."""

    open: bool | None
    open_windows: frozenset[datetime] = frozenset()

    def open_since(self, start: datetime | None) -> bool:
        """Whether an episode was open after a window at or after ``start`` (None: any)."""
        return any(start is None or w >= start for w in self.open_windows)


@dataclass
class _Series:
    rule: AlertRule
    metric: str
    column_name: str | None
    slice_key: str | None
    slice_value: str | None
    by_window: dict[tuple[datetime, datetime], list[Observation]] = field(default_factory=dict)


def _run_series(
    series: _Series,
    baseline: Mapping[BaselineKey, float],
    emit_windows: set[datetime] | None,
) -> tuple[list[AlertRow], SeriesState]:
    """The series' rows and its state (:class:`SeriesState`)."""
    rule = series.rule
    pers: PersistenceSpec = rule.persistence
    aid = alert_id(
        rule.name, rule.signal, series.metric, series.column_name, series.slice_key, series.slice_value
    )
    history_values: list[float] = []  # values of prior windows, for anomaly conditions
    recent: list[bool] = []  # met/clean of the last evaluated windows, for m-of-n persistence
    episode: _Episode | None = None
    seen_data = False
    open_windows: set[datetime] = set()  # windows after which an episode was open
    rows: list[AlertRow] = []

    def row(ws: datetime, we: datetime, out: _Outcome, status: str, notify: str, ep: _Episode) -> None:
        if emit_windows is not None and ws not in emit_windows:
            return
        rows.append(
            AlertRow(
                window_start=ws,
                window_end=we,
                slice_key=series.slice_key,
                slice_value=series.slice_value,
                alert_id=aid,
                rule=rule.name,
                signal=rule.signal,
                metric=series.metric,
                column_name=series.column_name,
                value=out.value,
                threshold=out.threshold,
                severity=ep.severity,
                status=status,
                consecutive_windows=ep.windows,
                first_window_start=ep.first_window_start,
                last_window_start=ep.last_firing_start,
                notify=notify,
            )
        )

    for (ws, we), group in sorted(series.by_window.items(), key=lambda kv: kv[0]):
        group = sorted(group, key=_obs_sort_key)
        outcomes = [(_evaluate(rule.condition, o, baseline, history_values), o) for o in group]
        met_ones = [(out, o) for out, o in outcomes if out.met is True]
        clean = [(out, o) for out, o in outcomes if out.met is False]
        out = (met_ones or clean or outcomes)[0][0]
        state = out.met

        # Severity this window would carry: the rule's, capped by the observation's own hint.
        base_sev = rule.severity
        hints = [o.severity_hint for _, o in (met_ones or outcomes) if o.severity_hint]
        caps = [_HINT_CAP[h.lower()] for h in hints if h.lower() in _HINT_CAP]
        if caps and len(caps) == len(hints):
            base_sev = _min_severity(base_sev, max(caps, key=SEVERITY_RANK.__getitem__))

        if state is not None:
            seen_data = True
            recent.append(state)
            del recent[: max(0, len(recent) - pers.n)]

        if episode is None:
            if state is True and sum(recent) >= pers.m:
                episode = _Episode(first_window_start=ws, last_firing_start=ws, severity=base_sev, windows=1)
                notify = NOTIFY_OPEN
                if rule.escalate_after is not None and episode.windows >= rule.escalate_after:
                    episode.severity = _max_severity(episode.severity, rule.escalate_to)
                    episode.escalated = True
                row(ws, we, out, FIRING, notify, episode)
        elif state is False and episode.clean_streak + 1 >= pers.resolve_after:
            episode.clean_streak += 1
            row(ws, we, out, RESOLVED, NOTIFY_RESOLVE, episode)
            episode = None
        else:
            if state is False:
                episode.clean_streak += 1
            elif state is True:
                episode.clean_streak = 0
            episode.windows += 1
            episode.last_firing_start = ws
            notify = NOTIFY_NONE
            if (
                rule.escalate_after is not None
                and not episode.escalated
                and episode.windows >= rule.escalate_after
            ):
                escalated = _max_severity(episode.severity, rule.escalate_to)
                episode.escalated = True
                if escalated != episode.severity:
                    episode.severity = escalated
                    notify = NOTIFY_ESCALATE
            row(ws, we, out, FIRING, notify, episode)

        if episode is not None:
            open_windows.add(ws)
        if out.value is not None:
            history_values.append(out.value)
    return rows, SeriesState((episode is not None) if seen_data else None, frozenset(open_windows))


def evaluate(
    rules: Iterable[AlertRule],
    observations: Iterable[Observation],
    baseline: Mapping[BaselineKey, float] | None = None,
    emit_windows: set[datetime] | None = None,
) -> list[AlertRow]:
    """Evaluate ``rules`` over ``observations`` (current and history windows, any order).

    ``baseline`` maps ``(signal, metric, column_name, slice_key, slice_value)`` to the baseline value
    (for relative conditions). Returns one row per alert and window where it is firing, plus a
    ``resolved`` row on the window that resolves it; with ``emit_windows``, only rows whose
    ``window_start`` is in it (the other windows only rebuild state). Deterministic: the same inputs
    give the same rows, sorted by window, rule and series.
    """
    return evaluate_with_state(rules, observations, baseline, emit_windows)[0]


def evaluate_with_state(
    rules: Iterable[AlertRule],
    observations: Iterable[Observation],
    baseline: Mapping[BaselineKey, float] | None = None,
    emit_windows: set[datetime] | None = None,
) -> tuple[list[AlertRow], dict[str, SeriesState]]:
    """:func:`evaluate`, and the :class:`SeriesState` of every series with an observation, by ``alert_id``."""
    rules = tuple(rules)
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise ValueError("alert rule names must be unique")
    baseline = baseline or {}
    series: dict[tuple[str, str, str | None, str | None, str | None], _Series] = {}
    for obs in observations:
        for rule in rules:
            if not rule_matches(rule, obs):
                continue
            key = (rule.name, obs.metric, obs.column_name, obs.slice_key, obs.slice_value)
            s = series.get(key)
            if s is None:
                s = series[key] = _Series(rule, obs.metric, obs.column_name, obs.slice_key, obs.slice_value)
            s.by_window.setdefault((obs.window_start, obs.window_end), []).append(obs)
    rows: list[AlertRow] = []
    states: dict[str, SeriesState] = {}
    for key in sorted(series, key=lambda k: tuple("" if p is None else p for p in k)):
        series_rows, state = _run_series(series[key], baseline, emit_windows)
        rows.extend(series_rows)
        states[alert_id(series[key].rule.name, series[key].rule.signal, *key[1:])] = state
    rows.sort(
        key=lambda r: (
            r.window_start,
            r.rule,
            r.metric,
            r.column_name or "",
            r.slice_key or "",
            r.slice_value or "",
        )
    )
    return rows, states


@dataclass(frozen=True)
class Received:
    """The newest notification of one alert that a sink took (``notifications`` table): what receivers show."""

    alert_id: str
    rule: str
    signal: str
    metric: str
    column_name: str | None
    slice_key: str | None
    slice_value: str | None
    window_start: datetime
    severity: str
    notify: str
    first_window_start: datetime | None


def retractions(
    received: Iterable[Received],
    states: Mapping[str, SeriesState],
    evaluated_to: tuple[datetime, datetime],
    notified: Collection[str],
    open_before: Collection[str] = (),
    since: datetime | None = None,
) -> list[AlertRow]:
    """Resolves for alerts that receivers hold open but whose episode no longer exists.

    Late data can make the windows that opened an alert clean; their recomputation then emits no row for it
    and no resolve, while receivers keep it open. An alert is retracted when the newest notification a sink
    took opened or escalated it; the rules evaluated its series (``states``: a window of it had data) and
    found no open episode after the newest window (``evaluated_to``: its start and end, which the caller
    makes the monitor's newest, as an episode can go on in windows the evaluation did not see); the run sends
    nothing else for it (``notified``); and the rebuilt history can judge the episode: it saw one open (from
    then on it agrees with the full history; ``since``: where the rebuilt history of the newest window
    begins), or the alert was closed there (``open_before``: the alerts whose stored rows say an episode was
    open there; the rules cannot tell whether it ended). The resolve is dated the newest window and carries
    the severity receivers have, so it reaches the sinks the open reached; ``consecutive_windows`` 0 marks it.
    """
    ws, we = evaluated_to
    out = []
    for r in received:
        if (
            r.notify in (NOTIFY_OPEN, NOTIFY_ESCALATE)
            and (state := states.get(r.alert_id)) is not None
            and state.open is False
            and r.window_start <= ws
            and r.alert_id not in notified
            and (state.open_since(since) or r.alert_id not in open_before)
        ):
            # the alert as receivers hold it, resolved at the newest window
            held = {f.name: getattr(r, f.name) for f in dataclasses.fields(r)}
            held.update(
                window_start=ws,
                first_window_start=r.first_window_start or r.window_start,
                notify=NOTIFY_RESOLVE,
            )
            out.append(
                AlertRow(
                    **held,
                    window_end=we,
                    value=None,
                    threshold=None,
                    status=RESOLVED,
                    consecutive_windows=0,
                    last_window_start=r.window_start,
                )
            )
    return sorted(out, key=lambda a: a.alert_id)


def reopenings(
    received: Iterable[Received],
    states: Mapping[str, SeriesState],
    newest_rows: Iterable[AlertRow],
    notified: Collection[str],
) -> list[AlertRow]:
    """Opens for alerts that receivers hold resolved but whose episode is open at the newest window.

    The mirror of :func:`retractions`: late data can open an episode in a window the run reads only as
    history (its open is never emitted), and an open every sink failed is sent again only when its window is
    recomputed. An alert is re-opened when the newest notification a sink took resolved it, the rules find
    an open episode after the newest window (``states``) and emit a firing row there (``newest_rows``: the
    run's rows of the monitor's newest window), and the run sends nothing else for it (``notified``). The
    open is that row with ``notify`` ``open``.
    """
    resolved = {r.alert_id for r in received if r.notify == NOTIFY_RESOLVE}
    out = [
        dataclasses.replace(row, notify=NOTIFY_OPEN)
        for row in newest_rows
        if row.status == FIRING
        and row.alert_id in resolved
        and (state := states.get(row.alert_id)) is not None
        and state.open is True
        and row.alert_id not in notified
    ]
    return sorted(out, key=lambda a: a.alert_id)


# ---------------------------------------------------------------------------------------------------
# Default rules
# ---------------------------------------------------------------------------------------------------

_PERF_DROP = 0.05
_PERF_RISE = 0.10


def default_rules(cfg: MonitorConfig) -> tuple[AlertRule, ...]:
    """The rules used when ``alerts.default_rules`` is true (the default, also without an ``alerts:``
    section):

    * ``quality_check_failed``: a failed quality check (``flag``), critical; checks declared
      ``severity: warn`` are capped to ``info`` by their hint, so only ``error`` checks notify.
    * ``volume_anomaly`` (warning) and ``freshness_stale`` (critical): the phase's own verdict.
    * ``drift_<statistic>``: drift flagged by the drift phase on the configured numeric and categorical
      statistics (and per-column overrides), warning, persistence 1 of 1.
    * ``performance_drop``: binary ``accuracy``/``roc_auc``, multiclass ``accuracy``/``macro_f1``,
      ranking ``ndcg_at_*`` 5% below the baseline, regression ``rmse`` 10% above it; warning,
      escalating to critical after 3 windows. ``estimated_performance_drop`` does the same on the
      label-free estimates (binary and multiclass, when ``performance.estimate``).
    """
    rules: list[AlertRule] = [
        AlertRule(name="quality_check_failed", signal="quality", severity="critical"),
        AlertRule(name="volume_anomaly", signal="volume", severity="warning"),
        AlertRule(name="freshness_stale", signal="freshness", severity="critical"),
    ]
    if cfg.drift.enabled:
        by_stat: dict[str, list[str]] = defaultdict(list)
        for col, override in sorted(cfg.drift.columns.items()):
            by_stat[override.statistic].append(col)
        for stat in sorted({cfg.drift.numeric_statistic, cfg.drift.categorical_statistic}):
            rules.append(AlertRule(name=f"drift_{stat}", signal="drift", metric=stat, severity="warning"))
        for stat, cols in sorted(by_stat.items()):
            rules.append(
                AlertRule(
                    name=f"drift_{stat}_columns",
                    signal="drift",
                    metric=stat,
                    columns=tuple(cols),
                    severity="warning",
                )
            )
    if cfg.performance.enabled:
        drop = ConditionSpec(kind="relative_drop", value=_PERF_DROP)
        metrics: tuple[str, ...]
        cond = drop
        if cfg.problem_type == "binary":
            metrics = ("accuracy", "roc_auc")
        elif cfg.problem_type == "multiclass":
            metrics = ("accuracy", "macro_f1")
        elif cfg.problem_type == "regression":
            metrics = ("rmse",)
            cond = ConditionSpec(kind="relative_rise", value=_PERF_RISE)
        else:
            metrics = ("ndcg_at_*",)
        for m in metrics:
            rules.append(
                AlertRule(
                    name=f"performance_drop_{m.replace('*', 'k')}",
                    signal="performance",
                    metric=m,
                    condition=cond,
                    severity="warning",
                    escalate_after=3,
                    escalate_to="critical",
                )
            )
        if cfg.performance.estimate and cfg.problem_type in ("binary", "multiclass"):
            for m in metrics:
                rules.append(
                    AlertRule(
                        name=f"estimated_performance_drop_{m}",
                        signal="estimated_performance",
                        metric=f"estimated_{m}",
                        condition=drop,
                        severity="warning",
                    )
                )
    return tuple(rules)


def rules_for(cfg: MonitorConfig) -> tuple[AlertRule, ...]:
    """The rules a monitor runs: its own ``alerts.rules`` plus, when enabled, the defaults whose names
    the monitor does not redefine."""
    own = tuple(cfg.alerts.rules)
    if not cfg.alerts.default_rules:
        return own
    taken = {r.name for r in own}
    return own + tuple(r for r in default_rules(cfg) if r.name not in taken)


# ---------------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------------


def summarize(rows: Iterable[AlertRow]) -> dict[str, Any]:
    """Summarize alert rows (each alert's latest window counts) for MLflow tags and Prometheus.

    Returns ``firing`` (alerts whose latest row is firing), ``resolved``, ``opened``/``escalated``
    (notify counts), ``notifications``, ``by_signal``/``by_severity`` firing counts,
    ``by_signal_severity`` (``{signal: {severity: n}}``), ``max_severity`` (or None) and
    ``signals_firing`` with a boolean for each of the six signals.
    """
    rows = list(rows)
    latest: dict[str, AlertRow] = {}
    for r in sorted(rows, key=lambda r: (r.window_start, r.status == RESOLVED)):
        latest[r.alert_id] = r
    firing = [r for r in latest.values() if r.status == FIRING]
    by_signal: dict[str, int] = defaultdict(int)
    by_severity: dict[str, int] = defaultdict(int)
    by_sig_sev: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in firing:
        by_signal[r.signal] += 1
        by_severity[r.severity] += 1
        by_sig_sev[r.signal][r.severity] += 1
    max_sev = max((r.severity for r in firing), key=SEVERITY_RANK.__getitem__, default=None)
    return {
        "firing": len(firing),
        "resolved": sum(1 for r in latest.values() if r.status == RESOLVED),
        "opened": sum(1 for r in rows if r.notify == NOTIFY_OPEN),
        "escalated": sum(1 for r in rows if r.notify == NOTIFY_ESCALATE),
        "notifications": sum(1 for r in rows if r.notify != NOTIFY_NONE),
        "by_signal": dict(sorted(by_signal.items())),
        "by_severity": dict(sorted(by_severity.items())),
        "by_signal_severity": {s: dict(sorted(v.items())) for s, v in sorted(by_sig_sev.items())},
        "max_severity": max_sev,
        "signals_firing": {s: by_signal.get(s, 0) > 0 for s in SIGNALS},
    }
