"""The one SparkSession builder: an existing session is taken as it is, otherwise a local Delta session."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("lakemon")

# Maven Central serves the Spark-4.2 build of Delta at 4.4.0; pyproject pins delta-spark==4.4.0 to match.
DELTA_PACKAGE = "io.delta:delta-spark_4.2_2.13:4.4.0"

# What lakemon's queries want from any Spark session, local or a cluster's. A session lakemon builds gets them; a
# cluster's own session gets them from its configuration (jobs/databricks.yml, spark-submit --conf), and
# get_spark warns, naming the keys, when a session it is handed lacks them.
TUNING: dict[str, str] = {
    # Wide aggregations (hundreds of fields) otherwise silently lose whole-stage codegen.
    "spark.sql.codegen.maxFields": "2000",
    # One small monitoring run needs ~300 generated classes; with Spark's default cache of 100 it compiles ~290
    # of them again on every run (measured with CodegenMetrics); 1000 keeps a run's classes for the next one.
    "spark.sql.codegen.cache.maxEntries": "1000",
    # Sketch aggregates are object-hash aggregates; keep them hash-based for thousands of groups.
    "spark.sql.objectHashAggregate.sortBased.fallbackThreshold": "4096",
    # Generated code for wide aggregations exceeds HotSpot's 8,000-byte JIT limit and would run interpreted.
    "spark.driver.extraJavaOptions": "-XX:-DontCompileHugeMethods",
    # PySpark 4 records the Python call site of every Column function for error messages, at ~5 JVM round trips
    # a call; a run builds thousands of Columns (a one-day run: 58k round trips with it, 24k without). Errors
    # keep their query context, without the Python line. Static: set when the session starts.
    "spark.python.sql.dataFrameDebugging.enabled": "false",
}

LOCAL_DEFAULTS: dict[str, str] = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.memory": "6g",
    "spark.databricks.delta.schema.autoMerge.enabled": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Delta replays its log with 50 partitions by default: far too many tasks for small monitoring tables.
    "spark.databricks.delta.snapshotPartitions": "2",
    **TUNING,
}


# Under spark-submit the JVM has started with the submitter's --conf, which win over LOCAL_DEFAULTS (see submit_conf).
# Options of the driver JVM's launch: too late once spark-submit has started it (a value set now would only show).
JVM_LAUNCH = ("spark.driver.memory", "spark.driver.extraJavaOptions")
# Sized for one small machine; on a cluster master its own configuration (or Spark's and Delta's defaults) decides.
LOCAL_SIZING = (
    "spark.sql.shuffle.partitions",
    "spark.databricks.delta.snapshotPartitions",
    "spark.ui.enabled",
)


def submit_conf(submitted: dict[str, str], extra_conf: dict[str, str] | None = None) -> dict[str, str]:
    """What lakemon sets on a session spark-submit launched: ``LOCAL_DEFAULTS`` the submitter did not set.

    ``submitted`` is the JVM's Spark configuration (spark-submit's ``--conf`` and defaults file). A submitter's
    ``spark.sql.shuffle.partitions=400`` for a big cluster is kept, not replaced by the local default, and on a
    cluster master the :data:`LOCAL_SIZING` defaults are not applied at all. Two are set whatever was passed:
    the session time zone to UTC (runs compute and store windows in UTC; another one is replaced, with a
    warning) and Delta's SQL extension, appended to the submitter's own extensions. The caller's
    ``extra_conf`` is set as given.
    """
    skip = set(JVM_LAUNCH)
    if not submitted.get("spark.master", "local").startswith("local"):
        skip.update(LOCAL_SIZING)
    conf = {k: v for k, v in LOCAL_DEFAULTS.items() if k not in submitted and k not in skip}
    utc = conf["spark.sql.session.timeZone"] = LOCAL_DEFAULTS["spark.sql.session.timeZone"]
    if submitted.get("spark.sql.session.timeZone", utc) != utc:
        log.warning(
            "spark.sql.session.timeZone=%s passed to spark-submit is set to %s: lakemon's windows are in UTC",
            submitted["spark.sql.session.timeZone"],
            utc,
        )
    delta_ext = LOCAL_DEFAULTS["spark.sql.extensions"]
    theirs = [e.strip() for e in submitted.get("spark.sql.extensions", "").split(",") if e.strip()]
    conf["spark.sql.extensions"] = ",".join(theirs if delta_ext in theirs else [*theirs, delta_ext])
    conf.update(extra_conf or {})
    return conf


def _submitted_conf() -> dict[str, str]:
    """The Spark configuration of the JVM spark-submit started (before any SparkContext exists in it)."""
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()  # connects to spark-submit's JVM (PYSPARK_GATEWAY_PORT)
    return dict(SparkConf().getAll())


def _warn_missing_tuning(session: SparkSession) -> None:
    def setting(key: str) -> str | None:
        # a platform may refuse to show some settings (Spark Connect): counted as missing
        try:
            return session.conf.get(key, None)
        except Exception:
            return None

    missing = missing_tuning(setting)
    if missing:
        log.warning(
            "this Spark session lacks settings lakemon's queries want (set them in the cluster's Spark "
            "configuration, as jobs/databricks.yml does, or pass them to spark-submit with --conf): %s",
            ", ".join(missing),
        )


class DeltaMissingError(RuntimeError):
    """The Spark session has no Delta Lake on its classpath (e.g. ``spark-submit`` without ``--packages``)."""


def active_session() -> SparkSession | None:
    """Return the already running SparkSession (Databricks, spark-submit, a notebook), if any."""
    from pyspark.sql import SparkSession

    return SparkSession.getActiveSession()


def _is_utc(zone: str) -> bool:
    """Whether a time-zone name or offset means UTC all year (``UTC``, ``Etc/UTC``, ``Z``, ``+00:00``)."""
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    z = zone.strip()
    if z.upper() in ("UTC", "Z", "GMT", "+00:00", "-00:00", "+0", "00:00"):
        return True
    try:
        info = ZoneInfo(z)
    except Exception:
        return False
    return all(datetime(2026, month, 15, tzinfo=info).utcoffset() == timedelta(0) for month in (1, 7))


def ensure_utc(session: SparkSession) -> None:
    """Make the Spark session and this Python process read and write timestamps as UTC (a warning when either
    changes).

    lakemon's windows are naive UTC datetimes. Spark parses the ``TIMESTAMP '...'`` literals of its window
    predicates in the session's time zone, and PySpark turns timestamps into naive datetimes (``collect``,
    ``createDataFrame``, ``lit``) in the Python process's local time: in New York a window starting at
    midnight UTC would come back as 20:00 the day before, be compared with UTC, and be rewritten shifted.
    A local session and spark-submit already get UTC (:data:`LOCAL_DEFAULTS`, :func:`submit_conf`); a session
    or a process handed over in another zone (a notebook, a laptop) is switched for the rest of its life.
    """
    import time

    zone = session.conf.get("spark.sql.session.timeZone", "UTC") or "UTC"
    if not _is_utc(zone):
        log.warning("spark.sql.session.timeZone=%s is set to UTC: lakemon's windows are in UTC", zone)
        session.conf.set("spark.sql.session.timeZone", "UTC")
    if time.timezone != 0 or (time.daylight and time.altzone != 0):
        log.warning(
            "this Python process runs in time zone %s: TZ is set to UTC (PySpark converts timestamps to local "
            "times, lakemon's windows are in UTC)",
            "/".join(time.tzname),
        )
        os.environ["TZ"] = "UTC"
        time.tzset()


def missing_tuning(get: Callable[[str], str | None]) -> list[str]:
    """The :data:`TUNING` settings a session lacks, as ``key=value`` (``get`` reads the session's setting).

    A numeric setting counts as present when it is at least lakemon's value; the JVM option when its flag is
    among the driver's options; a switch when it has lakemon's value.
    """
    missing = []
    for key, want in TUNING.items():
        have = (get(key) or "").strip()
        if key == "spark.driver.extraJavaOptions":
            ok = want in have.split()
        elif want in ("true", "false"):
            ok = have.lower() == want
        else:
            ok = have.isdigit() and int(have) >= int(want)
        if not ok:
            missing.append(f"{key}={want}")
    return missing


def get_spark(
    app_name: str = "lakemon",
    master: str | None = None,
    extra_conf: dict[str, str] | None = None,
) -> SparkSession:
    """Build the session once, or take the running one as it is.

    When a session already exists (Databricks, a notebook), it is returned untouched: the platform owns its
    configuration. Under ``spark-submit`` (its JVM started, no session yet) the session gets only what
    :func:`submit_conf` adds to the submitted configuration. Otherwise a local session with the Delta
    extensions is started; the Delta JAR is resolved from the local Maven repository, where
    ``scripts/setup.sh`` fetched it, so no network is needed. The jars resolved are remembered
    (:func:`classpath_file`) and later sessions take them as they are, without resolving again.
    """
    existing = active_session()
    if existing is not None:
        _warn_missing_tuning(existing)
        require_delta(existing)
        return existing

    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    under_submit = "PYSPARK_GATEWAY_PORT" in os.environ  # spark-submit already started the JVM with its conf
    if under_submit:
        conf = submit_conf(_submitted_conf(), extra_conf)
    else:
        conf = dict(LOCAL_DEFAULTS)
        conf.update(extra_conf or {})
    if master is not None:
        builder = builder.master(master)
    elif not under_submit:
        builder = builder.master(os.environ.get("LAKEMON_SPARK_MASTER", "local[*]"))
    remember = False
    if not under_submit and "spark.jars.packages" not in conf:
        own_jars = "spark.jars" in conf  # the caller's jars, with Delta resolved beside them
        jars = None if own_jars else resolved_jars(DELTA_PACKAGE)
        if jars:
            conf["spark.jars"] = ",".join(jars)
        else:
            conf["spark.jars.packages"] = DELTA_PACKAGE
            remember = not own_jars
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    if under_submit:  # the JVM's classpath is spark-submit's: Delta only if it was passed
        _warn_missing_tuning(session)
        require_delta(session)
    if remember:
        remember_jars(DELTA_PACKAGE, session.sparkContext.getConf().get("spark.jars", ""))
    return session


def require_delta(session: SparkSession, class_name: str = "io.delta.tables.DeltaTable") -> None:
    """Raise a clear error when Delta Lake's classes are not on the session's classpath.

    ``spark-submit jobs/monitor.py`` without ``--packages`` starts a JVM without Delta, and the run would only
    fail at its first table read with Spark's "Failed to find the data source: delta". Only a missing class
    counts: a session whose JVM cannot be asked (Spark Connect, a locked-down cluster) is left to the run.
    """
    try:
        session._jvm.org.apache.spark.util.Utils.classForName(class_name, False, False)  # type: ignore[union-attr]
    except Exception as err:
        if "ClassNotFoundException" not in str(err):
            return
        raise DeltaMissingError(
            f"Delta Lake is not on this Spark session's classpath ({class_name} not found): pass "
            f"--packages {DELTA_PACKAGE} to spark-submit, or --jars with its jars (a local lakemon session "
            f"lists the ones it resolved in {classpath_file(DELTA_PACKAGE)})"
        ) from None


def classpath_file(package: str) -> Path:
    """Where the jars Spark resolved for ``package`` are remembered (per package and pyspark version)."""
    import pyspark

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    key = hashlib.sha256(f"{package} {pyspark.__version__}".encode()).hexdigest()[:16]
    return Path(base) / "lakemon" / f"classpath-{key}.txt"


def resolved_jars(package: str) -> list[str] | None:
    """The jars an earlier session resolved for ``package``, when every one of them is still on disk.

    Spark resolves ``spark.jars.packages`` with Ivy at every JVM start (1.2-2.5 s of a local session's start
    here), although the answer only changes with the package; a scheduled run is a new JVM each time.
    """
    try:
        jars = [line for line in classpath_file(package).read_text().splitlines() if line]
    except OSError:
        return None
    if not jars or not all(os.path.isfile(j) for j in jars):
        return None
    return jars


def remember_jars(package: str, spark_jars: str) -> None:
    """Record the jars Spark resolved for ``package`` (``spark.jars`` of the session that resolved them).

    Written only when the package's own jar is among them; to a temporary file renamed into place, so
    concurrent first runs never read a half-written list. A failure to write costs the next start its
    resolution, nothing else.
    """
    group, artifact, version = package.split(":")
    jars = [unquote(urlparse(j).path) if j.startswith("file:") else j for j in spark_jars.split(",") if j]
    if f"{group}_{artifact}-{version}.jar" not in {os.path.basename(j) for j in jars}:
        return
    target = classpath_file(package)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        tmp.write_text("\n".join(jars) + "\n")
        os.replace(tmp, target)
    except OSError as err:
        log.debug("could not record the resolved jars in %s: %s", target, err)
