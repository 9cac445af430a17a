"""The session's tuning: what lakemon's queries want from any Spark session, and where a cluster gets it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
import yaml

from lakemon.session import (
    DELTA_PACKAGE,
    LOCAL_DEFAULTS,
    TUNING,
    DeltaMissingError,
    classpath_file,
    ensure_utc,
    get_spark,
    missing_tuning,
    remember_jars,
    require_delta,
    resolved_jars,
    submit_conf,
)

REPO = Path(__file__).resolve().parents[1]


def test_missing_tuning_names_each_setting_a_session_lacks() -> None:
    assert missing_tuning(TUNING.get) == []
    # Spark's own defaults: every setting is reported, as key=value to set
    defaults = {
        "spark.sql.codegen.maxFields": "100",
        "spark.sql.codegen.cache.maxEntries": "100",
        "spark.sql.objectHashAggregate.sortBased.fallbackThreshold": "128",
        "spark.python.sql.dataFrameDebugging.enabled": "true",
    }
    assert missing_tuning(defaults.get) == [f"{k}={v}" for k, v in TUNING.items()]
    # larger numbers and the JVM flag among other options are enough
    roomy = {
        "spark.sql.codegen.maxFields": "5000",
        "spark.sql.codegen.cache.maxEntries": "1000",
        "spark.sql.objectHashAggregate.sortBased.fallbackThreshold": "4096",
        "spark.driver.extraJavaOptions": "-Xss4m -XX:-DontCompileHugeMethods -Dfoo=bar",
        "spark.python.sql.dataFrameDebugging.enabled": "False",
    }
    assert missing_tuning(roomy.get) == []
    # a flag that only starts like it is not it
    lacking = {**roomy, "spark.driver.extraJavaOptions": "-XX:-DontCompileHugeMethodsX"}
    assert missing_tuning(lacking.get) == ["spark.driver.extraJavaOptions=-XX:-DontCompileHugeMethods"]


def test_a_session_lakemon_built_has_the_tuning_and_a_session_without_it_is_named(
    spark: Any, caplog: Any
) -> None:
    from pyspark.errors.utils import is_debugging_enabled

    assert missing_tuning(lambda key: spark.conf.get(key, None)) == []
    assert not is_debugging_enabled()  # PySpark reads the static setting: no call-site capture per Column
    with caplog.at_level(logging.WARNING, logger="lakemon"):
        assert get_spark("another") is spark  # the running session is taken as it is
    assert not [r for r in caplog.records if "lacks settings" in r.getMessage()]

    # a runtime setting lowered, as a cluster's default would be: taken as it is, with a warning naming the key
    key = "spark.sql.objectHashAggregate.sortBased.fallbackThreshold"
    spark.conf.set(key, "128")
    try:
        with caplog.at_level(logging.WARNING, logger="lakemon"):
            assert get_spark("another") is spark
    finally:
        spark.conf.set(key, TUNING[key])
    warned = [r.getMessage() for r in caplog.records if "lacks settings" in r.getMessage()]
    assert len(warned) == 1 and warned[0].endswith(f"{key}=4096")


def test_under_spark_submit_the_submitters_settings_win(caplog: Any) -> None:
    delta_ext = LOCAL_DEFAULTS["spark.sql.extensions"]
    cluster = {
        "spark.master": "spark://10.0.0.1:7077",
        "spark.sql.shuffle.partitions": "400",
        "spark.sql.codegen.maxFields": "500",
        "spark.sql.extensions": "com.example.Ext",
    }
    with caplog.at_level(logging.WARNING, logger="lakemon"):
        conf = submit_conf(cluster)
    assert not caplog.records
    # what the submitter set is not touched; sizes for one small machine and the UI are left to the cluster;
    # options of the JVM's launch would only show (the JVM runs already)
    for key in (
        "spark.sql.shuffle.partitions",
        "spark.sql.codegen.maxFields",
        "spark.databricks.delta.snapshotPartitions",
        "spark.ui.enabled",
        "spark.driver.memory",
        "spark.driver.extraJavaOptions",
    ):
        assert key not in conf, key
    # the rest of lakemon's defaults are added; Delta's extension joins the submitter's own; windows are UTC
    assert conf["spark.sql.codegen.cache.maxEntries"] == TUNING["spark.sql.codegen.cache.maxEntries"]
    assert conf["spark.sql.catalog.spark_catalog"] == LOCAL_DEFAULTS["spark.sql.catalog.spark_catalog"]
    assert conf["spark.sql.extensions"] == f"com.example.Ext,{delta_ext}"
    assert conf["spark.sql.session.timeZone"] == "UTC"

    # on a local master the small-machine sizes apply where the submitter set none
    local = submit_conf({"spark.master": "local[2]", "spark.sql.extensions": f" {delta_ext} "})
    assert local["spark.sql.shuffle.partitions"] == LOCAL_DEFAULTS["spark.sql.shuffle.partitions"]
    assert local["spark.databricks.delta.snapshotPartitions"] == "2"
    assert local["spark.sql.extensions"] == delta_ext
    assert "spark.driver.memory" not in local

    # another time zone is replaced, with a warning; the caller's own settings are set as given
    with caplog.at_level(logging.WARNING, logger="lakemon"):
        conf = submit_conf(
            {**cluster, "spark.sql.session.timeZone": "Europe/Paris"}, {"spark.sql.shuffle.partitions": "16"}
        )
    assert conf["spark.sql.session.timeZone"] == "UTC" and conf["spark.sql.shuffle.partitions"] == "16"
    assert [r.getMessage() for r in caplog.records] == [
        "spark.sql.session.timeZone=Europe/Paris passed to spark-submit is set to UTC: lakemon's windows are in UTC"
    ]


def test_databricks_job_cluster_carries_the_tuning() -> None:
    bundle = yaml.safe_load((REPO / "jobs" / "databricks.yml").read_text())
    clusters = bundle["resources"]["jobs"]["lakemon_monitor"]["job_clusters"]
    assert [c["new_cluster"]["spark_conf"] for c in clusters] == [TUNING]


def test_resolved_jars_are_remembered_only_whole(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    package = "io.delta:delta-spark_4.2_2.13:4.4.0"
    jars = [tmp_path / "io.delta_delta-spark_4.2_2.13-4.4.0.jar", tmp_path / "dir with space" / "dep-1.0.jar"]
    for jar in jars:
        jar.parent.mkdir(parents=True, exist_ok=True)
        jar.write_bytes(b"PK")
    assert resolved_jars(package) is None  # nothing remembered yet

    # a session whose jars lack the package's own jar (the caller's jars) is not remembered
    remember_jars(package, f"file://{jars[1]}")
    assert resolved_jars(package) is None

    # Spark's spark.jars: file: URIs, percent-encoded
    remember_jars(package, ",".join(jar.as_uri() for jar in jars))
    assert resolved_jars(package) == [str(j) for j in jars]
    assert classpath_file(package).parent == tmp_path / "cache" / "lakemon"
    assert resolved_jars("io.delta:delta-spark_4.2_2.13:4.5.0") is None  # another package: its own list

    jars[1].unlink()  # a jar gone (a cleaned Ivy cache): resolved again, never started without it
    assert resolved_jars(package) is None


def test_the_test_session_remembered_its_jars(spark: Any) -> None:
    """The suite's session (local, built by get_spark) resolved Delta once or took the remembered jars: either
    way the list is there and is what the session runs with."""
    remembered = resolved_jars(DELTA_PACKAGE)
    assert remembered, classpath_file(DELTA_PACKAGE)
    session_jars = {
        unquote(urlparse(j).path) if j.startswith("file:") else j
        for j in spark.sparkContext.getConf().get("spark.jars", "").split(",")
        if j
    }
    assert set(remembered) <= session_jars
    group, artifact, version = DELTA_PACKAGE.split(":")
    assert f"{group}_{artifact}-{version}.jar" in {Path(j).name for j in remembered}


def test_a_session_without_delta_is_a_clear_error(spark: Any) -> None:
    require_delta(spark)  # the suite's session has Delta
    # a class the JVM does not have stands for Delta missing from a spark-submit without --packages
    with pytest.raises(
        DeltaMissingError, match=r"Delta Lake is not on this Spark session's classpath"
    ) as err:
        require_delta(spark, "io.delta.tables.NoSuchClass")
    assert f"--packages {DELTA_PACKAGE}" in str(err.value)
    assert str(classpath_file(DELTA_PACKAGE)) in str(err.value)


def test_a_session_and_process_in_another_time_zone_are_switched_to_utc(
    spark: Any, monkeypatch: Any, caplog: Any
) -> None:
    """In New York, PySpark would collect a window starting at midnight UTC as 20:00 the day before, and the
    session would read a window predicate's literal as New York time: a run switches both to UTC."""
    import time
    from datetime import datetime

    midnight = datetime(2026, 10, 5)
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    spark.conf.set("spark.sql.session.timeZone", "America/New_York")
    try:
        assert spark.sql("SELECT TIMESTAMP'2026-10-05 00:00:00+00:00' AS t").first()["t"] != midnight
        with caplog.at_level(logging.WARNING, logger="lakemon.session"):
            ensure_utc(spark)
        assert "America/New_York" in caplog.text and "TZ is set to UTC" in caplog.text
        assert spark.sql("SELECT TIMESTAMP'2026-10-05 00:00:00+00:00' AS t").first()["t"] == midnight
        assert spark.sql("SELECT TIMESTAMP'2026-10-05 00:00:00' AS t").first()["t"] == midnight
        assert spark.createDataFrame([(midnight,)], "t TIMESTAMP").first()["t"] == midnight
        caplog.clear()
        ensure_utc(spark)  # already UTC: nothing to say
        assert not caplog.text
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")
        monkeypatch.undo()
        time.tzset()
