"""``lakemon demo``: generate a credit-default prediction log with known incidents, monitor every window,
and print what was written and which alerts were raised."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lakemon.config import parse_config

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakemon.job import RunResult

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "conf" / "demo.yaml"


def demo_config(workdir: Path, template: Path = DEMO_CONFIG) -> dict[str, Any]:
    """The demo monitor's config (from ``conf/demo.yaml``) with its paths pointed into ``workdir``."""
    raw = yaml.safe_load(template.read_text())
    data = workdir / "data"
    raw["source"]["table"] = str(data / "predictions")
    raw["labels"]["table"] = str(data / "labels")
    raw["baseline"]["table"] = str(data / "baseline")
    raw["output"]["path"] = str(workdir / "monitoring")
    raw["mlflow"]["tracking_uri"] = f"sqlite:///{workdir / 'mlflow.db'}"
    return raw


def write_demo_config(workdir: Path) -> Path:
    """Write ``workdir/demo.yaml`` and return its path."""
    path = workdir / "demo.yaml"
    header = "# Written by `lakemon demo` from conf/demo.yaml; paths point into this folder.\n"
    path.write_text(header + yaml.safe_dump(demo_config(workdir), sort_keys=False))
    return path


def run_demo(
    spark: SparkSession, rows: int = 1_000_000, days: int = 30, workdir: str | Path = "./lakehouse"
) -> int:
    """Generate, monitor, report. Returns the process exit code."""
    from lakemon.demo_data import generate_demo
    from lakemon.job import run_monitor
    from lakemon.tables import ALL_TABLES
    from lakemon.tracking.mlflow_run import ui_command

    wd = Path(workdir).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    info = generate_demo(spark, str(wd / "data"), rows=rows, days=days)
    t_gen = time.perf_counter() - t0
    cfg_path = write_demo_config(wd)
    cfg = parse_config(yaml.safe_load(cfg_path.read_text()), str(cfg_path))
    as_of = _demo_end(info, days)
    t1 = time.perf_counter()
    result = run_monitor(spark, cfg, as_of=as_of, config_path=str(cfg_path))
    t_run = time.perf_counter() - t1
    print(
        report(
            spark,
            result,
            cfg,
            info,
            wd,
            [t.name for t in ALL_TABLES],
            t_gen,
            t_run,
            ui_command(cfg.mlflow.tracking_uri),
        )
    )
    return 0 if result.status == "success" else 1


def _demo_end(info: dict[str, Any], days: int) -> Any:
    from datetime import datetime

    first = min(
        datetime.fromisoformat(i["first_window_start"]).replace(tzinfo=None)
        for i in info["incidents"]
        if i.get("first_window_start")
    )
    firsts = [int(i["first_day"]) for i in info["incidents"] if i.get("first_day") is not None]
    start = first - timedelta(days=min(firsts)) if firsts else first
    return start + timedelta(days=days)


def report(
    spark: SparkSession,
    result: RunResult,
    cfg: Any,
    info: dict[str, Any],
    workdir: Path,
    tables: list[str],
    t_gen: float,
    t_run: float,
    ui: str,
) -> str:
    """The demo's readable summary."""
    from lakemon import io

    out = io.Output(cfg.output)
    lines = [
        "",
        "=" * 100,
        f"lakemon demo: monitor '{cfg.monitor}' over {info['rows']['predictions']:,} predictions "
        f"({len(result.windows)} daily windows), run {result.run_id}",
        f"  data generated in {t_gen:.1f} s; monitoring run {t_run:.1f} s ({result.spark_jobs} Spark jobs)",
        "",
        "Monitoring tables (Delta) under " + str(workdir / "monitoring") + ":",
    ]
    # a fixed list of monitoring tables for the printout (not per column, slice or window); a Delta count(*)
    # is answered from the log's file statistics, not by reading rows
    for name in tables:
        n = spark.read.format("delta").load(out.location(name)).count()
        lines.append(f"  {name:<22} {n:>10,} rows")
    lines += ["", "Injected incidents (data/incidents.json):"]
    for inc in info["incidents"]:
        where = f"{inc['slice_key']}={inc['slice_value']}" if inc.get("slice_key") else "all rows"
        lines.append(
            f"  {inc['kind']:<17} {inc.get('column') or '-':<12} {where:<16} days {inc['first_day']}-{inc['last_day']}"
        )
    lines += [
        "",
        f"Alerts firing in the latest window: {result.alerts_firing}; alert episodes raised in this run:",
    ]
    opened = sorted(
        {
            (
                r["signal"],
                r["metric"],
                r["column_name"] or "",
                f"{r['slice_key']}={r['slice_value']}" if r["slice_key"] else "all",
                str(r["first_window_start"])[:10],
                r["severity"],
            )
            for r in result.alerts
            if r["status"] == "firing"
        },
        key=lambda x: (x[4], x[0], x[2], x[3]),
    )
    for sig, metric, col, sl, first, sev in opened[:60]:
        lines.append(f"  {first}  {sev:<8} {sig:<22} {metric:<28} {col:<18} {sl}")
    if len(opened) > 60:
        lines.append(f"  ... and {len(opened) - 60} more (SELECT * FROM the alerts table)")
    head = result.summary.get("headline", {})
    if head:
        lines += [
            "",
            "Headline (latest window with a value): "
            + ", ".join(f"{k.split('.', 1)[1]}={v:.3f}" for k, v in sorted(head.items())),
        ]
    lines += [
        "",
        f"Config: {workdir / 'demo.yaml'}   incidents: {workdir / 'data' / 'incidents.json'}",
        f"MLflow run {result.mlflow_run_id}; open the UI with:",
        f"  {ui}",
        "Query the tables, e.g.:",
        f"  spark.read.format('delta').load('{out.location('drift_metrics')}').where('drifted').show()",
        "=" * 100,
    ]
    return "\n".join(lines)
