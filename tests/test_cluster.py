"""The job on a real (tiny) Spark standalone cluster gives the same results as a local run.

A master and two one-core workers are started on loopback from the installed pyspark, the spark-submit
entry point (``jobs/monitor.py``) runs one monitor on them, and its monitoring tables are compared with
an in-process local run of the same config into another folder: every value must agree to 1e-9 (counts,
means, sums, performance, and KLL-derived quantiles, drift statistics, p-values and verdicts: the test's
sketches, k=1000, hold every value of its windows, so no compaction makes them depend on the merge order),
HLL distinct counts within 5%.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from builders import config, read_table, write_config, write_log

from lakemon.config import parse_config
from lakemon.job import run_monitor
from lakemon.session import DELTA_PACKAGE, LOCAL_DEFAULTS

REPO = Path(__file__).resolve().parents[1]
HLL_METRICS = {"distinct_count", "percent_distinct"}  # HLL unions depend on merge order, a little
KEYS = {
    "profile_metrics": ("column_name", "metric"),
    "performance_metrics": ("metric", "class"),
    "drift_metrics": ("column_name", "statistic", "reference"),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "<no log>"


class Cluster:
    """A standalone master and workers on 127.0.0.1, each in its own process group."""

    def __init__(self, workdir: Path) -> None:
        import pyspark

        self.spark_home = os.path.dirname(pyspark.__file__)
        self.workdir = workdir
        self.port, self.ui = _free_port(), _free_port()
        self.procs: list[tuple[subprocess.Popen, Path]] = []
        self.env = {
            **os.environ,
            "SPARK_HOME": self.spark_home,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "PYTHONPATH": str(REPO / "src"),
        }
        for var in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET", "SPARK_CONF_DIR"):
            self.env.pop(var, None)

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def _launch(self, name: str, args: list[str]) -> None:
        log = self.workdir / f"{name}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                [f"{self.spark_home}/bin/spark-class", *args],
                cwd=self.workdir,
                env=self.env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append((proc, log))

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui}/json/", timeout=5) as resp:
            return json.loads(resp.read())

    def _wait(self, what: str, ok: Any, timeout: float = 240) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            for proc, log in self.procs:
                if proc.poll() is not None:
                    pytest.fail(
                        f"{log.stem} exited with {proc.returncode} while waiting for {what}:\n{_tail(log)}"
                    )
            try:
                last = self.state()
                if ok(last):
                    return last
            except OSError as err:
                last = err
            time.sleep(1)
        logs = "\n----\n".join(f"{log.stem}:\n{_tail(log, 15)}" for _, log in self.procs)
        pytest.fail(
            f"the standalone cluster did not get {what} within {timeout:.0f} s (last: {last}):\n{logs}"
        )

    def start(self, workers: int = 2) -> None:
        master = "org.apache.spark.deploy.master.Master"
        self._launch(
            "master", [master, "--host", "127.0.0.1", "--port", str(self.port), "--webui-port", str(self.ui)]
        )
        self._wait("a live master", lambda s: s.get("status") == "ALIVE")
        for i in range(workers):
            work = self.workdir / f"worker{i}"
            work.mkdir()
            self._launch(
                f"worker{i}",
                [
                    "org.apache.spark.deploy.worker.Worker",
                    self.url,
                    "--cores",
                    "1",
                    "--memory",
                    "1g",
                    "--host",
                    "127.0.0.1",
                    "--webui-port",
                    str(_free_port()),
                    "--work-dir",
                    str(work),
                ],
            )
        self._wait(f"{workers} registered workers", lambda s: s.get("aliveworkers", 0) >= workers)

    def stop(self) -> None:
        for proc, _ in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=30)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)


def _rows(spark: Any, cfg: dict[str, Any], table: str) -> dict[tuple, dict[str, Any]]:
    out = {}
    for r in read_table(spark, cfg, table).collect():
        d = r.asDict()
        key = (d["window_start"], d["slice_key"], d["slice_value"], *(d[k] for k in KEYS[table]))
        assert key not in out, f"{table}: duplicated key {key}"
        out[key] = d
    return out


def _close(a: float | None, b: float | None, abs_tol: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=abs_tol)


@pytest.mark.slow
def test_cluster_run_matches_local_run(spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # MLflow artifacts of the local run
    write_log(spark, tmp_path, rows=2000, days=3, seed=11)
    # KLL sketches of k=1000 hold every value of a 667-row window: the two runs' quantiles, and the drift
    # statistics read from them, do not depend on the sketches' random compactions (with the builder's
    # k=200 a Wasserstein distance of the 10-valued num_c once moved by 0.11 between the two runs)
    exact = {"sketch_k": 1000}
    on_cluster = config(
        tmp_path,
        output={"path": str(tmp_path / "out_cluster")},
        mlflow={"tracking_uri": f"sqlite:///{tmp_path / 'mlflow_cluster.db'}"},
        drift=exact,
    )
    local = config(tmp_path, output={"path": str(tmp_path / "out_local")}, drift=exact)
    cfg_file = write_config(tmp_path / "cluster.yaml", on_cluster)

    cluster = Cluster(tmp_path)
    submit_log = tmp_path / "submit.log"
    events = tmp_path / "events"
    events.mkdir()
    try:
        cluster.start(workers=2)
        cmd = [
            f"{cluster.spark_home}/bin/spark-submit",
            "--master",
            cluster.url,
            "--packages",
            DELTA_PACKAGE,
            "--conf",
            f"spark.sql.extensions={LOCAL_DEFAULTS['spark.sql.extensions']}",
            "--conf",
            f"spark.sql.catalog.spark_catalog={LOCAL_DEFAULTS['spark.sql.catalog.spark_catalog']}",
            "--conf",
            "spark.executor.memory=768m",
            "--conf",
            "spark.executor.cores=1",
            "--conf",
            "spark.cores.max=2",
            "--conf",
            "spark.ui.enabled=false",
            # a small cluster's sizes, as its spark-defaults.conf would set them: the job keeps them
            "--conf",
            "spark.sql.shuffle.partitions=4",
            "--conf",
            "spark.databricks.delta.snapshotPartitions=2",
            "--conf",
            "spark.eventLog.enabled=true",
            "--conf",
            f"spark.eventLog.dir={events.as_uri()}",
            "--conf",
            "spark.eventLog.rolling.enabled=false",
            "--conf",
            "spark.eventLog.compress=false",
            "--conf",
            "spark.driver.host=127.0.0.1",
            "--conf",
            f"spark.pyspark.python={sys.executable}",
            "--driver-memory",
            "2g",
            str(REPO / "jobs" / "monitor.py"),
            "--config",
            cfg_file,
        ]
        with open(submit_log, "wb") as fh:
            proc = subprocess.Popen(
                cmd,
                cwd=tmp_path,
                env=cluster.env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        cluster.procs.append((proc, submit_log))
        # the local run of the same config meanwhile, in this process: the cluster's run is mostly start-up
        # and latency, so the two overlap (the test took 138 s with the local run after it, 124 s with both at once)
        result = run_monitor(spark, parse_config(local), deliver=False)
        try:
            code = proc.wait(timeout=600)
        except subprocess.TimeoutExpired:
            pytest.fail(f"spark-submit did not finish within 600 s:\n{_tail(submit_log)}")
        assert code == 0, f"spark-submit exited with {code}:\n{_tail(submit_log, 60)}"
        apps = cluster.state().get("completedapps", []) + cluster.state().get("activeapps", [])
        assert apps, "the job did not run as an application of the standalone cluster"
    finally:
        cluster.stop()

    assert result.status == "success" and len(result.windows) == 3

    # the job's session kept what was submitted (lakemon's local default is 8 shuffle partitions) and got
    # what a run needs: windows in UTC, Delta's SQL extension
    props = _submitted_properties(events)
    assert props["spark.sql.shuffle.partitions"] == "4"
    assert props["spark.sql.session.timeZone"] == "UTC"
    assert LOCAL_DEFAULTS["spark.sql.extensions"] in props["spark.sql.extensions"].split(",")

    assert_same_results(spark, on_cluster, local)


def _submitted_properties(events: Path) -> dict[str, str]:
    """The Spark properties the application started with, from its event log."""
    [log] = list(events.iterdir())
    with open(log) as fh:
        for line in fh:
            event = json.loads(line)
            if event.get("Event") == "SparkListenerEnvironmentUpdate":
                props = event["Spark Properties"]
                return dict(props) if isinstance(props, dict) else {k: v for k, v in props}
    raise AssertionError(f"no environment update in the event log {log}")


def assert_same_results(spark: Any, on_cluster: dict[str, Any], local: dict[str, Any]) -> None:
    """The two outputs hold the same rows with the same values, HLL distinct counts within 5%.

    Quantiles, drift statistics, p-values and verdicts are compared exactly: the test's sketches hold every value.
    """
    for table in KEYS:
        got, want = _rows(spark, on_cluster, table), _rows(spark, local, table)
        assert got.keys() == want.keys(), f"{table}: rows differ: {sorted(set(got) ^ set(want))[:5]}"
        assert got, f"{table} is empty"
        mismatches = []
        for key, w in want.items():
            g = got[key]
            if table == "profile_metrics" and w["metric"] in HLL_METRICS:
                ok = _close(g["value"], w["value"], abs_tol=0.05 * abs(w["value"] or 0.0) + 1e-9)
            else:
                ok = _close(g["value"], w["value"])
                if table == "drift_metrics":
                    ok = ok and g["drifted"] == w["drifted"] and _close(g["p_value"], w["p_value"])
                if table == "performance_metrics":
                    ok = ok and (g["row_count"], g["labeled_count"]) == (w["row_count"], w["labeled_count"])
            if not ok:
                mismatches.append((key, g.get("value"), w.get("value")))
        assert not mismatches, f"{table}: {len(mismatches)} value(s) differ, e.g. {mismatches[:5]}"
