"""``tagger taglib ...`` and ``tagger catalog import``: the tag library and product catalogs in Postgres."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from pipeline.commands import console
from pipeline.errors import SpecError
from pipeline.settings import get_settings

taglib_app = typer.Typer(help="The tag library: import taxonomies, show what is in it.", no_args_is_help=True)
catalog_app = typer.Typer(help="Product catalogs: import products with their human tags.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema migrations (Alembic).", no_args_is_help=True)


@taglib_app.command("import")
def import_cmd(
    kind: str = typer.Argument(..., help="Taxonomy kind; supported: shopify"),
    path: Path = typer.Argument(..., help="Folder of the taxonomy, e.g. ../shared/data/shopify_product_taxonomy"),
) -> None:
    """Import a taxonomy (categories with hierarchy and en/zh names, tagging attributes) as facets and tags."""
    from pipeline.catalog.importers import import_shopify

    if kind != "shopify":
        raise SpecError(f"unknown taxonomy kind {kind!r}; supported: shopify")
    res = import_shopify(get_settings(), path)
    console.print(
        f"[green]imported[/] {res.tags} tags in {res.facets} facets from {path} "
        f"({res.new_tags} new) in {res.seconds:.1f} s"
    )


@taglib_app.command("show")
def show_cmd() -> None:
    """Counts per facet (active and candidate tags), products and product tags."""
    print_summary()


def print_summary() -> dict:
    from pipeline.catalog import taglib

    engine = taglib.ensure_schema(get_settings())
    with engine.connect() as conn:
        summary = taglib.summary(conn)
    table = Table(title="Tag library")
    for col in ("facet", "exclusive", "active tags", "candidate tags"):
        table.add_column(col, justify="right" if "tags" in col else "left")
    for f in summary["facets"]:
        table.add_row(f["facet"], "yes" if f["exclusive"] else "no", str(f["active"]), str(f["candidate"]))
    console.print(table)
    products = ", ".join(f"{k}: {v:,}" for k, v in summary["products"].items()) or "none"
    ptags = ", ".join(f"{k}: {v:,}" for k, v in summary["product_tags"].items()) or "none"
    console.print(f"products: {products}\nproduct tags: {ptags}")
    return summary


@catalog_app.command("import")
def catalog_import_cmd(
    path: Path = typer.Argument(..., help="Catalog file (CSV/zip, JSONL, Parquet, delimited text)"),
    spec: str = typer.Option(..., "--spec", help="Dataset spec name (myntra, product1m) or path to a spec YAML"),
    catalog: str | None = typer.Option(None, help="Catalog name in the database (default: the spec name)"),
) -> None:
    """Load products with their human tags, mapped onto the tag library (unknown values become candidates)."""
    from pipeline.catalog.importers import import_catalog

    res = import_catalog(get_settings(), path, spec, catalog)
    console.print(
        f"[green]imported[/] {res.products:,} products with {res.product_tags:,} human tags from {path} "
        f"({res.new_tags} new candidate tags) in {res.seconds:.1f} s"
    )


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Migrate the tag-library database up to REVISION (default head)."""
    from pipeline.core import migrate
    from pipeline.core.services import get_engine

    engine = get_engine(get_settings())
    migrate.upgrade(engine, revision)
    console.print(f"database at revision {migrate.current_revision(engine)}")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="Target revision, or 'base' to drop everything")) -> None:
    """Migrate the tag-library database down to REVISION."""
    from pipeline.core import migrate
    from pipeline.core.services import get_engine

    engine = get_engine(get_settings())
    migrate.downgrade(engine, revision)
    console.print(f"database at revision {migrate.current_revision(engine)}")


def register(app: typer.Typer) -> None:
    app.add_typer(taglib_app, name="taglib")
    app.add_typer(catalog_app, name="catalog")
    app.add_typer(db_app, name="db")
