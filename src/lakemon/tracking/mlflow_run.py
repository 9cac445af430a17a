"""One MLflow run per monitoring run: params, headline metrics, alert tags and a JSON summary artifact.

The only module that imports mlflow. With no tracking URI configured, the store is MLflow's local default
(``sqlite:///mlflow.db`` in the working directory); ``mlflow ui --backend-store-uri <uri>`` shows the runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

_BAD = re.compile(r"[^A-Za-z0-9_\-. /:]")
# MLflow's fluent API keeps the tracking URI and experiment process-wide: monitors run concurrently take turns
_LOCK = threading.Lock()
_PRELOADING: list[threading.Thread] = []
# the tracking URI the process had before lakemon set one (MLflow's default, or MLFLOW_TRACKING_URI)
_PROCESS_URI: list[str] = []


def preload() -> None:
    """Import mlflow on a background thread, once per process, while the run's Spark work goes on.

    A fresh process (every ``spark-submit`` run) otherwise spends 1-4 s importing it at the end of the run;
    the Spark calls of the run mostly wait on the JVM, so the import takes its place there. A failing import
    is left to :func:`log_run`, where it is reported.
    """
    if "mlflow" in sys.modules or _PRELOADING:
        return

    def load() -> None:
        with contextlib.suppress(Exception):
            import mlflow  # noqa: F401

    thread = threading.Thread(target=load, name="lakemon-mlflow-import", daemon=True)
    _PRELOADING.append(thread)
    thread.start()


def metric_key(name: str) -> str:
    """MLflow metric keys allow letters, digits, ``_ - . / :`` and spaces only."""
    return _BAD.sub("_", name)[:250]


def log_run(
    tracking_uri: str | None,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float | None],
    tags: Mapping[str, str],
    artifacts: Mapping[str, Any],
    status: str = "FINISHED",
) -> str:
    """Log a finished monitoring run and return its MLflow run id."""
    import mlflow

    with _LOCK:  # see _LOCK
        if not _PROCESS_URI:
            _PROCESS_URI.append(mlflow.get_tracking_uri())
        # the URI is process-wide: a monitor without one logs to the process's own store, not to the store
        # the monitor before it in the same process set
        mlflow.set_tracking_uri(tracking_uri or _PROCESS_URI[0])
        if (
            mlflow.get_experiment_by_name(experiment) is None
            and tracking_uri
            and tracking_uri.startswith("sqlite:///")
        ):
            # keep artifacts next to the sqlite store (MLflow's default is ./mlruns of the working directory)
            store = os.path.dirname(os.path.abspath(tracking_uri[len("sqlite:///") :]))
            with contextlib.suppress(Exception):  # created meanwhile by another run
                mlflow.create_experiment(experiment, artifact_location=f"file://{store}/mlruns")
        mlflow.set_experiment(experiment)
        clean_metrics = {
            metric_key(k): float(v)
            for k, v in metrics.items()
            if v is not None and v == v and abs(float(v)) != float("inf")
        }
        with mlflow.start_run(run_name=run_name) as run:
            mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
            if clean_metrics:
                mlflow.log_metrics(clean_metrics)
            mlflow.set_tags(dict(tags))
            with tempfile.TemporaryDirectory() as tmp:
                for name, payload in artifacts.items():
                    path = os.path.join(tmp, name)
                    with open(path, "w") as fh:
                        json.dump(payload, fh, indent=2, default=str, sort_keys=True)
                    mlflow.log_artifact(path)
            run_id = run.info.run_id
        if status != "FINISHED":
            mlflow.MlflowClient().set_terminated(run_id, status=status)
        log.info("MLflow run %s logged to experiment '%s'", run_id, experiment)
        return run_id


def ui_command(tracking_uri: str | None) -> str:
    """The command that opens the MLflow UI on a store."""
    uri = tracking_uri or "sqlite:///mlflow.db"
    return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"
