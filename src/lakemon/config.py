"""Monitor configuration: one YAML file, validated into frozen pydantic models before any data is read.

Every error names the key (``drift.numeric.threshold``) and says what was expected. This module
imports nothing else from lakemon: every other module reads its settings from here.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A monitor config that cannot be used; the message names the key and what was expected."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_REF = re.compile(r"^[A-Za-z0-9_.@\-]+/[A-Za-z0-9_.\-]+$")  # Databricks: scope/key
_GRANULARITY = re.compile(r"^\s*(\d+)\s*(minute|minutes|hour|hours|day|days|week|weeks)\s*$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}


def parse_granularity(text: str) -> timedelta:
    """``'1 day'`` -> ``timedelta(days=1)``; minutes, hours, days and weeks are supported."""
    return parse_duration(text, what="granularity")


def parse_duration(text: str, *, what: str = "a duration", allow_zero: bool = False) -> timedelta:
    """``'<n> minute|hour|day|week'`` as a ``timedelta``; positive unless ``allow_zero``."""
    m = _GRANULARITY.match(text)
    if not m:
        raise ValueError(f"expected '<n> minute|hour|day|week' (e.g. '1 day'), got {text!r}")
    n, unit = int(m.group(1)), m.group(2).rstrip("s")
    if n == 0 and not allow_zero:
        raise ValueError(f"{what} must be positive, got {text!r}")
    return timedelta(seconds=n * _UNIT_SECONDS[unit])


class ModelSpec(_Model):
    name: str = Field(min_length=1)
    version_column: str | None = None


class FeaturesSpec(_Model):
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _no_overlap(self) -> FeaturesSpec:
        both = set(self.numeric) & set(self.categorical)
        if both:
            raise ValueError(f"columns listed as both numeric and categorical: {sorted(both)}")
        return self


class SourceSpec(_Model):
    """The prediction log: a Delta path (local or object store) or a ``catalog.schema.table`` name."""

    table: str = Field(min_length=1)
    timestamp: str
    id: str
    prediction: str
    score: str | None = None
    class_scores: dict[str, str] | None = None
    features: FeaturesSpec | Literal["infer"] = "infer"
    exclude: tuple[str, ...] = ()
    # discovery from the files appended since the last run (Delta log) instead of a scan of the whole log:
    # ``auto`` for sources of at least 256 MB, where the scan costs more than the log reads
    incremental_discovery: Literal["auto", "always", "never"] = "auto"


class LabelsSpec(_Model):
    """Labels in the log itself (``column`` only) or in a separate Delta table joined on the id."""

    column: str
    table: str | None = None
    id: str | None = None
    timestamp: str | None = None
    # the most a label's timestamp precedes its prediction's ('0 minutes': never): a run then reads only the
    # labels files that can hold labels of its windows (Delta's file statistics on ``timestamp``)
    max_lead: str | None = None

    @field_validator("max_lead")
    @classmethod
    def _lead(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v, what="labels.max_lead", allow_zero=True)
        return v

    @model_validator(mode="after")
    def _table_needs_id(self) -> LabelsSpec:
        if self.table is not None and self.id is None:
            raise ValueError("labels.id is required when labels.table is set (the join key)")
        if self.max_lead is not None and (self.table is None or self.timestamp is None):
            raise ValueError("labels.max_lead needs labels.table and labels.timestamp (the labels' own time)")
        return self

    @property
    def lead(self) -> timedelta | None:
        """``max_lead`` parsed, None when not set."""
        return None if self.max_lead is None else parse_duration(self.max_lead, allow_zero=True)


class SliceSpec(_Model):
    """A slice column (one slice per value) or a boolean SQL expression (a true and a false slice)."""

    column: str | None = None
    expression: str | None = None
    name: str | None = None
    max_values: int = Field(default=100, ge=1, le=10_000)
    protected: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> SliceSpec:
        if (self.column is None) == (self.expression is None):
            raise ValueError("a slice needs exactly one of 'column' or 'expression'")
        if self.expression is not None and not self.name:
            raise ValueError("an expression slice needs a 'name' (used as slice_key)")
        if self.name is not None and not _IDENT.match(self.name):
            raise ValueError(f"slice name must be an identifier, got {self.name!r}")
        return self

    @property
    def key(self) -> str:
        """The ``slice_key`` written to every table."""
        return self.name or self.column or ""


def naive_utc(value: datetime) -> datetime:
    """A datetime as lakemon stores and compares them: naive, in UTC (an offset is converted, then dropped)."""
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


class TimeRange(_Model):
    start: datetime
    end: datetime

    @field_validator("start", "end")
    @classmethod
    def _naive_utc(cls, v: datetime) -> datetime:
        return naive_utc(v)

    @model_validator(mode="after")
    def _ordered(self) -> TimeRange:
        if self.end <= self.start:
            raise ValueError("range.end must be after range.start")
        return self


class BaselineSpec(_Model):
    """The reference: a Delta table (e.g. the training set) or a fixed time range of the log."""

    table: str | None = None
    range: TimeRange | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> BaselineSpec:
        if (self.table is None) == (self.range is None):
            raise ValueError("baseline needs exactly one of 'table' or 'range'")
        return self


class OutputSpec(_Model):
    """Where the monitoring tables live: a folder of Delta tables, or a catalog + schema."""

    path: str | None = None
    catalog: str | None = None
    schema_: str | None = Field(default=None, alias="schema")
    # every n-th run of a monitor compacts the tables' small files (one per table per run); 0: never
    compact_every: int = Field(default=50, ge=0)

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _one_kind(self) -> OutputSpec:
        if (self.path is None) == (self.schema_ is None):
            raise ValueError("output needs exactly one of 'path' or 'schema' (with optional 'catalog')")
        return self


class MlflowSpec(_Model):
    experiment: str = Field(min_length=1)
    tracking_uri: str | None = None
    enabled: bool = True


# ---------------------------------------------------------------------------------------------------
# Quality
# ---------------------------------------------------------------------------------------------------

CheckKind = Literal[
    "not_null",
    "null_ratio_below",
    "between",
    "in_set",
    "not_in_set",
    "matches_regex",
    "unique",
    "expression",
    "schema",
    "freshness",
    "volume",
    "no_nan_or_inf",
    "score_in_unit_interval",
]


class CheckSpec(_Model):
    """One built-in check. ``args`` holds the rule's own arguments (``min``, ``max``, ``values`` ...)."""

    name: str | None = None
    check: CheckKind
    column: str | None = None
    columns: tuple[str, ...] = ()
    args: dict[str, Any] = Field(default_factory=dict)
    severity: Literal["warn", "error"] = "error"
    max_fail_ratio: float = Field(default=0.0, ge=0.0, le=1.0)
    table: Literal["predictions", "labels"] = "predictions"

    @property
    def check_name(self) -> str:
        """Stable name: given, or ``<check>_<column>``."""
        if self.name:
            return self.name
        target = self.column or "_".join(self.columns) or "table"
        return f"{self.check}_{target}"


class SamplesSpec(_Model):
    limit: int = Field(default=20, ge=0, le=10_000)
    columns: tuple[str, ...] | None = None


class QualitySpec(_Model):
    checks: tuple[CheckSpec, ...] = ()
    great_expectations: tuple[str, ...] = ()
    engine: Literal["fast", "great_expectations"] = "great_expectations"
    samples: SamplesSpec = SamplesSpec()
    default_checks: bool = True

    @model_validator(mode="after")
    def _unique_names(self) -> QualitySpec:
        names = [c.check_name for c in self.checks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"check names must be unique, repeated: {dup}")
        return self


# ---------------------------------------------------------------------------------------------------
# Performance
# ---------------------------------------------------------------------------------------------------


class RankingSpec(_Model):
    k: tuple[int, ...] = (5, 10)
    catalog_size: int | None = None


class PerformanceSpec(_Model):
    enabled: bool = True
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    positive_label: str = "1"
    classes: tuple[str, ...] = ()
    min_labeled: int = Field(default=100, ge=1)
    histogram_bins: int = Field(default=1000, ge=10, le=100_000)
    calibration_bins: int = Field(default=10, ge=2, le=1000)
    residual_quantiles: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)
    estimate: bool = True
    ranking: RankingSpec = RankingSpec()


# ---------------------------------------------------------------------------------------------------
# Drift
# ---------------------------------------------------------------------------------------------------

NumericStatistic = Literal["wasserstein_normalized", "ks", "psi", "js_distance", "wasserstein"]
CategoricalStatistic = Literal["js_distance", "psi", "chi2", "tv_distance", "l_infinity"]


class DriftRule(_Model):
    statistic: Literal[
        NumericStatistic, CategoricalStatistic
    ]  # the column's kind is checked by MonitorConfig
    threshold: float = Field(gt=0)


class DriftSpec(_Model):
    """Drift settings. Defaults follow the major platforms: normalized Wasserstein 0.1 for numeric
    columns and Jensen-Shannon distance 0.1 for categorical ones, decided on effect size."""

    enabled: bool = True
    references: tuple[Literal["baseline", "previous_window"], ...] = ("baseline", "previous_window")
    numeric_statistic: NumericStatistic = "wasserstein_normalized"
    numeric_threshold: float = Field(default=0.1, gt=0)
    categorical_statistic: CategoricalStatistic = "js_distance"
    categorical_threshold: float = Field(default=0.1, gt=0)
    columns: dict[str, DriftRule] = Field(default_factory=dict)
    mode: Literal["distance", "robust", "pvalue"] = "distance"
    alpha: float = Field(default=0.05, gt=0, lt=1)
    correction: Literal["bh", "bonferroni", "none"] = "bh"
    min_samples: int = Field(default=100, ge=1)
    sketch_k: int = Field(default=1000, ge=8, le=65535)
    quantile_points: int = Field(default=1001, ge=11, le=10001)
    psi_bins: int = Field(default=10, ge=2, le=1000)
    top_n: int = Field(default=50, ge=1, le=10_000)
    include_prediction: bool = True
    include_label: bool = True

    @model_validator(mode="after")
    def _robust_has_critical_values(self) -> DriftSpec:
        if self.mode != "robust":
            return self
        used = {
            "numeric_statistic": self.numeric_statistic,
            "categorical_statistic": self.categorical_statistic,
            **{f"columns.{c}.statistic": r.statistic for c, r in self.columns.items()},
        }
        # robust mode subtracts the statistic's critical value under no drift; these two have none
        wrong = [f"drift.{k}: {v}" for k, v in used.items() if v in ("wasserstein", "chi2")]
        if wrong:
            raise ValueError(
                "mode robust needs a statistic with a critical value, not "
                + ", ".join(wrong)
                + " (numeric: wasserstein_normalized, ks, psi, js_distance; categorical: js_distance, psi, "
                "tv_distance, l_infinity)"
            )
        return self


# ---------------------------------------------------------------------------------------------------
# Alerts
# ---------------------------------------------------------------------------------------------------

Signal = Literal["quality", "performance", "drift", "volume", "freshness", "estimated_performance"]


class ConditionSpec(_Model):
    """``above``/``below`` an absolute value; ``relative_drop``/``relative_rise`` vs the baseline
    value (a fraction, 0.05 = 5%); ``anomaly``: outside mean +/- k std of the last ``history`` windows."""

    kind: Literal["above", "below", "relative_drop", "relative_rise", "anomaly", "flag"]
    value: float | None = None
    k: float = 3.0
    history: int = Field(default=14, ge=2)

    @model_validator(mode="after")
    def _needs_value(self) -> ConditionSpec:
        if self.kind in ("above", "below", "relative_drop", "relative_rise") and self.value is None:
            raise ValueError(f"condition '{self.kind}' needs a 'value'")
        return self


class PersistenceSpec(_Model):
    m: int = Field(default=1, ge=1)
    n: int = Field(default=1, ge=1)
    resolve_after: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _m_le_n(self) -> PersistenceSpec:
        if self.m > self.n:
            raise ValueError("persistence.m must be <= persistence.n")
        return self


class AlertRule(_Model):
    name: str = Field(min_length=1)
    signal: Signal
    metric: str = "*"
    columns: tuple[str, ...] = ("*",)
    slices: tuple[str, ...] = ("*",)
    condition: ConditionSpec = ConditionSpec(kind="flag")
    severity: Literal["info", "warning", "critical"] = "warning"
    persistence: PersistenceSpec = PersistenceSpec()
    escalate_after: int | None = Field(default=None, ge=1)
    escalate_to: Literal["warning", "critical"] = "critical"


class SinkSpec(_Model):
    """A webhook. The URL (and a PagerDuty routing key) come from an environment variable or a
    Databricks secret (``secret: scope/key``), never from the config file itself."""

    name: str = Field(min_length=1)
    kind: Literal["generic", "slack", "pagerduty"] = "generic"
    url_env: str | None = None
    url_secret: str | None = None
    routing_key_env: str | None = None
    routing_key_secret: str | None = None
    min_severity: Literal["info", "warning", "critical"] = "warning"
    timeout_s: float = Field(default=5.0, gt=0)
    retries: int = Field(default=3, ge=0, le=10)
    backoff_s: float = Field(default=0.5, ge=0)

    @model_validator(mode="after")
    def _url_source(self) -> SinkSpec:
        if (self.url_env is None) == (self.url_secret is None):
            raise ValueError("a sink needs exactly one of 'url_env' or 'url_secret'")
        if self.kind == "pagerduty" and (self.routing_key_env is None) == (self.routing_key_secret is None):
            raise ValueError(
                "a pagerduty sink needs exactly one of 'routing_key_env' or 'routing_key_secret'"
            )
        # the values are names, never the secrets: an error must not repeat what was given (a URL pasted
        # into url_env would otherwise end up in logs, the alerts table and MLflow)
        for key in ("url_env", "routing_key_env"):
            value = getattr(self, key)
            if value is not None and not _IDENT.match(value):
                raise ValueError(
                    f"'{key}' must be the name of an environment variable (letters, digits, '_'), not its value"
                )
        for key in ("url_secret", "routing_key_secret"):
            value = getattr(self, key)
            if value is not None and not _SECRET_REF.match(value):
                raise ValueError(f"'{key}' must be a Databricks secret reference 'scope/key', not its value")
        return self


class PrometheusSpec(_Model):
    pushgateway_env: str | None = None
    pushgateway: str | None = None
    job: str = "lakemon"
    timeout_s: float = Field(default=5.0, gt=0)


class AlertsSpec(_Model):
    rules: tuple[AlertRule, ...] = ()
    default_rules: bool = True
    sinks: tuple[SinkSpec, ...] = ()
    prometheus: PrometheusSpec | None = None

    @model_validator(mode="after")
    def _unique(self) -> AlertsSpec:
        names = [r.name for r in self.rules]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"alert rule names must be unique, repeated: {dup}")
        return self


# ---------------------------------------------------------------------------------------------------
# The monitor
# ---------------------------------------------------------------------------------------------------


class MonitorConfig(_Model):
    """One monitor: what to read, how to cut it into windows and slices, what to compute, where to write."""

    monitor: Annotated[str, Field(min_length=1)]
    model: ModelSpec
    problem_type: Literal["binary", "multiclass", "regression", "ranking"]
    source: SourceSpec
    labels: LabelsSpec | None = None
    granularity: str = "1 day"
    slices: tuple[SliceSpec, ...] = ()
    baseline: BaselineSpec | None = None
    output: OutputSpec
    mlflow: MlflowSpec
    start: datetime | None = None
    quality: QualitySpec = QualitySpec()
    performance: PerformanceSpec = PerformanceSpec()
    drift: DriftSpec = DriftSpec()
    alerts: AlertsSpec = AlertsSpec()

    @field_validator("monitor")
    @classmethod
    def _monitor_name(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9_.\-]+$", v):
            raise ValueError("monitor name may only use letters, digits, '_', '-', '.'")
        return v

    @field_validator("granularity")
    @classmethod
    def _granularity(cls, v: str) -> str:
        parse_granularity(v)
        return v.strip()

    @field_validator("start")
    @classmethod
    def _naive_utc(cls, v: datetime | None) -> datetime | None:
        return None if v is None else naive_utc(v)

    @model_validator(mode="after")
    def _consistent(self) -> MonitorConfig:
        keys = [s.key for s in self.slices]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"slices: slice keys must be unique, repeated: {dup}")
        if (
            self.problem_type == "multiclass"
            and not self.source.class_scores
            and not self.performance.classes
        ):
            raise ValueError(
                "source.class_scores or performance.classes is required for problem_type multiclass"
            )
        if self.problem_type == "binary" and self.source.score is None:
            raise ValueError(
                "source.score is required for problem_type binary (probability of the positive class)"
            )
        features = self.source.features
        if isinstance(features, FeaturesSpec):
            # a statistic of the other kind would never be computed for the column: no verdict, ever
            for column, rule in self.drift.columns.items():
                kind, allowed = (
                    ("numeric", get_args(NumericStatistic))
                    if column in features.numeric
                    else ("categorical", get_args(CategoricalStatistic))
                    if column in features.categorical
                    else (None, ())
                )
                if kind is not None and rule.statistic not in allowed:
                    raise ValueError(
                        f"drift.columns.{column}.statistic: {rule.statistic} is not computed for a {kind} column "
                        f"(one of {', '.join(allowed)})"
                    )
        return self

    @property
    def window(self) -> timedelta:
        """The window length parsed from ``granularity``."""
        return parse_granularity(self.granularity)

    def config_hash(self) -> str:
        """A short stable hash of the whole validated config (logged to MLflow, stored in runs)."""
        payload = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not isinstance(p, int) or True)
        key = loc or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not part of the monitor config schema; check its spelling)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"config key '{key}': {msg}")
    return f"invalid monitor config {source}:\n  " + "\n  ".join(lines)


def parse_config(data: Any, source: str = "<dict>") -> MonitorConfig:
    """Validate a mapping (parsed YAML) into a :class:`MonitorConfig`, or raise :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"invalid monitor config {source}: expected a mapping at the top level")
    try:
        return MonitorConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> MonitorConfig:
    """Read a YAML monitor config and validate it. Relative table/output paths stay as written."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"monitor config not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"monitor config {p} is not valid YAML: {err}") from None
    if overrides and isinstance(data, dict):
        data = {**data, **overrides}
    return parse_config(data, str(p))


def config_files(path: str | Path) -> list[Path]:
    """A config file, or every ``*.yaml``/``*.yml`` of a folder (sorted), for many-monitor runs."""
    p = Path(path)
    if p.is_dir():
        return sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
    return [p]
