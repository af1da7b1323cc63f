"""``tagger dags list|run``: run the project's Airflow DAGs in-process on the local metadata DB."""

from __future__ import annotations

import json

import typer

from pipeline.commands import console
from pipeline.settings import get_settings

dags_app = typer.Typer(help="Airflow DAGs (tagger_retrain, tagger_batch_tag) run locally with dag.test().")


@dags_app.command("list")
def list_cmd() -> None:
    """The DAG files and their tasks."""
    from pipeline.orchestration import airflow_local

    airflow_local.prepare(get_settings())
    for path in sorted(airflow_local.DAGS_FOLDER.glob("*.py")):
        dag = airflow_local.load_dag(path.stem)
        console.print(f"[bold]{dag.dag_id}[/] ({dag.timetable.summary}): {' -> '.join(t.task_id for t in dag.tasks)}")


@dags_app.command("run")
def run_cmd(
    dag_id: str = typer.Argument(..., help="tagger_retrain, tagger_batch_tag or tagger_review_watch"),
    conf: str = typer.Option("{}", help='Run parameters as JSON, e.g. \'{"train": {"max_rows": 3000}}\''),
) -> None:
    """Run one DAG end to end in this process (real tasks, real services) and print each task's state."""
    from pipeline.orchestration import airflow_local

    result = airflow_local.run_dag(get_settings(), dag_id, json.loads(conf))
    for task, state in result["tasks"].items():
        colour = {"success": "green", "failed": "red", "skipped": "yellow"}.get(state, "white")
        console.print(f"  {task:20s} [{colour}]{state}[/]")
    console.print(f"{dag_id}: {result['state']}")
    if result["state"] != "success":
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(dags_app, name="dags")
