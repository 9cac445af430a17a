"""Great Expectations 1.x: load a suite, run it on a Spark DataFrame, translate it to built-in checks.

GX runs about ten Spark jobs per expectation batch; the built-in checks run in the job's single
aggregation. :func:`translate_suite` moves the expectations that have an exact built-in equivalent to
the fast path (``quality.engine: fast``) and leaves the rest to :func:`validate_with_gx`.

Import note: ``great_expectations`` is imported lazily, inside the functions, so importing lakemon
does not pay for it.
"""

from __future__ import annotations

import json
import math
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakemon.config import CheckSpec

if TYPE_CHECKING:
    import great_expectations as gx
    from pyspark.sql import DataFrame
    from pyspark.sql.types import StructType

__all__ = ["TRANSLATABLE", "GxOutcome", "load_suite", "translate_suite", "validate_with_gx"]


@dataclass(frozen=True)
class GxOutcome:
    """One expectation's result. ``index``: its position in the suite. ``observed_value``: GX's
    ``result.observed_value`` (aggregate expectations) or None, made JSON-able. ``result_json``: the
    whole GX result as JSON."""

    index: int
    expectation_type: str
    column: str | None
    success: bool
    element_count: int | None
    unexpected_count: int | None
    unexpected_percent: float | None
    observed_value: Any
    kwargs_json: str
    exception: str | None
    result_json: str


def _jsonable(x: Any) -> Any:
    from great_expectations.util import convert_to_json_serializable

    try:
        out = convert_to_json_serializable(x)
    except Exception:
        out = str(x)
    if isinstance(out, float) and not math.isfinite(out):
        return str(out)
    return out


def _build_suite(
    name: str, expectations: Sequence[dict[str, Any]], meta: dict | None = None
) -> gx.ExpectationSuite:
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    built = []
    for i, e in enumerate(expectations):
        etype = e.get("type") or e.get("expectation_type")
        if not etype:
            raise ValueError(f"expectations[{i}]: missing 'type'")
        kwargs = {k: v for k, v in dict(e.get("kwargs") or {}).items() if k != "batch_id"}
        try:
            cfg = ExpectationConfiguration(type=etype, kwargs=kwargs, meta=e.get("meta") or None)
            built.append(cfg.to_domain_obj())
        except Exception as ex:  # unknown type, bad kwargs: fail loudly, GX would only log it
            raise ValueError(f"expectations[{i}] ({etype}): invalid expectation: {ex}") from None
    return gx.ExpectationSuite(name=name, expectations=built, meta=meta)


def load_suite(path: str | Path) -> gx.ExpectationSuite:
    """Read a GX 1.x suite JSON (``{"name": ..., "expectations": [{"type": ..., "kwargs": {...}}]}``).
    Invalid expectations raise ``ValueError`` naming their index (GX itself would silently drop them)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ValueError(f"Great Expectations suite not found: {p}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"Great Expectations suite {p} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("expectations"), list):
        raise ValueError(f"Great Expectations suite {p}: expected an object with an 'expectations' list")
    name = data.get("name") or data.get("expectation_suite_name") or p.stem
    try:
        return _build_suite(str(name), data["expectations"], data.get("meta"))
    except ValueError as e:
        raise ValueError(f"Great Expectations suite {p}: {e}") from None


def _suite_dicts(suite: gx.ExpectationSuite) -> list[dict[str, Any]]:
    return [
        {"type": e.expectation_type, "kwargs": dict(e.configuration.kwargs), "meta": e.configuration.meta}
        for e in suite.expectations
    ]


# GX's data contexts are not documented as thread-safe: monitors run concurrently take turns validating
_GX_LOCK = threading.Lock()


def validate_with_gx(
    df: DataFrame, suite_path_or_suite: str | Path | gx.ExpectationSuite, result_format: str = "SUMMARY"
) -> list[GxOutcome]:
    """Run a suite on a Spark DataFrame through an ephemeral GX context; outcomes in suite order.

    The suite is copied, so one loaded suite can be run on many DataFrames. GX runs several Spark
    jobs per expectation and caches the batch (its Spark data source's default): the cache is released
    afterwards unless ``df`` was already cached by the caller, so validating window after window does not
    pile cached DataFrames up in the executors' memory."""

    was_cached = df.storageLevel.useMemory or df.storageLevel.useDisk

    src = (
        load_suite(suite_path_or_suite)
        if isinstance(suite_path_or_suite, str | Path)
        else suite_path_or_suite
    )
    tag = uuid.uuid4().hex[:8]
    suite = _build_suite(f"{src.name}_{tag}", _suite_dicts(src))

    with _GX_LOCK:
        res, order = _run_suite(df, suite, tag, result_format, was_cached)
    out: list[GxOutcome] = []
    for r in res.results:
        cfg = r.expectation_config
        result = dict(r.result or {})
        kwargs = {k: v for k, v in dict(cfg.kwargs).items() if k != "batch_id"}
        exc = r.exception_info or {}
        raised = exc.get("raised_exception") if isinstance(exc, dict) else False
        out.append(
            GxOutcome(
                index=order.get(cfg.id, len(order)),
                expectation_type=cfg.type,
                column=kwargs.get("column"),
                success=bool(r.success),
                element_count=result.get("element_count"),
                unexpected_count=result.get("unexpected_count"),
                unexpected_percent=result.get("unexpected_percent"),
                observed_value=_jsonable(result.get("observed_value")),
                kwargs_json=json.dumps(_jsonable(kwargs), sort_keys=True),
                exception=(exc.get("exception_message") if raised else None),
                result_json=json.dumps(_jsonable(r.to_json_dict()), sort_keys=True),
            )
        )
    return sorted(out, key=lambda o: o.index)


def _run_suite(
    df: DataFrame, suite: gx.ExpectationSuite, tag: str, result_format: str, was_cached: bool
) -> tuple[Any, dict[str, int]]:
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    try:  # no tqdm bars in job logs
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context.variables.progress_bars = ProgressBarsConfig(globally=False)
    except Exception:  # pragma: no cover - older/newer GX layouts
        pass
    batch_def = (
        context.data_sources.add_spark(name=f"lakemon_{tag}")
        .add_dataframe_asset(name="data")
        .add_batch_definition_whole_dataframe("whole")
    )
    suite = context.suites.add(suite)
    order = {e.id: i for i, e in enumerate(suite.expectations)}
    vd = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"v_{tag}", data=batch_def, suite=suite)
    )
    try:
        res = vd.run(batch_parameters={"dataframe": df}, result_format=result_format)
    finally:
        if not was_cached:
            df.unpersist()
    return res, order


# ---------------------------------------------------------------------------------------------------
# Translation to built-in checks
# ---------------------------------------------------------------------------------------------------

#: GX kwargs that do not change the counts (presentation only).
_NEUTRAL = {"column", "mostly", "result_format", "catch_exceptions", "include_config", "meta", "batch_id"}

#: expectation type -> (check kind, kwargs it understands besides the neutral ones).
TRANSLATABLE: dict[str, tuple[str, set[str]]] = {
    "expect_column_values_to_not_be_null": ("not_null", set()),
    "expect_column_values_to_be_between": ("between", {"min_value", "max_value", "strict_min", "strict_max"}),
    "expect_column_values_to_be_in_set": ("in_set", {"value_set"}),
    "expect_column_values_to_not_be_in_set": ("not_in_set", {"value_set"}),
    "expect_column_values_to_match_regex": ("matches_regex", {"regex"}),
    "expect_column_values_to_be_unique": ("unique", set()),
}


def _is_plain_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _translate_one(etype: str, kwargs: dict[str, Any], schema: StructType | None) -> tuple[str, dict] | None:
    kind, known = TRANSLATABLE[etype]
    if any(k not in known | _NEUTRAL for k in kwargs):  # row_condition, parse_strings_as_datetimes ...
        return None
    if any(isinstance(v, dict) and "$PARAMETER" in v for v in kwargs.values()):  # suite parameters
        return None
    col = kwargs.get("column")
    if not isinstance(col, str):
        return None
    args: dict[str, Any] = {}
    if kind == "between":
        lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
        if (lo is None and hi is None) or any(v is not None and not _is_plain_number(v) for v in (lo, hi)):
            return None
        if schema is not None:
            from pyspark.sql.types import NumericType

            f = next((f for f in schema.fields if f.name == col), None)
            if f is not None and not isinstance(f.dataType, NumericType):
                return None
        if lo is not None:
            args["min"] = lo
            if kwargs.get("strict_min"):
                args["min_inclusive"] = False
        if hi is not None:
            args["max"] = hi
            if kwargs.get("strict_max"):
                args["max_inclusive"] = False
    elif kind in ("in_set", "not_in_set"):
        vs = kwargs.get("value_set")
        if not isinstance(vs, list | tuple) or not vs:
            return None
        args["values"] = list(vs)
    elif kind == "matches_regex":
        if not isinstance(kwargs.get("regex"), str):
            return None
        args["pattern"] = kwargs["regex"]
    return kind, args


def translate_suite(
    suite: gx.ExpectationSuite | str | Path, schema: StructType | None = None
) -> tuple[list[CheckSpec], list[Any]]:
    """Split a suite into built-in checks (for ``engine: fast``) and the expectations left to GX.

    Translated: not_null, between, in_set, not_in_set, match_regex and unique (column-level, without
    ``row_condition`` or suite parameters). Each check is named after its expectation
    (``<expectation_type>__<column>``, suffixed ``_2``... if repeated) and ``mostly`` becomes
    ``max_fail_ratio = 1 - mostly``. With ``schema``, a ``between`` on a non-numeric column stays
    with GX. Note that ``unique`` is evaluated per window by lakemon, per batch by GX.
    """
    if isinstance(suite, str | Path):
        suite = load_suite(suite)
    checks: list[CheckSpec] = []
    rest: list[Any] = []
    used: set[str] = set()
    for exp in suite.expectations:
        etype = exp.expectation_type
        kwargs = dict(exp.configuration.kwargs)
        tr = _translate_one(etype, kwargs, schema) if etype in TRANSLATABLE else None
        if tr is None:
            rest.append(exp)
            continue
        kind, args = tr
        name = base = f"{etype}__{kwargs['column']}"
        n = 1
        while name in used:
            n += 1
            name = f"{base}_{n}"
        used.add(name)
        mostly = kwargs.get("mostly")
        mfr = 0.0 if mostly is None else min(1.0, max(0.0, round(1.0 - float(mostly), 12)))
        checks.append(
            CheckSpec(name=name, check=kind, column=kwargs["column"], args=args, max_fail_ratio=mfr)  # type: ignore[arg-type]
        )
    return checks, rest
