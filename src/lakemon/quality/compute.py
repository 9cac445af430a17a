"""Quality in the run: which checks apply, their aggregates in the shared pass, and their result rows."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from lakemon.config import CheckSpec, MonitorConfig
from lakemon.context import Results, RunContext, rows_for
from lakemon.plan import Agg
from lakemon.quality import checks as qc

if TYPE_CHECKING:
    from pyspark.sql.types import StructType

# Checks whose verdict is the volume/freshness signal rather than the quality one.
SIGNAL_OF_CHECK = {"volume": "volume", "freshness": "freshness"}


def check_specs(
    cfg: MonitorConfig, numeric: Sequence[str], categorical: Sequence[str], gx_fast: Sequence[CheckSpec] = ()
) -> list[CheckSpec]:
    """The run's built-in checks: defaults (unless disabled), the config's own, and GX ones run natively."""
    specs: list[CheckSpec] = []
    if cfg.quality.default_checks:
        scores = cfg.source.score or (
            tuple(cfg.source.class_scores.values()) if cfg.source.class_scores else None
        )
        if cfg.problem_type in ("regression", "ranking"):
            scores = None
        specs += qc.default_checks(numeric, categorical, scores, cfg.source.id, cfg.source.timestamp)
    own = {s.check_name for s in cfg.quality.checks}
    specs = [s for s in specs if s.check_name not in own]
    specs += list(cfg.quality.checks)
    specs += list(gx_fast)
    return specs


def schema_with_labels(cfg: MonitorConfig, schema: StructType, labels: Any = None) -> StructType:
    """The source schema plus the label column (labels-table checks run on the joined label)."""
    from pyspark.sql.types import StringType, StructField, StructType

    if cfg.labels is None or cfg.labels.column in schema.fieldNames():
        return schema
    dtype = StringType()
    if labels is not None and cfg.labels.column in labels.columns:
        dtype = labels.schema[cfg.labels.column].dataType
    return StructType([*schema.fields, StructField(cfg.labels.column, dtype, True)])


def plan(
    specs: Sequence[CheckSpec], cfg: MonitorConfig, schema: StructType, window_col: str
) -> list[qc.PlannedCheck]:
    """Validate (errors name ``quality.checks[i]...``) and plan the checks for the shared aggregation."""
    scores = (cfg.source.score,) if cfg.source.score else tuple((cfg.source.class_scores or {}).values())
    ctx = qc.CheckContext(
        ts_col=cfg.source.timestamp,
        score_cols=scores,
        window_start_col=window_col,
        window_end_col=None,
        schema=schema,
    )
    problems = qc.validate_checks(specs, schema, ctx) if hasattr(qc, "validate_checks") else []
    if problems:
        from lakemon.config import ConfigError

        raise ConfigError("invalid quality checks:\n  " + "\n  ".join(problems))
    return qc.plan_checks(specs, ctx)


def aggs(planned: Sequence[qc.PlannedCheck]) -> list[Agg]:
    """The planned checks' aggregates, with how each merges upward (counts add, latest timestamp max).

    ``PlannedCheck.keys`` lists the roles in the order their aggregates were added.
    """
    out: list[Agg] = []
    for p in planned:
        if len(p.keys) != len(p.aggregates):
            raise AssertionError(f"check {p.name}: {len(p.keys)} keys for {len(p.aggregates)} aggregates")
        for (role, alias), col in zip(p.keys.items(), p.aggregates, strict=True):
            out.append(Agg(alias, col, "max" if role in ("max_ts", "window_end") else "sum"))
    return out


def finalize(
    ctx: RunContext,
    results: Results,
    planned: Sequence[qc.PlannedCheck],
    volume_history: Mapping[tuple[str | None, str | None], list[tuple[datetime, float]]],
) -> list[dict[str, Any]]:
    """Rows of ``quality_results`` for every check, window and slice."""
    rows: list[dict[str, Any]] = []
    for key in rows_for(results.merged):
        ws, sk, sv = key
        m = results.merged[key]
        window_end = ws + ctx.window
        for p in planned:
            history = None
            if p.spec.check == "volume":
                hist = volume_history.get((sk, sv), [])
                # earlier windows only: stored history plus this run's earlier windows
                history = [v for t, v in hist if t < ws]
                history += [
                    float(results.merged[k].get("row_count") or 0)
                    for k in results.merged
                    if k[1:] == (sk, sv) and k[0] < ws
                ]
                n_hist = int(p.spec.args.get("history", 14))
                history = history[-n_hist:]
            out = p.finalize(m, history=history, window_end=window_end)
            rows.append(
                {
                    **ctx.key_columns(ws, sk, sv),
                    "check": out.check_name,
                    "kind": p.spec.check,
                    "table_name": p.spec.table,
                    "column_name": p.spec.column or (",".join(p.spec.columns) if p.spec.columns else None),
                    "rows_checked": int(out.rows_checked),
                    "rows_failed": int(out.rows_failed),
                    "fail_ratio": float(out.fail_ratio),
                    "max_fail_ratio": float(p.spec.max_fail_ratio),
                    "passed": bool(out.passed),
                    "severity": p.spec.severity,
                    "engine": "lakemon",
                    "details": out.details
                    if isinstance(out.details, str)
                    else json.dumps(out.details, default=str),
                }
            )
    return rows


def gx_suites(
    cfg: MonitorConfig, schema: StructType, config_dir: str | None
) -> tuple[list[CheckSpec], list[tuple[str, Any]]]:
    """The config's GX suites: with ``engine: fast`` the expectations lakemon has built in become checks of
    the single pass; the rest (or everything with ``engine: great_expectations``) run through GX."""
    from pathlib import Path

    from lakemon.quality import gx

    fast: list[CheckSpec] = []
    rest: list[tuple[str, Any]] = []
    for i, raw in enumerate(cfg.quality.great_expectations):
        path = Path(raw)
        if not path.is_absolute() and config_dir and not path.exists():
            path = Path(config_dir) / path
        if not path.is_file():
            from lakemon.config import ConfigError

            raise ConfigError(f"config key 'quality.great_expectations[{i}]': suite file not found: {raw}")
        suite = gx.load_suite(path)
        if cfg.quality.engine == "fast":
            specs, remaining = gx.translate_suite(suite, schema)
            fast += specs
        else:
            remaining = list(suite.expectations)
        if remaining:
            import great_expectations as ge

            rest.append((str(path), ge.ExpectationSuite(name=f"{suite.name}_rest", expectations=remaining)))
    return fast, rest


def gx_rows(ctx: RunContext, outcomes_by_window: Mapping[datetime, Sequence[Any]]) -> list[dict[str, Any]]:
    """Rows of ``quality_results`` for expectations validated by Great Expectations (whole population)."""
    rows = []
    for ws, outcomes in sorted(outcomes_by_window.items()):
        seen: dict[str, int] = {}
        for o in outcomes:
            base = f"{o.expectation_type}__{o.column}" if o.column else o.expectation_type
            seen[base] = seen.get(base, 0) + 1
            name = base if seen[base] == 1 else f"{base}_{seen[base]}"
            checked = int(o.element_count or 0)
            failed = (
                int(o.unexpected_count or 0)
                if o.unexpected_count is not None
                else (0 if o.success else checked)
            )
            rows.append(
                {
                    **ctx.key_columns(ws, None, None),
                    "check": name,
                    "kind": o.expectation_type,
                    "table_name": "predictions",
                    "column_name": o.column,
                    "rows_checked": checked,
                    "rows_failed": failed,
                    "fail_ratio": failed / checked if checked else 0.0,
                    "max_fail_ratio": 0.0,
                    "passed": bool(o.success),
                    "severity": "error",
                    "engine": "great_expectations",
                    "details": json.dumps(
                        {
                            "observed_value": o.observed_value,
                            "unexpected_percent": o.unexpected_percent,
                            "exception": o.exception,
                        },
                        default=str,
                    ),
                }
            )
    return rows
