"""CLI: ``tagger train`` (fine-tune + baseline + MLflow) and ``tagger evaluate`` (re-score a bundle/run)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.command("train")(train_cmd)
    app.command("evaluate")(evaluate_cmd)


def train_cmd(
    spec: str = typer.Option("myntra", "--spec", help="Dataset spec name or YAML path."),
    source: str = typer.Option(None, "--source", help="Catalog path or snapshot id (default: the spec's shared file)."),
    epochs: int = typer.Option(5, help="Epochs (early stopping on validation micro-F1 may end sooner)."),
    max_steps: int = typer.Option(None, help="Cap on optimizer steps."),
    max_rows: int = typer.Option(None, help="Sample this many catalog rows first (demo slices)."),
    max_train_rows: int = typer.Option(None, help="Cap the training split only (test stays the frozen split)."),
    batch_size: int = typer.Option(32),
    grad_accum: int = typer.Option(1, help="Micro-batches per optimizer step."),
    max_length: int = typer.Option(48, help="Token cap per text."),
    lr: float = typer.Option(1e-4, help="Encoder learning rate."),
    precision: str = typer.Option("auto", help="auto | bf16 | fp32"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    encoder: str = typer.Option(None, help="HF encoder path or name (default: packaged all-MiniLM-L6-v2)."),
    min_tag_count: int = typer.Option(5, help="Tags with fewer training examples are left out of the head."),
    seed: int = typer.Option(13),
    baseline: bool = typer.Option(True, help="Also train and report the TF-IDF baseline."),
    hybrid: bool = typer.Option(
        True, help="Fuse the TF-IDF model into the served scores (weights per facet, chosen on validation)."
    ),
    resume: bool = typer.Option(True, help="Resume an interrupted run with the same data and options."),
) -> None:
    """Fine-tune the tagger on a catalog, compare with a TF-IDF baseline on the frozen test split, log to MLflow."""
    import os

    import torch

    from pipeline.cli import console
    from pipeline.settings import get_settings
    from pipeline.train import TrainOptions, train

    torch.set_num_threads(os.cpu_count() or 1)
    settings = get_settings()
    opts = TrainOptions(
        encoder=encoder, epochs=epochs, max_steps=max_steps, max_rows=max_rows, max_train_rows=max_train_rows,
        batch_size=batch_size, grad_accum=grad_accum, max_length=max_length, lr=lr, precision=precision,
        device=device, min_tag_count=min_tag_count, seed=seed, baseline=baseline, hybrid=hybrid and baseline,
        resume=resume,
    )  # fmt: skip
    result = train(source or default_source(spec, settings), spec, settings, opts)
    _print_metrics(console, result.metrics)
    console.print(f"run [bold]{result.run_id}[/] on {result.device}, {result.samples_per_s:.1f} samples/s")
    console.print(f"bundle: {result.bundle_path}")


def evaluate_cmd(
    run_or_model: str = typer.Argument(..., help="Bundle folder, MLflow run id or runs:/ URI."),
    source: str = typer.Option(None, help="Catalog path or snapshot id (default: the one it was trained on)."),
    spec: str = typer.Option(None, help="Dataset spec (default: the bundle's)."),
) -> None:
    """Score a trained tagger on the frozen test split of its catalog."""
    from pipeline.cli import console
    from pipeline.evaluate import evaluate
    from pipeline.settings import get_settings

    result = evaluate(run_or_model, get_settings(), source=source, spec=spec)
    _print_metrics(console, {"model": result.metrics})
    console.print(f"{result.n_test} test rows, digest {result.test_digest[:16]}; report {result.report_path}")


def default_source(spec: str, settings) -> str:
    """The shared data file a shipped spec describes."""
    files = {
        "myntra": settings.data_dir / "myntra_fashion_styles" / "styles.csv.zip",
        "product1m": settings.data_dir / "product1m_zh" / "product1m_test_ossurl_v2.txt",
    }
    if spec not in files:
        from pipeline.errors import ConfigError

        raise ConfigError(f"spec {spec!r} has no default catalog file; pass --source PATH_OR_SNAPSHOT_ID")
    return str(files[spec])


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
