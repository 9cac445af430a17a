"""Reading the source tables and writing the monitoring tables (Delta). The only Spark I/O of the library.

Writes replace whole windows in one Delta transaction per table (``replaceWhere`` on the monitor,
granularity and window starts), so a re-run never duplicates rows and a reader never sees half a window.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from lakemon.config import OutputSpec
from lakemon.tables import ALL_TABLES, TableDef

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

log = logging.getLogger(__name__)
T = TypeVar("T")


class SourceError(ValueError):
    """A source table (predictions, labels, baseline) is missing or does not have what the config says."""


class MonitoringTableError(RuntimeError):
    """A monitoring table exists but no longer has the declared schema (e.g. a column dropped by hand)."""


class ConcurrentRunError(RuntimeError):
    """Another run committed conflicting writes (or is running the same monitor); nothing was written."""


IO_THREADS = 4  # concurrent Delta transactions on distinct monitoring tables
TARGET_FILE_BYTES = 128 << 20  # data file size a write aims at (Delta's own OPTIMIZE target is 1 GB)

_TABLE_LOCKS: dict[str, threading.Lock] = {}
_TABLE_LOCKS_GUARD = threading.Lock()


@contextmanager
def table_lock(location: str) -> Iterator[None]:
    """Serialize this process's transactions on one monitoring table.

    Monitors run concurrently in one session share the monitoring tables, which are not partitioned: Delta's
    conflict check would make two of their commits on the same table fail each other and be retried. Taking
    turns per table inside the process avoids that; other processes are still handled by the conflict retry.
    """
    with _TABLE_LOCKS_GUARD:
        lock = _TABLE_LOCKS.setdefault(location, threading.Lock())
    with lock:
        yield


def concurrently(
    spark: SparkSession, fn: Callable[..., T], calls: Sequence[tuple[object, ...]], threads: int = IO_THREADS
) -> list[T]:
    """``fn(*args)`` for every ``args`` in ``calls``, in threads; results in order.

    For independent work whose cost is mostly latency: Delta transactions on distinct tables (log replay,
    file listing, the commit), or whole monitor runs. Each call inherits the caller's Spark local properties
    (the run's job group: job counts, cancellation) in a copy of its own, so a call may set its own job
    group, and the session's tags. Every call finishes before the first failure, if any, is raised.
    """
    from concurrent.futures import ThreadPoolExecutor, wait

    from pyspark import inheritable_thread_target

    if len(calls) <= 1 or threads <= 1:
        return [fn(*args) for args in calls]
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lakemon-io") as pool:
        # wrapped per call: one wrapper's properties would be one object shared by every thread
        futures = [pool.submit(inheritable_thread_target(spark)(fn), *args) for args in calls]
        wait(futures)
    return [f.result() for f in futures]


_GLOB = re.compile(r"[*?\[\]{}]")
_PATH_LIKE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*:/|/|\.|~)")


def is_path(table: str) -> bool:
    """A path (local, ``dbfs:/``, ``s3://`` ...) rather than a ``catalog.schema.table`` name."""
    return bool(_PATH_LIKE.match(table)) or "/" in table


def read_table(
    spark: SparkSession, table: str, role: str = "source", version: int | None = None
) -> DataFrame:
    """Read a Delta table by path or by name (a path at ``version`` when given); a clear :class:`SourceError`
    when it does not exist."""
    return read_table_detail(spark, table, role, version)[0]


def read_table_detail(
    spark: SparkSession, table: str, role: str = "source", version: int | None = None
) -> tuple[DataFrame, dict[str, Any] | None]:
    """:func:`read_table` and the table's :func:`table_detail`, read once (for a path it also resolves the
    snapshot: a damaged log fails here, named, not later in the middle of a run)."""
    try:
        if is_path(table):
            reader = spark.read.format("delta")
            if version is not None:  # pinned: every query of the run reads the version it records
                reader = reader.option("versionAsOf", int(version))
            df = reader.load(table)
            row = spark.sql(f"DESCRIBE DETAIL delta.`{table}`").first()  # one row
            return df, row.asDict(recursive=True) if row else None
        df = spark.read.table(table)
    except Exception as err:  # AnalysisException and friends: not a Delta table, no such path
        msg = str(err).splitlines()[0][:300]
        raise SourceError(f"{role} table '{table}' cannot be read as a Delta table: {msg}") from None
    return df, table_detail(spark, table)


@dataclass(frozen=True)
class Scan:
    """A file scan of a SQL execution that read data files: its node's description, files and their bytes."""

    description: str
    files: int
    bytes: int


def _sql_store(spark: SparkSession) -> Any:
    return spark._jsparkSession.sharedState().statusStore()  # type: ignore[attr-defined]  # kept with the UI off


def job_count(spark: SparkSession, group: str) -> int:
    """Spark jobs started so far in job group ``group``, in one call to the JVM.

    PySpark's ``statusTracker().getJobIdsForGroup`` copies the ids into a list one JVM call per job; a run reads
    the count at every phase's start and end, ~2,500 calls a run."""
    return len(spark.sparkContext._jsc.statusTracker().getJobIdsForGroup(group))  # type: ignore[union-attr]


def last_execution_id(spark: SparkSession) -> int:
    """The id of the session's latest SQL execution (-1 when none), to count :func:`file_scans` from."""
    ids = _sql_store(spark).executionsList()  # in the order of their ids
    n = ids.size()
    return int(ids.apply(n - 1).executionId()) if n else -1


def file_scans(spark: SparkSession, since: int, descriptions: Sequence[str] | None = None) -> list[Scan]:
    """The file scans that read data files in the session's SQL executions after ``since``, from Spark's SQL
    status store (executed plans and their metrics); with ``descriptions``, only in executions described by
    one of them exactly (the jobs' description: a run's phase). Reads of Delta's transaction logs are left out,
    and reads of cached rows are not file scans. Bytes are the sizes of the files read, whatever columns were
    read of them; a table read twice counts twice.
    """
    store = _sql_store(spark)
    wanted = set(descriptions) if descriptions is not None else None
    out: list[Scan] = []
    execs = store.executionsList()
    for i in range(execs.size() - 1, -1, -1):  # newest first, down to ``since``
        ex = execs.apply(i)
        eid = ex.executionId()
        if eid <= since:
            break
        if wanted is not None and ex.description() not in wanted:
            continue
        values = store.executionMetrics(eid)
        nodes = store.planGraph(eid).allNodes()
        for j in range(nodes.size()):
            node = nodes.apply(j)
            if not node.name().startswith("Scan "):
                continue
            desc = node.desc()
            if "_delta_log" in desc or "DeltaLogFileIndex" in desc:
                continue
            metric: dict[str, str | None] = {}
            ms = node.metrics()
            for k in range(ms.size()):
                m = ms.apply(k)
                raw = values.get(m.accumulatorId())
                metric[m.name()] = raw.get() if raw.isDefined() else None
            files = metric_number(metric.get("number of files read")) or 0
            if files:  # else planned but skipped (no file matched, or the stage was not run)
                out.append(Scan(desc, files, round(metric_bytes(metric.get("size of files read")))))
    return out


def metric_number(text: str | None) -> int | None:
    """A count metric as Spark's status store renders it (``"1,234"``); None when absent."""
    if not text:
        return None
    digits = text.replace(",", "").split()[0]
    return int(digits) if digits.isdigit() else None


def metric_bytes(text: str | None) -> float:
    """A size metric as Spark renders it: ``"12.5 MiB"``, or a total with its breakdown after a newline."""
    if not text:
        return 0.0
    first = text.strip().splitlines()[0].split()
    if not first:
        return 0.0
    if first[0] == "total" and len(first) >= 3:  # "total (min, med, max (stageId: taskId))" then the values
        first = text.strip().splitlines()[1].split()
    units = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
    try:
        return (
            float(first[0].replace(",", "")) * units.get(first[1], 1) if len(first) > 1 else float(first[0])
        )
    except ValueError:
        return 0.0


def table_version(spark: SparkSession, table: str) -> int | None:
    """The Delta version currently read (for ``runs.source_version`` and baseline keys)."""
    from delta.tables import DeltaTable

    try:
        dt = DeltaTable.forPath(spark, table) if is_path(table) else DeltaTable.forName(spark, table)
        row = dt.history(1).select("version").first()
        return int(row[0]) if row else None
    except Exception:
        return None


def _sql_ref(table: str) -> str:
    return f"delta.`{table}`" if is_path(table) else table


def table_detail(spark: SparkSession, table: str) -> dict[str, Any] | None:
    """``DESCRIBE DETAIL`` of a Delta table (``sizeInBytes`` for the cost recorded per run, ``partitionColumns``,
    ``properties``), or None when it cannot be read."""
    try:
        row = spark.sql(f"DESCRIBE DETAIL {_sql_ref(table)}").first()  # one row
        return row.asDict(recursive=True) if row else None
    except Exception:
        return None


@dataclass(frozen=True)
class Appended:
    """What a Delta table gained between two versions when it only gained files."""

    files: list[str]
    rows_before: int
    rows_after: int


def appended_files(spark: SparkSession, table: str, since: int, version: int) -> Appended | None:
    """The data files a Delta table gained from version ``since`` to ``version``, with its row counts at both,
    when every data file of ``since`` is still part of ``version`` (appends only: no file rewritten or removed
    by an update, delete, merge, optimize or restore). None otherwise, or when ``since`` can no longer be read
    (its log was cleaned up).

    Rows deleted through deletion vectors keep their file: the caller compares ``rows_after`` with
    ``rows_before`` plus the rows of the new files. The file lists and both counts come from the Delta log
    (file statistics), not from a scan.
    """
    ref = _sql_ref(table)
    try:
        before = spark.sql(f"SELECT * FROM {ref} VERSION AS OF {int(since)}")
        after = spark.sql(f"SELECT * FROM {ref} VERSION AS OF {int(version)}")
        old, new = set(before.inputFiles()), after.inputFiles()
        if not old.issubset(new) or any(_GLOB.search(f) for f in new):  # paths are read as patterns
            return None
        return Appended([f for f in new if f not in old], before.count(), after.count())
    except Exception as err:  # time travel refused (log or files cleaned up), unreadable version
        log.info(
            "appended files of '%s' since version %s unknown: %s",
            table,
            since,
            str(err).splitlines()[0][:200],
        )
        return None


def read_files(spark: SparkSession, files: Sequence[str], schema: StructType) -> DataFrame:
    """Some data files of a Delta table (from :func:`appended_files`), read with the table's ``schema``.

    Only for tables without column mapping (their files hold the logical column names) and only for columns
    that are not partition columns (those live in the log, not in the files): the caller checks both.
    """
    return spark.read.schema(schema).parquet(*files)


def require_columns(schema: StructType, columns: Iterable[tuple[str, str]], table: str) -> None:
    """Raise :class:`SourceError` naming the table, the column and the config key when one is missing.

    ``columns`` holds ``(column, config_key)`` pairs.
    """
    names = {f.name for f in schema.fields}
    missing = [(c, key) for c, key in columns if c and c not in names]
    if missing:
        parts = ", ".join(f"'{c}' (config key {key})" for c, key in missing)
        raise SourceError(f"table '{table}' has no column {parts}; it has: {sorted(names)}")


# ---------------------------------------------------------------------------------------------------
# Monitoring tables
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    """Where the monitoring tables live, resolved from the config's ``output``."""

    spec: OutputSpec

    def location(self, table: TableDef | str) -> str:
        """Path (folder output) or qualified name (catalog output) of a monitoring table."""
        name = table if isinstance(table, str) else table.name
        if self.spec.path is not None:
            return f"{self.spec.path.rstrip('/')}/{name}"
        prefix = f"{self.spec.catalog}." if self.spec.catalog else ""
        return f"{prefix}{self.spec.schema_}.{name}"

    def ref(self, table: TableDef | str) -> str:
        """SQL reference: ``delta.`path``` or the qualified name."""
        loc = self.location(table)
        return f"delta.`{loc}`" if self.spec.path is not None else loc

    def delta_table(self, spark: SparkSession, table: TableDef) -> Any:
        """The monitoring table as a ``delta.tables.DeltaTable`` (for MERGE and OPTIMIZE)."""
        from delta.tables import DeltaTable

        loc = self.location(table)
        return (
            DeltaTable.forPath(spark, loc) if self.spec.path is not None else DeltaTable.forName(spark, loc)
        )

    def read(self, spark: SparkSession, table: TableDef) -> DataFrame:
        """Read a monitoring table."""
        loc = self.location(table)
        if self.spec.path is not None:
            return spark.read.format("delta").load(loc)
        return spark.read.table(loc)


def _type_key(dtype: str) -> str:
    return dtype.lower().replace(" ", "")


def ensure_tables(spark: SparkSession, output: Output, tables: Sequence[TableDef] = ALL_TABLES) -> None:
    """Create the monitoring tables that do not exist; check the schema of those that do.

    A table altered by hand (a column dropped or retyped) raises :class:`MonitoringTableError` at start,
    before anything is computed or written.
    """
    from pyspark.sql.types import StructType

    def one(table: TableDef) -> None:
        with table_lock(output.location(table)):
            check_or_create(table)

    def check_or_create(table: TableDef) -> None:
        expected = StructType.fromDDL(table.ddl)
        frame = _frame_if_exists(spark, output, table)
        if frame is not None:
            have = {f.name: _type_key(f.dataType.simpleString()) for f in frame.schema.fields}
            added = [f for f in expected.fields if f.name in table.added_columns and f.name not in have]
            if added:
                _add_columns(spark, output, table, added)
                have.update({f.name: _type_key(f.dataType.simpleString()) for f in added})
            problems = []
            for f in expected.fields:
                if f.name not in have:
                    problems.append(f"column '{f.name}' is missing")
                elif have[f.name] != _type_key(f.dataType.simpleString()):
                    problems.append(
                        f"column '{f.name}' is {have[f.name]}, expected {f.dataType.simpleString()}"
                    )
            if problems:
                raise MonitoringTableError(
                    f"monitoring table '{output.location(table)}' does not match its declared schema: "
                    + "; ".join(problems)
                    + ". Restore it (Delta time travel: RESTORE TABLE ... TO VERSION AS OF n) or move it away."
                )
            if table.row_tracking:
                _enable_row_tracking(spark, output, table, frame)
            return
        try:
            # DDL commits the table's metadata without running a write job (2.5x faster than an empty write)
            props = [f"'delta.dataSkippingStatsColumns' = '{','.join(table.stats_columns)}'"]
            if table.row_tracking:
                props.append("'delta.enableRowTracking' = 'true'")
            spark.sql(
                f"CREATE TABLE IF NOT EXISTS {output.ref(table)} ({table.ddl}) USING DELTA "
                f"TBLPROPERTIES ({', '.join(props)})"
            )
        except Exception:
            # Another first run created it at the same moment (Delta protocol/metadata conflict): fine if
            # the table is now there with the declared schema.
            if _frame_if_exists(spark, output, table) is None:
                raise
            check_or_create(table)
        log.debug("created monitoring table %s", output.location(table))

    concurrently(spark, one, [(t,) for t in tables])


def _add_columns(spark: SparkSession, output: Output, table: TableDef, fields: Sequence[Any]) -> None:
    """Add columns declared after a table was created (by an earlier lakemon): nullable, so its rows keep
    their values and read NULL there."""
    cols = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in fields)
    log.info("adding column(s) %s to monitoring table %s", cols, output.location(table))
    try:
        spark.sql(f"ALTER TABLE {output.ref(table)} ADD COLUMNS ({cols})")
    except Exception:
        # another run added them at the same moment: fine if they are there now
        now = _frame_if_exists(spark, output, table)
        if now is None or not {f.name for f in fields} <= set(now.columns):
            raise


def _has_row_tracking(frame: DataFrame) -> bool:
    """Whether a Delta table's rows (``frame``, its read) carry ``_metadata.row_commit_version`` (Delta row
    tracking on); no job."""
    metadata = frame.select("_metadata").schema["_metadata"].dataType
    return "row_commit_version" in metadata.fieldNames()  # type: ignore[attr-defined]


def _enable_row_tracking(spark: SparkSession, output: Output, table: TableDef, frame: DataFrame) -> None:
    """Turn Delta row tracking on for a table created without it (by lakemon before row tracking was declared):
    once per table, a protocol upgrade and a commit that numbers the existing rows. ``frame``: its read."""
    if _has_row_tracking(frame):
        return
    log.info("enabling Delta row tracking on monitoring table %s", output.location(table))
    try:
        spark.sql(f"ALTER TABLE {output.ref(table)} SET TBLPROPERTIES ('delta.enableRowTracking' = 'true')")
    except Exception:
        # another run enabled it at the same moment (a metadata conflict): fine if it is on now
        now = _frame_if_exists(spark, output, table)
        if now is None or not _has_row_tracking(now):
            raise


def _frame_if_exists(spark: SparkSession, output: Output, table: TableDef) -> DataFrame | None:
    """The table read (its schema, its hidden ``_metadata``), or None when there is no Delta table there yet
    (one log read)."""
    loc = output.location(table)
    if output.spec.path is None and not spark.catalog.tableExists(loc):
        return None
    try:
        return output.read(spark, table)
    except Exception as err:
        text = str(err)
        if (
            "DELTA_MISSING_DELTA_TABLE" in text
            or "is not a Delta table" in text
            or "PATH_NOT_FOUND" in text
            or "doesn't exist" in text
        ):
            return None
        raise


def _retry_conflicts(action: Callable[[], None], what: str, location: str, attempts: int = 4) -> None:
    """``action`` (one transaction on the table at ``location``) under the table's lock; Delta
    optimistic-concurrency conflicts (another process) retried a few times, then :class:`ConcurrentRunError`.

    A failed post-commit hook (Delta's error ``DELTA_POST_COMMIT_HOOK_FAILED``, e.g. a checkpoint that could
    not be written) comes after the commit landed: the write is done and is not repeated.
    """
    for attempt in range(1, attempts + 1):
        try:
            with table_lock(location):
                action()
                return
        except Exception as err:
            if "DELTA_POST_COMMIT_HOOK_FAILED" in str(err):
                log.warning("%s: committed; a post-commit hook failed: %s", what, str(err)[:400])
                return
            name = type(err).__name__ + " " + str(err)[:400]
            if "Concurrent" not in name and "DELTA_CONCURRENT" not in name and "conflict" not in name.lower():
                raise
            if attempt == attempts:
                raise ConcurrentRunError(
                    f"{what}: another process kept committing to the table at the same time "
                    f"({type(err).__name__}); nothing of this run was written to that table"
                ) from None
            time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")


def _ts_literal(ts: datetime) -> str:
    return f"TIMESTAMP'{ts.strftime('%Y-%m-%d %H:%M:%S')}'"


def monitor_predicate(monitor: str, granularity: str) -> str:
    """The SQL predicate selecting a monitor's rows at one granularity (names quoted as literals)."""
    mon = monitor.replace("'", "''")
    gran = granularity.replace("'", "''")
    return f"monitor = '{mon}' AND granularity = '{gran}'"


def window_predicate(monitor: str, granularity: str, window_starts: Iterable[datetime]) -> str:
    """The ``replaceWhere`` predicate selecting a monitor's windows."""
    starts = sorted(set(window_starts))
    in_list = ", ".join(_ts_literal(s) for s in starts)
    return f"{monitor_predicate(monitor, granularity)} AND window_start IN ({in_list})"


def file_count(table: TableDef, rows: int | None) -> int:
    """How many data files a write of ``rows`` rows of ``table`` should make: ~128 MB each, at least one.

    Result frames come out of the driver (default parallelism: dozens of partitions on a cluster) or out of a
    shuffle; written as they are, every run would add that many tiny files to every table, and each later run
    would list, filter and rewrite them all. ``None`` (unknown, bounded rows) gives one file.
    """
    return max(1, -(-max(rows or 0, 0) * table.row_bytes // TARGET_FILE_BYTES))


def replace_windows(
    spark: SparkSession,
    output: Output,
    table: TableDef,
    df: DataFrame,
    monitor: str,
    granularity: str,
    window_starts: Sequence[datetime],
    rows: int | None = None,
) -> None:
    """Replace the given windows of a monitor in one Delta transaction (idempotent re-runs); ``rows`` (when
    known) sizes the files written (:func:`file_count`)."""
    if not window_starts:
        return
    replace_where(spark, output, table, df, window_predicate(monitor, granularity, window_starts), rows)


def replace_where(
    spark: SparkSession,
    output: Output,
    table: TableDef,
    df: DataFrame,
    predicate: str,
    rows: int | None = None,
) -> None:
    """Replace the rows matching ``predicate`` by ``df`` in one Delta transaction."""
    data = df.select(*table.columns).coalesce(file_count(table, rows))

    def write() -> None:
        writer = data.write.format("delta").mode("overwrite").option("replaceWhere", predicate)
        if output.spec.path is not None:
            writer.save(output.location(table))
        else:
            writer.saveAsTable(output.location(table))

    _retry_conflicts(write, f"writing {table.name}", output.location(table))


def append_rows(
    spark: SparkSession, output: Output, table: TableDef, df: DataFrame, rows: int | None = None
) -> None:
    """Append rows (no window semantics), e.g. a baseline profile; ``rows`` sizes the files written."""
    data = df.select(*table.columns).coalesce(file_count(table, rows))

    def write() -> None:
        writer = data.write.format("delta").mode("append")
        if output.spec.path is not None:
            writer.save(output.location(table))
        else:
            writer.saveAsTable(output.location(table))

    _retry_conflicts(write, f"appending to {table.name}", output.location(table))


def compact(spark: SparkSession, output: Output, tables: Sequence[TableDef] = ALL_TABLES) -> None:
    """Bin-pack the small files of the monitoring tables (Delta ``OPTIMIZE``), one transaction per table.

    Every run adds a file to each table it writes (an hourly monitor: 8,760 a year) and every later read and
    ``replaceWhere`` lists them all. Delta's own auto compaction (a table property) would do this after a
    commit, but it costs every fresh driver a few Spark jobs per table to count files (a scheduled run is a
    fresh driver: ~1.5 s a run here); the job calls this every ``output.compact_every`` runs instead.
    Rows are untouched (same data, fewer files); a conflict with another writer is retried.
    """

    def one(table: TableDef) -> None:
        def optimize() -> None:
            output.delta_table(spark, table).optimize().executeCompaction()

        _retry_conflicts(optimize, f"compacting {table.name}", output.location(table))

    concurrently(spark, one, [(t,) for t in tables])


def insert_run(spark: SparkSession, output: Output, row: dict) -> None:
    """Append the run's first row to ``runs`` (cheaper than a MERGE; the run id is new)."""
    from pyspark.sql.types import StructType

    from lakemon.tables import RUNS

    schema = StructType.fromDDL(RUNS.ddl)
    append_rows(spark, output, RUNS, spark.createDataFrame([{c: row.get(c) for c in RUNS.columns}], schema))


def upsert_run(spark: SparkSession, output: Output, row: dict) -> None:
    """Insert or update the run's row in ``runs`` (MERGE on run_id)."""
    from pyspark.sql.types import StructType

    from lakemon.tables import RUNS

    schema = StructType.fromDDL(RUNS.ddl)
    values = {c: row.get(c) for c in RUNS.columns}
    src = spark.createDataFrame([values], schema)
    loc = output.location(RUNS)
    dt = output.delta_table(spark, RUNS)

    def merge() -> None:
        (
            dt.alias("t")
            .merge(src.alias("s"), "t.run_id = s.run_id")
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
            .execute()
        )

    _retry_conflicts(merge, "recording the run", loc)
