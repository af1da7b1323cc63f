"""``tagger services status|stop``: what this home started and uses, where, and whether it answers."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from pipeline.commands import console
from pipeline.settings import get_settings

services_app = typer.Typer(
    help="The services this home uses (Postgres, MLflow store, Triton, the tag worker): status, start, stop.",
    no_args_is_help=True,
)


STARTABLE = ("tag-worker",)  # `tagger services start NAME`: the real-time tag worker (`tagger tag-worker --detach`)


def report(settings) -> dict:
    """Every service of the home: ``own`` is True only for processes this home started (its records under
    ``HOME/services/`` and the embedded Postgres in ``HOME/pgdata``), ``answers`` whether it is up now."""
    from pipeline.core import records
    from pipeline.core.services import status
    from serving.server import RECORD, server_state

    rows = [
        {"name": i.name, "kind": i.kind, "location": i.location, "state": i.state, "own": i.own, "pid": i.pid}
        for i in status(settings)
    ]
    triton_rec = records.read(settings, RECORD)
    state = server_state(settings)
    own = state in ("running", "starting")
    rows.append(
        {
            "name": "triton",
            "kind": "external" if settings.triton_is_external else "local process",
            "location": f"grpc {settings.triton_grpc_url}, http {settings.triton_http_url}, "
            f"metrics :{settings.triton_metrics_port}, repo {settings.model_repository}",
            "state": state,
            "own": own,
            "pid": triton_rec.pid if own and triton_rec else None,
            "log": triton_rec.log if own and triton_rec else None,
        }
    )
    for rec in records.all_records(settings):  # anything else this home started (workers, components)
        if rec.name == RECORD:
            continue
        alive = records.alive(rec)
        # a process that binds no port (the tag worker) says in its record where it works
        where = ", ".join(f"{k} {v}" for k, v in rec.addresses().items()) or rec.extra.get("where", "")
        rows.append(
            {
                "name": rec.name,
                "kind": "local process",
                "location": where,
                "state": "running" if alive else "stopped (stale record)",
                "own": alive,
                "pid": rec.pid if alive else None,
                "log": rec.log,
            }
        )
    return {
        "home": str(settings.home_dir),
        "triton": {
            "grpc_url": settings.triton_grpc_url,
            "http_url": settings.triton_http_url,
            "metrics_port": settings.triton_metrics_port,
            "model": settings.triton_model_name,
            "external": settings.triton_is_external,
            "ready": state == "running",  # server_state: this home's server answered ready just now
        },
        "services": rows,
    }


@services_app.command("status")
def status_cmd(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable: the storefront's Triton address and more."),
) -> None:
    """Show each service, whether this home started it, where it lives, and its state.

    A server that answers on an address of this home but was not started by it shows as ``foreign``: it is never
    used (ports the home chose move to free ones; an address you set is refused).
    """
    settings = get_settings()
    rep = report(settings)
    if as_json:
        print(json.dumps(rep, indent=2))
        return
    table = Table(title=f"catalog-tagger services of home {rep['home']}", title_justify="left")
    table.add_column("service", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("started here", no_wrap=True)
    table.add_column("where", overflow="fold")
    for row in rep["services"]:
        if row["state"] == "configured":  # a database or a folder, not a process
            mine = "-"
        else:
            mine = f"yes, pid {row['pid']}" if row["own"] and row.get("pid") else ("yes" if row["own"] else "no")
        state = row["state"]
        colour = {"running": "green", "foreign": "red", "stopped": "yellow"}.get(state)
        table.add_row(row["name"], f"[{colour}]{state}[/]" if colour else state, mine, row["location"])
    console.print(table)
    if rep["triton"]["external"]:
        console.print(f"Triton is external (someone else runs it): {rep['triton']['grpc_url']}")
    else:
        console.print(f"storefront: Triton gRPC at {rep['triton']['grpc_url']}, model {rep['triton']['model']}")


@services_app.command("start")
def start_cmd(
    name: str = typer.Argument(..., help=f"What to start: {', '.join(STARTABLE)}."),
) -> None:
    """Start a background service of this home and wait until it works (Triton: `tagger serve --detach`; Airflow:
    `tagger airflow up`)."""
    from pipeline.errors import ConfigError

    if name not in STARTABLE:
        raise ConfigError(
            f"unknown service {name!r}: `tagger services start` knows {', '.join(STARTABLE)} "
            "(Triton: `tagger serve --detach`; Airflow: `tagger airflow up`)"
        )
    from pipeline.tagging import realtime

    rec = realtime.start_detached(get_settings())
    console.print(f"{name} running (pid {rec.pid}, log {rec.log})")


@services_app.command("stop")
def stop_cmd() -> None:
    """Stop exactly what this home started: its Triton, the embedded PostgreSQL, any other recorded process.
    External services and processes of other homes are left alone."""
    from pipeline.core import records
    from pipeline.core.services import stop_embedded
    from serving.server import RECORD, stop_recorded

    settings = get_settings()
    if stop_recorded(settings):
        console.print("stopped this home's Triton server")
    for rec in records.all_records(settings):
        if rec.name != RECORD:
            if records.stop(rec):
                console.print(f"stopped {rec.name} (pid {rec.pid})")
            records.remove(settings, rec.name)
    if settings.database_url:
        console.print("PostgreSQL is external (TAGGER_DATABASE_URL): left running")
    elif stop_embedded(settings):
        console.print(f"stopped the embedded PostgreSQL in {settings.embedded_pgdata}")
    else:
        console.print("the embedded PostgreSQL was not running")


def register(app: typer.Typer) -> None:
    app.add_typer(services_app, name="services")
