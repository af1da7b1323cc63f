"""``tagger``: the command-line entry point. Each area registers its commands from ``pipeline.commands``."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings

import typer

from pipeline.commands import AREAS, err_console
from pipeline.errors import TaggerError
from pipeline.settings import QUIET_ENV

app = typer.Typer(
    name="tagger",
    help="catalog-tagger: validate catalogs, train taggers, register, serve from Triton, and orchestrate it all.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    setup_logging(logging.DEBUG if verbose else logging.INFO)


def setup_logging(level: int = logging.INFO) -> None:
    """Configure logging once, at the entry point (library modules only create loggers)."""
    from rich.logging import RichHandler

    logging.basicConfig(
        level=level,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=err_console, show_path=False, rich_tracebacks=False)],
        force=True,
    )
    noisy_loggers = ("alembic", "pgserver", "urllib3", "httpx", "mlflow", "git", "matplotlib", "filelock", "airflow")
    # great_expectations: INFO notes of its docs decorators at import ("Skipping registering function ...")
    for noisy in (*noisy_loggers, "great_expectations"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if level > logging.DEBUG:  # notes a user cannot act on; --verbose shows them
        # platformdirs (via pgserver and Airflow): servers have no XDG_RUNTIME_DIR and it falls back to /tmp
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    for key, value in QUIET_ENV.items():  # training keeps its own progress bar
        if key != "MLFLOW_LOGGING_LEVEL" or level > logging.DEBUG:  # --verbose keeps MLflow's INFO lines
            os.environ.setdefault(key, value)


for _area in AREAS:
    importlib.import_module(f"pipeline.commands.{_area}").register(app)


def main() -> None:
    try:
        app()
    except TaggerError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)  # one line, however long
        sys.exit(2)


if __name__ == "__main__":
    main()
