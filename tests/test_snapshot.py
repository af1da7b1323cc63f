"""Snapshots: split assignment, content digest across runs and formats, Postgres source, load_snapshot."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import pandas as pd
import pytest
import sqlalchemy as sa
from helpers.data import myntra_slice
from helpers.fixtures_validate import unique_spec

from pipeline import db
from pipeline.catalog.readers import read_catalog
from pipeline.catalog.snapshot import content_digest, load_snapshot
from pipeline.catalog.spec import load_spec
from pipeline.catalog.splits import normalise_title, split_of
from pipeline.errors import CatalogError, ValidationFailed
from pipeline.validation.validate import ValidationOptions, validate_catalog


@pytest.mark.unit
def test_split_of_is_deterministic_and_ignores_case_and_spacing():
    assert normalise_title("  Blue\tDenim   SHIRT ") == "blue denim shirt"
    assert split_of("Blue Denim Shirt") == split_of("  blue   denim shirt")
    assert split_of("Blue Denim Shirt", seed=0) == split_of("Blue Denim Shirt", seed=0)
    shares = Counter(split_of(f"product number {i}") for i in range(5000))
    assert set(shares) == {"train", "val", "test"}
    assert 0.77 < shares["train"] / 5000 < 0.83
    assert 0.08 < shares["val"] / 5000 < 0.12
    moved = sum(split_of(f"product number {i}", 1) != split_of(f"product number {i}", 0) for i in range(500))
    assert moved > 50  # the seed reshuffles


@pytest.fixture(scope="module")
def myntra_200(tmp_path_factory):
    return read_catalog(myntra_slice(tmp_path_factory.mktemp("m") / "m.csv", 200), load_spec("myntra"))


@pytest.mark.data
def test_digest_is_stable_across_runs_formats_and_row_order(myntra_200, tmp_path):
    spec = load_spec("myntra")
    digest = content_digest(myntra_200.frame)
    assert digest == content_digest(read_catalog(myntra_200.path, spec).frame)

    # the same source rows as JSONL and as Parquet (ids as integers there), read through the same mapping
    raw = pd.read_csv(myntra_200.path, dtype=str, keep_default_na=False, on_bad_lines="skip")
    raw = raw[raw["id"].isin(myntra_200.frame["product_id"])]
    assert len(raw) == len(myntra_200.frame)
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in raw.to_dict("records")), encoding="utf-8")
    parquet = tmp_path / "m.parquet"
    raw.assign(id=raw["id"].astype("int64")).sample(frac=1, random_state=1).to_parquet(parquet)
    for path, fmt in ((jsonl, "jsonl"), (parquet, "parquet")):
        other = read_catalog(path, dataclasses.replace(spec, format=fmt))
        assert content_digest(other.frame) == digest, fmt

    changed = myntra_200.frame.copy()
    changed.loc[5, "title"] = changed.loc[5, "title"] + " X"
    assert content_digest(changed) != digest
    assert content_digest(myntra_200.frame.iloc[1:]) != digest


@pytest.mark.integration
def test_products_table_is_a_source_and_load_snapshot_returns_accepted_rows(validate_settings, validate_db_url):
    spec = unique_spec("myntra")
    eng = sa.create_engine(validate_db_url)
    with eng.begin() as conn:
        fid = conn.execute(
            sa.dialects.postgresql.insert(db.facets)
            .values(slug="color")
            .on_conflict_do_update(index_elements=["slug"], set_={"slug": "color"})
            .returning(db.facets.c.id)
        ).scalar_one()
        tag_ids = {}
        for slug in ("color:black", "color:blue"):
            tag_ids[slug] = conn.execute(
                sa.dialects.postgresql.insert(db.tags)
                .values(slug=slug, facet_id=fid)
                .on_conflict_do_update(index_elements=["slug"], set_={"status": "active"})
                .returning(db.tags.c.id)
            ).scalar_one()
        for i in range(12):
            pk = conn.execute(
                sa.insert(db.products)
                .values(catalog=spec.name, product_id=f"p{i}", title=f"Cotton shirt model {i}", content_hash="x")
                .returning(db.products.c.id)
            ).scalar_one()
            slug = "color:black" if i % 2 else "color:blue"
            conn.execute(sa.insert(db.product_tags).values(product_pk=pk, tag_id=tag_ids[slug], source="human"))
    eng.dispose()

    result = validate_catalog(f"db:products/{spec.name}", spec, validate_settings)
    assert (result.rows_read, result.rows_quarantined, result.verdict) == (12, 0, "pass")
    rows = load_snapshot(validate_settings, result.snapshot_id)
    assert len(rows) == 12
    assert sorted(rows["product_id"]) == sorted(f"p{i}" for i in range(12))
    assert rows.loc[rows["product_id"] == "p1", "tags"].iloc[0] == ["color:black"]
    assert set(rows["split"]) <= {"train", "val", "test"}
    assert isinstance(rows["attributes"].iloc[0], dict)

    with pytest.raises(CatalogError, match="no rows for catalog 'nothing-here'"):
        validate_catalog("db:products/nothing-here", spec, validate_settings)


@pytest.mark.integration
def test_load_snapshot_refuses_unknown_and_failed_snapshots(validate_settings, tmp_path):
    with pytest.raises(CatalogError, match="unknown snapshot 'myntra-0000'.*tagger validate"):
        load_snapshot(validate_settings, "myntra-0000")
    header_only = myntra_slice(tmp_path / "h.csv", 0)
    failed = validate_catalog(header_only, unique_spec("myntra"), validate_settings, options=ValidationOptions())
    assert failed.verdict == "fail"
    with pytest.raises(ValidationFailed, match="failed validation"):
        load_snapshot(validate_settings, failed.snapshot_id)
