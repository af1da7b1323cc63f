"""Import the whole Shopify taxonomy and the whole Myntra catalog into an empty database.

Target (issue 2): both together under 60 s on the 2-core machine.
Run: .venv/bin/python bench/bench_import.py
"""

from __future__ import annotations

import time

from common import drop_database, save, scratch_settings


def main() -> None:
    from pipeline.catalog.importers import import_catalog, import_shopify
    from pipeline.catalog.spec import resolve_catalog

    settings = scratch_settings("bench_import")
    source, spec = resolve_catalog(settings)  # TAGGER_CATALOG_SPEC / _SOURCE (default: Myntra's shipped file)
    try:
        t0 = time.perf_counter()
        shop = import_shopify(settings, settings.taxonomy_path)
        t1 = time.perf_counter()
        myn = import_catalog(settings, source, spec)
        t2 = time.perf_counter()
    finally:
        drop_database(settings.database_url)
        drop_database(settings.mlflow_tracking_uri)
    rows = [
        ("Shopify taxonomy", shop.tags, t1 - t0),
        ("Myntra catalog (products)", myn.products, t2 - t1),
    ]
    print(f"{'import':28s} {'rows':>8s} {'seconds':>8s} {'rows/s':>9s}")
    for name, n, s in rows:
        print(f"{name:28s} {n:8d} {s:8.1f} {n / s:9.0f}")
    total = t2 - t0
    print(f"{'both':28s} {'':8s} {total:8.1f}   target < 60 s: {'PASS' if total < 60 else 'FAIL'}")
    print(f"(Myntra also wrote {myn.product_tags:,} product tags: {myn.product_tags / (t2 - t1):,.0f} rows/s)")
    save(
        "import",
        {
            "shopify_s": t1 - t0,
            "shopify_rows": shop.tags,
            "myntra_s": t2 - t1,
            "myntra_rows": myn.products,
            "myntra_product_tags": myn.product_tags,
            "total_s": total,
        },
    )


if __name__ == "__main__":
    main()
