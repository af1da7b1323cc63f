"""Run the project's Airflow DAGs in-process (``dag.test()``) on a local SQLite metadata database.

Used by ``tagger demo``/``tagger dags run`` and by the DAG tests. Production runs the same DAG files under a
real scheduler and executor (see docker-compose.yml and infra/helm).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

from pipeline.errors import ServiceError
from pipeline.settings import Settings

log = logging.getLogger(__name__)
DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"


def airflow_env(settings: Settings) -> dict[str, str]:
    home = settings.home_dir / "airflow"
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }


def prepare(settings: Settings) -> dict[str, str]:
    """Point Airflow at HOME/airflow and migrate its metadata DB once. Call before importing airflow."""
    if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME"):
        # Airflow read its configuration at import: this process keeps the home (and metadata DB) it has.
        return {k: v for k, v in os.environ.items() if k.startswith("AIRFLOW")}
    env = airflow_env(settings)
    os.environ.update(env)
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    stamp = home / ".migrated"
    if not stamp.exists():
        airflow = Path(sys.executable).with_name("airflow")
        cmd = (
            [str(airflow), "db", "migrate"] if airflow.exists() else [sys.executable, "-m", "airflow", "db", "migrate"]
        )
        out = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise ServiceError(f"`airflow db migrate` failed in {home}:\n{out.stderr[-2000:]}")
        stamp.write_text("ok")
    return env


def load_dag(dag_id: str):
    """Import ``dags/<dag_id>.py`` and return its DAG object."""
    path = DAGS_FOLDER / f"{dag_id}.py"
    spec = importlib.util.spec_from_file_location(f"tagger_dags_{dag_id}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for value in vars(module).values():
        if getattr(value, "dag_id", None) == dag_id and hasattr(value, "test"):
            return value
    raise ServiceError(f"{path} defines no DAG {dag_id!r}")


def run_dag(settings: Settings, dag_id: str, conf: dict | None = None, *, retries: bool = False) -> dict:
    """Run one DAG end to end in this process; return its state and each task's state and seconds, in the order
    the tasks ran (``tasks`` and ``seconds`` are dicts keyed by task id, in that order).

    ``retries=False`` (the default here) fails fast: a local run is watched by a person or a test, and
    ``dag.test()`` would sleep through the production retry delays. The scheduler keeps them.
    """
    prepare(settings)
    dag = load_dag(dag_id)
    if not retries:
        for task in dag.tasks:
            task.retries = 0
    dag_run = dag.test(run_conf=conf or {})
    order = {t.task_id: i for i, t in enumerate(dag.topological_sort())} if hasattr(dag, "topological_sort") else {}
    tis = sorted(
        dag_run.get_task_instances(),
        key=lambda ti: (ti.start_date is None, ti.start_date or 0, order.get(ti.task_id, 0)),
    )
    states = {ti.task_id: str(ti.state) for ti in tis}
    seconds = {ti.task_id: float(ti.duration) if ti.duration is not None else None for ti in tis}
    return {
        "dag_id": dag_id,
        "run_id": dag_run.run_id,
        "state": str(dag_run.state),
        "tasks": states,
        "seconds": seconds,
    }
