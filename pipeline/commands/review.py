"""``tagger review list|show|sync|suspects|accept|reject|correct|merge|promote``: the review queue
(pipeline.review)."""

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


def register(app: typer.Typer) -> None:
    app.add_typer(review_app, name="review")
