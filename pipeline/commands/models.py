"""``tagger models register|gate|promote|rollback|history|compare|list|review`` and ``tagger mlflow-ui``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import typer

from pipeline.errors import ConfigError, ServiceError
from pipeline.settings import get_settings

models = typer.Typer(
    help="The model registry in MLflow: register, gate, review, promote, roll back.", no_args_is_help=True
)

MODEL_OPT = typer.Option(None, "--model", "-m", help="Registered model name (default: settings).")
ACTOR_OPT = typer.Option(None, "--actor", help="Who acts (default: TAGGER_ACTOR or the OS user).")
GATE_EXIT = {"approve": 0, "reject": 1, "needs-review": 3}


def _settings(model: str | None):

    s = get_settings()
    return s.model_copy(update={"registered_model_name": model}) if model else s


def _actor(actor: str | None) -> str:
    from pipeline.registry import default_actor

    return actor or default_actor()


def _console():
    from rich.console import Console

    return Console()


def _print_move(move) -> None:
    if not move.changed:
        _console().print(f"{move.alias} of {move.model_name} already at version {move.to_version}: nothing to do")
        return
    _console().print(
        f"[bold green]{move.action}[/] {move.model_name}: {move.alias} {move.from_version or '–'} → "
        f"{move.to_version or '–'} by {move.actor}" + (f" ({move.reason})" if move.reason else "")
    )


@models.command("register")
def register_cmd(
    bundle: Path = typer.Argument(..., exists=True, file_okay=False, help="Bundle folder written by training."),
    run_id: str = typer.Option(None, "--run-id", help="Training run to attach the model to (default: a new run)."),
    model: str = MODEL_OPT,
    actor: str = ACTOR_OPT,
) -> None:
    """Register a bundle as a new version (alias challenger)."""
    from pipeline.registry import register_bundle

    ref = register_bundle(_settings(model), bundle, run_id, actor=_actor(actor))
    word = "registered" if ref.created else "already registered as"
    _console().print(f"[bold green]{word}[/] {ref.uri}  (run {ref.run_id})")


@models.command("gate")
def gate_cmd(
    version: int = typer.Argument(..., help="Version to judge."),
    policy: str = typer.Option(None, "--policy", "-p", help="Policy YAML path or shipped name (default, manual)."),
    model: str = MODEL_OPT,
) -> None:
    """Judge a version against the champion. Exit 0 approve, 1 reject, 3 needs-review."""
    from pipeline.registry.gate import gate

    r = gate(_settings(model), version, policy)
    color = {"approve": "green", "reject": "red", "needs-review": "yellow"}[r.verdict]
    champ = f"champion v{r.champion}" if r.champion else "no champion"
    _console().print(f"[bold {color}]{r.verdict}[/] version {r.version} (policy {r.policy}, vs {champ})")
    for rule in r.failed_rules:
        _console().print(f"  [{color}]•[/] {rule}")
    raise typer.Exit(GATE_EXIT[r.verdict])


@models.command("promote")
def promote_cmd(
    version: int = typer.Argument(..., help="Version to make champion."),
    reason: str = typer.Option(None, "--reason", "-r", help="Why (kept in the audit history)."),
    model: str = MODEL_OPT,
    actor: str = ACTOR_OPT,
) -> None:
    """Move the champion alias to VERSION (the old champion is remembered as previous)."""
    from pipeline.registry import promote

    _print_move(promote(_settings(model), version, actor=_actor(actor), reason=reason))


@models.command("rollback")
def rollback_cmd(
    reason: str = typer.Option(None, "--reason", "-r", help="Why (kept in the audit history)."),
    model: str = MODEL_OPT,
    actor: str = ACTOR_OPT,
) -> None:
    """Return the champion alias to the previous champion."""
    from pipeline.registry import rollback

    _print_move(rollback(_settings(model), actor=_actor(actor), reason=reason))


@models.command("history")
def history_cmd(model: str = MODEL_OPT, as_json: bool = typer.Option(False, "--json", help="JSON lines.")) -> None:
    """Every alias move (from, to, when, who, why, gate verdict) from the audit table."""
    from rich.table import Table

    from pipeline.registry import history

    rows = history(_settings(model))
    if as_json:
        for r in rows:
            typer.echo(json.dumps(r, default=str))
        return
    table = Table("when", "alias", "action", "from", "to", "who", "why", "gate", title="alias history")
    for r in rows:
        table.add_row(
            r["created_at"], r["alias"], r["action"], str(r["from_version"] or "–"), str(r["to_version"] or "–"),
            r["actor"], r["reason"] or "", r["gate_verdict"] or "",
        )  # fmt: skip
    _console().print(table)


@models.command("compare")
def compare_cmd(
    a: int = typer.Argument(..., help="First version."),
    b: int = typer.Argument(..., help="Second version."),
    out: Path = typer.Option(None, "--out", help="Folder for the HTML/JSON (default: HOME/reports/compare)."),
    model: str = MODEL_OPT,
) -> None:
    """Metrics of two versions side by side, per facet, with deltas; writes an HTML page with the plots."""
    from rich.table import Table

    from pipeline.registry.compare import compare

    r = compare(_settings(model), a, b, out)
    table = Table("metric", f"v{a}", f"v{b}", "delta", title=f"{r.name}: v{a} vs v{b}")
    for row in r.rows:
        d = row["delta"]
        color = "green" if (d or 0) > 0 else "red" if (d or 0) < 0 else "white"
        table.add_row(row["metric"], _num(row["a"]), _num(row["b"]), f"[{color}]{'–' if d is None else f'{d:+.4f}'}[/]")
    _console().print(table)
    if not r.same_test_split:
        _console().print("[yellow]the versions were scored on different test splits: deltas are not comparable[/]")
    _console().print(f"HTML: {r.html_path}")


def _num(v) -> str:
    return "–" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


@models.command("list")
def list_cmd(model: str = MODEL_OPT) -> None:
    """Versions with aliases, micro-F1, gate verdict and review decision."""
    from rich.table import Table

    from pipeline.registry import list_versions

    s = _settings(model)
    table = Table("version", "aliases", "micro_f1", "gate", "approval", "created", "run", title=s.registered_model_name)
    for r in list_versions(s):
        table.add_row(
            str(r["version"]), ",".join(r["aliases"]), r["micro_f1"] or "", r["gate_verdict"] or "",
            r["approval"] or "", r["created"], r["run_id"] or "",
        )  # fmt: skip
    _console().print(table)


@models.command("review")
def review_cmd(
    version: int = typer.Argument(..., help="Version under review."),
    approve: bool = typer.Option(None, "--approve/--reject", help="The decision (omit with --wait)."),
    reason: str = typer.Option("", "--reason", "-r", help="Why."),
    wait: bool = typer.Option(False, "--wait", help="Wait for a reviewer's decision in the MLflow UI instead."),
    timeout: float = typer.Option(3600, help="With --wait: give up after this many seconds."),
    model: str = MODEL_OPT,
    actor: str = ACTOR_OPT,
) -> None:
    """Approve or reject a version (tags approval, approved_by, approval_reason), or wait for that decision."""
    from pipeline.registry import review, wait_for_review

    s = _settings(model)
    if wait:
        d = wait_for_review(s, version, timeout_s=timeout, poll_s=5)
        _console().print(f"version {version} {d['approval']} by {d['approved_by']} ({d['approval_reason']})")
        raise typer.Exit(0 if d["approval"] == "approved" else 1)
    if approve is None:
        raise ConfigError("give --approve or --reject (or --wait to wait for a decision made in the MLflow UI)")
    _console().print(f"version {version} {review(s, version, approve=approve, actor=_actor(actor), reason=reason)}")


# ---- the review UI --------------------------------------------------------------------------------------
def mlflow_ui_argv(settings, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The ``mlflow server`` command line for the project's store (starts the embedded Postgres if needed)."""
    from pipeline.core.services import mlflow_tracking_uri

    uri = mlflow_tracking_uri(settings)
    if uri.startswith(("http://", "https://")):
        raise ConfigError(f"TAGGER_MLFLOW_TRACKING_URI is a server ({uri}): open it in a browser instead")
    argv = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri]
    argv += ["--default-artifact-root", settings.artifact_location, "--host", host, "--port", str(port)]
    return argv + ["--workers", "1"]


def start_mlflow_ui(settings, host: str = "127.0.0.1", port: int = 5000, timeout_s: float = 60) -> subprocess.Popen:
    """Start the MLflow UI in the background and return once ``/health`` answers.

    Raises:
        ServiceError: it exited or did not answer within ``timeout_s``.
    """

    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    proc = subprocess.Popen(
        mlflow_ui_argv(settings, host, port), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
            raise ServiceError(f"mlflow server exited with {proc.returncode} (port {port} taken?): {err}")
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    stop_mlflow_ui(proc)
    raise ServiceError(f"mlflow server on {host}:{port} did not answer /health within {timeout_s:.0f} s")


def stop_mlflow_ui(proc: subprocess.Popen) -> None:
    """Stop a server started by :func:`start_mlflow_ui` (its whole process group: uvicorn has workers)."""
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def mlflow_ui(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(5000, help="Port."),
) -> None:
    """Start the MLflow UI on the project's store to review versions, metrics, plots and model cards."""

    argv = mlflow_ui_argv(get_settings(), host, port)
    _console().print(f"MLflow UI on http://{host}:{port}  (Ctrl+C stops it)")
    raise typer.Exit(subprocess.call(argv, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}))


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.add_typer(models, name="models")
    app.command("mlflow-ui")(mlflow_ui)
