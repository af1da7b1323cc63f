"""``tagger demo``: the main job on embedded defaults (see README). Grows as the areas land."""

from __future__ import annotations

import typer


def demo(
    rows: int = typer.Option(4000, help="Myntra rows used for training in the demo (the whole catalog is imported)."),
) -> None:
    """Import the tag library and the Myntra catalog and print what is in the library."""
    from pipeline.cli import console
    from pipeline.commands.taglib import print_summary
    from pipeline.importers import import_catalog, import_shopify
    from pipeline.settings import get_settings

    settings = get_settings()
    data = settings.data_dir
    console.rule("[bold]1. Tag library: Shopify taxonomy (en + zh)")
    res = import_shopify(settings, data / "shopify_product_taxonomy")
    console.print(f"{res.tags:,} tags in {res.facets} facets ({res.new_tags:,} new) in {res.seconds:.1f} s")
    console.rule("[bold]2. Catalog: Myntra fashion products")
    res = import_catalog(settings, data / "myntra_fashion_styles" / "styles.csv.zip", "myntra")
    console.print(f"{res.products:,} products, {res.product_tags:,} human tags in {res.seconds:.1f} s")
    print_summary()


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
