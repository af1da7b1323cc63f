"""``tagger airflow up|down|status``: a real Airflow deployment (scheduler, dag-processor, triggerer, api-server,
Celery workers) on this machine, configured from the project's settings."""

from __future__ import annotations

import typer
from rich.table import Table

from pipeline.commands import console
from pipeline.settings import get_settings

airflow_app = typer.Typer(
    help="A real Airflow 3 deployment here: scheduler, dag-processor, triggerer, api-server, Celery workers.",
    no_args_is_help=True,
)


@airflow_app.command("up")
def up_cmd(
    workers: int = typer.Option(None, help="Celery worker processes (default: TAGGER_AIRFLOW_WORKERS, 1)."),
) -> None:
    """Start every component that is not running; wait until the UI answers and the DAGs are parsed."""
    from pipeline.orchestration.deployment import Deployment

    settings = get_settings()
    if workers:
        settings = settings.model_copy(update={"airflow_workers": workers})
    dep = Deployment(settings)
    with console.status("starting Airflow (db migrate, scheduler, dag-processor, triggerer, api-server, workers)"):
        res = dep.up()
    console.print(f"started: {', '.join(res['started']) or 'nothing (all running)'}")
    _table(dep)
    console.print(f"Airflow UI: [bold]{res['url']}[/] (logs: {dep.log_dir})")


@airflow_app.command("down")
def down_cmd() -> None:
    """Stop the processes `tagger airflow up` started in this TAGGER_HOME (and nothing else)."""
    from pipeline.orchestration.deployment import Deployment

    stopped = Deployment(get_settings()).down()
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "no Airflow component was running")


@airflow_app.command("status")
def status_cmd() -> None:
    """Each component's state and log file, and the UI's URL."""
    from pipeline.orchestration.deployment import Deployment

    dep = Deployment(get_settings())
    _table(dep)
    if dep.pid("api-server"):
        console.print(f"Airflow UI: [bold]{dep.api_url}[/]")


def _table(dep) -> None:
    table = Table(title=f"Airflow deployment in {dep.home}")
    for col in ("component", "state", "log"):
        table.add_column(col)
    for name, state, logfile in dep.status():
        table.add_row(name, f"[green]{state}[/]" if state.startswith("running") else f"[red]{state}[/]", logfile)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(airflow_app, name="airflow")
