"""Synthetic prediction log of a credit-default classifier, with known injected incidents.

``generate_demo`` writes three Delta tables and ``incidents.json`` under ``data_dir``:

``predictions``
    ``prediction_id`` (string, unique), ``ts`` (timestamp, uniform over ``days`` days from ``start``,
    UTC), ``model_version`` (``"v3"``), the numeric features ``income``, ``age``, ``credit_limit``,
    ``debt_ratio``, ``utilization``, ``tenure_months``, ``num_late_payments``, ``loan_amount``,
    ``interest_rate`` (doubles), the categorical features ``region``, ``channel``, ``product``,
    ``employment`` (strings), ``score`` (double, probability of default) and ``prediction``
    (int, ``score >= 0.5``).
``labels``
    ``prediction_id``, ``label`` (int 0/1), ``labeled_at`` (``ts`` + 1 to 3 days). In normal
    operation ``label ~ Bernoulli(score)``: the model is calibrated. Rows of the last
    ``unlabeled_days`` days have no label row.
``baseline``
    The training set: the ``predictions`` columns plus ``label``, ``ts`` over the 30 days before
    ``start``, drawn from the normal-operation distributions with no incident.

Normal operation (every day the same, and the same as the baseline):

* ``region`` north 30 %, south 25 %, east 20 %, west 15 %, central 10 %; ``channel`` web 40 %,
  mobile 30 %, branch 20 %, partner 10 %; ``product`` card 45 %, personal_loan 25 %, auto 20 %,
  mortgage 10 %; ``employment`` salaried 60 %, self_employed 15 %, retired 12 %, student 8 %,
  unemployed 5 %. ``region`` and ``channel`` are independent of everything else.
* ``age`` (whole years, always in [18, 90]) depends on ``employment`` (students young, retirees old);
  ``income`` is log-normal and depends on employment and age; a latent credit quality drives
  ``utilization`` (in (0, 1), never null), ``debt_ratio`` (in (0.05, 0.95)), ``num_late_payments``
  (a count) and, with income, ``credit_limit``; ``tenure_months`` grows with age;
  ``loan_amount`` depends on ``product`` and income, ``interest_rate`` (APR in %) on ``product`` and
  credit quality.
* ``score`` is a logistic model of the features (income, age, utilization, debt_ratio, late
  payments, tenure, interest_rate, credit_limit, product, employment). About 14 % of the rows are
  predicted positive (``score >= 0.5``), the mean score (= label rate) is about 0.25
  (:data:`BASE_LABEL_RATE`) and the AUC is about 0.81. Income has mean about 51,000 and standard
  deviation about 25,700.

Injected incidents (days are 0-based day indices from ``start``; day ``d`` is the UTC window
``[start + d days, start + d+1 days)``; for ``days=30`` the days are given in brackets):

1. ``mean_shift`` (``income``, region ``south``, from day ``int(days*0.6)`` [18] to the end): income
   is reported :data:`INCOME_SHIFT` higher (about +1 standard deviation of income). The model sees the
   shifted income, so ``score`` drops and ``prediction`` turns positive less often in ``south``
   (mean score there about 0.25 -> 0.19; ``also_affects``: score, prediction). Labels keep following the true (unshifted) risk, so the
   label rate does not move, but the model under-estimates risk in ``south``: calibration and
   recall there get worse. Derived features (credit_limit, loan_amount) are not shifted.
2. ``category_mix`` (``product``, all rows, from day ``int(days*0.73)`` [21] to the end): the product
   mix becomes card 22.5 %, personal_loan 25 %, auto 22.5 %, mortgage 30 % (card halves, mortgage
   triples). Since loan size, pricing and risk depend on the product, ``loan_amount`` (mean about
   32,000 -> 79,000), ``interest_rate``, ``score`` (mean about 0.25 -> 0.20), ``prediction`` (positive
   rate about 14 % -> 10 %) and ``label`` (rate about 0.25 -> 0.21) move with it (``also_affects``).
3. ``null_spike`` (``utilization``, all rows, day ``int(days*0.33)`` [9] only): about 30 % of the
   utilization values are NULL (lost in logging after scoring, so ``score`` is unaffected).
4. ``out_of_range`` (``age``, all rows, day ``int(days*0.47)`` [14] only): about 5 % of the ages are
   out of range: half negative (``-age``), half ``age + 200``. Corrupted after scoring, so ``score``
   is unaffected.
5. ``performance_drop`` (``label``, channel ``partner``, from day ``int(days*0.67)`` [20] to the last
   labeled day [26]): labels decouple from the score, ``label ~ Bernoulli(BASE_LABEL_RATE)``: accuracy
   (error rate about 0.19 -> 0.30) and AUC (about 0.81 -> 0.5) drop in ``partner`` while the label
   rate, the features and the score do not drift.
6. ``unlabeled`` (no column, the last ``unlabeled_days`` days [27-29]): no label rows yet.

The generation is pure Spark column expressions over ``spark.range`` with seeded ``rand``/``randn``
and a number of partitions fixed by ``rows``, so the same arguments give the same tables.
"""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

NUMERIC_FEATURES: tuple[str, ...] = (
    "income",
    "age",
    "credit_limit",
    "debt_ratio",
    "utilization",
    "tenure_months",
    "num_late_payments",
    "loan_amount",
    "interest_rate",
)
CATEGORICAL_FEATURES: tuple[str, ...] = ("region", "channel", "product", "employment")
SLICE_COLUMNS: tuple[str, ...] = ("region", "channel")
MODEL_VERSION = "v3"
BASELINE_DAYS = 30

REGION_SHARES: tuple[tuple[str, float], ...] = (
    ("north", 0.30),
    ("south", 0.25),
    ("east", 0.20),
    ("west", 0.15),
    ("central", 0.10),
)
CHANNEL_SHARES: tuple[tuple[str, float], ...] = (
    ("web", 0.40),
    ("mobile", 0.30),
    ("branch", 0.20),
    ("partner", 0.10),
)
PRODUCT_SHARES: tuple[tuple[str, float], ...] = (
    ("card", 0.45),
    ("personal_loan", 0.25),
    ("auto", 0.20),
    ("mortgage", 0.10),
)
PRODUCT_SHARES_AFTER_MIX: tuple[tuple[str, float], ...] = (
    ("card", 0.225),
    ("personal_loan", 0.25),
    ("auto", 0.225),
    ("mortgage", 0.30),
)
EMPLOYMENT_SHARES: tuple[tuple[str, float], ...] = (
    ("salaried", 0.60),
    ("self_employed", 0.15),
    ("retired", 0.12),
    ("student", 0.08),
    ("unemployed", 0.05),
)

# Model intercept: about 14 % of the rows get score >= 0.5, the mean score is about 0.25.
INTERCEPT = -1.45
# Mean score in normal operation (= label rate, the model is calibrated); labels of the
# performance_drop incident are Bernoulli(BASE_LABEL_RATE).
BASE_LABEL_RATE = 0.25
# About one standard deviation of income in normal operation.
INCOME_SHIFT = 25_000.0

NULL_SPIKE_FRACTION = 0.30
OUT_OF_RANGE_FRACTION = 0.05

SECONDS_PER_DAY = 86_400


def incident_days(days: int) -> dict[str, int]:
    """First day (0-based) of each injected incident for a log of ``days`` days."""
    return {
        "mean_shift": int(days * 0.6),
        "category_mix": int(days * 0.73),
        "null_spike": int(days * 0.33),
        "out_of_range": int(days * 0.47),
        "performance_drop": int(days * 0.67),
    }


def _utc_naive(start: datetime) -> datetime:
    if start.tzinfo is not None:
        start = start.astimezone(UTC).replace(tzinfo=None)
    return start


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="seconds")


def build_incidents(days: int, start: datetime, unlabeled_days: int = 3) -> list[dict[str, Any]]:
    """The incidents ``generate_demo`` injects, as written to ``incidents.json``.

    Window starts are ISO timestamps in UTC (without offset), like the ``ts`` values of a UTC
    session.
    """
    start = _utc_naive(start)
    d = incident_days(days)
    last = days - 1
    last_labeled = days - 1 - max(unlabeled_days, 0)

    def record(kind, column, slice_key, slice_value, first, last_day, also, description):
        return {
            "kind": kind,
            "column": column,
            "slice_key": slice_key,
            "slice_value": slice_value,
            "first_day": first,
            "last_day": last_day,
            "first_window_start": _iso(start + timedelta(days=first)),
            "last_window_start": _iso(start + timedelta(days=last_day)),
            "also_affects": also,
            "description": description,
        }

    out = [
        record(
            "mean_shift",
            "income",
            "region",
            "south",
            d["mean_shift"],
            last,
            ["score", "prediction"],
            f"income in region south is {INCOME_SHIFT:,.0f} higher (about +1 std) from this day on; "
            "the model lowers score and prediction there, labels keep the true risk.",
        ),
        record(
            "category_mix",
            "product",
            None,
            None,
            d["category_mix"],
            last,
            ["loan_amount", "interest_rate", "score", "prediction", "label"],
            "product mix changes from this day on: card 45% -> 22.5%, mortgage 10% -> 30%, "
            "auto 20% -> 22.5%; loan size, pricing and risk follow the product.",
        ),
        record(
            "null_spike",
            "utilization",
            None,
            None,
            d["null_spike"],
            d["null_spike"],
            [],
            f"about {NULL_SPIKE_FRACTION:.0%} of utilization values are NULL on this day only "
            "(no nulls otherwise).",
        ),
        record(
            "out_of_range",
            "age",
            None,
            None,
            d["out_of_range"],
            d["out_of_range"],
            [],
            f"about {OUT_OF_RANGE_FRACTION:.0%} of ages are out of range on this day only "
            "(negative or above 200; otherwise always in [18, 90]).",
        ),
    ]
    if d["performance_drop"] <= last_labeled:
        out.append(
            record(
                "performance_drop",
                "label",
                "channel",
                "partner",
                d["performance_drop"],
                last_labeled,
                [],
                "labels in channel partner no longer depend on the score "
                f"(Bernoulli({BASE_LABEL_RATE})) from this day on: accuracy and AUC drop there, "
                "the label rate, features and score do not drift. Lasts to the last labeled day.",
            )
        )
    if unlabeled_days > 0:
        out.append(
            record(
                "unlabeled",
                None,
                None,
                None,
                max(days - unlabeled_days, 0),
                last,
                [],
                f"the last {unlabeled_days} days have no labels yet.",
            )
        )
    return out


def _partitions(rows: int) -> int:
    return max(2, min(16, math.ceil(rows / 250_000)))


def _pick(u: Column, shares: tuple[tuple[str, float], ...]) -> Column:
    """Categorical draw from a uniform column by cumulative shares."""
    from pyspark.sql import functions as F

    expr = None
    cum = 0.0
    for name, share in shares[:-1]:
        cum += share
        expr = F.when(u < cum, name) if expr is None else expr.when(u < cum, name)
    return expr.otherwise(shares[-1][0]) if expr is not None else F.lit(shares[-1][0])


def _by(col: str, values: dict[str, float], default: float = 0.0) -> Column:
    """A per-category constant."""
    from pyspark.sql import functions as F

    expr = None
    for name, v in values.items():
        cond = F.col(col) == name
        expr = F.when(cond, v) if expr is None else expr.when(cond, v)
    return expr.otherwise(default) if expr is not None else F.lit(default)


def _round(x: Column, digits: int = 0) -> Column:
    """Round half to even; much cheaper than ``F.round`` (BigDecimal) on doubles."""
    from pyspark.sql import functions as F

    k = 10.0**digits
    return F.rint(x * k) / k if digits else F.rint(x)


def _sigmoid(x: Column) -> Column:
    from pyspark.sql import functions as F

    return F.lit(1.0) / (F.lit(1.0) + F.exp(-x))


def _population(
    spark: SparkSession,
    n: int,
    seed: int,
    start_epoch: int,
    span_days: int,
    id_prefix: str,
    incidents: bool,
    days: int,
) -> DataFrame:
    """All columns of ``n`` rows, including the hidden ones (``day``, ``true_score``, draws for labels)."""
    from pyspark.sql import functions as F

    base = seed * 1_000_003 + (7919 if not incidents else 0)

    def u(k: int) -> Column:
        return F.rand(base + k)

    def z(k: int) -> Column:
        return F.randn(base + k)

    span = span_days * SECONDS_PER_DAY
    raw = spark.range(n, numPartitions=_partitions(n)).select(
        F.col("id"),
        F.floor(u(1) * span).cast("long").alias("offset_s"),
        u(2).alias("u_region"),
        u(3).alias("u_channel"),
        u(4).alias("u_product"),
        u(5).alias("u_emp"),
        u(6).alias("u_age"),
        z(7).alias("z_age"),
        z(8).alias("z_inc"),
        z(9).alias("z_risk"),
        z(10).alias("z_cl"),
        z(11).alias("z_util"),
        z(12).alias("z_dr"),
        u(13).alias("u_late"),
        z(14).alias("z_loan"),
        z(15).alias("z_rate"),
        u(16).alias("u_label"),
        u(17).alias("u_null"),
        u(18).alias("u_oor"),
        u(19).alias("u_delay"),
        u(20).alias("u_tenure"),
    )
    day = F.floor(F.col("offset_s") / SECONDS_PER_DAY).cast("int")
    df = raw.select(
        "*",
        F.concat(F.lit(f"{id_prefix}-"), F.lpad(F.col("id").cast("string"), 9, "0")).alias("prediction_id"),
        F.timestamp_seconds(F.lit(start_epoch) + F.col("offset_s")).alias("ts"),
        day.alias("day"),
    )

    inc = incident_days(days)
    if incidents:
        mix_on = F.col("day") >= inc["category_mix"]
        product = F.when(mix_on, _pick(F.col("u_product"), PRODUCT_SHARES_AFTER_MIX)).otherwise(
            _pick(F.col("u_product"), PRODUCT_SHARES)
        )
    else:
        product = _pick(F.col("u_product"), PRODUCT_SHARES)

    emp = F.col("employment")
    age = (
        F.when(emp == "student", F.lit(18.0) + F.col("u_age") * 9.0)
        .when(
            emp == "retired",
            F.least(F.greatest(F.lit(69.0) + F.col("z_age") * 7.0, F.lit(58.0)), F.lit(90.0)),
        )
        .otherwise(F.least(F.greatest(F.lit(41.0) + F.col("z_age") * 11.0, F.lit(20.0)), F.lit(75.0)))
    )
    df = df.select(
        "*",
        _pick(F.col("u_region"), REGION_SHARES).alias("region"),
        _pick(F.col("u_channel"), CHANNEL_SHARES).alias("channel"),
        product.alias("product"),
        _pick(F.col("u_emp"), EMPLOYMENT_SHARES).alias("employment"),
    )
    df = df.select("*", F.floor(age).cast("double").alias("age_true"))

    # Income: log-normal, by employment and a concave age profile.
    log_income = (
        F.lit(10.85)
        + F.col("z_inc") * 0.38
        + _by("employment", {"self_employed": 0.1, "retired": -0.35, "student": -0.8, "unemployed": -1.0})
        + (F.least(F.col("age_true"), F.lit(55.0)) - 40.0) * 0.015
    )
    df = df.select("*", _round(F.exp(log_income)).alias("income_true"))

    risk = F.col("z_risk") + _by("employment", {"unemployed": 0.5, "student": 0.1, "self_employed": 0.15})
    df = df.select("*", risk.alias("risk"))
    late_mean = F.lit(0.35) * F.exp(F.col("risk") * 0.7)
    # Geometric count with mean late_mean: floor(log(u) / log(m / (1 + m))).
    late = F.least(
        F.floor(F.log(F.lit(1.0) - F.col("u_late")) / F.log(late_mean / (late_mean + 1.0))), F.lit(24.0)
    )
    tenure = F.least(
        F.floor(-(F.col("age_true") - 18.0 + 4.0) * 1.8 * F.log(F.lit(1.0) - F.col("u_tenure"))),
        (F.col("age_true") - 18.0) * 12.0 + 6.0,
    )
    credit_limit = F.least(
        F.greatest(
            _round(F.col("income_true") * 0.22 * F.exp(F.col("z_cl") * 0.3 - F.col("risk") * 0.2) / 100.0)
            * 100.0,
            F.lit(500.0),
        ),
        F.lit(100_000.0),
    )
    utilization = _round(_sigmoid(F.lit(-0.9) + F.col("risk") * 0.9 + F.col("z_util") * 0.5), 4)
    debt_ratio = _round(
        F.lit(0.05) + F.lit(0.9) * _sigmoid(F.lit(-1.0) + F.col("risk") * 0.5 + F.col("z_dr") * 0.6), 4
    )
    log_loan = (
        _by("product", {"card": 7.6, "personal_loan": 9.2, "auto": 10.0, "mortgage": 12.3})
        + F.col("z_loan") * 0.45
        + (F.log(F.col("income_true")) - 10.85) * 0.5
    )
    interest_rate = _round(
        F.least(
            F.greatest(
                _by("product", {"card": 19.0, "personal_loan": 11.0, "auto": 7.0, "mortgage": 5.5})
                + F.col("risk") * 1.5
                + F.col("z_rate") * 1.0,
                F.lit(2.0),
            ),
            F.lit(36.0),
        ),
        2,
    )
    df = df.select(
        "*",
        _round(F.exp(log_loan) / 100.0).alias("loan_k"),
        credit_limit.alias("credit_limit"),
        utilization.alias("utilization_true"),
        debt_ratio.alias("debt_ratio"),
        late.cast("double").alias("num_late_payments"),
        tenure.cast("double").alias("tenure_months"),
        interest_rate.alias("interest_rate"),
    )
    df = df.withColumn("loan_amount", F.col("loan_k") * 100.0).drop("loan_k")

    # The logistic model: everything but income.
    rest = (
        F.lit(INTERCEPT)
        - (F.col("age_true") - 40.0) * 0.015
        + (F.col("utilization_true") - 0.35) * 2.4
        + (F.col("debt_ratio") - 0.35) * 2.0
        + F.col("num_late_payments") * 0.45
        - F.col("tenure_months") * 0.004
        + (F.col("interest_rate") - 13.0) * 0.06
        - F.log(F.col("credit_limit") / 10_000.0) * 0.15
        + _by("product", {"personal_loan": 0.2, "auto": -0.2, "mortgage": -0.6})
        + _by("employment", {"unemployed": 0.4, "self_employed": 0.2, "retired": -0.1})
    )
    income_coef = -0.9

    def logit(income: Column) -> Column:
        return F.col("logit_rest") + (F.log(income) - 10.85) * income_coef

    if incidents:
        shifted = (F.col("region") == "south") & (F.col("day") >= inc["mean_shift"])
        income = F.when(shifted, F.col("income_true") + INCOME_SHIFT).otherwise(F.col("income_true"))
    else:
        income = F.col("income_true")
    df = df.select("*", rest.alias("logit_rest"), income.alias("income"))
    df = df.select(
        "*",
        _sigmoid(logit(F.col("income"))).alias("score"),
        _sigmoid(logit(F.col("income_true"))).alias("true_score"),
    )

    label = (F.col("u_label") < F.col("true_score")).cast("int")
    utilization = F.col("utilization_true")
    age_col = F.col("age_true")
    if incidents:
        perf = (F.col("channel") == "partner") & (F.col("day") >= inc["performance_drop"])
        label = F.when(perf, (F.col("u_label") < BASE_LABEL_RATE).cast("int")).otherwise(label)
        utilization = F.when(
            (F.col("day") == inc["null_spike"]) & (F.col("u_null") < NULL_SPIKE_FRACTION), F.lit(None)
        ).otherwise(utilization)
        oor = F.col("day") == inc["out_of_range"]
        age_col = (
            F.when(oor & (F.col("u_oor") < OUT_OF_RANGE_FRACTION / 2), -age_col)
            .when(oor & (F.col("u_oor") < OUT_OF_RANGE_FRACTION), age_col + 200.0)
            .otherwise(age_col)
        )
    delay = F.floor((F.lit(1.0) + F.col("u_delay") * 2.0) * SECONDS_PER_DAY).cast("long")
    return df.select(
        "*",
        (F.col("score") >= 0.5).cast("int").alias("prediction"),
        label.alias("label"),
        utilization.cast("double").alias("utilization"),
        age_col.alias("age"),
        F.timestamp_seconds(F.lit(start_epoch) + F.col("offset_s") + delay).alias("labeled_at"),
        F.lit(MODEL_VERSION).alias("model_version"),
    )


PREDICTION_COLUMNS: tuple[str, ...] = (
    "prediction_id",
    "ts",
    "model_version",
    *NUMERIC_FEATURES,
    *CATEGORICAL_FEATURES,
    "score",
    "prediction",
)
LABEL_COLUMNS: tuple[str, ...] = ("prediction_id", "label", "labeled_at")
BASELINE_COLUMNS: tuple[str, ...] = (*PREDICTION_COLUMNS, "label")


def _join(data_dir: str, name: str) -> str:
    return data_dir.rstrip("/") + "/" + name


def _write_text(spark: SparkSession, path: str, text: str) -> None:
    """Write a small text file: local paths directly, other file systems through Hadoop."""
    local = path[len("file:") :] if path.startswith("file:") else path
    if "://" not in local:
        os.makedirs(os.path.dirname(os.path.abspath(local)), exist_ok=True)
        with open(local, "w", encoding="utf-8") as fh:
            fh.write(text)
        return
    jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())  # type: ignore[attr-defined]
    out = fs.create(hpath, True)
    try:
        out.write(bytearray(text.encode("utf-8")))
    finally:
        out.close()


def generate_demo(
    spark: SparkSession,
    data_dir: str,
    rows: int = 1_000_000,
    days: int = 30,
    start: datetime = datetime(2026, 10, 1),
    seed: int = 7,
    baseline_rows: int | None = None,
    unlabeled_days: int = 3,
) -> dict:
    """Write the ``predictions``, ``labels`` and ``baseline`` Delta tables and ``incidents.json``.

    Tables are overwritten. Returns ``{"predictions", "labels", "baseline", "incidents_path"}``
    (paths), ``"rows"`` (row count per table) and ``"incidents"`` (the list in ``incidents.json``).
    ``start`` is taken as UTC when it has no time zone. See the module docstring for the data and the
    incidents.
    """
    from pyspark.sql import functions as F

    if rows < 1 or days < 1:
        raise ValueError(f"rows and days must be positive, got rows={rows}, days={days}")
    start = _utc_naive(start)
    start_epoch = int(start.replace(tzinfo=UTC).timestamp())
    n_base = baseline_rows if baseline_rows is not None else max(rows // 4, 1000)

    paths = {name: _join(data_dir, name) for name in ("predictions", "labels", "baseline")}
    paths["incidents_path"] = _join(data_dir, "incidents.json")

    def save(df: DataFrame, path: str) -> None:
        df.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(path)

    log = _population(spark, rows, seed, start_epoch, days, "p", True, days)
    save(log.select(*PREDICTION_COLUMNS), paths["predictions"])
    labeled_days = days - max(unlabeled_days, 0)
    save(log.where(F.col("day") < labeled_days).select(*LABEL_COLUMNS), paths["labels"])

    base = _population(
        spark, n_base, seed, start_epoch - BASELINE_DAYS * SECONDS_PER_DAY, BASELINE_DAYS, "t", False, days
    )
    save(base.select(*BASELINE_COLUMNS), paths["baseline"])

    incidents = build_incidents(days, start, unlabeled_days)
    _write_text(spark, paths["incidents_path"], json.dumps(incidents, indent=2) + "\n")

    n_labels = spark.read.format("delta").load(paths["labels"]).count()
    return {
        **paths,
        "rows": {"predictions": rows, "labels": n_labels, "baseline": n_base},
        "incidents": incidents,
    }
