"""The alert engine on synthetic metric histories: persistence, hysteresis, conditions, globs, escalation."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

from lakemon.alerts import (
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
    summarize,
)
from lakemon.alerts.engine import rules_for
from lakemon.config import AlertRule, ConditionSpec, PersistenceSpec, parse_config

T0 = datetime(2024, 1, 1)
DAY = timedelta(days=1)


def w(i: int) -> datetime:
    return T0 + i * DAY


def obs(
    i: int,
    value: float | None,
    *,
    signal: str = "performance",
    metric: str = "accuracy",
    column: str | None = None,
    slice_key: str | None = None,
    slice_value: str | None = None,
    flagged: bool | None = None,
    threshold: float | None = None,
    hint: str | None = None,
) -> Observation:
    return Observation(
        signal=signal,
        metric=metric,
        column_name=column,
        slice_key=slice_key,
        slice_value=slice_value,
        window_start=w(i),
        window_end=w(i + 1),
        value=value,
        threshold=threshold,
        flagged=flagged,
        severity_hint=hint,
    )


def by_window(rows: list[AlertRow]) -> dict[int, AlertRow]:
    out = {}
    for r in rows:
        i = (r.window_start - T0) // DAY
        assert i not in out, "one row per alert and window"
        out[i] = r
    return out


ABOVE = AlertRule(
    name="loss_high",
    signal="performance",
    metric="log_loss",
    condition=ConditionSpec(kind="above", value=0.5),
    persistence=PersistenceSpec(m=2, n=3, resolve_after=2),
)
#            w0   w1   w2   w3   w4   w5   w6   w7   w8   w9
PATTERN = [0.1, 0.9, 0.2, 0.8, 0.7, 0.3, 0.9, 0.1, 0.2, 0.1]


def pattern_obs() -> list[Observation]:
    return [obs(i, v, metric="log_loss") for i, v in enumerate(PATTERN)]


def test_persistence_two_of_three_and_hysteresis_resolve_after_two_clean():
    rows = evaluate([ABOVE], pattern_obs(), {})
    got = by_window(rows)
    # w1 is met but alone (1 of 3); w3 makes 2 of the last 3 -> opens. Clean w5 and w7 are single clean
    # windows (hysteresis holds it open); w7 + w8 are two consecutive clean windows -> resolved on w8.
    assert sorted(got) == [3, 4, 5, 6, 7, 8]
    assert [got[i].status for i in range(3, 9)] == ["firing"] * 5 + ["resolved"]
    assert [got[i].notify for i in range(3, 9)] == ["open", "none", "none", "none", "none", "resolve"]
    assert [got[i].consecutive_windows for i in range(3, 9)] == [1, 2, 3, 4, 5, 5]
    assert {r.first_window_start for r in rows} == {w(3)}
    assert [got[i].last_window_start for i in range(3, 9)] == [w(3), w(4), w(5), w(6), w(7), w(7)]
    assert got[8].value == pytest.approx(0.2) and got[8].threshold == 0.5
    assert all(r.severity == "warning" and r.rule == "loss_high" for r in rows)
    assert {r.alert_id for r in rows} == {alert_id("loss_high", "performance", "log_loss", None, None, None)}


def test_reopens_after_resolution_as_a_new_episode():
    values = [*PATTERN, 0.9, 0.9]  # w10 met: last 3 = [clean, clean, met] -> not yet; w11 -> opens
    rows = evaluate([ABOVE], [obs(i, v, metric="log_loss") for i, v in enumerate(values)], {})
    got = by_window(rows)
    assert 10 not in got
    assert (
        got[11].notify == "open" and got[11].consecutive_windows == 1 and got[11].first_window_start == w(11)
    )


def test_emit_windows_only_emits_requested_windows_with_state_from_history():
    full = evaluate([ABOVE], pattern_obs(), {})
    emit = {w(6), w(7), w(8), w(9)}
    part = evaluate([ABOVE], pattern_obs(), {}, emit_windows=emit)
    assert part == [r for r in full if r.window_start in emit]
    assert [r.notify for r in part] == ["none", "none", "resolve"]  # opened in a history window


def test_idempotent_and_order_independent():
    observations = pattern_obs() + [
        obs(i, 0.9, metric="log_loss", slice_key="region", slice_value="eu") for i in range(4)
    ]
    first = evaluate([ABOVE], observations, {})
    shuffled = observations[:]
    random.Random(7).shuffle(shuffled)
    assert evaluate([ABOVE], shuffled, {}) == first
    assert evaluate([ABOVE], list(reversed(observations)), {}) == first
    assert len({r.alert_id for r in first}) == 2


def test_no_data_neither_opens_nor_resolves():
    rule = ABOVE.model_copy(update={"persistence": PersistenceSpec(m=1, n=1, resolve_after=1)})
    rows = evaluate(
        [rule],
        [obs(0, 0.9, metric="log_loss"), obs(1, None, metric="log_loss"), obs(2, 0.1, metric="log_loss")],
        {},
    )
    got = by_window(rows)
    assert got[0].notify == "open"
    assert got[1].status == "firing" and got[1].value is None and got[1].notify == "none"
    assert got[2].status == "resolved"
    assert evaluate([rule], [obs(0, None, metric="log_loss")], {}) == []


def test_anomaly_rule_needs_three_prior_points_and_fires_outside_k_std():
    rule = AlertRule(
        name="vol",
        signal="volume",
        metric="row_count",
        condition=ConditionSpec(kind="anomaly", k=3, history=5),
    )
    values = [1000, 1010, 990, 1005, 995, 1002, 400, 1000]
    rows = evaluate(
        [rule], [obs(i, v, signal="volume", metric="row_count") for i, v in enumerate(values)], {}
    )
    got = by_window(rows)
    assert sorted(got) == [6, 7]
    assert got[6].status == "firing" and got[6].notify == "open" and got[6].value == 400
    assert got[6].threshold < 1000  # the lower bound mean - 3 std
    assert got[7].status == "resolved"  # 1000 is normal again (history now includes 400 -> wide band)
    # Too little history: an outlier on the 3rd window cannot be judged.
    short = [obs(i, v, signal="volume", metric="row_count") for i, v in enumerate([1000, 1001, 5])]
    assert evaluate([rule], short, {}) == []


def test_relative_drop_and_rise_against_the_baseline():
    drop = AlertRule(
        name="acc",
        signal="performance",
        metric="accuracy",
        condition=ConditionSpec(kind="relative_drop", value=0.05),
    )
    base = {("performance", "accuracy", None, None, None): 0.9}
    rows = evaluate(
        [drop], [obs(0, 0.86), obs(1, 0.85), obs(2, 0.80, slice_key="region", slice_value="eu")], base
    )
    assert [(r.window_start, r.slice_value, r.status) for r in rows] == [
        (w(1), None, "firing"),
        (w(2), "eu", "firing"),
    ]
    assert rows[0].threshold == pytest.approx(0.855)  # the bound 0.9 * (1 - 0.05); the slice falls back to it
    # A slice's own baseline wins over the population's.
    base_eu = {**base, ("performance", "accuracy", None, "region", "eu"): 0.82}
    assert evaluate([drop], [obs(2, 0.80, slice_key="region", slice_value="eu")], base_eu) == []
    # No baseline at all: no data, no alert.
    assert evaluate([drop], [obs(0, 0.1)], {}) == []
    rise = AlertRule(
        name="rmse",
        signal="performance",
        metric="rmse",
        condition=ConditionSpec(kind="relative_rise", value=0.1),
    )
    base_r = {("performance", "rmse", None, None, None): 2.0}
    rows = evaluate([rise], [obs(0, 2.1, metric="rmse"), obs(1, 2.3, metric="rmse")], base_r)
    assert [r.window_start for r in rows] == [w(1)] and rows[0].threshold == pytest.approx(2.2)


def test_glob_matching_of_metric_column_and_slice():
    def o(**kw):
        base = {"signal": "drift", "metric": "js_distance", "column": "country", "flagged": True}
        return obs(0, 0.3, **{**base, **kw})

    rule = AlertRule(name="r", signal="drift", metric="js_*", columns=("count*",), slices=("region=eu*",))
    assert rule_matches(rule, o(slice_key="region", slice_value="eu-west"))
    assert not rule_matches(rule, o(slice_key="region", slice_value="us"))
    assert not rule_matches(rule, o())  # the whole population is not region=eu*
    assert not rule_matches(rule, o(column="age", slice_key="region", slice_value="eu"))
    assert not rule_matches(rule, o(metric="psi", slice_key="region", slice_value="eu"))
    assert not rule_matches(rule, o(signal="quality", slice_key="region", slice_value="eu"))
    population_only = AlertRule(name="p", signal="drift", slices=("all",))
    assert rule_matches(population_only, o())
    assert not rule_matches(population_only, o(slice_key="region", slice_value="eu"))
    star = AlertRule(name="s", signal="performance")
    assert rule_matches(star, obs(0, 1.0))  # column "*" matches no column; slice "*" the population
    assert rule_matches(star, obs(0, 1.0, slice_key="region", slice_value="eu"))
    assert not rule_matches(AlertRule(name="c", signal="performance", columns=("x",)), obs(0, 1.0))
    flagged = evaluate(
        [rule], [o(slice_key="region", slice_value="eu-west"), o(slice_key="region", slice_value="us")], {}
    )
    assert [(r.slice_key, r.slice_value) for r in flagged] == [("region", "eu-west")]


def test_escalation_after_n_windows():
    rule = AlertRule(
        name="acc",
        signal="performance",
        metric="accuracy",
        condition=ConditionSpec(kind="below", value=0.8),
        severity="warning",
        escalate_after=3,
        escalate_to="critical",
    )
    values = [0.7, 0.7, 0.7, 0.7, 0.9]
    rows = evaluate([rule], [obs(i, v) for i, v in enumerate(values)], {})
    assert [(r.severity, r.status, r.notify) for r in rows] == [
        ("warning", "firing", "open"),
        ("warning", "firing", "none"),
        ("critical", "firing", "escalate"),
        ("critical", "firing", "none"),
        ("critical", "resolved", "resolve"),
    ]


def test_flag_condition_and_duplicate_observations_in_a_window():
    rule = AlertRule(name="drift", signal="drift", metric="js_distance")
    # Two references in one window: met if any is flagged; the flagged one is reported.
    pair = [
        obs(0, 0.05, signal="drift", metric="js_distance", column="c", flagged=False, threshold=0.1),
        obs(0, 0.3, signal="drift", metric="js_distance", column="c", flagged=True, threshold=0.1),
    ]
    rows = evaluate([rule], pair, {})
    assert len(rows) == 1 and rows[0].value == 0.3 and rows[0].threshold == 0.1 and rows[0].column_name == "c"
    assert (
        evaluate([rule], [obs(0, 0.3, signal="drift", metric="js_distance", column="c", flagged=None)], {})
        == []
    )


def _cfg(problem_type: str = "binary", **extra):
    source = {"table": "t", "timestamp": "ts", "id": "id", "prediction": "pred"}
    if problem_type == "binary":
        source["score"] = "score"
    data = {
        "monitor": "m",
        "model": {"name": "model"},
        "problem_type": problem_type,
        "source": source,
        "output": {"path": "/tmp/out"},
        "mlflow": {"experiment": "e"},
        **extra,
    }
    if problem_type == "multiclass":
        data["performance"] = {"classes": ["a", "b", "c"]}
    return parse_config(data)


def test_default_rules_per_problem_type():
    binary = {r.name: r for r in default_rules(_cfg("binary"))}
    assert set(binary) == {
        "quality_check_failed",
        "volume_anomaly",
        "freshness_stale",
        "drift_js_distance",
        "drift_wasserstein_normalized",
        "performance_drop_accuracy",
        "performance_drop_roc_auc",
        "estimated_performance_drop_accuracy",
        "estimated_performance_drop_roc_auc",
    }
    assert binary["quality_check_failed"].severity == "critical"
    assert binary["drift_js_distance"].persistence == PersistenceSpec(m=1, n=1, resolve_after=1)
    acc = binary["performance_drop_roc_auc"]
    assert acc.condition.kind == "relative_drop" and acc.condition.value == 0.05 and acc.escalate_after == 3
    multi = {r.metric for r in default_rules(_cfg("multiclass")) if r.signal == "performance"}
    assert multi == {"accuracy", "macro_f1"}
    reg = [r for r in default_rules(_cfg("regression")) if r.signal == "performance"]
    assert [(r.metric, r.condition.kind, r.condition.value) for r in reg] == [("rmse", "relative_rise", 0.1)]
    custom = _cfg(
        drift={"numeric_statistic": "psi", "columns": {"age": {"statistic": "ks", "threshold": 0.2}}}
    )
    drift = {r.name: r for r in default_rules(custom) if r.signal == "drift"}
    assert set(drift) == {"drift_psi", "drift_js_distance", "drift_ks_columns"}
    assert drift["drift_ks_columns"].columns == ("age",)
    off = _cfg(alerts={"default_rules": False, "rules": [{"name": "x", "signal": "drift"}]})
    assert [r.name for r in rules_for(off)] == ["x"]
    assert len(rules_for(_cfg())) == len(binary)


def test_default_rules_end_to_end_and_summary():
    rules = default_rules(_cfg("binary"))
    base = {
        ("performance", "accuracy", None, None, None): 0.9,
        ("performance", "roc_auc", None, None, None): 0.95,
    }
    observations = [
        obs(
            0,
            0.02,
            signal="quality",
            metric="not_null_id",
            column="id",
            flagged=True,
            threshold=0.0,
            hint="error",
        ),
        obs(
            0,
            0.5,
            signal="quality",
            metric="between_age",
            column="age",
            flagged=True,
            threshold=0.0,
            hint="warn",
        ),
        obs(0, 0.0, signal="quality", metric="unique_id", column="id", flagged=False, hint="error"),
        obs(0, 0.25, signal="drift", metric="js_distance", column="country", flagged=True, threshold=0.1),
        obs(
            0,
            0.05,
            signal="drift",
            metric="wasserstein_normalized",
            column="age",
            flagged=False,
            threshold=0.1,
        ),
        obs(0, 0.8, metric="accuracy"),
        obs(0, 0.94, metric="roc_auc"),
        obs(
            0, 0.84, signal="estimated_performance", metric="estimated_accuracy"
        ),  # falls back to 0.9 baseline
    ]
    rows = evaluate(rules, observations, base)
    got = {(r.rule, r.metric): r.severity for r in rows}
    assert got == {
        ("quality_check_failed", "not_null_id"): "critical",
        ("quality_check_failed", "between_age"): "info",  # a 'warn' check never pages
        ("drift_js_distance", "js_distance"): "warning",
        ("performance_drop_accuracy", "accuracy"): "warning",
        ("estimated_performance_drop_accuracy", "estimated_accuracy"): "warning",
    }
    s = summarize(rows)
    assert s["firing"] == 5 and s["opened"] == 5 and s["max_severity"] == "critical"
    assert s["by_signal"] == {"drift": 1, "estimated_performance": 1, "performance": 1, "quality": 2}
    assert s["by_severity"] == {"critical": 1, "info": 1, "warning": 3}
    assert s["by_signal_severity"]["quality"] == {"critical": 1, "info": 1}
    assert s["signals_firing"] == {
        "quality": True,
        "performance": True,
        "drift": True,
        "volume": False,
        "freshness": False,
        "estimated_performance": True,
    }
    resolved = summarize(evaluate([ABOVE], pattern_obs(), {}))
    assert (
        resolved["firing"] == 0
        and resolved["resolved"] == 1
        and resolved["signals_firing"]["performance"] is False
    )


# ---------------------------------------------------------------------------------------------------
# Reconciliation: receivers hold an alert open whose episode the rules no longer have, or the reverse
# ---------------------------------------------------------------------------------------------------

ONE = ABOVE.model_copy(update={"persistence": PersistenceSpec(m=1, n=1, resolve_after=2)})  # opens at once
AID = alert_id("loss_high", "performance", "log_loss", None, None, None)


def received(i: int, notify: str = "open", severity: str = "warning") -> Received:
    return Received(
        alert_id=AID,
        rule="loss_high",
        signal="performance",
        metric="log_loss",
        column_name=None,
        slice_key=None,
        slice_value=None,
        window_start=w(i),
        severity=severity,
        notify=notify,
        first_window_start=w(i),
    )


def retract(values: dict[int, float | None], got: Received, emit: set[int]) -> list[AlertRow]:
    """What a run computing the ``emit`` windows over ``values`` retracts, receivers holding ``got``."""
    rows, states = evaluate_with_state(
        [ONE], [obs(i, v, metric="log_loss") for i, v in values.items()], {}, {w(i) for i in emit}
    )
    notified = {r.alert_id for r in rows if r.notify != "none"}
    newest = max(emit)
    # the stored alerts rows before the rebuilt history (the earliest value given) say the alert was open
    # there when receivers took its open (or escalation) before it
    before = {got.alert_id} if got.window_start < w(min(values)) else set()
    return retractions([got], states, (w(newest), w(newest + 1)), notified, before)


def test_open_state_after_the_newest_window_per_series():
    high = dict(zip(range(4), [0.1, 0.9, 0.2, 0.2], strict=True))  # opens w1, resolves w3 (2 clean)
    _, states = evaluate_with_state([ONE], [obs(i, v, metric="log_loss") for i, v in high.items()], {})
    assert states == {AID: SeriesState(False, frozenset({w(1), w(2)}))}
    _, states = evaluate_with_state(
        [ONE], [obs(i, v, metric="log_loss") for i, v in list(high.items())[:3]], {}
    )
    assert states[AID].open is True  # one clean window of the two hysteresis needs
    _, states = evaluate_with_state([ONE], [obs(i, None, metric="log_loss") for i in range(5)], {})
    assert states[AID].open is None  # no data: neither open nor closed


def test_a_recomputed_clean_window_retracts_the_open_it_sent():
    # w3 opened the alert (sent); late data makes w3 clean: its recomputation emits nothing for the alert
    rows = retract({0: 0.1, 1: 0.2, 2: 0.1, 3: 0.3}, received(3), emit={3})
    assert len(rows) == 1
    r = rows[0]
    assert (r.alert_id, r.status, r.notify, r.severity) == (AID, "resolved", "resolve", "warning")
    assert (r.window_start, r.first_window_start, r.last_window_start) == (w(3), w(3), w(3))
    # an escalated alert is resolved at the severity receivers have (the sinks the escalation reached)
    assert retract({2: 0.1, 3: 0.3}, received(3, "escalate", "critical"), emit={3})[0].severity == "critical"


def test_no_retraction_while_the_episode_is_open_resolved_or_not_judged():
    # still met after recomputation: nothing to retract
    assert retract({2: 0.1, 3: 0.9}, received(3), emit={3}) == []
    # what receivers have is already a resolve
    assert retract({2: 0.1, 3: 0.3}, received(3, "resolve"), emit={3}) == []
    # the episode opened at w1 goes on through w3 (one clean window of the two hysteresis needs): open
    assert retract({1: 0.9, 2: 0.9, 3: 0.1}, received(1), emit={3}) == []
    # the run recomputes only w1 (clean now) while the open was sent for w3: w3 is not judged by this run
    assert retract({0: 0.1, 1: 0.1}, received(3), emit={1}) == []
    # the open was sent before the rebuilt history, and the stored rows say the episode was open where that
    # begins: the rules cannot tell whether it ended
    assert retract({3: 0.1, 4: 0.1}, received(0), emit={4}) == []
    _, states = evaluate_with_state([ONE], [obs(3, 0.1, metric="log_loss")], {})
    assert retractions([received(0)], states, (w(3), w(4)), set(), open_before={AID}) == []
    # ... and when they say it was closed there (its resolve was never sent), the rules can
    assert len(retractions([received(0)], states, (w(3), w(4)), set(), open_before=set())) == 1
    # an episode the rebuilt history sees open (from then on it agrees with the full history) and end
    # is judged whatever came before
    _, states = evaluate_with_state(
        [ONE], [obs(i, v, metric="log_loss") for i, v in {3: 0.9, 4: 0.1, 5: 0.1}.items()], {}
    )
    assert len(retractions([received(0)], states, (w(5), w(6)), set(), open_before={AID})) == 1
    # a series with no data in the evaluated windows (a slice absent, values missing) is not judged
    assert retract({2: None, 3: None}, received(1), emit={3}) == []
    assert retractions([received(1)], {}, (w(3), w(4)), set()) == []


def test_an_episode_the_rebuilt_history_sees_end_is_retracted():
    # late data opened an episode at w1 in a run that did not reach w3 (sent); w3, clean, resolved it in the
    # rebuilt history of the run of w4, which emits no resolve (w3 is not its window): retracted at w4
    values = {0: 0.1, 1: 0.9, 2: 0.1, 3: 0.1, 4: 0.1}
    rows = retract(values, received(1), emit={4})
    assert [(r.notify, r.window_start, r.last_window_start) for r in rows] == [("resolve", w(4), w(1))]


def test_an_open_episode_receivers_hold_resolved_is_reopened_once():
    values = {1: 0.9, 2: 0.9, 3: 0.9}  # the episode opened at w1, a window the run of w3 reads as history
    rows, states = evaluate_with_state(
        [ONE], [obs(i, v, metric="log_loss") for i, v in values.items()], {}, {w(3)}
    )
    assert [(r.notify, r.status) for r in rows] == [("none", "firing")]
    got = reopenings([received(0, "resolve")], states, rows, set())
    assert [(r.notify, r.window_start, r.first_window_start) for r in got] == [("open", w(3), w(1))]
    # receivers hold it open already, or the run sends a notification of it itself: nothing
    assert reopenings([received(1)], states, rows, set()) == []
    assert reopenings([received(0, "resolve")], states, rows, {AID}) == []
    # the episode resolved at the newest window: nothing to open
    rows, states = evaluate_with_state(
        [ONE], [obs(i, v, metric="log_loss") for i, v in {1: 0.9, 2: 0.1, 3: 0.1}.items()], {}, {w(3)}
    )
    assert reopenings([received(0, "resolve")], states, rows, set()) == []


def test_a_resolve_the_rules_send_themselves_is_not_doubled():
    # the episode opened at w1 resolves at w3 (two clean windows): the normal resolve goes, no retraction
    values = {1: 0.9, 2: 0.1, 3: 0.1}
    rows, states = evaluate_with_state([ONE], [obs(i, v, metric="log_loss") for i, v in values.items()], {})
    assert [r.notify for r in rows if r.window_start == w(3)] == ["resolve"]
    assert retract(values, received(1), emit={3}) == []
    # the same state read without the run's own notifications would retract: `notified` is what stops it
    assert len(retractions([received(1)], states, (w(3), w(4)), set())) == 1
