"""``tagger services status|stop``: what is in use and where; stop what tagger started."""

from __future__ import annotations

import typer
from rich.table import Table

from pipeline.commands import console
from pipeline.settings import get_settings

services_app = typer.Typer(
    help="Embedded and external services (Postgres, MLflow store, Triton).", no_args_is_help=True
)


@services_app.command("status")
def status_cmd() -> None:
    """Show each service, whether it is embedded or external, where it lives, and its state."""
    from pipeline.core.services import ServiceInfo, status
    from serving.server import server_state

    settings = get_settings()
    triton = ServiceInfo(
        "triton",
        "local process",
        f"grpc {settings.triton_grpc_url}, repo {settings.model_repository}",
        server_state(settings),
    )
    table = Table(title=f"catalog-tagger services (home {settings.home_dir})")
    for col in ("service", "kind", "location", "state"):
        table.add_column(col)
    for info in [*status(settings), triton]:
        table.add_row(info.name, info.kind, info.location, info.state)
    console.print(table)


@services_app.command("stop")
def stop_cmd() -> None:
    """Stop the local Triton server and the embedded PostgreSQL that tagger started (external ones are left alone)."""
    from pipeline.core.services import stop_embedded
    from serving.server import stop_recorded

    settings = get_settings()

    if stop_recorded(settings):
        console.print("stopped the local Triton server")
    if settings.database_url:
        console.print("PostgreSQL is external (TAGGER_DATABASE_URL): left running")
    elif stop_embedded(settings):
        console.print(f"stopped the embedded PostgreSQL in {settings.embedded_pgdata}")
    else:
        console.print("the embedded PostgreSQL was not running")


def register(app: typer.Typer) -> None:
    app.add_typer(services_app, name="services")
