"""Built-in quality checks: every rule's failing-row count equals an independent count, per window
and slice, from ONE aggregation; edge cases; failure samples; validation messages; suggestions."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from datetime import date, datetime, timedelta

import pytest
from pyspark.sql import functions as F
from pyspark.sql.types import StructField, StructType

from lakemon.config import CheckSpec, QualitySpec
from lakemon.quality.checks import (
    CHECKS,
    CheckContext,
    add_derived_columns,
    aggregate_columns,
    default_checks,
    duplicate_flag_column,
    freshness_finalize,
    plan_checks,
    sample_failures,
    schema_diff,
    validate_checks,
    volume_finalize,
)
from lakemon.quality.suggest import profile_for_suggestions, suggest_checks, to_yaml

DAY0 = datetime(2024, 3, 1)
N_WINDOWS = 3
SLICES = ("web", "app")
SCHEMA = (
    "prediction_id string, ts timestamp, segment string, age double, amount int, score double, "
    "country string, email string"
)
EMAIL = r"^[^@\s]+@[^@\s]+\.[a-z]+$"


def make_rows(n_per_window: int = 400, seed: int = 7) -> list[tuple]:
    """Seeded prediction-log rows with known violations of every rule, in 3 daily windows x 2 slices."""
    rng = random.Random(seed)
    rows = []
    for w in range(N_WINDOWS):
        for i in range(n_per_window):
            pid = f"p{w}_{i}"
            r = rng.random()
            if r < 0.03:
                pid = f"p{w}_{rng.randrange(20)}"  # duplicate within the window
            elif r < 0.04:
                pid = None
            ts = DAY0 + timedelta(days=w, seconds=rng.randrange(0, 86400 - 7200 * (w == 2)))
            seg = SLICES[i % 2]
            age = rng.uniform(18, 90)
            r = rng.random()
            if r < 0.03:
                age = None
            elif r < 0.06:
                age = rng.choice([5.0, 130.0, -1.0])
            elif r < 0.07:
                age = rng.choice([float("nan"), float("inf"), float("-inf")])
            amount = rng.randrange(1, 500) if rng.random() > 0.05 else rng.choice([0, -3, None])
            score = rng.random()
            r = rng.random()
            if r < 0.02:
                score = rng.choice([1.5, -0.2, 1.0000001])
            elif r < 0.03:
                score = float("nan")
            elif r < 0.05:
                score = None
            elif r < 0.06:
                score = rng.choice([0.0, 1.0])  # boundaries pass
            country = rng.choice(["US", "DE", "FR"])
            r = rng.random()
            if r < 0.04:
                country = None
            elif r < 0.08:
                country = rng.choice(["XX", "us", "GB"])
            email = f"user{i}@example.com"
            r = rng.random()
            if r < 0.05:
                email = rng.choice(["no-at-sign", "a@b", "x y@z.com", "UPPER@EX.COM"])
            elif r < 0.08:
                email = None
            rows.append((pid, ts, seg, age, amount, score, country, email))
    return rows


def with_windows(df):
    return df.withColumn("window_start", F.date_trunc("day", "ts")).withColumn(
        "window_end", F.col("window_start") + F.expr("INTERVAL 1 DAY")
    )


@pytest.fixture(scope="module")
def rows():
    return make_rows()


@pytest.fixture(scope="module")
def data(spark, rows):
    return with_windows(spark.createDataFrame(rows, SCHEMA)).cache()


CTX = CheckContext(ts_col="ts", score_cols=("score",))

# (spec, independent SQL condition of a failing row); unique is counted in Python.
RULES: list[tuple[CheckSpec, str | None]] = [
    (CheckSpec(check="not_null", column="country"), "country IS NULL"),
    (
        CheckSpec(check="between", column="age", args={"min": 18, "max": 100}),
        "age IS NOT NULL AND (isnan(age) OR age < 18 OR age > 100)",
    ),
    (
        CheckSpec(
            name="age_open",
            check="between",
            column="age",
            args={"min": 18, "min_inclusive": False, "max": 100},
        ),
        "age IS NOT NULL AND (isnan(age) OR age <= 18 OR age > 100)",
    ),
    (CheckSpec(check="between", column="amount", args={"min": 1}), "amount IS NOT NULL AND amount < 1"),
    (
        CheckSpec(check="in_set", column="country", args={"values": ["US", "DE", "FR"]}),
        "country IS NOT NULL AND country NOT IN ('US', 'DE', 'FR')",
    ),
    (
        CheckSpec(check="not_in_set", column="country", args={"values": ["XX", "GB"]}),
        "country = 'XX' OR country = 'GB'",
    ),
    (
        CheckSpec(check="matches_regex", column="email", args={"pattern": EMAIL}),
        f"email IS NOT NULL AND NOT regexp_like(email, '{EMAIL.replace(chr(92), chr(92) * 2)}')",
    ),
    (
        CheckSpec(check="expression", args={"expr": "amount > 0 AND score <= 1"}),
        "NOT (coalesce(amount > 0, false) AND coalesce(score <= 1, false))",
    ),
    (
        CheckSpec(check="no_nan_or_inf", column="age"),
        "isnan(age) OR age = double('inf') OR age = double('-inf')",
    ),
    (CheckSpec(check="no_nan_or_inf", column="amount"), "false"),
    (
        CheckSpec(check="score_in_unit_interval", column="score"),
        "score IS NOT NULL AND (isnan(score) OR score < 0 OR score > 1)",
    ),
    (CheckSpec(check="null_ratio_below", column="email", args={"max_ratio": 0.05}), "email IS NULL"),
    (CheckSpec(check="unique", column="prediction_id"), None),
]


def grouped_outcomes(df, planned, keys=("window_start", "segment")):
    """ONE aggregation of every planned Column, finalized per group."""
    df = add_derived_columns(df, planned)
    out = {}
    for row in df.groupBy(*keys).agg(*aggregate_columns(planned)).collect():
        values = row.asDict()
        out[tuple(values[k] for k in keys)] = {p.name: p.finalize(values) for p in planned}
    return out


def test_every_rule_matches_independent_counts(spark, data, rows):
    specs = [s for s, _ in RULES]
    assert not validate_checks(specs, data.schema, CTX)
    planned = plan_checks(specs, CTX)
    aliases = [c for p in planned for c in p.keys.values()]
    assert len(aliases) == len(set(aliases))
    got = grouped_outcomes(data, planned)
    assert len(got) == N_WINDOWS * len(SLICES)

    for spec, cond in RULES:
        if cond is None:
            continue
        expected = {
            (r["window_start"], r["segment"]): r["count"]
            for r in data.where(F.expr(cond)).groupBy("window_start", "segment").count().collect()
        }
        for key, outcomes in got.items():
            assert outcomes[spec.check_name].rows_failed == expected.get(key, 0), (spec.check_name, key)

    # unique: every copy of an id repeated within its window, counted in plain Python
    counts = Counter((r[1].date(), r[0]) for r in rows if r[0] is not None)
    dup_expected: Counter = Counter()
    for r in rows:
        if r[0] is not None and counts[(r[1].date(), r[0])] > 1:
            dup_expected[(r[1].date(), r[2])] += 1
    assert sum(dup_expected.values()) > 0
    for (ws, seg), outcomes in got.items():
        assert outcomes["unique_prediction_id"].rows_failed == dup_expected[(ws.date(), seg)]

    # every rule has violations somewhere (the data exercises it), except the integer NaN check
    totals = Counter()
    for outcomes in got.values():
        for name, o in outcomes.items():
            totals[name] += o.rows_failed
    assert all(v > 0 for k, v in totals.items() if k != "no_nan_or_inf_amount"), totals
    assert totals["no_nan_or_inf_amount"] == 0


def test_rows_checked_and_ratio_semantics(data):
    specs = [
        CheckSpec(check="between", column="age", args={"min": 18, "max": 100}, max_fail_ratio=0.2),
        CheckSpec(check="not_null", column="age"),
        CheckSpec(check="null_ratio_below", column="age", args={"max_ratio": 1.0}),
    ]
    planned = plan_checks(specs, CTX)
    row = data.agg(*aggregate_columns(planned)).collect()[0].asDict()
    between, nn, ratio = (p.finalize(row) for p in planned)
    total = data.count()
    non_null = data.where("age IS NOT NULL").count()
    assert between.rows_checked == non_null  # NULL-ignoring rule: checked = non-NULL rows
    assert json.loads(between.details)["rows_total"] == total
    assert math.isclose(between.fail_ratio, between.rows_failed / non_null)
    assert between.passed
    assert nn.rows_checked == total and nn.rows_failed == total - non_null and not nn.passed
    assert ratio.passed and ratio.rows_failed == nn.rows_failed


def test_mostly_boundary_is_inclusive():
    spec = CheckSpec(check="in_set", column="c", args={"values": ["a"]}, max_fail_ratio=round(1 - 0.9, 12))
    (p,) = plan_checks([spec], CTX)
    out = p.finalize({p.keys["failed"]: 1, p.keys["checked"]: 10, p.keys["rows"]: 10})
    assert out.passed and out.fail_ratio == pytest.approx(0.1)


def test_empty_window_and_all_null_columns_do_not_crash(spark):
    df = spark.createDataFrame(
        [(None, None, None, None)] * 5, "id string, x double, s string, ts timestamp"
    ).withColumn("window_start", F.lit(DAY0).cast("timestamp"))
    df = df.withColumn("window_end", F.col("window_start") + F.expr("INTERVAL 1 DAY"))
    ctx = CheckContext(ts_col="ts", score_cols=("x",), schema=df.schema)
    specs = [
        CheckSpec(check="not_null", column="id"),
        CheckSpec(check="between", column="x", args={"min": 0, "max": 1}),
        CheckSpec(check="in_set", column="s", args={"values": ["a"]}),
        CheckSpec(check="not_in_set", column="s", args={"values": ["a"]}),
        CheckSpec(check="matches_regex", column="s", args={"pattern": "^a$"}),
        CheckSpec(check="expression", args={"expr": "x > 0"}),
        CheckSpec(check="no_nan_or_inf", column="x"),
        CheckSpec(check="score_in_unit_interval"),
        CheckSpec(check="null_ratio_below", column="x", args={"max_ratio": 0.5}),
        CheckSpec(check="unique", column="id"),
        CheckSpec(check="freshness", args={"max_delay": "2 hours"}),
        CheckSpec(check="volume", args={"min_rows": 1}),
        CheckSpec(check="schema", args={"required": {"id": "string", "x": "double"}}),
    ]
    assert not validate_checks(specs, df.schema, ctx)
    planned = plan_checks(specs, ctx)
    prepared = add_derived_columns(df, planned)
    # all-NULL columns
    (row,) = prepared.agg(*aggregate_columns(planned)).collect()
    outs = {p.check: p.finalize(row.asDict()) for p in planned}
    assert outs["not_null"].rows_failed == 5 and not outs["not_null"].passed
    for k in (
        "between",
        "in_set",
        "not_in_set",
        "matches_regex",
        "no_nan_or_inf",
        "score_in_unit_interval",
        "unique",
    ):
        assert outs[k].rows_checked == 0 and outs[k].rows_failed == 0 and outs[k].passed, k
    assert outs["expression"].rows_failed == 5  # NULL result counts as failed
    assert not outs["null_ratio_below"].passed
    assert not outs["freshness"].passed and "no timestamp" in outs["freshness"].details
    assert outs["volume"].passed and outs["schema"].passed
    # an empty window: a global aggregation of no rows still gives one row of zeros/NULLs
    (row,) = prepared.where("false").agg(*aggregate_columns(planned)).collect()
    outs = {p.check: p.finalize(row.asDict()) for p in planned}
    assert all(o.rows_failed == 0 for k, o in outs.items() if k not in ("freshness", "volume"))
    assert not outs["volume"].passed and outs["volume"].rows_checked == 0
    assert outs["between"].fail_ratio == 0.0
    # no groups at all: grouped aggregation of nothing gives no rows, no crash
    assert prepared.where("false").groupBy("window_start").agg(*aggregate_columns(planned)).collect() == []


def test_freshness_and_volume_and_schema(data):
    specs = [
        CheckSpec(check="freshness", args={"max_delay": "1 hour"}),
        CheckSpec(check="volume", args={"max_std": 3, "history": 5}),
        CheckSpec(check="schema", args={"required": {"score": "double", "amount": "bigint", "zz": "int"}}),
    ]
    ctx = CheckContext(ts_col="ts", score_cols=("score",), schema=data.schema)
    planned = plan_checks(specs, ctx)
    per_window = {
        r["window_start"]: r.asDict()
        for r in data.groupBy("window_start").agg(*aggregate_columns(planned)).collect()
    }
    fresh = {w: planned[0].finalize(v) for w, v in per_window.items()}
    last = max(fresh)
    assert not fresh[last].passed  # the last window's data stops 2 hours early
    assert all(o.passed for w, o in fresh.items() if w != last)
    n = per_window[last][planned[1].keys["rows"]]
    assert planned[1].finalize(per_window[last], history=[n, n + 5, n - 3]).passed
    assert not planned[1].finalize(per_window[last], history=[10 * n, 10 * n + 9, 10 * n - 7]).passed
    schema_out = planned[2].finalize(per_window[last])
    details = json.loads(schema_out.details)
    assert not schema_out.passed and details["missing"] == ["zz"]
    assert details["mismatched"] == [{"column": "amount", "expected": "bigint", "actual": "int"}]


def test_pure_finalizers():
    ok, info = freshness_finalize(datetime(2024, 1, 1, 22), datetime(2024, 1, 2), "2 hours")
    assert ok and info["delay_s"] == 7200
    ok, _ = freshness_finalize(datetime(2024, 1, 1, 21, 59), datetime(2024, 1, 2), "2 hours")
    assert not ok
    assert freshness_finalize(date(2024, 1, 2), datetime(2024, 1, 2, 1), "2 hours")[0]  # a DATE column
    assert volume_finalize(100, [], min_rows=10, max_rows=1000)[0]
    assert not volume_finalize(5, [], min_rows=10)[0]
    ok, info = volume_finalize(100, [100, 100], max_std=3)
    assert ok and "skipped" in info  # too little history
    assert volume_finalize(105, [100, 100, 100], max_std=3)[0]  # std floored at sqrt(mean)
    assert not volume_finalize(200, [100, 100, 100], max_std=3)[0]
    schema = StructType.fromJson(
        {"type": "struct", "fields": [{"name": "a", "type": "long", "nullable": True, "metadata": {}}]}
    )
    d = schema_diff(schema, {"a": "numeric", "b": "string"}, allow_extra=False)
    assert d.missing == ("b",) and not d.mismatched and not d.extra
    d = schema_diff(schema, {"b": ""}, allow_extra=False)
    assert d.extra == ("a",)


def test_sample_failures_limit_and_columns(data):
    specs = [
        CheckSpec(check="between", column="age", args={"min": 18, "max": 100}),
        CheckSpec(check="matches_regex", column="email", args={"pattern": EMAIL}),
        CheckSpec(check="unique", column="prediction_id"),
        CheckSpec(check="null_ratio_below", column="email", args={"max_ratio": 0.0}),  # no row condition
    ]
    planned = plan_checks(specs, CTX)
    limit = 3
    samples = sample_failures(data, planned, limit, columns=["prediction_id", "age", "email"])
    assert samples.columns == ["check_name", "check", "window_start", "row_json"]
    got = samples.collect()
    per = Counter((r["check_name"], r["window_start"]) for r in got)
    assert set(per) == {(p.name, w) for p in planned[:3] for w in {r["window_start"] for r in got}}
    assert len({r["window_start"] for r in got}) == N_WINDOWS
    assert all(v == limit for v in per.values())
    for r in got:
        payload = json.loads(r["row_json"])
        assert set(payload) <= {"prediction_id", "age", "email"}
        assert "country" not in payload
        if r["check"] == "matches_regex":
            assert payload.get("email") is not None
    assert sample_failures(data, planned, 0, columns=["age"]).count() == 0


def test_validate_messages_name_the_key(data):
    ctx = CheckContext(ts_col="ts", score_cols=())
    specs = [
        CheckSpec(check="between", column="age", args={"min": "low"}),
        CheckSpec(check="between", column="country", args={"max": 3}),
        CheckSpec(check="in_set", column="nope", args={"values": []}),
        CheckSpec(check="matches_regex", column="email"),
        CheckSpec(check="expression", args={"expr": "no_such_col > 1"}),
        CheckSpec(check="freshness", args={"max_delay": "soon"}),
        CheckSpec(check="null_ratio_below", column="age"),
        CheckSpec(check="score_in_unit_interval"),
        CheckSpec(check="volume"),
        CheckSpec(check="between", column="age"),
        CheckSpec(check="not_null", column="age", args={"typo": 1}),
    ]
    errs = validate_checks(specs, data.schema, ctx)
    text = "\n".join(errs)
    assert "quality.checks[0].args.min: expected a number, got 'low'" in text
    assert "quality.checks[1].column: check 'between' needs a numeric column, 'country' is string" in text
    assert "quality.checks[2].column: unknown column 'nope'" in text
    assert "quality.checks[2].args.values" in text
    assert "quality.checks[3].args.pattern" in text
    assert "quality.checks[4].args.expr: cannot be evaluated" in text
    assert "quality.checks[5].args.max_delay" in text
    assert "quality.checks[6].args.max_ratio" in text
    assert "quality.checks[7].column" in text
    assert "quality.checks[8].args.min_rows" in text
    assert "quality.checks[9].args.min: check 'between' needs 'min' and/or 'max'" in text
    assert "quality.checks[10].args.typo: unknown argument" in text
    assert set(CHECKS) == set(CheckSpec.model_fields["check"].annotation.__args__)


def test_default_checks_are_valid_and_unique(data):
    specs = default_checks(["age", "amount"], ["country"], "score", "prediction_id", "ts")
    QualitySpec(checks=tuple(specs))  # names unique
    assert not validate_checks(specs, data.schema, CTX)
    kinds = Counter(s.check for s in specs)
    assert kinds["no_nan_or_inf"] == 2 and kinds["unique"] == 1 and kinds["not_null"] == 2
    assert kinds["score_in_unit_interval"] == 1
    planned = plan_checks(specs, CTX)
    flags = add_derived_columns(data, planned)
    assert "__dup_prediction_id" in flags.columns
    # the flag column is the documented window function
    expected = data.withColumn("f", duplicate_flag_column("prediction_id", "window_start"))
    assert expected.where("f").count() == flags.where("__dup_prediction_id").count()


def test_suggest_profile_and_yaml(spark, data):
    profile = profile_for_suggestions(
        data, ["age", "amount", "score"], ["country", "email"], max_categories=10
    )
    cols = profile["columns"]
    assert profile["row_count"] == data.count()
    assert cols["country"]["values"] == ["DE", "FR", "GB", "US", "XX", "us"]
    assert cols["email"]["values"] is None  # high cardinality
    assert cols["age"]["nan_count"] > 0 and math.isfinite(cols["age"]["max"])
    checks = suggest_checks(profile)
    by = {(c.check, c.column): c for c in checks}
    assert by[("in_set", "country")].args["values"] == cols["country"]["values"]
    assert ("null_ratio_below", "country") in by
    assert ("no_nan_or_inf", "age") not in by  # NaN seen in the data
    amount = by[("between", "amount")].args  # an integer column: integer bounds, rounded outwards
    assert isinstance(amount["min"], int) and isinstance(amount["max"], int)
    assert amount["min"] <= cols["amount"]["quantiles"]["0.001"] and amount["max"] >= 499
    nonneg = {"kind": "numeric", "integral": True, "null_ratio": 0.0, "min": 0.0, "max": 10.0}
    nonneg["quantiles"] = {"0.001": 0.0, "0.999": 10.0}
    (nn, bt) = suggest_checks({"row_count": 5, "columns": {"n": nonneg}})
    assert nn.check == "not_null" and bt.args == {"min": 0, "max": 11}
    assert not validate_checks(checks, data.schema, CTX)
    text = to_yaml(checks)
    assert text.startswith("#") and "quality:" in text
    import yaml

    parsed = QualitySpec.model_validate(yaml.safe_load(text)["quality"])
    assert len(parsed.checks) == len(checks)
    assert suggest_checks({"row_count": 0, "columns": {}}) == []


def test_checks_do_not_run_spark_jobs(spark, data):
    """Planning builds Columns only: no job starts."""
    tracker = spark.sparkContext.statusTracker()
    before = len(tracker.getJobIdsForGroup(None))
    plan_checks([s for s, _ in RULES], CheckContext(ts_col="ts", score_cols=("score",), schema=data.schema))
    validate_checks([s for s, _ in RULES[:3]], data.schema, CTX)
    assert len(tracker.getJobIdsForGroup(None)) == before


def test_schema_struct_field_helper():
    s = StructType([StructField("a", StructType([]))])
    assert schema_diff(s, {"a": "struct<>"}).ok
