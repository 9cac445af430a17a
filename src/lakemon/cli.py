"""The ``lakemon`` command: run, validate, suggest, demo."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from lakemon.config import ConfigError, MonitorConfig, config_files, load_config

log = logging.getLogger("lakemon")
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
DEFAULT_PARALLEL = 2  # monitors of a folder run side by side (their fixed costs are partly latency)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("py4j", "urllib3", "alembic", "mlflow", "great_expectations", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _ts(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(
            f"expected an ISO date or timestamp (e.g. 2026-10-01 or 2026-10-01T06:00), got {text!r}"
        ) from None


def _spark(args: argparse.Namespace) -> Any:
    from lakemon.session import DeltaMissingError, get_spark

    try:
        spark = get_spark("lakemon", master=getattr(args, "master", None))
    except DeltaMissingError as err:
        raise SystemExit(f"lakemon: {err}") from None
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _record_config_failure(spark: Any, path: Path, err: Exception) -> None:
    """A monitor whose config is invalid still gets a failed row in its ``runs`` table when its output
    and name can be read from the file."""
    import uuid

    from lakemon import io
    from lakemon.config import OutputSpec

    try:
        raw = yaml.safe_load(path.read_text())
        output = io.Output(OutputSpec.model_validate(raw["output"]))
        monitor = str(raw.get("monitor") or path.stem)
    except Exception:
        return
    try:
        io.ensure_tables(spark, output)
        now = datetime.utcnow()
        io.upsert_run(
            spark,
            output,
            {
                "run_id": uuid.uuid4().hex,
                "monitor": monitor,
                "started_at": now,
                "finished_at": now,
                "status": "failed",
                "error": str(err)[:4000],
            },
        )
    except Exception as write_err:  # pragma: no cover - best effort
        log.error("could not record the failure of %s: %s", path, write_err)


def cmd_run(args: argparse.Namespace) -> int:
    """Run one monitor, or every monitor config of a folder, in one Spark session."""
    from lakemon.job import run_monitors

    files = config_files(args.config)
    if not files:
        print(f"no monitor configs found in {args.config}", file=sys.stderr)
        return 2
    configs: list[tuple[Path, MonitorConfig | Exception]] = []
    for f in files:
        try:
            configs.append((f, load_config(f)))
        except ConfigError as err:
            configs.append((f, err))
    if len(files) == 1 and isinstance(configs[0][1], Exception):
        print(str(configs[0][1]), file=sys.stderr)
        return 2
    spark = _spark(args)
    failures = 0
    worst = -1
    runnable: list[tuple[str | None, MonitorConfig]] = []
    for path, cfg in configs:
        if isinstance(cfg, Exception):
            log.error("%s", cfg)
            _record_config_failure(spark, path, cfg)
            failures += 1
        else:
            runnable.append((str(path), cfg))
    outcomes = run_monitors(
        spark,
        runnable,
        parallel=args.parallel,
        as_of=_ts(args.as_of),
        start=_ts(args.start),
        end=_ts(args.end),
    )
    for result in outcomes:
        if isinstance(result, Exception):
            failures += 1
            continue
        print(_run_line(result))
        for row in result.alerts:
            if row["status"] == "firing" and row["window_start"] == max(result.windows):
                worst = max(worst, SEVERITY_RANK.get(row["severity"], 0))
    if failures:
        return 1
    if args.fail_on and worst >= SEVERITY_RANK[args.fail_on]:
        print(f"alerts of severity >= {args.fail_on} are firing (--fail-on {args.fail_on})", file=sys.stderr)
        return 3
    return 0


def _run_line(result: Any) -> str:
    seconds = sum(result.phase_seconds.values())
    cost = f" ({result.cost_vs_recent:.1f}x its recent runs)" if result.cost_vs_recent is not None else ""
    return (
        f"{result.monitor}: {result.status}, {len(result.windows)} window(s), {result.rows_read:,} rows, "
        f"{seconds:.1f} s{cost}, {result.alerts_firing} alert(s) firing, run {result.run_id}, "
        f"mlflow {result.mlflow_run_id}"
    )


def cmd_validate(args: argparse.Namespace) -> int:
    """Check a config and the source tables' schemas without computing anything."""
    from lakemon import io
    from lakemon.job import WINDOW, resolve_columns, validate_source
    from lakemon.quality import compute as quality

    ok = True
    spark = None
    for f in config_files(args.config):
        try:
            cfg = load_config(f)
        except ConfigError as err:
            print(str(err), file=sys.stderr)
            ok = False
            continue
        spark = spark or _spark(args)
        try:
            source = io.read_table(spark, cfg.source.table, "source")
            labels = (
                io.read_table(spark, cfg.labels.table, "labels") if cfg.labels and cfg.labels.table else None
            )
            validate_source(cfg, source, labels)
            cols = resolve_columns(cfg, source.schema, None)
            feats_n = [c for c in cols.numeric if cols.role(c) == "feature"]
            feats_c = [c for c in cols.categorical if cols.role(c) == "feature"]
            specs = quality.check_specs(cfg, feats_n, feats_c)
            quality.plan(specs, cfg, quality.schema_with_labels(cfg, source.schema, labels), WINDOW)
            if cfg.baseline and cfg.baseline.table:
                io.read_table(spark, cfg.baseline.table, "baseline")
        except Exception as err:
            print(f"{f}: {err}", file=sys.stderr)
            ok = False
            continue
        print(
            f"{f}: OK — monitor '{cfg.monitor}', {len(feats_n)} numeric and {len(feats_c)} categorical features, "
            f"{len(cfg.slices)} slice(s), {len(specs)} quality check(s)"
        )
    return 0 if ok else 2


def cmd_suggest(args: argparse.Namespace) -> int:
    """Profile the baseline and write a starting set of quality checks as YAML."""
    from lakemon import io
    from lakemon.job import resolve_columns
    from lakemon.quality.suggest import profile_for_suggestions, suggest_checks, to_yaml

    cfg = load_config(args.config)
    spark = _spark(args)
    table = cfg.baseline.table if cfg.baseline and cfg.baseline.table else cfg.source.table
    df = io.read_table(spark, table, "baseline")
    cols = resolve_columns(cfg, df.schema, None)
    numeric = [c for c in cols.numeric if cols.role(c) == "feature" and c in df.columns]
    categorical = [c for c in cols.categorical if cols.role(c) == "feature" and c in df.columns]
    profile = profile_for_suggestions(df, numeric, categorical)
    text = to_yaml(suggest_checks(profile))
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate the demo data, run the monitor over all its windows, print what it found."""
    from lakemon.demo import run_demo

    spark = _spark(args)
    return run_demo(spark, rows=args.rows, days=args.days, workdir=args.workdir)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``lakemon`` command."""
    p = argparse.ArgumentParser(
        prog="lakemon", description="Spark-native monitoring for ML models in production."
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a monitor (or a folder of monitors)")
    r.add_argument("--config", required=True, help="a monitor YAML, or a folder of them")
    r.add_argument("--start", help="backfill from this window start (ISO)")
    r.add_argument("--end", help="backfill up to this time, exclusive (ISO)")
    r.add_argument("--as-of", help="treat this time as now (only windows ending before it are complete)")
    r.add_argument(
        "--fail-on", choices=["warning", "critical"], help="exit 3 when alerts of this severity fire"
    )
    r.add_argument(
        "--parallel",
        type=int,
        default=DEFAULT_PARALLEL,
        help=f"monitors of a folder run side by side in the session (default {DEFAULT_PARALLEL})",
    )
    r.add_argument("--master", help="Spark master when no session exists (default local[*])")
    r.set_defaults(func=cmd_run)

    v = sub.add_parser("validate", help="check a config and the source schemas without computing")
    v.add_argument("--config", required=True)
    v.add_argument("--master")
    v.set_defaults(func=cmd_validate)

    s = sub.add_parser("suggest", help="profile the baseline and write starting quality checks")
    s.add_argument("--config", required=True)
    s.add_argument("--out", help="YAML file to write (default: print)")
    s.add_argument("--master")
    s.set_defaults(func=cmd_suggest)

    d = sub.add_parser("demo", help="generate a prediction log with incidents and monitor it")
    d.add_argument("--rows", type=int, default=1_000_000)
    d.add_argument("--days", type=int, default=30)
    d.add_argument("--workdir", default="./lakehouse")
    d.add_argument("--master")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lakemon`` console script."""
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        print(str(err), file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
