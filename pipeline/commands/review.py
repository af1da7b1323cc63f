"""``tagger review list|show|sync|suspects|accept|reject|correct|merge|promote|serve`` (the review queue,
pipeline.review) and ``tagger explain TEXT`` (which words drove each tag)."""

from __future__ import annotations

import getpass
import json

import typer
from rich.table import Table

from pipeline.commands import console
from pipeline.settings import get_settings

review_app = typer.Typer(
    help="The review queue: pending model tags, candidate tags and suspect labels, and reviewers' decisions.",
    no_args_is_help=True,
)

_BY = typer.Option(None, "--by", help="Who decides (default: the login name).")


def _engine():
    from pipeline.catalog import taglib

    return taglib.ensure_schema(get_settings())


def _name(item: dict) -> str:
    names = item.get("tag_names") or {}
    shown = " / ".join(v for k, v in sorted(names.items()) if v)
    return f"{item['tag']} ({shown})" if shown else item["tag"]


@review_app.command("sync")
def sync_cmd() -> None:
    """Enqueue pending model tags and candidate tags that are not in the queue yet (batch tagging does this too)."""
    from pipeline.review import queue

    with _engine().begin() as conn:
        added = queue.sync(conn)
    console.print(f"enqueued {added['model_tag']} pending model tags and {added['candidate']} candidate tags")


@review_app.command("suspects")
def suspects_cmd(
    spec: str = typer.Option(..., "--spec", "-s", help="Dataset spec of the catalog (its facets and model text)."),
    catalog: str = typer.Option(None, help="Catalog in the products table (default: the spec's name)."),
    top: int = typer.Option(50, help="Enqueue at most this many, least likely labels first."),
) -> None:
    """Find human labels the rest of the catalog contradicts (cleanlab on out-of-fold TF-IDF probabilities, per
    exclusive facet) and enqueue the least likely ones as suspect_label items."""
    from pipeline.catalog.spec import load_spec
    from pipeline.review import suspects

    spec_obj = load_spec(spec)
    name = catalog or spec_obj.name
    products, found, added = suspects.enqueue_catalog(_engine(), spec_obj, name, top)
    console.print(f"{found} suspect labels in {products} products of {name}; {added} new in the review queue "
                  f"(the {min(top, found)} least likely): tagger review list --kind suspect_label")  # fmt: skip


@review_app.command("list")
def list_cmd(
    kind: str = typer.Option(None, help="model_tag | candidate | suspect_label"),
    facet: str = typer.Option(None, help="Only tags of this facet."),
    catalog: str = typer.Option(None, help="Only products of this catalog."),
    decided: bool = typer.Option(False, "--decided", help="Show decided items instead of open ones."),
    limit: int = typer.Option(50, help="At most this many items."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Open items, least sure first."""
    from pipeline.review import queue

    with _engine().begin() as conn:
        queue.sync(conn)
        items = queue.list_items(
            conn, kind=kind, facet=facet, catalog=catalog, state="decided" if decided else "open", limit=limit
        )
    if as_json:
        console.print_json(json.dumps(items, default=str, ensure_ascii=False))
        return
    table = Table(title=f"review queue ({'decided' if decided else 'open'}): {len(items)} item(s)")
    for col in ("id", "kind", "product", "tag", "score", "reason") + (("decision",) if decided else ()):
        table.add_column(col)
    for it in items:
        product = f"{it['product_id']}: {it['title'][:50]}" if it["product_id"] else "-"
        score = "" if it["score"] is None else f"{it['score']:.3f}"
        row = [str(it["id"]), it["kind"], product, _name(it), score, it["reason"]]
        if decided:
            row.append(f"{it['decision']} {it['decided_tag'] or ''} by {it['decided_by']}".replace("  ", " "))
        table.add_row(*row)
    console.print(table)


@review_app.command("show")
def show_cmd(item_id: int = typer.Argument(..., help="The item's id (tagger review list).")) -> None:
    """One item with its product, tag names and events."""
    from pipeline.review import queue

    with _engine().connect() as conn:
        item = queue.get_item(conn, item_id)
    console.print_json(json.dumps(item, default=str, ensure_ascii=False))


def _decide(item_id: int, action: str, by: str | None, tag: str | None = None) -> None:
    from pipeline.review import queue

    actor = by or getpass.getuser()
    with _engine().begin() as conn:
        item = queue.decide(conn, item_id, action, actor, tag)
    target = f" -> {item['decided_tag']}" if item["decided_tag"] else ""
    console.print(f"item {item_id} ({item['kind']}, {item['tag']}): {action}{target} by {actor}", markup=False)


@review_app.command("accept")
def accept_cmd(item_id: int = typer.Argument(...), by: str = _BY) -> None:
    """Confirm a model tag or a suspect human label."""
    _decide(item_id, "accept", by)


@review_app.command("reject")
def reject_cmd(item_id: int = typer.Argument(...), by: str = _BY) -> None:
    """Reject a model tag (kept as a negative), a suspect human label, or a candidate tag (retired)."""
    _decide(item_id, "reject", by)


@review_app.command("correct")
def correct_cmd(
    item_id: int = typer.Argument(...),
    tag: str = typer.Option(..., "--tag", help="The right tag, FACET:VALUE."),
    by: str = _BY,
) -> None:
    """Replace a model tag or a suspect human label with another library tag."""
    _decide(item_id, "correct", by, tag)


@review_app.command("merge")
def merge_cmd(
    item_id: int = typer.Argument(...),
    tag: str = typer.Option(..., "--tag", help="The library tag it means, FACET:VALUE (same facet)."),
    by: str = _BY,
) -> None:
    """Merge a candidate tag into a library tag: its names become synonyms, its products move over."""
    _decide(item_id, "merge", by, tag)


@review_app.command("promote")
def promote_cmd(item_id: int = typer.Argument(...), by: str = _BY) -> None:
    """Make a candidate tag an active library tag."""
    _decide(item_id, "promote", by)


@review_app.command("serve")
def serve_cmd(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8400, help="Port."),
    by: str = typer.Option(None, "--by", help="Reviewer recorded when the page names no one (default: login)."),
    bundle: str = typer.Option(
        None, "--bundle", help="Explain with this bundle folder (default: the item's model version, else the champion)."
    ),
) -> None:
    """The review page: the queue filtered by kind/facet/catalog, decisions by click or key, explanations on
    request. Runs in the foreground (Ctrl+C stops it); start it in the background with a log file to keep it."""
    import socket

    import uvicorn

    from pipeline.errors import ConfigError
    from pipeline.review.explanations import Explainer
    from pipeline.review.web import create_app

    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}): pass another --port") from exc
    settings = get_settings()
    explainer = Explainer(settings, bundle=bundle)
    app = create_app(settings, _engine(), reviewer=by or getpass.getuser(), explainer=explainer)
    console.print(f"review page on http://{host}:{port}/  (Ctrl+C stops it)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def explain_cmd(
    text: str = typer.Argument(..., help="A product title (read as the model reads a title-only product)."),
    bundle: str = typer.Option(None, "--bundle", help="A bundle folder (default: the registry's champion)."),
    version: int = typer.Option(None, "--version", help="A registry version (default: the champion)."),
    tag: list[str] = typer.Option(None, "--tag", help="Also explain this tag (FACET:VALUE), predicted or not."),
    top: int = typer.Option(5, help="Words shown per tag."),
    steps: int = typer.Option(16, help="Integrated-gradients steps (more: closer attributions, slower)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output (every word's weight)."),
) -> None:
    """Which words drove each predicted tag: the encoder's integrated gradients (Captum) fused with the TF-IDF
    half's n-gram weights, as the bundle fuses the two."""
    from pipeline.evaluation.explain import word_shares
    from pipeline.review.explanations import Explainer

    out = Explainer(get_settings(), steps=steps).text(text, bundle=bundle, version=version, slugs=tag)
    if as_json:
        console.print_json(json.dumps(out, ensure_ascii=False))
        return
    table = Table(title=f"{out['text']!r}: {len(out['tags'])} tag(s), {out['seconds']:.2f} s")
    for col in ("tag", "score", "words (share of the decision)", "TF-IDF n-grams"):
        table.add_column(col)
    for t in out["tags"]:
        words = word_shares(t, top) or "-"
        grams = ", ".join(f"{g.strip()!r} {v:+.2f}" for g, v in t["ngrams"][:3]) or "-"
        table.add_row(t["slug"] + ("" if t["slug"] in out["predicted"] else " (not predicted)"),
                      f"{t['score']:.3f}", words, grams)  # fmt: skip
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(review_app, name="review")
    app.command("explain")(explain_cmd)
