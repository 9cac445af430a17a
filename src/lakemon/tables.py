"""The monitoring tables: every schema declared once, as DDL strings (no pyspark import needed here).

Long/narrow tables, one row per window x slice x column x metric, keyed by
``(monitor, window_start, window_end, granularity, slice_key, slice_value)``; ``slice_key`` and
``slice_value`` are both NULL for the whole population. A table ``T`` of a folder output lives at
``<output>/<T>``; with a catalog output at ``<catalog>.<schema>.<T>``.
"""

from __future__ import annotations

from dataclasses import dataclass

WINDOW_KEY = (
    "monitor STRING NOT NULL, window_start TIMESTAMP NOT NULL, window_end TIMESTAMP NOT NULL, "
    "granularity STRING NOT NULL, slice_key STRING, slice_value STRING"
)
RUN_KEY = "run_id STRING NOT NULL, computed_at TIMESTAMP NOT NULL"


@dataclass(frozen=True)
class TableDef:
    """A monitoring table: its name, its columns as DDL, whether its rows are keyed by window, the rough
    size of a row in a data file (sizes a write's files: a run's rows of a table in one file), and the
    columns Delta keeps file statistics on (``delta.dataSkippingStatsColumns``).

    Statistics only help on columns a file's rows share a narrow range of: each run writes its own windows
    of its own monitor, so those are the columns the run's reads and ``replaceWhere`` filter on. Delta's
    default (the first 32 columns) makes every read of the table parse and filter statistics of every column,
    a generated class of ~100 kB that is compiled afresh by every run (its window bounds are literals in it).

    ``row_tracking``: Delta row tracking is on (``delta.enableRowTracking``), so a row's
    ``_metadata.row_commit_version`` says which commit last wrote it (``runs``: the order in which runs began).
    ``added_columns``: nullable columns declared after the table's first release; a table without them gets
    them at start (``ALTER TABLE ADD COLUMNS``) instead of being refused as altered by hand.
    """

    name: str
    ddl: str
    windowed: bool = True
    row_bytes: int = 256
    stats_columns: tuple[str, ...] = ("monitor", "granularity", "window_start")
    row_tracking: bool = False
    added_columns: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        """Column names in declaration order."""
        return [part.strip().split()[0] for part in _split_ddl(self.ddl)]


def _split_ddl(ddl: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in ddl:
        if ch in "<(":
            depth += 1
        elif ch in ">)":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur))
    return parts


PROFILE_METRICS = TableDef(
    "profile_metrics",
    f"{WINDOW_KEY}, column_name STRING NOT NULL, metric STRING NOT NULL, value DOUBLE, {RUN_KEY}",
)

QUALITY_RESULTS = TableDef(
    "quality_results",
    f"{WINDOW_KEY}, check STRING NOT NULL, kind STRING NOT NULL, table_name STRING NOT NULL, "
    "column_name STRING, rows_checked BIGINT, rows_failed BIGINT, fail_ratio DOUBLE, "
    "max_fail_ratio DOUBLE, passed BOOLEAN, severity STRING NOT NULL, engine STRING NOT NULL, "
    f"details STRING, {RUN_KEY}",
)

QUALITY_SAMPLES = TableDef(
    "quality_samples",
    f"{WINDOW_KEY}, check STRING NOT NULL, column_name STRING, sample_index INT NOT NULL, "
    f"row_json STRING NOT NULL, {RUN_KEY}",
)

PERFORMANCE_METRICS = TableDef(
    "performance_metrics",
    f"{WINDOW_KEY}, metric STRING NOT NULL, class STRING, value DOUBLE, row_count BIGINT NOT NULL, "
    f"labeled_count BIGINT NOT NULL, reason STRING, {RUN_KEY}",
)

DRIFT_METRICS = TableDef(
    "drift_metrics",
    f"{WINDOW_KEY}, column_name STRING NOT NULL, column_type STRING NOT NULL, statistic STRING NOT NULL, "
    "value DOUBLE, p_value DOUBLE, threshold DOUBLE, drifted BOOLEAN, reference STRING NOT NULL, "
    f"reference_window_start TIMESTAMP, current_count BIGINT, reference_count BIGINT, reason STRING, {RUN_KEY}",
)

SKETCHES = TableDef(
    "sketches",
    f"{WINDOW_KEY}, column_name STRING NOT NULL, column_type STRING NOT NULL, row_count BIGINT NOT NULL, "
    "non_null BIGINT NOT NULL, nulls BIGINT NOT NULL, value_sum DOUBLE, value_sum_sq DOUBLE, "
    "min_value DOUBLE, max_value DOUBLE, kll BINARY, hll BINARY, frequencies MAP<STRING, BIGINT>, "
    f"{RUN_KEY}",
    row_bytes=8192,  # a KLL sketch is 3 KB at k=200, 12 KB at k=1000
)

ALERTS = TableDef(
    "alerts",
    f"{WINDOW_KEY}, alert_id STRING NOT NULL, rule STRING NOT NULL, signal STRING NOT NULL, "
    "metric STRING NOT NULL, column_name STRING, value DOUBLE, threshold DOUBLE, severity STRING NOT NULL, "
    "status STRING NOT NULL, consecutive_windows INT NOT NULL, first_window_start TIMESTAMP NOT NULL, "
    f"last_window_start TIMESTAMP NOT NULL, notify STRING NOT NULL, delivery STRING, {RUN_KEY}",
)

NOTIFICATIONS = TableDef(
    "notifications",
    "monitor STRING NOT NULL, granularity STRING NOT NULL, alert_id STRING NOT NULL, "
    "window_start TIMESTAMP NOT NULL, window_end TIMESTAMP NOT NULL, slice_key STRING, slice_value STRING, "
    "rule STRING NOT NULL, signal STRING NOT NULL, metric STRING NOT NULL, column_name STRING, "
    "severity STRING NOT NULL, notify STRING NOT NULL, first_window_start TIMESTAMP, kind STRING NOT NULL, "
    "received BOOLEAN NOT NULL, delivery STRING, seq INT NOT NULL, run_id STRING NOT NULL, sent_at TIMESTAMP NOT NULL",
    # append-only: what was sent, whatever happens later to the windows (alerts rows are replaced with them)
    windowed=False,
    stats_columns=("monitor", "granularity", "sent_at"),
    # which notification of an alert is the newest: the commit versions order the runs' appends, clocks may not
    row_tracking=True,
)

WINDOW_STATE = TableDef(
    "window_state",
    f"{WINDOW_KEY}, row_count BIGINT NOT NULL, labeled_count BIGINT NOT NULL, source_fingerprint BIGINT, "
    f"label_fingerprint BIGINT, {RUN_KEY}",
)

SOURCE_WINDOWS = TableDef(
    "source_windows",
    "monitor STRING NOT NULL, granularity STRING NOT NULL, definition STRING NOT NULL, source_version BIGINT NOT NULL, "
    f"window_start TIMESTAMP NOT NULL, row_count BIGINT NOT NULL, source_fingerprint BIGINT, {RUN_KEY}",
    windowed=False,
    stats_columns=("monitor", "granularity", "definition", "window_start"),
)

BASELINE_PROFILE = TableDef(
    "baseline_profile",
    "monitor STRING NOT NULL, baseline_id STRING NOT NULL, definition STRING NOT NULL, source_version BIGINT, "
    "slice_key STRING, slice_value STRING, column_name STRING NOT NULL, column_type STRING NOT NULL, "
    "row_count BIGINT NOT NULL, non_null BIGINT NOT NULL, nulls BIGINT NOT NULL, value_sum DOUBLE, "
    "value_sum_sq DOUBLE, min_value DOUBLE, max_value DOUBLE, kll BINARY, hll BINARY, "
    "frequencies MAP<STRING, BIGINT>, histogram_pos ARRAY<BIGINT>, histogram_neg ARRAY<BIGINT>, metrics MAP<STRING, DOUBLE>, "
    "computed_at TIMESTAMP NOT NULL",
    windowed=False,
    row_bytes=8192,
    stats_columns=("monitor", "baseline_id", "definition"),
)

RUNS = TableDef(
    "runs",
    "run_id STRING NOT NULL, monitor STRING NOT NULL, started_at TIMESTAMP NOT NULL, finished_at TIMESTAMP, "
    "status STRING NOT NULL, rows_read BIGINT, bytes_read BIGINT, windows INT, "
    "window_starts ARRAY<TIMESTAMP>, source_version BIGINT, labels_version BIGINT, config_hash STRING, "
    "mlflow_run_id STRING, phase_seconds MAP<STRING, DOUBLE>, spark_jobs INT, alerts_firing INT, "
    "labels_watermark TIMESTAMP, owner STRING, error STRING, labels_at_watermark BIGINT",
    windowed=False,
    stats_columns=("run_id", "monitor", "started_at", "status"),
    # which of two runs of a monitor inserted its row first: the commit versions order them, clocks may not
    row_tracking=True,
    added_columns=("labels_at_watermark",),
)

ALL_TABLES: tuple[TableDef, ...] = (
    PROFILE_METRICS,
    QUALITY_RESULTS,
    QUALITY_SAMPLES,
    PERFORMANCE_METRICS,
    DRIFT_METRICS,
    SKETCHES,
    ALERTS,
    NOTIFICATIONS,
    WINDOW_STATE,
    SOURCE_WINDOWS,
    BASELINE_PROFILE,
    RUNS,
)
WINDOWED_TABLES: tuple[TableDef, ...] = tuple(t for t in ALL_TABLES if t.windowed)
TABLES_BY_NAME: dict[str, TableDef] = {t.name: t for t in ALL_TABLES}
