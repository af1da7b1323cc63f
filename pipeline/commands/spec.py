"""``tagger spec init|check``: draft a dataset spec for a file never seen, and see what a spec makes of a file."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from pipeline.commands import console, err_console

spec_app = typer.Typer(
    help="Dataset specs: draft one for a new catalog file (init), preview what one reads from a file (check).",
    no_args_is_help=True,
)


@spec_app.command("init")
def init(
    path: Path = typer.Argument(
        ...,
        help="A catalog file: CSV/TSV, JSON Lines, Parquet, or lines split by a symbol run like ##### (.zip/.gz too).",
    ),
    name: str = typer.Option(None, help="The spec's name (default: from the file name)."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the draft here instead of printing it."),
    force: bool = typer.Option(False, help="Overwrite --out if it exists."),
) -> None:
    """Write a draft spec: format, encoding, delimiter, and which fields look like ids, titles, descriptions,
    brands, category trees, key/value attribute lists and tag facets, each guess with a comment saying why."""
    from pipeline.catalog.draft import draft_spec

    text = draft_spec(path, name)
    if out is None:
        console.print(text, end="", markup=False, highlight=False, soft_wrap=True)
        return
    if out.exists() and not force:
        err_console.print(f"{out} exists; pass --force to overwrite it", markup=False, soft_wrap=True)
        raise typer.Exit(2)
    out.write_text(text, encoding="utf-8")
    err_console.print(f"wrote {out}; next: tagger spec check {path} --spec {out}", markup=False, soft_wrap=True)


@spec_app.command("check")
def check(
    path: str = typer.Argument(..., help="The catalog file, or db:products[/<catalog>] (the products table)."),
    spec: str = typer.Option(..., "--spec", "-s", help="Dataset spec name or YAML path."),
    limit: int = typer.Option(None, help="Read only the first N rows."),
    show: int = typer.Option(5, help="Catalog items to show."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Without writing anything: rows read, accepted and quarantined (with reasons, by the validation suite), the
    first rows as catalog items with their model text, tags per facet, and warnings."""
    from pipeline.validation.validate import preview_catalog

    p = preview_catalog(path, spec, limit=limit, show=show)
    if as_json:
        console.print_json(json.dumps(p.to_dict(), ensure_ascii=False, default=str))
        return
    say = lambda s: console.print(s, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    say(f"{p.path} through {p.spec}: {p.rows_read} rows read = {p.accepted} accepted + {p.quarantined} quarantined")
    for item in p.items:
        say(f"\nrow {item['row_number']}  product_id={item['product_id']}")
        say(f"  title: {item['title']}")
        if item["category_path"]:
            say(f"  category_path: {' > '.join(item['category_path'])}")
        if item["attributes"]:
            say(f"  attributes: {json.dumps(item['attributes'], ensure_ascii=False)}")
        say(f"  tags: {', '.join(item['tags']) or '(none)'}")
        say(f"  model text: {item['model_text']}")
    table = Table(title="tags per facet", box=None)
    for col in ("facet", "tags", f"with >= {5} examples", "rows tagged", "most common"):
        table.add_column(col)
    for f, v in p.facets.items():
        top = ", ".join(f"{t.split(':', 1)[1]} ({n})" for t, n in v["top"][:3])
        table.add_row(f, str(v["tags"]), str(v["trainable"]), str(v["rows"]), top)
    console.print(table)
    for rule, n in p.by_rule.items():
        first = next(q for q in p.quarantine if q["expectation"] == rule) if p.quarantine else None
        example = f" (e.g. row {first['row_number']}: {first['reason']})" if first else ""
        say(f"quarantined by {rule}: {n}{example}")
    for w in p.warnings:
        say(f"warning: {w}")


def register(app: typer.Typer) -> None:
    app.add_typer(spec_app, name="spec")
