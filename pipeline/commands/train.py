"""CLI: ``tagger train`` (train, then evaluate; flags from :class:`TrainOptions`) and ``tagger evaluate``."""

from __future__ import annotations

import inspect
import os

import typer

from pipeline.commands import console
from pipeline.settings import get_settings
from pipeline.training.options import TrainOptions, cli_fields, field_type


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.command("train")(train_cmd)
    app.command("evaluate")(evaluate_cmd)


def train_cmd(
    spec: str = typer.Option(None, "--spec", help="Dataset spec name or YAML path (default: TAGGER_CATALOG_SPEC)."),
    source: str = typer.Option(None, "--source", help="Catalog path or snapshot id (default: the spec's data_file)."),
    **flags,
) -> None:
    """Fine-tune the tagger on a catalog, score it against a TF-IDF baseline on the frozen test split, log to MLflow."""
    import torch

    from pipeline.catalog.spec import resolve_catalog
    from pipeline.evaluation.evaluate import evaluate_run
    from pipeline.training.train import train

    torch.set_num_threads(os.cpu_count() or 1)
    settings = get_settings()
    source, spec = resolve_catalog(settings, spec, source)
    result = train(source, spec, settings, TrainOptions(**flags))
    evaluation = evaluate_run(result.bundle_path, settings)
    _print_metrics(console, evaluation.metrics)
    console.print(f"run [bold]{result.run_id}[/] on {result.device}, {result.samples_per_s:.1f} samples/s")
    console.print(f"bundle: {result.bundle_path}")


def _with_option_flags(command):
    """Give ``command`` one typer option per :class:`TrainOptions` CLI field: defaults and help come from there."""
    sig = inspect.signature(command)
    fixed = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    for f in cli_fields():
        kind = field_type(f)
        flag = f"--{f.name.replace('_', '-')}"
        decl = (f"{flag}/--no-{f.name.replace('_', '-')}",) if kind is bool else (flag,)
        option = typer.Option(f.default, *decl, help=f.metadata["help"])
        annotation = kind if f.default is not None else (kind | None)
        fixed.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation))
    command.__signature__ = sig.replace(parameters=fixed)
    return command


train_cmd = _with_option_flags(train_cmd)


def evaluate_cmd(
    run_or_model: str = typer.Argument(..., help="Bundle folder, MLflow run id or runs:/ URI."),
    source: str = typer.Option(None, help="Catalog path or snapshot id (default: the one it was trained on)."),
    spec: str = typer.Option(None, help="Dataset spec (default: the bundle's)."),
    on: str = typer.Option(
        None, "--on", help="Score every row of this other held-out file instead (read with --spec)."
    ),
) -> None:
    """Score a trained tagger on the frozen test split of its catalog, or on another held-out file (--on)."""
    from pipeline.evaluation.evaluate import evaluate

    result = evaluate(run_or_model, get_settings(), source=source, spec=spec, on=on)
    _print_metrics(console, {"model": result.metrics})
    console.print(f"{result.n_test} rows, digest {result.test_digest[:16]}; report {result.report_path}")


def _print_metrics(console, metrics: dict) -> None:
    from rich.table import Table

    model = metrics["model"]
    others = [
        (t, metrics[k]) for k, t in (("encoder", "encoder alone"), ("baseline", "TF-IDF baseline")) if k in metrics
    ]
    table = Table(title="frozen test split")
    table.add_column("metric")
    table.add_column("tagger" + (" (hybrid)" if "encoder" in metrics else ""), justify="right")
    for title, _ in others:
        table.add_column(title, justify="right")
    for k in ("micro_f1", "macro_f1", "precision_at_1", "ece"):
        table.add_row(k, f"{model[k]:.4f}", *(f"{o[k]:.4f}" for _, o in others))
    for f, e in model["facets"].items():
        k = "accuracy" if e["exclusive"] else "micro_f1"
        table.add_row(f"{f} {k}", f"{e[k]:.4f}", *(f"{o['facets'][f][k]:.4f}" for _, o in others))
    console.print(table)
