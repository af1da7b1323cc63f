"""CLI command groups, one module per area; each exposes ``register(app: typer.Typer)``.

Command modules only wire: parse flags, call one stage entry, print. They import the stage modules inside the
command functions, on purpose: the stages import torch, MLflow, Great Expectations, tritonclient or Airflow at
their top, and ``tagger --help`` (or a typo) should answer in well under a second.
"""

from rich.console import Console

AREAS = (
    "services", "taglib", "spec", "validate", "encoders", "train", "models", "serve", "tagging", "review", "dags",
    "airflow", "demo",
)  # fmt: skip
console = Console()
err_console = Console(stderr=True)
