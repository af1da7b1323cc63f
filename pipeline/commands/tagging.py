"""``tagger tag-worker``: tag products within a second of their insert or update (the outbox in Postgres)."""

from __future__ import annotations

import json

import typer

from pipeline.commands import console
from pipeline.settings import get_settings


def tag_worker_cmd(
    max_batch: int = typer.Option(64, min=1, max=1024, help="Most products per Triton call."),
    linger_ms: float = typer.Option(5.0, min=0, help="After a wake-up, wait this long for more of a burst."),
    poll_s: float = typer.Option(5.0, min=0.1, help="Look at the outbox at least this often without a notification."),
    review_below: float = typer.Option(0.5, min=0, max=1, help="Scores below this wait for a reviewer."),
    once: bool = typer.Option(False, "--once", help="Tag what the outbox holds now, then exit."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Start in the background, wait until it listens."),
    stop: bool = typer.Option(False, "--stop", help="Stop the worker a `--detach` (or `tagger services start`) ran."),
) -> None:
    """Tag new and changed products as they are written, through Triton, exactly once.

    Triggers on `products` fill an outbox table and NOTIFY; the worker LISTENs, takes what arrived in batches, and
    writes the tags and deletes the outbox rows in one transaction (killed midway, nothing is lost or doubled).
    It survives Triton and Postgres restarts. Foreground by default (Ctrl-C or SIGTERM: finish the batch, stop).
    """
    from pipeline.tagging import realtime

    settings = get_settings()
    if stop:
        stopped = realtime.stop_detached(settings)
        console.print("stopped this home's tag worker" if stopped else "no tag worker of this home runs")
        return
    opts = {"max-batch": max_batch, "linger-ms": linger_ms, "poll-s": poll_s, "review-below": review_below}
    if detach:
        args = [f"--{k}={v}" for k, v in opts.items()]
        rec = realtime.start_detached(settings, args)
        console.print(f"tag worker listening (pid {rec.pid}, log {rec.log}); `tagger tag-worker --stop` stops it")
        return
    worker = realtime.TagWorker(
        settings, max_batch=max_batch, linger_ms=linger_ms, poll_s=poll_s, review_below=review_below
    )
    if once:
        taken = worker.drain(retry=False)  # Triton down: one line, the rows stay in the outbox
        console.print(json.dumps({"outbox_rows": taken, **worker.stats.to_dict()}))
        return
    worker.install_signal_handlers()
    stats = worker.run()
    console.print(json.dumps(stats.to_dict()))


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.command("tag-worker")(tag_worker_cmd)
