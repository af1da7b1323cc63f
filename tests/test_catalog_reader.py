"""Unit tests: dataset specs and the catalog reader on slices of the real catalogs and crafted bad files."""

from __future__ import annotations

import gzip
import zipfile

import pandas as pd
import pytest
from helpers.data import MYNTRA_ZIP, myntra_rows_with_commas, myntra_slice, product1m_slice

from pipeline.catalog.readers import category_slug, parent_of, read_catalog, slugify
from pipeline.catalog.spec import load_spec, parse_spec
from pipeline.errors import CatalogError, SpecError

pytestmark = pytest.mark.unit


def test_slugs_keep_cjk_and_encode_hierarchy():
    assert slugify("Navy Blue") == "navy-blue"
    assert slugify("  兰蔻 ") == "兰蔻"
    assert category_slug(["Apparel", "Topwear", "Shirts"]) == "category:apparel/topwear/shirts"
    assert parent_of("category:apparel/topwear/shirts") == "category:apparel/topwear"
    assert parent_of("color:black") is None


def test_myntra_slice_maps_onto_contract(tmp_path):
    read = read_catalog(myntra_slice(tmp_path / "m.csv", 50), load_spec("myntra"))
    assert len(read.frame) == 50 and not read.rejects
    first = read.frame.iloc[0]
    assert first.product_id == "15970"
    assert first.title == "Turtle Check Men Navy Blue Shirt"
    assert first.category_path == ["Apparel", "Topwear", "Shirts"]
    assert set(first.tags) == {
        "category:apparel/topwear/shirts",
        "gender:male",  # value_map Men -> Male
        "color:navy",  # value_map Navy Blue -> Navy (the Shopify library's spelling)
        "season:fall",
        "usage:casual",
    }
    assert read.tags["category:apparel/topwear"].parent == "category:apparel"


def test_unquoted_commas_are_rejoined_by_the_spec_rule(tmp_path):
    bad = myntra_rows_with_commas()
    assert len(bad) == 22  # as SOURCE.md says
    read = read_catalog(myntra_slice(tmp_path / "m.csv", 5, extra_lines=bad), load_spec("myntra"))
    assert not read.rejects and len(read.frame) == 27
    assert read.frame.title.str.contains(",").sum() == 22


def test_whole_myntra_zip_reads_every_row():
    read = read_catalog(MYNTRA_ZIP, load_spec("myntra"))
    assert read.rows_read == 44446 and len(read.frame) == 44446
    assert read.frame.product_id.is_unique


def test_product1m_brands_and_types(tmp_path):
    read = read_catalog(product1m_slice(tmp_path / "p.txt", 30), load_spec("product1m"))
    assert len(read.frame) == 30
    row = read.frame.iloc[0]
    assert row.locale == "zh" and "AHC" in row.title
    assert "brand:ahc" in row.tags and "product_type:eye-care" in row.tags


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "file is empty"),
        (b"id,gender\n1,Men\n", "missing required column"),
    ],
)
def test_whole_file_problems_raise_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(CatalogError, match=message) as err:
        read_catalog(path, load_spec("myntra"))
    assert str(path) in str(err.value)


def test_file_that_is_not_what_its_extension_says(tmp_path):
    path = tmp_path / "styles.csv.zip"
    path.write_text("id,title\n1,x\n")
    with pytest.raises(CatalogError, match="not a zip archive"):
        read_catalog(path, load_spec("myntra"))


def test_truncated_gzip(tmp_path):
    data = gzip.compress(myntra_slice(tmp_path / "m.csv", 200).read_bytes())
    path = tmp_path / "m.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CatalogError, match="corrupt or truncated"):
        read_catalog(path, load_spec("myntra"))


def test_invalid_utf8_rows_are_rejected_with_row_number(tmp_path):
    path = myntra_slice(tmp_path / "m.csv", 3)
    raw = path.read_bytes() + "99,Men,Apparel,Topwear,Shirts,Red,Fall,2012,Casual,红色衬衫\n".encode("gbk")
    path.write_bytes(raw)
    read = read_catalog(path, load_spec("myntra"))
    assert len(read.frame) == 3 and len(read.rejects) == 1
    assert read.rejects[0].row_number == 4 and "invalid utf-8 byte" in read.rejects[0].reason


def test_zip_member_choice(tmp_path):
    path = tmp_path / "two.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.csv", "x")
        zf.writestr("b.csv", "y")
    with pytest.raises(CatalogError, match="set 'member'"):
        read_catalog(path, load_spec("product1m"))


def test_parquet_with_wrong_title_type(tmp_path):
    path = tmp_path / "c.parquet"
    pd.DataFrame({"pid": ["1", "2"], "name": [1, 2]}).to_parquet(path)
    spec = parse_spec({"name": "pq", "format": "parquet", "columns": {"product_id": "pid", "title": "name"}})
    with pytest.raises(CatalogError, match="column 'name' has type int64, expected string"):
        read_catalog(path, spec)


def test_unknown_and_malformed_specs(tmp_path):
    with pytest.raises(SpecError, match="unknown dataset spec 'nope'.*myntra"):
        load_spec("nope")
    bad = tmp_path / "s.yaml"
    bad.write_text("name: x\nformat: xml\ncolumns: {product_id: a, title: b}\n")
    with pytest.raises(SpecError, match=r"format: Input should be 'csv', 'jsonl', .* got str 'xml'"):
        load_spec(bad)
    with pytest.raises(SpecError, match="columns.title is required"):
        parse_spec({"name": "x", "format": "csv", "columns": {"product_id": "a"}})
