"""The demo generator: shapes, determinism and every injected incident on its day and nowhere else."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lakemon import demo_data as dd

ROWS = 40_000
DAYS = 15
UNLABELED = 3
START = datetime(2026, 10, 1)
START_EPOCH = int(START.replace(tzinfo=UTC).timestamp())
INC = dd.incident_days(DAYS)


@pytest.fixture(scope="module")
def demo(spark, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return dd.generate_demo(spark, str(out), rows=ROWS, days=DAYS, start=START, unlabeled_days=UNLABELED)


@pytest.fixture(scope="module")
def frames(spark, demo):
    from pyspark.sql import functions as F

    preds = spark.read.format("delta").load(demo["predictions"])
    labels = spark.read.format("delta").load(demo["labels"])
    base = spark.read.format("delta").load(demo["baseline"])
    day = F.floor((F.unix_seconds("ts") - START_EPOCH) / 86400).cast("int")
    joined = preds.withColumn("day", day).join(labels, "prediction_id", "left").cache()
    yield preds, labels, base, joined
    joined.unpersist()


@pytest.fixture(scope="module")
def daily(frames):
    """One row of metrics per day, as dicts keyed by day (one Spark job)."""
    from pyspark.sql import functions as F

    *_, joined = frames
    south = F.col("region") == "south"
    rows = (
        joined.groupBy("day")
        .agg(
            F.count("*").alias("n"),
            F.avg(F.col("label").isNotNull().cast("int")).alias("labeled"),
            F.avg(F.col("utilization").isNull().cast("int")).alias("util_null"),
            F.avg(((F.col("age") < 18) | (F.col("age") > 90)).cast("int")).alias("age_oor"),
            F.avg(((F.col("age") < 0) | (F.col("age") > 120)).cast("int")).alias("age_wild"),
            F.avg(F.when(south, F.col("income"))).alias("income_south"),
            F.count(F.when(south, 1)).alias("n_south"),
            F.avg(F.when(~south, F.col("income"))).alias("income_other"),
            F.count(F.when(~south, 1)).alias("n_other"),
            F.avg((F.col("product") == "mortgage").cast("int")).alias("mortgage"),
            F.avg((F.col("product") == "card").cast("int")).alias("card"),
            *[F.avg(c).alias(c) for c in ("income", "credit_limit", "score", "label", "age")],
        )
        .collect()
    )
    return {r["day"]: r.asDict() for r in rows}


def pooled(daily, key, days, weight="n"):
    """Mean of a per-day mean over several days."""
    return sum(daily[d][key] * daily[d][weight] for d in days) / sum(daily[d][weight] for d in days)


def test_shapes_and_counts(demo, frames):
    from pyspark.sql import functions as F

    preds, labels, base, joined = frames
    n_labels = demo["rows"]["labels"]
    assert demo["rows"] == {"predictions": ROWS, "labels": n_labels, "baseline": ROWS // 4}
    delay = F.unix_seconds("labeled_at") - F.unix_seconds("ts")
    r = joined.agg(
        F.count("*").alias("n"),
        F.countDistinct("prediction_id").alias("ids"),
        F.count("label").alias("labels"),
        F.min("ts").alias("ts_min"),
        F.max("ts").alias("ts_max"),
        F.min(delay).alias("delay_min"),
        F.max(delay).alias("delay_max"),
        F.avg("prediction").alias("positive"),
        F.min("score").alias("score_min"),
        F.max("score").alias("score_max"),
    ).first()
    # n == ROWS after a left join on the id: no label row is repeated; ids unique in the log.
    assert r["n"] == ROWS and r["ids"] == ROWS and r["labels"] == n_labels
    assert r["ts_min"] >= START and (r["ts_max"] - START).days < DAYS
    assert r["delay_min"] >= 86400 and r["delay_max"] <= 3 * 86400
    assert 0.10 <= r["positive"] <= 0.25
    assert r["score_min"] > 0.0 and r["score_max"] < 1.0

    types = dict(preds.dtypes)
    assert list(types) == list(dd.PREDICTION_COLUMNS)
    assert types["prediction_id"] == "string" and types["ts"] == "timestamp"
    assert types["prediction"] == "int" and types["score"] == "double"
    assert all(types[c] == "double" for c in dd.NUMERIC_FEATURES)
    assert all(types[c] == "string" for c in dd.CATEGORICAL_FEATURES)
    assert dict(labels.dtypes) == {"prediction_id": "string", "label": "int", "labeled_at": "timestamp"}
    assert set(base.columns) == set(preds.columns) | {"label"}


def test_labels_missing_exactly_on_last_days(daily):
    assert sorted(daily) == list(range(DAYS))
    for day, r in daily.items():
        expected = 0.0 if day >= DAYS - UNLABELED else 1.0
        assert r["labeled"] == expected, day


def test_null_spike_only_on_its_day(daily):
    for day, r in daily.items():
        if day == INC["null_spike"]:
            assert 0.25 <= r["util_null"] <= 0.35
        else:
            assert r["util_null"] == 0.0, day


def test_out_of_range_ages_only_on_their_day(daily):
    for day, r in daily.items():
        if day == INC["out_of_range"]:
            assert 0.03 <= r["age_oor"] <= 0.07
            assert r["age_wild"] == r["age_oor"]  # negative or above 120
        else:
            assert r["age_oor"] == 0.0, day


def test_income_shift_in_south_only(daily):
    before, after = range(INC["mean_shift"]), range(INC["mean_shift"], DAYS)
    south_diff = pooled(daily, "income_south", after, "n_south") - pooled(
        daily, "income_south", before, "n_south"
    )
    other_diff = pooled(daily, "income_other", after, "n_other") - pooled(
        daily, "income_other", before, "n_other"
    )
    assert 0.8 * dd.INCOME_SHIFT <= south_diff <= 1.2 * dd.INCOME_SHIFT
    assert abs(other_diff) < 0.1 * dd.INCOME_SHIFT


def test_category_mix_changes_after_its_day(daily):
    for day, r in daily.items():
        if day >= INC["category_mix"]:
            assert 0.25 <= r["mortgage"] <= 0.35 and 0.18 <= r["card"] <= 0.27, day
        else:
            assert 0.07 <= r["mortgage"] <= 0.13 and 0.40 <= r["card"] <= 0.50, day


def test_performance_drop_in_partner(frames):
    from pyspark.sql import functions as F

    *_, joined = frames
    rows = (
        joined.where("channel = 'partner' AND label IS NOT NULL")
        .groupBy((F.col("day") >= INC["performance_drop"]).alias("after"))
        .agg(F.corr("score", "label").alias("corr"), F.avg("label").alias("rate"))
        .collect()
    )
    by = {r["after"]: r for r in rows}
    assert by[False]["corr"] > 0.3
    assert abs(by[True]["corr"]) < 0.15
    assert abs(by[True]["rate"] - dd.BASE_LABEL_RATE) < 0.06


def test_baseline_matches_pre_incident_data(frames, daily):
    from pyspark.sql import functions as F

    *_, base, _ = frames
    keys = ("income", "credit_limit", "score", "label", "age")
    b = base.agg(
        *[F.avg(c).alias(c) for c in keys],
        F.min("ts").alias("ts_min"),
        F.max("ts").alias("ts_max"),
        F.count(F.when(F.col("utilization").isNull() | (F.col("age") < 18) | (F.col("age") > 90), 1)).alias(
            "bad"
        ),
    ).first()
    pre = range(min(INC.values()))
    for key in keys:
        p = pooled(daily, key, pre)
        assert abs(b[key] - p) <= 0.05 * abs(p), (key, b[key], p)
    assert (START - b["ts_min"]).days < dd.BASELINE_DAYS and b["ts_max"] < START
    assert b["bad"] == 0
    # A clean column does not move after the incidents either.
    late = pooled(daily, "credit_limit", range(INC["category_mix"], DAYS))
    assert abs(late - b["credit_limit"]) <= 0.05 * b["credit_limit"]


def test_incidents_file(demo):
    on_disk = json.loads(Path(demo["incidents_path"]).read_text())
    assert on_disk == demo["incidents"]
    by_kind = {i["kind"]: i for i in on_disk}
    assert set(by_kind) == {
        "mean_shift",
        "category_mix",
        "null_spike",
        "out_of_range",
        "performance_drop",
        "unlabeled",
    }
    assert by_kind["mean_shift"]["slice_key"] == "region" and by_kind["mean_shift"]["slice_value"] == "south"
    assert by_kind["null_spike"]["first_day"] == by_kind["null_spike"]["last_day"] == INC["null_spike"]
    assert by_kind["unlabeled"]["column"] is None
    assert by_kind["unlabeled"]["first_day"] == DAYS - UNLABELED
    for inc in on_disk:
        assert datetime.fromisoformat(inc["first_window_start"]) == START + timedelta(days=inc["first_day"])
        assert set(inc) == {
            "kind",
            "column",
            "slice_key",
            "slice_value",
            "first_day",
            "last_day",
            "first_window_start",
            "last_window_start",
            "also_affects",
            "description",
        }


def test_incident_days_for_thirty_days():
    got = {i["kind"]: (i["first_day"], i["last_day"]) for i in dd.build_incidents(30, START, 3)}
    assert got == {
        "mean_shift": (18, 29),
        "category_mix": (21, 29),
        "null_spike": (9, 9),
        "out_of_range": (14, 14),
        "performance_drop": (20, 26),
        "unlabeled": (27, 29),
    }
    first = {i["kind"]: i["first_window_start"] for i in dd.build_incidents(30, START, 3)}
    assert first["mean_shift"] == "2026-10-19T00:00:00"


def test_deterministic(spark):
    from pyspark.sql import functions as F

    def digest():
        df = dd._population(spark, 2000, 7, START_EPOCH, 5, "p", True, 5)
        cols = [*dd.PREDICTION_COLUMNS, "label", "labeled_at"]
        return df.agg(F.bit_xor(F.xxhash64(*cols)), F.count("*")).first()

    assert digest() == digest()
