"""Small, seeded data builders for end-to-end tests: a binary classifier's prediction log as a Delta
table (built with Spark expressions only, so it is deterministic for a given seed) and a minimal
monitor config dict pointing at it.

Reusable by any test::

    info = write_log(spark, tmp_path, rows=2000, days=3)
    cfg = parse_config(config(tmp_path, output={"path": str(tmp_path / "out")}))
    run_monitor(spark, cfg, as_of=info["as_of"], deliver=False)
"""

from __future__ import annotations

import atexit
import copy
import os
import shutil
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

START = datetime(2026, 3, 2)  # a Monday, UTC; window i covers [START + i days, START + i + 1 days)
NUMERIC = ("num_a", "num_b", "num_c")
CATEGORICAL = ("cat_a", "cat_b")
SLICE = "segment"
MONITOR = "builder_monitor"


def log_frame(
    spark: SparkSession,
    rows: int = 3000,
    days: int = 4,
    seed: int = 0,
    extra: dict[str, str] | None = None,
    start: datetime = START,
) -> DataFrame:
    """The prediction log as a DataFrame: ``rows`` rows spread evenly over ``days`` daily windows.

    Columns: ``prediction_id`` (string, unique), ``ts`` (timestamp), ``num_a`` (~N(0,1)), ``num_b`` (uniform
    0..100), ``num_c`` (integer-valued double 0..9), ``cat_a`` (a/b/c), ``cat_b`` (x/y), ``segment``
    (``seg0``/``seg1``, the slice column), ``score`` (probability), ``prediction`` (0/1 int) and ``label``
    (0/1 int). ``extra`` maps a column name to a Spark SQL expression evaluated over those columns (plus
    ``rid``, the row number, and ``day``, the window index): it adds a column or replaces one, so faults can
    be injected deterministically, e.g. ``{"score": "IF(rid % 100 = 0, double('NaN'), score)"}``.
    """
    from pyspark.sql import functions as F

    span = days * 86400
    df = spark.range(0, rows, 1, numPartitions=2).withColumnRenamed("id", "rid")
    # Evenly spread, strictly inside the range: row i at start + (i + 0.5) * span / rows seconds.
    offset = F.floor((F.col("rid") * 2 + 1) * F.lit(span) / F.lit(2 * rows)).cast("long")
    df = (
        df.withColumn(
            "ts", F.timestamp_seconds(F.lit(int((start - datetime(1970, 1, 1)).total_seconds())) + offset)
        )
        .withColumn("day", F.floor(offset / F.lit(86400)).cast("int"))
        .withColumn("prediction_id", F.concat(F.lit("p"), F.col("rid").cast("string")))
        .withColumn("num_a", F.randn(seed))
        .withColumn("num_b", F.rand(seed + 1) * 100.0)
        .withColumn("num_c", F.floor(F.rand(seed + 2) * 10).cast("double"))
        .withColumn(
            "cat_a",
            F.element_at(
                F.array(F.lit("a"), F.lit("b"), F.lit("c")), (F.floor(F.rand(seed + 3) * 3) + 1).cast("int")
            ),
        )
        .withColumn("cat_b", F.when(F.rand(seed + 4) < 0.3, F.lit("x")).otherwise(F.lit("y")))
        .withColumn("segment", F.concat(F.lit("seg"), (F.col("rid") % 2).cast("string")))
        .withColumn("score", 1.0 / (1.0 + F.exp(-(1.5 * F.col("num_a") + 0.5 * F.randn(seed + 5)))))
        .withColumn("prediction", (F.col("score") >= 0.5).cast("int"))
        .withColumn("label", (F.rand(seed + 6) < F.col("score")).cast("int"))
    )
    for name, expr in (extra or {}).items():
        df = df.withColumn(name, F.expr(expr))
    return df.drop("rid", "day")


def write_log(
    spark: SparkSession,
    dir: str | os.PathLike[str],
    rows: int = 3000,
    days: int = 4,
    seed: int = 0,
    extra: dict[str, str] | None = None,
    *,
    name: str = "log",
    start: datetime = START,
    mode: str = "overwrite",
) -> dict[str, Any]:
    """Write :func:`log_frame` as a Delta table at ``<dir>/<name>`` and describe it.

    Returns ``path``, ``rows``, ``days``, ``start``, ``windows`` (the daily window starts) and ``as_of``
    (the end of the last window: every window is complete).
    """
    path = str(Path(dir) / name)
    df = log_frame(spark, rows=rows, days=days, seed=seed, extra=extra, start=start)
    df.write.format("delta").mode(mode).option("overwriteSchema", "true").save(path)
    windows = [start + timedelta(days=i) for i in range(days)]
    return {
        "path": path,
        "rows": rows,
        "days": days,
        "start": start,
        "windows": windows,
        "as_of": start + timedelta(days=days),
    }


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts merge; any other value replaces; ``None`` removes the key."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


_MLFLOW_TEMPLATE: list[Path] = []


def empty_mlflow_store(target: Path) -> None:
    """Put an empty MLflow sqlite store, its schema already migrated, at ``target`` unless one is there.

    Creating a store runs MLflow's schema migrations (~2.5 s each time here) and the suite's monitors each
    get a store of their own: the same empty store every time, so it is made once and copied.
    """
    if target.exists():
        return
    if not _MLFLOW_TEMPLATE:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        template = Path(tempfile.mkdtemp(prefix="lakemon-tests-mlflow-")) / "mlflow.db"
        atexit.register(shutil.rmtree, template.parent, True)
        SqlAlchemyStore(f"sqlite:///{template}", str(template.parent / "artifacts")).engine.dispose()
        _MLFLOW_TEMPLATE.append(template)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_MLFLOW_TEMPLATE[0], target)


_TABLES_TEMPLATE: list[Path] = []


def empty_monitoring_tables(target: Path) -> None:
    """Put the monitoring tables, created empty, at ``target`` unless something is there already.

    A monitor's first run creates its ~11 tables (~2 s here, Delta commits) and most of the suite's monitors
    are new: the same empty tables every time, so they are created once, by ``io.ensure_tables`` in the
    suite's Spark session, and copied (the run then checks their schemas, as any later run does). Creation
    itself is tested where it matters (``config(..., empty_tables=False)``, the demo, the concurrency tests).
    Without an active Spark session (config-only tests) nothing is done: a run would create the tables.
    """
    if target.exists():
        return
    if not _TABLES_TEMPLATE:
        from pyspark.sql import SparkSession

        spark = SparkSession.getActiveSession()
        if spark is None:
            return
        from lakemon import io
        from lakemon.config import OutputSpec

        template = Path(tempfile.mkdtemp(prefix="lakemon-tests-tables-")) / "monitoring"
        atexit.register(shutil.rmtree, template.parent, True)
        io.ensure_tables(spark, io.Output(OutputSpec(path=str(template))))
        _TABLES_TEMPLATE.append(template)
    shutil.copytree(_TABLES_TEMPLATE[0], target)


def config(dir: str | os.PathLike[str], *, empty_tables: bool = True, **overrides: Any) -> dict[str, Any]:
    """A minimal monitor config dict for the log written by :func:`write_log` under ``dir``.

    Labels are the log's ``label`` column; the baseline is the log's first day (``baseline: {range}``);
    the monitoring tables go to ``<dir>/monitoring`` and MLflow to ``sqlite:///<dir>/mlflow.db`` (an empty sqlite
    store is copied to the final URI's file: :func:`empty_mlflow_store`). Keyword
    overrides are merged into the dict (nested dicts merge, other values replace, ``None`` removes a key),
    e.g. ``config(d, output={"path": ...}, baseline={"range": None, "table": ...})``. ``empty_tables``: the
    output folder gets the monitoring tables, empty (:func:`empty_monitoring_tables`); False leaves their
    creation to the first run.
    """
    d = Path(dir).resolve()
    base: dict[str, Any] = {
        "monitor": MONITOR,
        "model": {"name": "builder_model"},
        "problem_type": "binary",
        "source": {
            "table": str(d / "log"),
            "timestamp": "ts",
            "id": "prediction_id",
            "prediction": "prediction",
            "score": "score",
            "features": {"numeric": list(NUMERIC), "categorical": list(CATEGORICAL)},
        },
        "labels": {"column": "label"},
        "granularity": "1 day",
        "slices": [{"column": SLICE}],
        "baseline": {"range": {"start": START.isoformat(), "end": (START + timedelta(days=1)).isoformat()}},
        "output": {"path": str(d / "monitoring")},
        "mlflow": {"experiment": "lakemon-tests", "tracking_uri": f"sqlite:///{d / 'mlflow.db'}"},
        "quality": {
            "engine": "fast",
            "checks": [
                {"check": "between", "column": "num_b", "args": {"min": 0, "max": 100}},
                {"check": "in_set", "column": "cat_a", "args": {"values": ["a", "b", "c"]}},
            ],
        },
        "performance": {"min_labeled": 50, "histogram_bins": 100},
        "drift": {"min_samples": 50, "quantile_points": 101, "sketch_k": 200},
    }
    out = _merge(base, overrides)
    uri = (out.get("mlflow") or {}).get("tracking_uri") or ""
    if uri.startswith("sqlite:///"):
        empty_mlflow_store(Path(uri.removeprefix("sqlite:///")))
    path = (out.get("output") or {}).get("path")
    if empty_tables and path:
        empty_monitoring_tables(Path(path))
    return out


def write_config(path: str | os.PathLike[str], cfg: dict[str, Any]) -> str:
    """Write a config dict as YAML (for the CLI and spark-submit) and return the file's path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(p)


def read_table(spark: SparkSession, cfg: dict[str, Any], table: str) -> DataFrame:
    """A monitoring table of a config dict's folder output."""
    return spark.read.format("delta").load(f"{cfg['output']['path'].rstrip('/')}/{table}")
