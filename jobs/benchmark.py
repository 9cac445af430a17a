"""lakemon benchmark: how close a full monitoring run gets to one bare scan of the data, and how it compares
with Great Expectations, with the one-Spark-job-per-metric approach, with itself at a tenth of the rows,
incrementally, and split over many small monitors.

    python jobs/benchmark.py --rows 10000000 --out bench.json [--days 30] [--scaling-rows 1000000]
                             [--workdir DIR] [--skip-gx] [--skip-naive] [--models 10]
                             [--naive-days 5] [--skip-scaling] [--skip-multi]

One local Spark session (``get_spark("lakemon-bench")``). Data: the demo generator's credit-default log
(``lakemon.demo_data.generate_demo``), rewritten once before any timing to match the benchmark spec:

* 12 numeric features: the demo's 9 plus 3 derived ones (``income_to_limit``, ``monthly_payment``,
  ``log_income``, deterministic Spark expressions of the demo columns, also added to the baseline);
* 4 categorical features (``region``, ``channel``, ``product``, ``employment``);
* 3 slice columns: ``region``, ``channel`` and ``product`` (the demo config's ``senior`` expression slice
  is replaced by the ``product`` column);
* 21 quality rules (not_null, between, in_set, not_in_set, matches_regex) on top of the default checks.

The log is generated for ``days + 1`` days with ``rows * (days + 1) / days`` rows: the first ``days``
days (about ``rows`` rows) are the monitored log, the last day is kept aside and appended for the
incremental measurement.

Measured (each part guarded: a failure lands in ``errors`` and the rest still runs):

``floor_s``
    One ``agg`` with a ``count`` of every predictions column the monitor reads, the best of two runs
    (the labels table's own bare scan is reported as ``floor_labels_s``, not added: the floor is strict).
``full_s`` / ``full_warm_s``
    ``run_monitor`` over all windows, cold (first run: baseline profiled, output tables created) and warm
    (a backfill of every window: baseline profile reused). ``ratio = full_warm_s / floor_s``;
    ``ratio_cold = full_s / floor_s``.
``scans`` / ``scans_warm`` / ``incremental_scans``
    Per source table (``predictions``, ``labels``, ``baseline``), how many times the run's queries read its
    data files (file-scan operators that read at least one file, from Spark's executed plans and their
    metrics, Delta log replays and reads of cached rows excluded), with the files and bytes they read.
``gx_ratio``
    Great Expectations (one batch, the whole table, at most 5,000,000 rows) validating the 21 rules as a
    GX suite, vs lakemon's single ``agg`` of the same rules' ``plan_checks`` aggregates grouped by day,
    on the same uncached Delta table, each timed ``--gx-repeats`` times (alternating) and the best of each
    kept, as for the floor, right after the floor; ``gx_counts_equal`` compares every unexpected count.
``naive_ratio``
    A reference implementation of the usual hand-written monitor (in this file, not the library): one
    Spark job per numeric column, metric (nulls, mean, std, min, max, quantiles) and day. Timed on
    ``--naive-days`` days (default 5) and extrapolated linearly to ``days`` (``naive_extrapolated``);
    divided by ``full_warm_s``. It computes far less than lakemon (no categorical, quality, drift,
    performance, writes): a lower bound for that approach.
``scaling``
    Floor and full runs at ``--scaling-rows`` (default ``rows // 10``), run first; JVM peak RSS after it
    and after the main run.
``incremental_s``
    The held-back day appended to the log, ``run_monitor`` with ``as_of`` one day later;
    ``incremental_ratio = incremental_s / full_warm_s`` (ideally about 1/days plus a constant).
``multi_ratio``
    ``--models`` (default 10) monitors, each over its own tables (predictions, labels and baseline split
    by a hash of the prediction id, so together they hold the same rows), cold runs into one output
    location, vs the cold run of the one big monitor: sum of the small runs' times / ``full_s``.
``multi_parallel_ratio``
    The same monitors cold again (into another output location), ``--parallel`` at a time (default: the
    CLI's), as ``lakemon run --config DIR`` runs a folder: wall time / ``full_s``.

``driver_peak_rss_mb`` is the Python driver's ``ru_maxrss``; ``jvm_peak_rss_mb`` the JVM's ``VmHWM``
(local mode: the JVM is driver and executors), both sampled after every part (``memory_by_part``).
The MLflow store (sqlite in the workdir) is created before any timing so no run pays its migrations.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lakemon import io
from lakemon.cli import DEFAULT_PARALLEL
from lakemon.config import CheckSpec, parse_config
from lakemon.demo import demo_config
from lakemon.demo_data import CATEGORICAL_FEATURES, NUMERIC_FEATURES, generate_demo
from lakemon.job import RunResult, run_monitor, run_monitors
from lakemon.session import get_spark

log = logging.getLogger("lakemon.bench")

START = datetime(2026, 10, 1)
DAY = timedelta(days=1)
GX_MAX_ROWS = 5_000_000
EXTRA_NUMERIC: tuple[str, ...] = ("income_to_limit", "monthly_payment", "log_income")
NUMERIC = (*NUMERIC_FEATURES, *EXTRA_NUMERIC)
CATEGORICAL = CATEGORICAL_FEATURES
SLICES = ("region", "channel", "product")
MONITOR = "bench"

REGIONS = ["north", "south", "east", "west", "central"]
CHANNELS = ["web", "mobile", "branch", "partner"]
PRODUCTS = ["card", "personal_loan", "auto", "mortgage"]
EMPLOYMENT = ["salaried", "self_employed", "retired", "student", "unemployed"]

#: The benchmark's quality rules (predictions table), as ``quality.checks`` entries.
RULES: list[dict[str, Any]] = [
    {"check": "not_null", "column": "income", "severity": "warn", "max_fail_ratio": 0.05},
    {"check": "not_null", "column": "age"},
    {"check": "not_null", "column": "utilization", "max_fail_ratio": 0.01},
    {"check": "not_null", "column": "debt_ratio"},
    {"check": "not_null", "column": "credit_limit"},
    {"check": "not_null", "column": "region"},
    {"check": "not_null", "column": "employment"},
    {"check": "between", "column": "age", "args": {"min": 18, "max": 100}},
    {"check": "between", "column": "utilization", "args": {"min": 0, "max": 1}},
    {"check": "between", "column": "debt_ratio", "args": {"min": 0, "max": 1}},
    {"check": "between", "column": "interest_rate", "args": {"min": 0, "max": 40}},
    {"check": "between", "column": "tenure_months", "args": {"min": 0, "max": 1200}},
    {"check": "between", "column": "num_late_payments", "args": {"min": 0, "max": 100}},
    {"check": "between", "column": "loan_amount", "args": {"min": 0, "max": 10_000_000}},
    {"check": "in_set", "column": "region", "args": {"values": REGIONS}},
    {"check": "in_set", "column": "channel", "args": {"values": CHANNELS}},
    {"check": "in_set", "column": "product", "args": {"values": PRODUCTS}},
    {"check": "in_set", "column": "employment", "args": {"values": EMPLOYMENT}},
    {"check": "not_in_set", "column": "channel", "args": {"values": ["unknown", ""]}},
    {"check": "matches_regex", "column": "prediction_id", "args": {"pattern": "^p-[0-9]{9}$"}},
    {"check": "matches_regex", "column": "employment", "args": {"pattern": "^[a-z_]+$"}},
]

GX_TYPE = {
    "not_null": "expect_column_values_to_not_be_null",
    "between": "expect_column_values_to_be_between",
    "in_set": "expect_column_values_to_be_in_set",
    "not_in_set": "expect_column_values_to_not_be_in_set",
    "matches_regex": "expect_column_values_to_match_regex",
}


# ---------------------------------------------------------------------------------------------------
# Memory, guards, small helpers
# ---------------------------------------------------------------------------------------------------


class Bench:
    """The session, the JSON being built and the memory samples."""

    def __init__(self, spark: Any, out: dict[str, Any], out_path: Path | None = None) -> None:
        self.spark = spark
        self.out = out
        self.out_path = out_path
        self.errors: dict[str, str] = out.setdefault("errors", {})
        self.memory: list[dict[str, Any]] = out.setdefault("memory_by_part", [])
        self.jvm_pid = _jvm_pid(spark)

    def sample(self, part: str) -> dict[str, Any]:
        m = {
            "part": part,
            "driver_peak_rss_mb": _driver_peak_rss_mb(),
            "jvm_peak_rss_mb": _proc_status_mb(self.jvm_pid, "VmHWM"),
            "jvm_rss_mb": _proc_status_mb(self.jvm_pid, "VmRSS"),
        }
        self.memory.append(m)
        return m

    def guard(self, part: str, fn: Callable[[], Any]) -> Any:
        log.warning("---- %s", part)
        t0 = time.perf_counter()
        try:
            return fn()
        except Exception as err:
            self.errors[part] = f"{type(err).__name__}: {err}"[:2000]
            traceback.print_exc()
            return None
        finally:
            self.sample(part)
            log.warning("---- %s done in %.1f s", part, time.perf_counter() - t0)
            if self.out_path is not None:  # partial results survive a later crash
                write_json(self.out_path, {**self.out, "partial": True})


def _driver_peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)  # KiB on Linux


def _jvm_pid(spark: Any) -> int | None:
    jvm = spark.sparkContext._jvm
    for get in (
        lambda: jvm.ProcessHandle.current().pid(),
        lambda: jvm.java.lang.ProcessHandle.current().pid(),
    ):
        try:
            return int(get())
        except Exception:
            continue
    return None


def _proc_status_mb(pid: int | None, key: str) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return round(int(line.split()[1]) / 1024.0, 1)  # kB
    except OSError:
        return None
    return None


def _machine() -> dict[str, Any]:
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024.0 / 1024.0, 1)
    except OSError:
        pass
    import pyspark

    return {
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "spark": pyspark.__version__,
        "platform": platform.platform(terse=True),
    }


def _ratio(a: Any, b: Any) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return round(float(a) / float(b), 3)


def _r(x: float) -> float:
    return round(x, 3)


def _delta(spark: Any, path: Path | str) -> Any:
    return spark.read.format("delta").load(str(path))


def _save(df: Any, path: Path | str, mode: str = "overwrite") -> None:
    w = df.write.format("delta").mode(mode)
    if mode == "overwrite":
        w = w.option("overwriteSchema", "true")
    w.save(str(path))


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------


def with_extra_features(df: Any) -> Any:
    """The 3 numeric features the demo lacks, derived from its columns (deterministic)."""
    from pyspark.sql import functions as F

    return (
        df.withColumn(
            "income_to_limit",
            F.when(F.col("credit_limit") > 0, F.col("income") / F.col("credit_limit")).cast("double"),
        )
        .withColumn(
            "monthly_payment", (F.col("loan_amount") * F.col("interest_rate") / 1200.0).cast("double")
        )
        .withColumn("log_income", F.when(F.col("income") > 0, F.log(F.col("income"))).cast("double"))
    )


def prepare_dataset(spark: Any, base: Path, rows: int, days: int, extra_day: bool) -> dict[str, Any]:
    """Generate the log (plus one held-back day when ``extra_day``), add the missing features, write
    ``predictions``, ``labels``, ``baseline`` (and ``extra_day``) under ``base/data``."""
    from pyspark.sql import functions as F

    gen_days = days + (1 if extra_day else 0)
    gen_rows = -(-rows * gen_days // days)
    gen = base / "gen"
    # the demo's last 3 days are unlabeled (fewer for short logs), plus the held-back day if any: the
    # monitored days are labeled alike either way
    unlabeled = min(3, max(days - 2, 0)) + (gen_days - days)
    info = generate_demo(spark, str(gen), rows=gen_rows, days=gen_days, start=START, unlabeled_days=unlabeled)
    data = base / "data"
    paths = {name: data / name for name in ("predictions", "labels", "baseline", "extra_day")}
    end = START + days * DAY
    preds = with_extra_features(_delta(spark, info["predictions"]))
    _save(preds.where(F.col("ts") < F.lit(end)), paths["predictions"])
    if extra_day:
        _save(preds.where(F.col("ts") >= F.lit(end)), paths["extra_day"])
    _save(with_extra_features(_delta(spark, info["baseline"])), paths["baseline"])
    # laid out as a labels table that receives its labels day by day holds them: each file a span of labeled_at
    labels = _delta(spark, info["labels"])
    _save(
        labels.repartitionByRange(gen_days, "labeled_at").sortWithinPartitions("labeled_at"), paths["labels"]
    )
    shutil.rmtree(gen, ignore_errors=True)
    n = _delta(spark, paths["predictions"]).count()
    n_extra = _delta(spark, paths["extra_day"]).count() if extra_day else 0
    return {
        "paths": {k: str(v) for k, v in paths.items()},
        "rows": n,
        "rows_extra_day": n_extra,
        "rows_baseline": info["rows"]["baseline"],
        "rows_labels": _delta(spark, paths["labels"]).count(),
        "days": days,
    }


def bench_config(
    workdir: Path, paths: dict[str, str], output: Path, monitor: str = MONITOR
) -> dict[str, Any]:
    """The demo config with the benchmark's features, slices, rules and locations."""
    raw = demo_config(workdir)
    raw["monitor"] = monitor
    raw["source"]["table"] = paths["predictions"]
    raw["labels"]["table"] = paths["labels"]
    raw["baseline"]["table"] = paths["baseline"]
    raw["source"]["features"] = {"numeric": list(NUMERIC), "categorical": list(CATEGORICAL)}
    raw["slices"] = [{"column": c} for c in SLICES]
    raw["quality"] = {**raw.get("quality", {}), "engine": "fast", "checks": [dict(r) for r in RULES]}
    raw["output"] = {"path": str(output)}
    raw["mlflow"] = {**raw.get("mlflow", {}), "tracking_uri": mlflow_uri(workdir)}
    return raw


def mlflow_uri(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'mlflow.db'}"


def init_mlflow(workdir: Path, experiment: str) -> None:
    """Create the sqlite store and the experiment (artifacts inside the workdir) before any timing."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_uri(workdir))
    if client.get_experiment_by_name(experiment) is None:
        client.create_experiment(experiment, artifact_location=(workdir / "mlartifacts").as_uri())


def timed_run(spark: Any, raw: dict[str, Any], **kw: Any) -> tuple[float, RunResult]:
    cfg = parse_config(raw, f"<benchmark {raw['monitor']}>")
    t0 = time.perf_counter()
    res = run_monitor(spark, cfg, **kw)
    dt = time.perf_counter() - t0
    if res.status != "success":
        raise RuntimeError(f"run of {raw['monitor']} ended {res.status}: {res.error}")
    return dt, res


METADATA_LENGTH = "spark.sql.maxMetadataStringLength"


def scans(spark: Any, since: int, tables: dict[str, str]) -> dict[str, dict[str, int]]:
    """Scans of each table's data files by the SQL executions after ``since`` (:func:`lakemon.io.file_scans`):
    a file-scan operator over the table's location that read at least one data file, with the files it read
    and their bytes; a table read twice by one query counts twice.
    """
    out = {name: {"scans": 0, "files": 0, "bytes": 0} for name in tables}
    for scan in io.file_scans(spark, since):
        name = next(
            (n for n, loc in tables.items() if f"{Path(loc).resolve().as_posix()}]" in scan.description), None
        )
        if name is not None:
            out[name]["scans"] += 1
            out[name]["files"] += scan.files
            out[name]["bytes"] += scan.bytes
    return out


def _phases(res: RunResult) -> dict[str, float]:
    return {k: _r(v) for k, v in res.phase_seconds.items()}


# ---------------------------------------------------------------------------------------------------
# The measured parts
# ---------------------------------------------------------------------------------------------------


def floor_columns() -> list[str]:
    return ["prediction_id", "ts", "model_version", "score", "prediction", *NUMERIC, *CATEGORICAL]


def measure_floor(spark: Any, paths: dict[str, str], repeats: int = 2) -> dict[str, Any]:
    """One bare aggregation over every predictions column the monitor reads; best of ``repeats``."""
    from pyspark.sql import functions as F

    cols = floor_columns()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _delta(spark, paths["predictions"]).agg(*[F.count(F.col(c)) for c in cols]).collect()
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    _delta(spark, paths["labels"]).agg(
        *[F.count(F.col(c)) for c in ("prediction_id", "label", "labeled_at")]
    ).collect()
    t_labels = time.perf_counter() - t0
    return {
        "floor_s": _r(min(times)),
        "floor_runs_s": [_r(t) for t in times],
        "floor_labels_s": _r(t_labels),
        "floor_columns": len(cols),
    }


def gx_suite(rules: list[dict[str, Any]]) -> dict[str, Any]:
    """The same rules as a GX 1.x suite (``mostly = 1 - max_fail_ratio``)."""
    exps = []
    for r in rules:
        kw: dict[str, Any] = {"column": r["column"]}
        args = r.get("args", {})
        if r["check"] == "between":
            kw.update(min_value=args.get("min"), max_value=args.get("max"))
        elif r["check"] in ("in_set", "not_in_set"):
            kw["value_set"] = list(args["values"])
        elif r["check"] == "matches_regex":
            kw["regex"] = args["pattern"]
        if r.get("max_fail_ratio"):
            kw["mostly"] = round(1.0 - float(r["max_fail_ratio"]), 12)
        exps.append({"type": GX_TYPE[r["check"]], "kwargs": kw})
    return {"name": "lakemon_benchmark", "expectations": exps}


def measure_gx(
    spark: Any, workdir: Path, paths: dict[str, str], rows: int, days: int, repeats: int = 3
) -> dict[str, Any]:
    """GX (one batch) vs lakemon's single grouped pass of the same rules, on the same Delta table."""
    import great_expectations  # noqa: F401  (import cost is not part of the measurement)
    from pyspark.sql import functions as F

    from lakemon.quality.checks import CheckContext, aggregate_columns, plan_checks, validate_checks
    from lakemon.quality.gx import validate_with_gx
    from lakemon.windows import window_start_col

    df = _delta(spark, paths["predictions"])
    if rows > GX_MAX_ROWS:  # the first days, about GX_MAX_ROWS rows
        cutoff = START + timedelta(seconds=days * 86400 * GX_MAX_ROWS / rows)
        df = df.where(F.col("ts") < F.lit(cutoff))
    n = df.count()

    specs = [CheckSpec(**r) for r in RULES]
    ctx = CheckContext(ts_col="ts", window_start_col=None, window_end_col=None, schema=df.schema)
    problems = validate_checks(specs, df.schema, ctx)
    if problems:
        raise ValueError("invalid rules: " + "; ".join(problems))
    planned = plan_checks(specs, ctx)
    suite_path = workdir / "gx_suite.json"
    suite_path.write_text(json.dumps(gx_suite(RULES), indent=2))

    def lakemon_pass() -> list[Any]:
        return (
            df.withColumn("__day", window_start_col(F.col("ts"), DAY))
            .groupBy("__day")
            .agg(*aggregate_columns(planned))
            .collect()
        )

    # Each side ``repeats`` times, alternating, best of each: neither pays alone for the first read of the
    # table's files, the Delta snapshot or the JIT (the floor is measured the same way). Three rounds, not
    # two: GX's own run-to-run spread on this machine is 15-20 %.
    t_lakemon_runs, t_gx_runs = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        agg_rows = lakemon_pass()
        t_lakemon_runs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        outcomes = validate_with_gx(df, suite_path)
        t_gx_runs.append(time.perf_counter() - t0)
    t_lakemon, t_gx = min(t_lakemon_runs), min(t_gx_runs)
    lakemon_counts = [sum(int(r[p.keys["failed"]] or 0) for r in agg_rows) for p in planned]
    gx_counts = [o.unexpected_count for o in outcomes]
    exceptions = [o.exception for o in outcomes if o.exception]
    mismatches = [
        {"rule": p.name, "lakemon": a, "gx": b}
        for p, a, b in zip(planned, lakemon_counts, gx_counts, strict=False)
        if a != b
    ]
    return {
        "gx_rows": n,
        "gx_rules": len(specs),
        "gx_s": _r(t_gx),
        "gx_lakemon_s": _r(t_lakemon),
        "gx_runs_s": [_r(t) for t in t_gx_runs],
        "gx_lakemon_runs_s": [_r(t) for t in t_lakemon_runs],
        "gx_ratio": _ratio(t_gx, t_lakemon),
        "gx_counts_equal": len(gx_counts) == len(lakemon_counts) and not mismatches and not exceptions,
        "gx_unexpected_total": sum(c or 0 for c in gx_counts),
        "gx_mismatches": mismatches,
        "gx_exceptions": exceptions[:5],
    }


def naive_monitor(df: Any, columns: list[str], days: list[datetime]) -> int:
    """The hand-written monitor: one Spark job per day, column and metric. Returns the job count."""
    from pyspark.sql import functions as F

    probs = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]
    jobs = 0
    results: dict[tuple[datetime, str, str], Any] = {}
    for d in days:
        day = df.where((F.col("ts") >= F.lit(d)) & (F.col("ts") < F.lit(d + DAY)))
        for c in columns:
            col = F.col(c)
            metrics = {
                "nulls": F.count_if(col.isNull()),
                "mean": F.mean(col),
                "std": F.stddev(col),
                "min": F.min(col),
                "max": F.max(col),
                "quantiles": F.percentile_approx(col, probs, 10000),
            }
            for name, expr in metrics.items():
                results[(d, c, name)] = day.agg(expr.alias("v")).collect()[0]["v"]
                jobs += 1
    return jobs


def measure_naive(spark: Any, paths: dict[str, str], days: int, naive_days: int) -> dict[str, Any]:
    df = _delta(spark, paths["predictions"])
    k = max(1, min(naive_days, days))
    t0 = time.perf_counter()
    jobs = naive_monitor(df, list(NUMERIC), [START + i * DAY for i in range(k)])
    dt = time.perf_counter() - t0
    return {
        "naive_days_timed": k,
        "naive_timed_s": _r(dt),
        "naive_s": _r(dt * days / k),
        "naive_extrapolated": k < days,
        "naive_spark_jobs": jobs * days // k,
        "naive_columns": len(NUMERIC),
    }


def split_for_models(
    spark: Any, paths: dict[str, str], base: Path, models: int, days: int
) -> list[dict[str, str]]:
    """``models`` disjoint sets of (predictions, labels, baseline) tables, split by a prediction id hash."""
    from pyspark.sql import functions as F

    end = START + days * DAY
    src = {
        "predictions": _delta(spark, paths["predictions"]).where(F.col("ts") < F.lit(end)),
        "labels": _delta(spark, paths["labels"]),
        "baseline": _delta(spark, paths["baseline"]),
    }
    out = []
    for i in range(models):
        p = {}
        for name, df in src.items():
            path = base / f"model_{i}" / name
            _save(df.where(F.pmod(F.xxhash64("prediction_id"), F.lit(models)) == i), path)
            p[name] = str(path)
        out.append(p)
    return out


# ---------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, required=True, help="rows of the monitored log (all days)")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--scaling-rows", type=int, default=None, help="default: rows // 10")
    p.add_argument("--workdir", default=None, help="default: a temporary folder, removed at the end")
    p.add_argument("--skip-gx", action="store_true")
    p.add_argument("--skip-naive", action="store_true")
    p.add_argument("--skip-scaling", action="store_true", help="no run at --scaling-rows")
    p.add_argument("--skip-multi", action="store_true", help="no many-models part")
    p.add_argument("--naive-days", type=int, default=5, help="days the naive monitor is timed on")
    p.add_argument("--gx-repeats", type=int, default=3, help="rounds of GX vs lakemon (best of each)")
    p.add_argument("--models", type=int, default=10, help="small monitors in the many-models part")
    p.add_argument(
        "--parallel",
        type=int,
        default=DEFAULT_PARALLEL,
        help="many-models part: also run the monitors N at a time, as `lakemon run --parallel N` (1: skip)",
    )
    a = p.parse_args(argv)
    if a.rows < 1000 or a.days < 2 or a.models < 1:
        p.error("need --rows >= 1000, --days >= 2, --models >= 1")
    if a.scaling_rows is None:
        a.scaling_rows = max(a.rows // 10, 1000)
    return a


def command_line(argv: list[str]) -> str:
    return " ".join(["python", "jobs/benchmark.py", *argv])


def run(args: argparse.Namespace, argv: list[str], spark: Any = None) -> dict[str, Any]:
    """All parts, in ``spark`` when given (left running) or in a session of its own (stopped at the end)."""
    own_session = spark is None
    temp = args.workdir is None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="lakemon-bench-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("main", "small", "multi", "mlartifacts", "gx_suite.json", "mlflow.db"):
        target = workdir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()

    out: dict[str, Any] = {
        "rows": args.rows,
        "days": args.days,
        "command": command_line(argv),
        "machine": _machine(),
        "started_at": datetime.now().isoformat(timespec="seconds"),
        "errors": {},
        "notes": {
            "features": "12 numeric (demo's 9 + income_to_limit, monthly_payment, log_income derived), "
            "4 categorical; slices region, channel, product; 21 quality rules + default checks",
            "ratio": "full_warm_s / floor_s (warm: backfill of every window, baseline profile reused); "
            "ratio_cold = full_s / floor_s (first run: baseline profiled, output tables created)",
            "floor": "one agg counting every predictions column the monitor reads, best of 2; "
            "the labels table's bare scan is floor_labels_s, not included",
            "naive": "one Spark job per numeric column x metric x day, timed on naive_days_timed days, "
            "extrapolated linearly to all days; numeric profile only (a lower bound for that approach)",
            "multi_ratio": "sum of the small monitors' cold runs / full_s (cold run of the big one)",
            "multi_parallel_ratio": "wall time of the same small monitors run cold, multi_parallel at a time "
            "(run_monitors, as `lakemon run --config DIR --parallel N`) / full_s",
            "gx_ratio": "GX one batch on the uncached Delta table / one grouped agg of the same rules; "
            f"each timed {args.gx_repeats} times, alternating, best of each",
        },
    }
    t_start = time.perf_counter()
    if own_session:
        spark = get_spark("lakemon-bench")
        spark.sparkContext.setLogLevel("ERROR")
    # scans() recognises a table by the location in each scan's description, which Spark cuts at 100 characters
    spark.conf.set(METADATA_LENGTH, "4096")
    b = Bench(spark, out, Path(args.out))
    b.sample("session")
    init_mlflow(workdir, demo_config(workdir)["mlflow"]["experiment"])

    # ---- scaling, small size first (also warms the JVM up) ------------------------------------------
    small: dict[str, Any] = out.setdefault("scaling_small", {})  # filled as it goes (partial JSON)

    def scaling_small() -> None:
        ds = prepare_dataset(spark, workdir / "small", args.scaling_rows, args.days, extra_day=False)
        small["rows"] = ds["rows"]
        small.update(measure_floor(spark, ds["paths"]))
        raw = bench_config(workdir, ds["paths"], workdir / "small" / "monitoring", monitor=f"{MONITOR}_small")
        as_of = START + args.days * DAY
        dt, res = timed_run(spark, raw, as_of=as_of)
        small.update(full_s=_r(dt), spark_jobs=res.spark_jobs)
        dt, _ = timed_run(spark, raw, as_of=as_of, start=START, end=as_of)
        small["full_warm_s"] = _r(dt)

    if args.skip_scaling:
        out["scaling_skipped"] = True
    else:
        b.guard("scaling_small", scaling_small)
    mem_small = b.memory[-1] if not args.skip_scaling else {}

    # ---- main data ------------------------------------------------------------------------------------
    ds: dict[str, Any] = {}

    def data() -> None:
        t0 = time.perf_counter()
        ds.update(prepare_dataset(spark, workdir / "main", args.rows, args.days, extra_day=True))
        out["rows_actual"] = ds["rows"]
        out["rows_baseline"] = ds["rows_baseline"]
        out["rows_labels"] = ds["rows_labels"]
        out["data_prep_s"] = _r(time.perf_counter() - t0)

    b.guard("data", data)
    if not ds:
        return finish(out, t_start, spark if own_session else None, workdir, temp)
    paths = ds["paths"]
    raw = bench_config(workdir, paths, workdir / "main" / "monitoring")
    as_of = START + args.days * DAY

    b.guard("floor", lambda: out.update(measure_floor(spark, paths)))
    # GX next to the floor, in the same state of the JVM (before the full runs fill and churn its heap): both
    # sides alternate within the measurement, so the order favours neither
    if args.skip_gx:
        out["gx_skipped"] = True
    else:
        b.guard(
            "gx",
            lambda: out.update(measure_gx(spark, workdir, paths, ds["rows"], args.days, args.gx_repeats)),
        )

    sources = {k: paths[k] for k in ("predictions", "labels", "baseline")}

    def full_cold() -> None:
        since = io.last_execution_id(spark)
        dt, res = timed_run(spark, raw, as_of=as_of)
        out.update(
            full_s=_r(dt),
            phases=_phases(res),
            spark_jobs=res.spark_jobs,
            scans=scans(spark, since, sources),
            rows_read=res.rows_read,
            windows=len(res.windows),
            alerts_firing=res.alerts_firing,
        )

    b.guard("full_cold", full_cold)
    mem_big = b.memory[-1]

    def full_warm() -> None:
        since = io.last_execution_id(spark)
        dt, res = timed_run(spark, raw, as_of=as_of, start=START, end=as_of)
        out.update(
            full_warm_s=_r(dt),
            phases_warm=_phases(res),
            spark_jobs_warm=res.spark_jobs,
            scans_warm=scans(spark, since, sources),
            windows_warm=len(res.windows),
        )

    b.guard("full_warm", full_warm)
    out["ratio"] = _ratio(out.get("full_warm_s"), out.get("floor_s"))
    out["ratio_cold"] = _ratio(out.get("full_s"), out.get("floor_s"))

    if args.skip_naive:
        out["naive_skipped"] = True
    else:

        def naive() -> None:
            out.update(measure_naive(spark, paths, args.days, args.naive_days))
            out["naive_ratio"] = _ratio(out["naive_s"], out.get("full_warm_s"))

        b.guard("naive", naive)

    # ---- many models (split before the log gets its extra day) ------------------------------------------
    def multi() -> None:
        t0 = time.perf_counter()
        splits = split_for_models(spark, paths, workdir / "multi" / "data", args.models, args.days)
        out["multi_prep_s"] = _r(time.perf_counter() - t0)
        times = []
        for i, p in enumerate(splits):
            raw_i = bench_config(workdir, p, workdir / "multi" / "monitoring", monitor=f"{MONITOR}_m{i}")
            dt, _ = timed_run(spark, raw_i, as_of=as_of)
            times.append(_r(dt))
        out["multi_models"] = args.models
        out["multi_run_s"] = times
        out["multi_s"] = _r(sum(times))
        out["multi_ratio"] = _ratio(sum(times), out.get("full_s"))
        if args.parallel > 1:
            # the same monitors, cold again (own tables), as `lakemon run --config DIR --parallel N` runs them
            cfgs = [
                (None, parse_config(raw_p, f"<benchmark {raw_p['monitor']}>"))
                for raw_p in (
                    bench_config(workdir, p, workdir / "multi_p" / "monitoring", monitor=f"{MONITOR}_p{i}")
                    for i, p in enumerate(splits)
                )
            ]
            t0 = time.perf_counter()
            res = run_monitors(spark, cfgs, parallel=args.parallel, as_of=as_of)
            dt = time.perf_counter() - t0
            bad = [r for r in res if isinstance(r, Exception) or r.status != "success"]
            if bad:
                raise RuntimeError(f"parallel many-models run: {len(bad)} monitor(s) failed: {bad[0]}")
            out["multi_parallel"] = args.parallel
            out["multi_parallel_s"] = _r(dt)
            out["multi_parallel_ratio"] = _ratio(dt, out.get("full_s"))

    if args.skip_multi:
        out["multi_skipped"] = True
    else:
        b.guard("multi", multi)

    # ---- incremental: append the held-back day ------------------------------------------------------------
    def incremental() -> None:
        extra = _delta(spark, paths["extra_day"])
        _save(extra, paths["predictions"], mode="append")
        since = io.last_execution_id(spark)
        dt, res = timed_run(spark, raw, as_of=as_of + DAY)
        out.update(
            incremental_scans=scans(spark, since, sources),
            incremental_s=_r(dt),
            incremental_rows=ds["rows_extra_day"],
            incremental_windows=len(res.windows),
            incremental_discovery=res.discovery,
            incremental_phases=_phases(res),
            incremental_spark_jobs=res.spark_jobs,
            incremental_ratio=_ratio(dt, out.get("full_warm_s")),
        )
        if len(res.windows) != 1:
            raise RuntimeError(f"incremental run computed {len(res.windows)} windows, expected 1")

    b.guard("incremental", incremental)

    out["scaling"] = {
        "rows_small": small.get("rows"),
        "full_small_s": small.get("full_s"),
        "full_small_warm_s": small.get("full_warm_s"),
        "floor_small_s": small.get("floor_s"),
        "spark_jobs_small": small.get("spark_jobs"),
        "rows": out.get("rows_actual"),
        "full_s": out.get("full_s"),
        "full_warm_s": out.get("full_warm_s"),
        "time_ratio": _ratio(out.get("full_s"), small.get("full_s")),
        "time_ratio_warm": _ratio(out.get("full_warm_s"), small.get("full_warm_s")),
        "floor_ratio": _ratio(out.get("floor_s"), small.get("floor_s")),
        "rows_ratio": _ratio(out.get("rows_actual"), small.get("rows")),
        "rss_small_mb": mem_small.get("jvm_peak_rss_mb"),
        "rss_mb": mem_big.get("jvm_peak_rss_mb"),
        "driver_rss_small_mb": mem_small.get("driver_peak_rss_mb"),
        "driver_rss_mb": mem_big.get("driver_peak_rss_mb"),
    }
    return finish(out, t_start, spark if own_session else None, workdir, temp)


def finish(out: dict[str, Any], t_start: float, spark: Any, workdir: Path, temp: bool) -> dict[str, Any]:
    """Peak memory and total time into ``out``; stops ``spark`` when given; removes a temporary workdir."""
    mem = out.get("memory_by_part", [])
    out["driver_peak_rss_mb"] = max(
        (m["driver_peak_rss_mb"] or 0 for m in mem), default=_driver_peak_rss_mb()
    )
    out["jvm_peak_rss_mb"] = max((m["jvm_peak_rss_mb"] or 0 for m in mem), default=None)
    out["total_s"] = _r(time.perf_counter() - t_start)
    out["workdir"] = None if temp else str(workdir)
    if spark is not None:
        spark.stop()
    if temp:
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def table(out: dict[str, Any]) -> str:
    def f(key: str, unit: str = "", src: dict[str, Any] | None = None) -> str:
        v = (src or out).get(key)
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:,.3f}{unit}" if abs(v) < 10 else f"{v:,.1f}{unit}"
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}{unit}"
        return f"{v}{unit}"

    sc = out.get("scaling") or {}
    lines = [
        "",
        f"lakemon benchmark: {f('rows_actual')} rows over {out.get('days')} days "
        f"({out['machine'].get('cores')} cores, {out['machine'].get('memory_gb')} GB)",
        "-" * 78,
        f"{'floor (bare scan of every column)':<44} {f('floor_s', ' s'):>14}",
        f"{'full run, cold (baseline profiled)':<44} {f('full_s', ' s'):>14}   x{f('ratio_cold')} floor",
        f"{'full run, warm (backfill, baseline reused)':<44} {f('full_warm_s', ' s'):>14}   x{f('ratio')} floor",
        f"{'  Spark jobs cold / warm':<44} {f('spark_jobs'):>14} / {f('spark_jobs_warm')}",
        f"{'  scans of the log cold / warm / incremental':<44} {_scan_counts(out, 'predictions'):>14}",
        f"{'  scans of the labels, the same':<44} {_scan_counts(out, 'labels'):>14}",
        f"{'GX vs lakemon, same rules':<44} {f('gx_s', ' s'):>14} / {f('gx_lakemon_s', ' s')}"
        f"   x{f('gx_ratio')}  counts equal: {f('gx_counts_equal')}",
        f"{'naive job-per-metric (extrapolated)':<44} {f('naive_s', ' s'):>14}   x{f('naive_ratio')} full warm",
        f"{'incremental (one new day)':<44} {f('incremental_s', ' s'):>14}   x{f('incremental_ratio')} full warm",
        f"{'many models: ' + str(out.get('multi_models', '-')) + ' small vs 1 big':<44} "
        f"{f('multi_s', ' s'):>14}   x{f('multi_ratio')} full cold",
        f"{'  the same, ' + str(out.get('multi_parallel', '-')) + ' at a time':<44} "
        f"{f('multi_parallel_s', ' s'):>14}   x{f('multi_parallel_ratio')} full cold",
        f"{'scaling: rows x' + f('rows_ratio', '', sc):<44} {f('full_small_s', ' s', sc):>14}"
        f" -> {f('full_s', ' s', sc)}   time x{f('time_ratio', '', sc)} (warm x{f('time_ratio_warm', '', sc)})",
        f"{'peak RSS: driver / JVM':<44} {f('driver_peak_rss_mb', ' MB'):>14} / {f('jvm_peak_rss_mb', ' MB')}",
    ]
    phases = out.get("phases") or {}
    if phases:
        lines.append("phases (cold): " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()))
    if out.get("phases_warm"):
        lines.append("phases (warm): " + ", ".join(f"{k} {v:.1f}" for k, v in out["phases_warm"].items()))
    if out.get("errors"):
        lines.append("ERRORS:")
        lines += [f"  {k}: {v[:300]}" for k, v in out["errors"].items()]
    lines.append("-" * 78)
    return "\n".join(lines)


def _scan_counts(out: dict[str, Any], table: str) -> str:
    def n(key: str) -> str:
        got = (out.get(key) or {}).get(table)
        return "-" if got is None else str(got["scans"])

    return f"{n('scans')} / {n('scans_warm')} / {n('incremental_scans')}"


def write_json(path: Path, out: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str) + "\n")


def main(argv: list[str] | None = None, spark: Any = None) -> int:
    """Run the benchmark (in ``spark`` when given, e.g. by the smoke test), print its table, write its JSON."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("lakemon").setLevel(logging.INFO)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if spark is None:
        out = run(args, argv, spark)
    else:
        # a session lent by the caller gets back the setting run() changes
        length = spark.conf.get(METADATA_LENGTH, None)
        try:
            out = run(args, argv, spark)
        finally:
            if length is None:
                spark.conf.unset(METADATA_LENGTH)
            else:
                spark.conf.set(METADATA_LENGTH, length)
    write_json(Path(args.out), out)
    print(table(out))
    print(f"JSON written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
