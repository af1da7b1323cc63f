"""``tagger serve`` / ``tagger deploy`` / ``tagger export``: run Triton locally, deploy registry versions to it."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.commands import console
from pipeline.errors import ServiceError
from pipeline.settings import get_settings


def serve_cmd(
    detach: bool = typer.Option(False, "--detach", "-d", help="Start, wait until ready, return (keeps running)."),
    stop: bool = typer.Option(False, "--stop", help="Stop the server a previous `tagger serve --detach` started."),
    timeout: float = typer.Option(120.0, help="Seconds to wait for the server to be ready."),
) -> None:
    """Run the real tritonserver (nvidia-pytriton wheel) on the model repository, explicit model control.

    Foreground by default: Ctrl-C (or SIGTERM) stops it cleanly, stubs and /dev/shm files included.
    """
    import signal
    import time

    from serving.server import TritonServer, claim_address, stop_recorded

    settings = get_settings()
    if stop:
        console.print("stopped this home's Triton server" if stop_recorded(settings) else "no Triton of this home runs")
        return
    settings = claim_address(settings)  # an address another process holds: moved (home's ports) or refused
    if settings.triton_is_external:
        raise ServiceError(
            f"{settings.triton_grpc_url} is an external Triton (TAGGER_TRITON_EXTERNAL): not started here"
        )
    server = TritonServer(settings)
    server.start(timeout=timeout)
    console.print(
        f"Triton ready: gRPC {settings.triton_grpc_url}, HTTP {settings.triton_http_url}, "
        f"repository {settings.model_repository} (log {server.log_path})"
    )
    if detach:
        console.print("running in the background; `tagger serve --stop` stops it")
        return

    def _term(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    try:
        while server.proc is not None and server.proc.poll() is None:
            time.sleep(0.5)
        console.print(f"[red]tritonserver exited[/]; log tail:\n{server.log_tail()}")
    except KeyboardInterrupt:
        console.print("stopping Triton...")
    finally:
        server.stop()


def deploy_cmd(
    version: int | None = typer.Argument(None, help="Registry version; default: the approved challenger."),
    rollback: bool = typer.Option(False, "--rollback", help="Serve the previous champion again."),
    actor: str | None = typer.Option(None, help="Who deploys (default: the OS user)."),
    reason: str | None = typer.Option(None, help="Why; recorded with the alias move."),
) -> None:
    """Write the version into the Triton repository, load it, smoke-test it, then move `champion`."""
    import json
    from dataclasses import asdict

    from pipeline.registry import default_actor
    from serving import deploy

    settings = get_settings()
    who = actor or default_actor()
    if rollback:
        res = deploy.rollback(settings, actor=who, reason=reason)
    else:
        res = deploy.deploy(settings, version, actor=who, reason=reason)
    console.print(
        f"[green]{res.action}[/] {res.model_uri} serving as {res.model_name} (versions {res.served_versions})"
    )
    console.print_json(json.dumps(asdict(res)))


def export_cmd(
    bundle: Path = typer.Argument(..., exists=True, file_okay=False, help="Bundle folder."),
    out: Path = typer.Argument(..., help="Output folder for model.onnx (+ model.int8.onnx)."),
    quantize: bool = typer.Option(False, help="Also write an int8 dynamically quantised graph."),
    parity_titles: int = typer.Option(64, help="Held-out texts of the bundle used for the PyTorch parity check."),
) -> None:
    """Export a bundle to ONNX (dynamic batch/sequence axes) and check parity with PyTorch (<= 1e-4)."""
    import json
    from dataclasses import asdict

    from serving.export import export_onnx
    from serving.smoke import bundle_texts

    res = export_onnx(bundle, out, parity_texts=bundle_texts(bundle, parity_titles), quantize=quantize)
    console.print_json(json.dumps(asdict(res)))


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.command("serve")(serve_cmd)
    app.command("deploy")(deploy_cmd)
    app.command("export")(export_cmd)
