"""Great Expectations vs the fast path: the same data and rules give identical unexpected counts
(and the same success with ``mostly``), for not_null, between, in_set, not_in_set, regex, unique."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from test_quality_checks import SCHEMA, make_rows, with_windows

from lakemon.quality.checks import (
    CheckContext,
    add_derived_columns,
    aggregate_columns,
    plan_checks,
    validate_checks,
)
from lakemon.quality.gx import TRANSLATABLE, GxOutcome, load_suite, translate_suite, validate_with_gx

SUITE = Path(__file__).parent / "data" / "gx_suite.json"


@pytest.fixture(scope="module")
def data(spark):
    return with_windows(spark.createDataFrame(make_rows(n_per_window=300, seed=11), SCHEMA)).cache()


def _fast(df, checks, window_col):
    ctx = CheckContext(ts_col="ts", score_cols=("score",), window_start_col=window_col)
    assert not validate_checks(checks, df.schema, ctx)
    planned = plan_checks(checks, ctx)
    (row,) = add_derived_columns(df, planned).agg(*aggregate_columns(planned)).collect()
    return {p.name: p.finalize(row.asDict()) for p in planned}


def _assert_parity(gx_out: list[GxOutcome], fast: dict, checks) -> None:
    by_name = {c.check_name: c for c in checks}
    translated = [o for o in gx_out if o.expectation_type in TRANSLATABLE]
    assert len(translated) == len(checks)
    seen = set()
    for o, spec in zip(translated, checks, strict=True):
        assert spec.name.startswith(o.expectation_type) and spec.column == o.column
        f = fast[spec.name]
        assert o.exception is None, o.exception
        assert f.rows_failed == o.unexpected_count, (spec.name, f, o)
        assert f.passed == o.success, (spec.name, f, o)
        if spec.check != "not_null":  # NULL-ignoring: percent over non-NULL rows
            assert f.fail_ratio * 100 == pytest.approx(o.unexpected_percent or 0.0)
        assert json.loads(f.details)["rows_total"] == o.element_count
        seen.add(spec.check)
    assert seen == {"not_null", "between", "in_set", "not_in_set", "matches_regex", "unique"}
    assert set(by_name) == {c.check_name for c in checks}


def test_translate_suite_splits_fast_and_gx():
    suite = load_suite(SUITE)
    checks, rest = translate_suite(suite)
    assert [e.expectation_type for e in rest] == [
        "expect_column_mean_to_be_between",
        "expect_table_row_count_to_be_between",
    ]
    by = {c.check_name: c for c in checks}
    age = by["expect_column_values_to_be_between__age"]
    assert age.args == {"min": 18, "max": 100} and age.max_fail_ratio == pytest.approx(0.05)
    amount = by["expect_column_values_to_be_between__amount"]
    assert amount.args == {"min": 0, "min_inclusive": False}
    assert by["expect_column_values_to_be_in_set__country"].args == {"values": ["US", "DE", "FR"]}
    assert by["expect_column_values_to_match_regex__email"].max_fail_ratio == pytest.approx(0.2)
    assert by["expect_column_values_to_be_unique__prediction_id"].check == "unique"
    # a row_condition keeps an expectation with GX
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    cond = ExpectationConfiguration(
        type="expect_column_values_to_not_be_null",
        kwargs={
            "column": "age",
            "row_condition": 'col("segment")=="web"',
            "condition_parser": "great_expectations",
        },
    ).to_domain_obj()
    checks2, rest2 = translate_suite(gx.ExpectationSuite(name="c", expectations=[cond]))
    assert checks2 == [] and len(rest2) == 1


def test_load_suite_rejects_bad_expectations(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "b", "expectations": [{"type": "expect_nothing", "kwargs": {}}]}))
    with pytest.raises(ValueError, match=r"expectations\[0\]"):
        load_suite(bad)


def test_gx_and_fast_path_agree(data):
    """Whole batch (GX's batch = the DataFrame; the fast path's unique flag is not windowed)."""
    checks, rest = translate_suite(SUITE, schema=data.schema)
    gx_out = validate_with_gx(data, SUITE)
    assert [o.index for o in gx_out] == list(range(len(gx_out)))
    fast = _fast(data, checks, window_col=None)
    _assert_parity(gx_out, fast, checks)
    # the non-translated expectations ran through GX
    mean = next(o for o in gx_out if o.expectation_type == "expect_column_mean_to_be_between")
    assert mean.success and isinstance(mean.observed_value, float)
    rows = next(o for o in gx_out if o.expectation_type == "expect_table_row_count_to_be_between")
    assert rows.observed_value == data.count() and len(rest) == 2
    # mostly decides: some translated checks pass with failures, some fail
    assert any(f.passed and f.rows_failed > 0 for f in fast.values())
    assert any(not f.passed for f in fast.values())


def test_gx_and_fast_path_agree_per_window(data):
    """One window: GX on the window's rows == the windowed fast path's group for that window."""
    checks, _ = translate_suite(SUITE, schema=data.schema)
    ws = data.agg(F.min("window_start")).collect()[0][0]
    window = data.where(F.col("window_start") == F.lit(ws))
    gx_out = validate_with_gx(window, load_suite(SUITE))
    ctx = CheckContext(ts_col="ts", score_cols=("score",), window_start_col="window_start")
    planned = plan_checks(checks, ctx)
    rows = (
        add_derived_columns(data, planned).groupBy("window_start").agg(*aggregate_columns(planned)).collect()
    )
    (row,) = [r for r in rows if r["window_start"] == ws]
    fast = {p.name: p.finalize(row.asDict()) for p in planned}
    _assert_parity(gx_out, fast, checks)


def test_gx_releases_its_cache_but_not_the_callers(spark, data):
    """GX's Spark data source caches the batch; validating window after window must not pile those caches
    up, while a DataFrame the caller cached stays cached."""

    def cached_rdds() -> int:
        return spark.sparkContext._jsc.getPersistentRDDs().size()

    data.count()
    before = cached_rdds()
    for age in (20, 40):  # two "windows", new plans each time
        window = data.where(F.col("age") > age)
        validate_with_gx(window, SUITE)
        assert not window.storageLevel.useMemory and not window.storageLevel.useDisk
        assert cached_rdds() == before
    validate_with_gx(data, SUITE)
    assert data.storageLevel.useMemory and cached_rdds() == before
