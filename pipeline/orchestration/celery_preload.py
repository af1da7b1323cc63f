"""The Celery worker of ``tagger airflow up`` imports the task steps once, before its pool starts.

Airflow 3 runs each task in a process forked from a Celery pool process. Without this, every task process
imports torch, transformers, MLflow, Great Expectations and tritonclient itself: about 5 s per task on 2 cores,
45 s over a retraining run (``bench/bench_airflow.py``). Imported in the worker's main process, they are inherited
by every fork. Nothing runs at import but imports: no thread pool, no gRPC channel or database connection exists
before the fork.

Wired by ``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS`` (:meth:`pipeline.orchestration.deployment.Deployment.env`):
Airflow imports :data:`CELERY_CONFIG` from here, which is its own default configuration unchanged; importing this
module also connects :func:`preload` to Celery's ``worker_init`` signal, which only a worker's main process sends
(the scheduler and api-server load the same configuration and import nothing more).
"""

from __future__ import annotations

import importlib
import logging

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import worker_init

log = logging.getLogger(__name__)

CELERY_CONFIG = DEFAULT_CELERY_CONFIG
PRELOADED = ("pipeline.orchestration.steps",)  # the steps import every stage the tasks run


@worker_init.connect
def preload(**_) -> None:
    # great_expectations logs an INFO note per docs decorator at import: quiet, as the CLI does
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    for name in PRELOADED:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a task then imports (and reports) it itself
            log.warning("could not preload %s in the Celery worker: %s", name, exc)
