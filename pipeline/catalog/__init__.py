"""Stage 1, catalog: a shop's file or table in, catalog items and the tag library out.

``spec`` (dataset specs: how a source's columns map onto the catalog contract), ``readers`` (CSV/JSONL/Parquet/
delimited files and Postgres tables -> catalog frame + rejected rows), ``taglib`` (facets, tags, names, synonyms
in Postgres), ``importers`` (taxonomies and catalogs into the library), ``snapshot`` (content-addressed catalog
snapshots), ``splits`` (the title-hash split rule every later stage shares).
"""
