"""Dataset building: title-grouped splits, digests, texts, label map, length-grouped batches."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from helpers.data import myntra_slice

from pipeline.catalog.readers import read_catalog
from pipeline.catalog.spec import load_spec, parse_spec
from pipeline.errors import CatalogError, TrainingError
from pipeline.training.dataset import (
    build_label_map,
    collate,
    length_grouped_batches,
    normalise_title,
    prepare,
    split_digest,
    split_of,
    targets,
    text_template,
)


@pytest.mark.unit
def test_normalise_title_and_split_are_stable():
    assert normalise_title("  Puma  MEN\tBlack TSHIRT ") == "puma men black tshirt"
    assert split_of("Puma Men Black Tshirt") == split_of("puma  men black TSHIRT")
    titles = [f"product title {i}" for i in range(5000)]
    shares = pd.Series([split_of(t) for t in titles]).value_counts(normalize=True)
    assert abs(shares["train"] - 0.8) < 0.03 and abs(shares["test"] - 0.1) < 0.02
    assert [split_of(t, seed=1) for t in titles[:50]] != [split_of(t) for t in titles[:50]]


@pytest.mark.unit
def test_split_digest_ignores_row_order_but_not_content():
    a = pd.DataFrame({"product_id": ["1", "2"], "title": ["A shirt", "B  shoe"]})
    b = a.iloc[::-1]
    assert split_digest(a) == split_digest(b)
    assert split_digest(a) != split_digest(a.assign(product_id=["1", "3"]))


@pytest.mark.unit
def test_text_template_orders_fields_caps_them_and_skips_empty():
    from pipeline.catalog.text import build_text, part

    row = {"title": "Red Shirt", "brand": None, "attributes": {"year": "2012", "fit": "Slim"}, "description": "x" * 500}
    assert build_text(row, [part("title"), part("brand"), part("attributes")]) == "Red Shirt | year: 2012 | fit: Slim"
    assert build_text(row, [part("attributes.fit"), part("title", 3)]) == "fit: Slim | Red"
    assert len(build_text(row, [part("title"), part("description", 300)])) == len("Red Shirt | ") + 300
    assert text_template(load_spec("myntra")) == [part("title")]  # what the storefront sends
    assert text_template(load_spec("product1m")) == [part("title")]
    spec = parse_spec({"name": "s", "format": "csv", "columns": {"product_id": "id", "title": "t", "brand": "b",
                                                                 "description": "d"}})  # fmt: skip
    assert text_template(spec) == [part("title"), part("brand"), part("description", 300)]
    spec = parse_spec({"name": "s", "format": "csv", "columns": {"product_id": "id", "title": "t", "brand": "b"},
                       "text": ["title", {"field": "description", "max_chars": 80}]})  # fmt: skip
    assert text_template(spec) == [part("title"), part("description", 80)]


@pytest.mark.unit
def test_label_map_leaves_out_rare_tags_and_keeps_ancestors():
    spec = load_spec("myntra")
    tags = pd.Series([["category:apparel/topwear/tshirts", "color:black"]] * 3 + [["color:teal"]])
    lm, dropped = build_label_map(tags, spec, min_count=2)
    assert lm.slugs == ("category:apparel/topwear/tshirts", "color:black")
    assert dropped == {"color:teal": 1}
    assert lm.ancestors["category:apparel/topwear/tshirts"] == ("category:apparel/topwear", "category:apparel")
    assert [f.name for f in lm.facets] == ["category", "color"] and all(f.exclusive for f in lm.facets)
    assert targets(pd.Series([["color:black", "color:teal"]]), lm).tolist() == [[False, True]]
    with pytest.raises(TrainingError, match="no tag has 10 or more training examples"):
        build_label_map(tags, spec, min_count=10)


@pytest.mark.unit
def test_length_grouped_batches_cover_all_rows_deterministically():
    lengths = [(i * 7) % 23 + 2 for i in range(300)]
    b1 = length_grouped_batches(lengths, 8, seed=1, epoch=0)
    assert sorted(i for b in b1 for i in b) == list(range(300))
    assert b1 == length_grouped_batches(lengths, 8, seed=1, epoch=0)
    assert b1 != length_grouped_batches(lengths, 8, seed=1, epoch=1)
    # grouping: padded tokens are far fewer than with random batches
    padded = sum(len(b) * max(lengths[i] for i in b) for b in b1)
    assert padded < 1.15 * sum(lengths)
    ids, mask = collate([[5, 6, 7], [8]], pad_id=0, multiple=1)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert collate([[5] * 9], pad_id=0)[0].shape == (1, 16)
    assert ids.dtype == mask.dtype == torch.int64  # what the embedding layer takes


@pytest.mark.data
def test_splits_never_share_a_title_on_real_myntra(tmp_path):
    spec = load_spec("myntra")
    frame = read_catalog(myntra_slice(tmp_path / "m.csv", 3000), spec).frame
    # duplicate some titles under new product ids: they must follow their title's split
    dup = frame.head(200).assign(product_id=lambda d: d["product_id"] + "-dup")
    prep = prepare(pd.concat([frame, dup]), spec, min_tag_count=2)
    norm = prep.frame.assign(n=prep.frame["title"].map(normalise_title))
    assert norm.groupby("n")["split"].nunique().max() == 1
    assert prep.test_digest == split_digest(prep.part("test"))
    assert len(prep.part("train")) > 4 * len(prep.part("test")) > 0
    train = prep.part("train").head(20)
    assert (train["text"] == train["title"]).all()
    capped = prepare(frame, spec, min_tag_count=2, max_train_rows=500)
    assert len(capped.part("train")) == 500 and capped.test_digest == prepare(frame, spec).test_digest


@pytest.mark.integration
def test_unknown_source_names_the_problem(settings):
    from pipeline.training.dataset import load_source

    with pytest.raises(CatalogError, match="unknown snapshot .no-such-snapshot-123"):
        load_source("no-such-snapshot-123", load_spec("myntra"), settings)
