"""CLI command groups, one module per area; each exposes ``register(app: typer.Typer)``.

Keep imports of heavy libraries (torch, mlflow, great_expectations, tritonclient) inside the command
functions so that ``tagger --help`` stays fast.
"""

AREAS = ("services", "taglib", "validate", "train", "models", "serve", "dags", "demo")
