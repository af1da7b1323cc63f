"""MLflow set-up from the settings: called by entry points and fixtures, never at import."""

from __future__ import annotations

import logging
import os

import mlflow

from pipeline.core.services import mlflow_tracking_uri
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def configure(settings: Settings) -> str:
    """Point MLflow (tracking and registry) at the project's store; return the experiment id."""

    # MLflow 3 prints a banner/warnings about telemetry and git; keep runs quiet and offline.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    quiet_handled_pipeline_aborts()
    uri = mlflow_tracking_uri(settings)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(settings.mlflow_experiment)
    if exp is None:
        # A tracking server with no artifact location set uses its own artifact store (proxied or object storage).
        remote = uri.startswith(("http://", "https://")) and not settings.mlflow_artifact_location
        location = None if remote else settings.artifact_location
        exp_id = client.create_experiment(settings.mlflow_experiment, artifact_location=location)
        log.info(
            "created MLflow experiment %s (artifacts in %s)",
            settings.mlflow_experiment,
            location or "the server's artifact store",
        )
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def _not_a_handled_abort(record: logging.LogRecord) -> bool:
    msg = record.getMessage()
    handled = msg.startswith("error ignored terminating") and "psycopg.Pipeline" in msg
    return not (handled and msg.endswith("pipeline aborted"))


def quiet_handled_pipeline_aborts() -> None:
    """Drop psycopg's "error ignored terminating <psycopg.Pipeline ...>: pipeline aborted" warning.

    MLflow's SQL store tolerates a metric row that is already there (same key, value, step and millisecond, as a
    system-metrics flush at the end of a run can write): ``log_batch`` catches the IntegrityError, rolls back and
    inserts the rest. psycopg then warns about the aborted statement batch while the error it refers to was
    already raised and handled. Any error MLflow does not handle still reaches the caller; only this side note
    goes. Idempotent.
    """
    psycopg_log = logging.getLogger("psycopg")
    if _not_a_handled_abort not in psycopg_log.filters:
        psycopg_log.addFilter(_not_a_handled_abort)


def client(settings: Settings):
    """An MlflowClient on the project's store (configures MLflow first)."""

    configure(settings)
    return mlflow.MlflowClient()
