"""Unit tests: the spec language reads foreign catalog shapes as they come (issue 18), and every spec mistake is
one line naming the key."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from pipeline.catalog.readers import get_field, read_catalog
from pipeline.catalog.spec import parse_spec
from pipeline.errors import SpecError

pytestmark = pytest.mark.unit

BASE = {"name": "t", "format": "csv", "columns": {"product_id": "id", "title": "name"}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"facets": {"color": {"colum": "c"}}},
         "unknown key 'colum' in facets.color; allowed: exclusive, column, from, split, pattern, rules, value_map"),
        ({"colums": {}}, "unknown key 'colums' in the top level; allowed: name, format,"),
        ({"columns": ["id", "name"]}, "columns: expected a mapping (key: value), got list ['id', 'name']"),
        ({"facets": {"color": {"column": ["c", "d"]}}}, "facets.color.column: expected a string, got list"),
        ({"facets": {"color": {"column": "c", "rules": [{"value": "Red"}]}}},
         "facets.color.rules.0.pattern is required"),
        ({"facets": {"color": {"exclusive": True}}},
         "facets.color: needs 'column' (a field path) or 'from: category_path'"),
        ({"facets": {"c": {"column": "c", "exclusive": "maybe"}}}, "facets.c.exclusive: expected true or false"),
        ({"category_path": {"column": "t", "split": ">", "maxdepth": 2}},
         "unknown key 'maxdepth' in category_path; allowed: column, split, split_regex, unwrap, drop, max_depth"),
        ({"category_path": {"column": "t"}}, "category_path: give exactly one of 'split'"),
        ({"category_path": ["a", 3]}, "category_path.1: expected a string, got int 3"),
        ({"columns": {"title": "name"}}, "columns must map 'product_id' to a source field, or product_id_hash"),
        ({"facets": {"c": {"column": "c", "pattern": "(?P<value>(x)"}}}, "bad regular expression in facets.c.pattern"),
    ],
)  # fmt: skip
def test_every_spec_mistake_is_one_line_naming_the_key(change, message):
    with pytest.raises(SpecError) as err:
        parse_spec({**BASE, **change}, "shop.yaml")
    text = str(err.value)
    assert text.startswith("spec shop.yaml: ") and message in text and "\n" not in text, text


def test_a_bad_spec_file_on_the_command_line_is_one_line_without_traceback(tmp_path):
    spec = tmp_path / "shop.yaml"
    spec.write_text("name: shop\nformat: csv\ncolumns: {product_id: id, title: name}\nfacets:\n  color: {colum: c}\n")
    catalog = tmp_path / "c.csv"
    catalog.write_text("id,name,c\n1,Red shirt,Red\n")
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "validate", str(catalog), "--spec", str(spec)],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr and "unknown key 'colum' in facets.color" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_field_paths_reach_into_nested_records_lists_and_json_text():
    rec = {"sku": {"id": 7}, "labels": {"coarse": ["Shoes", "Sale"]}, "meta": '{"color": "Red", "sizes": ["S"]}',
           "a.b": "dotted column"}  # fmt: skip
    assert get_field(rec, "sku.id") == 7
    assert get_field(rec, "labels.coarse[1]") == "Sale"
    assert get_field(rec, "labels.coarse[5]") is None and get_field(rec, "labels.fine[0]") is None
    assert get_field(rec, "meta.color") == "Red" and get_field(rec, "meta.sizes[0]") == "S"
    assert get_field(rec, "a.b") == "dotted column"  # a column named with a dot is itself
    assert get_field({"meta": "{not json"}, "meta.color") is None


def test_nested_jsonl_without_an_id_reads_through_paths_and_hashes_an_id(tmp_path):
    rows = [
        {"name": "Trail running shoe", "labels": {"coarse": ["Shoes"], "fine": ["Running", "Trail"]},
         "attrs": {"color": "Black"}},
        {"name": "Wool scarf", "labels": {"coarse": ["Accessories"], "fine": []}, "attrs": {"color": "Grey"}},
        {"name": "Wool scarf", "labels": {"coarse": ["Accessories"], "fine": []}, "attrs": {"color": "Red"}},
    ]  # fmt: skip
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    spec = parse_spec({
        "name": "nested", "format": "jsonl",
        "columns": {"title": "name"}, "product_id_hash": ["name", "attrs.color"],
        "attributes": ["attrs.color"],
        "facets": {"coarse": {"column": "labels.coarse[0]", "exclusive": True}, "fine": {"column": "labels.fine"},
                   "color": {"column": "attrs.color", "exclusive": True}},
    })  # fmt: skip
    read = read_catalog(path, spec)
    assert read.rows_read == 3 and not read.rejects
    first = read.frame.iloc[0]
    assert set(first.tags) == {"coarse:shoes", "fine:running", "fine:trail", "color:black"}
    assert first.attributes == {"color": "Black"}
    ids = read.frame.product_id.tolist()
    assert len(set(ids)) == 3 and all(len(i) == 16 for i in ids)  # same title, other colour: another product
    assert read_catalog(path, spec).frame.product_id.tolist() == ids  # stable across reads


def test_a_csv_column_holding_json_feeds_facets(tmp_path):
    path = tmp_path / "c.csv"
    meta = [json.dumps({"color": "White", "material": ["Linen"]}), json.dumps({"color": "Blue"})]
    frame = pd.DataFrame({"id": ["1", "2"], "name": ["Linen shirt", "Silk tie"], "meta": meta})
    frame.to_csv(path, index=False)
    spec = parse_spec({**BASE, "facets": {"color": {"column": "meta.color", "exclusive": True},
                                          "material": {"column": "meta.material"}}})  # fmt: skip
    read = read_catalog(path, spec)
    assert [sorted(t) for t in read.frame.tags] == [["color:white", "material:linen"], ["color:blue"]]


def test_a_category_tree_in_one_column_becomes_hierarchical_tags(tmp_path):
    trees = [
        '["Home Furnishing >> Curtains & Accessories >> Curtains >> Fabula Pack of 2 Eyelet Door Curtain (213 cm..."]',
        '["Footwear >> Women\'s Footwear >> Ballerinas"]',
        "Clothing >> Men's Clothing",  # not wrapped
    ]
    path = tmp_path / "flip.csv"
    pd.DataFrame({"id": ["a", "b", "c"], "name": ["x", "y", "z"], "tree": trees}).to_csv(path, index=False)
    tree = {"column": "tree", "split": " >> ", "drop": [r"(\.\.\.|…)$"]}
    spec = parse_spec({**BASE, "category_path": tree, "facets": {"category": {"from": "category_path",
                                                                             "exclusive": True}}})  # fmt: skip
    read = read_catalog(path, spec)
    assert read.frame.category_path.tolist() == [
        ["Home Furnishing", "Curtains & Accessories", "Curtains"],  # the trailing product name is dropped
        ["Footwear", "Women's Footwear", "Ballerinas"],
        ["Clothing", "Men's Clothing"],
    ]
    assert read.frame.tags[0] == ["category:home-furnishing/curtains-accessories/curtains"]
    assert read.tags["category:home-furnishing/curtains-accessories"].parent == "category:home-furnishing"
    capped = parse_spec({**BASE, "category_path": {**tree, "max_depth": 2},
                         "facets": {"category": {"from": "category_path"}}})  # fmt: skip
    assert read_catalog(path, capped).frame.category_path[1] == ["Footwear", "Women's Footwear"]
    by_regex = parse_spec({**BASE, "category_path": {"column": "tree", "split_regex": r"\s*>>\s*"},
                           "facets": {"category": {"from": "category_path"}}})  # fmt: skip
    assert read_catalog(path, by_regex).frame.category_path[2] == ["Clothing", "Men's Clothing"]


def test_parquet_nested_struct_and_list_columns(tmp_path):
    path = tmp_path / "c.parquet"
    pd.DataFrame({
        "id": ["1", "2"], "name": ["Canvas tote", "Leather belt"],
        "labels": [{"coarse": "Bags", "fine": ["Tote", "Canvas"]}, {"coarse": "Belts", "fine": ["Leather"]}],
    }).to_parquet(path)  # fmt: skip
    spec = parse_spec({**BASE, "format": "parquet", "facets": {"coarse": {"column": "labels.coarse"},
                                                                "fine": {"column": "labels.fine"}}})  # fmt: skip
    read = read_catalog(path, spec)
    assert [sorted(t) for t in read.frame.tags] == [
        ["coarse:bags", "fine:canvas", "fine:tote"],
        ["coarse:belts", "fine:leather"],
    ]


FLIPKART_SPECS = (
    '{"product_specification"=>[{"key"=>"Color", "value"=>"Black"}, {"key"=>"Ideal For", "value"=>"Women"}, '
    '{"value"=>"Machine wash"}, {"key"=>"Fabric", "value"=>"Cotton"}]}'
)


@pytest.mark.parametrize(
    ("cell", "fmt", "want"),
    [
        (FLIPKART_SPECS, "auto", {"color": "Black", "ideal_for": "Women", "material": "Cotton"}),
        ('[{"key": "Designed For", "value": "Men"}, {"name": "Colour", "value": "Red"}]', "json",
         {"ideal_for": "Men", "color": "Red"}),
        ('{"Suitable For": "Kids", "Material": "Wool", "Pattern": "Solid"}', "auto",
         {"ideal_for": "Kids", "material": "Wool", "Pattern": "Solid"}),
        ("颜色分类#:#深灰色#;#品牌#:#Sansui/山水#;#适用#:#", "pairs", {"color": "深灰色", "brand": "Sansui/山水"}),
        ("颜色分类#:#深灰色#;#颜色分类#:#白色", "auto", {"color": ["深灰色", "白色"]}),
        ("not attributes at all", "auto", {}),
        ("{broken json", "json", {}),
    ],
)  # fmt: skip
def test_attribute_lists_in_one_field_in_the_common_shapes(cell, fmt, want):
    from pipeline.catalog.readers import parse_attribute_list

    spec = parse_spec({**BASE, "attribute_list": {
        "column": "specs", "format": fmt, "pair_separator": "#;#", "key_separator": "#:#",
        "keys": {"color": ["Color", "Colour", "颜色分类"], "ideal_for": ["Ideal For", "Designed For", "Suitable For"],
                 "material": ["Fabric", "Material"], "brand": "品牌"}}})  # fmt: skip
    assert parse_attribute_list(cell, spec.attribute_list) == want


def test_attribute_list_feeds_facets_and_the_model_text(tmp_path):
    path = tmp_path / "flip.csv"
    pd.DataFrame({"id": ["1", "2"], "name": ["Cotton kurta", "Rain jacket"],
                  "specs": [FLIPKART_SPECS, '{"product_specification"=>{"key"=>"Color", "value"=>"Yellow"}}']}
                 ).to_csv(path, index=False)  # fmt: skip
    spec = parse_spec({**BASE, "attribute_list": {"column": "specs", "keys": {
        "color": "Color", "ideal_for": ["Ideal For", "Designed For"], "material": "Fabric"}},
        "attributes": ["attribute_list.material"],
        "facets": {"color": {"column": "attribute_list.color", "exclusive": True},
                   "ideal_for": {"column": "attribute_list.ideal_for"}}})  # fmt: skip
    read = read_catalog(path, spec)
    assert [sorted(t) for t in read.frame.tags] == [["color:black", "ideal_for:women"], ["color:yellow"]]
    assert read.frame.attributes.tolist() == [{"material": "Cotton"}, {}]
    with pytest.raises(SpecError, match="attribute_list: format 'pairs' needs pair_separator and key_separator"):
        parse_spec({**BASE, "attribute_list": {"column": "specs", "format": "pairs"}})


def test_extract_then_split_then_drop_compose(tmp_path):
    path = tmp_path / "c.csv"
    info = ["Colors: Red/Blue/Multi; Size: M", "Colors: Green; Size: L"]
    pd.DataFrame({"id": ["1", "2"], "name": ["Kit", "Tee"], "info": info}).to_csv(path, index=False)
    rule = {"column": "info", "pattern": r"Colors: (?P<value>[^;]+)", "split_after": "/", "drop": ["^Multi$"]}
    spec = parse_spec({**BASE, "facets": {"color": rule}})
    read = read_catalog(path, spec)  # extract "Red/Blue/Multi", split it, drop "Multi"
    assert read.frame.tags.tolist() == [["color:red", "color:blue"], ["color:green"]]


def test_a_facet_whose_field_feeds_the_model_text_is_named_and_reported_apart(tmp_path):
    from pipeline.evaluation import model_card
    from pipeline.training.dataset import text_template
    from pipeline.validation.validate import _facet_in_text

    spec = parse_spec({**BASE, "columns": {**BASE["columns"], "brand": "vendor"}, "attributes": ["fabric"],
                       "text": ["title", "brand", "attributes"],
                       "facets": {"brand": {"column": "vendor"}, "material": {"column": "fabric"},
                                  "color": {"column": "colour"}}})  # fmt: skip
    assert spec.facets_in_text(text_template(spec)) == ["brand", "material"]
    assert (
        "facet 'brand' reads 'vendor', which is also in the model text" in _facet_in_text(spec, text_template(spec))[0]
    )
    titles_only = parse_spec({**BASE, "columns": {**BASE["columns"], "brand": "vendor"}, "text": ["title"],
                              "facets": {"brand": {"column": "vendor"}}})  # fmt: skip
    assert titles_only.facets_in_text(text_template(titles_only)) == []
    block = {"micro_f1": 0.9, "macro_f1": 0.8, "precision_at_1": 0.9, "ece": 0.05, "facets": {},
             "micro_f1_without_text_facets": 0.71}  # fmt: skip
    card = model_card.render(meta={}, metrics={"model": block, "baseline": block, "facets_in_text": ["brand"],
                                               "n_train": 1, "n_val": 1, "n_test": 1, "test_digest": "x"},
                             dropped={}, history=[], options={})  # fmt: skip
    assert "facet(s) brand read a field that is also in the model text" in card and "without them: 0.7100" in card


def test_one_field_split_into_two_feeds_the_title_and_an_attribute_list(tmp_path):
    """A record without an id whose one field holds ``title<TAB>attributes`` (a Chinese marketplace's JSONL)."""
    rows = [{"text": "红色纯棉衬衫 男款\t颜色分类#:#红色#;#品牌#:#山水"}, {"text": "黑色皮带\t颜色分类#:#黑色"},
            {"text": "无属性的商品"}]  # fmt: skip
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    spec = parse_spec({"name": "zh", "format": "jsonl", "locale": "zh", "columns": {"title": "title"},
                       "product_id_hash": ["text"],
                       "split_fields": [{"column": "text", "separator": "\t", "into": ["title", "specs"]}],
                       "attribute_list": {"column": "specs", "format": "pairs", "pair_separator": "#;#",
                                          "key_separator": "#:#", "keys": {"color": "颜色分类", "brand": "品牌"}},
                       "facets": {"color": {"column": "attribute_list.color", "exclusive": True}}})  # fmt: skip
    assert spec.source_fields() == ["text"]  # title and specs are made by the split, not the file's
    read = read_catalog(path, spec)
    assert read.rows_read == 3 and not read.rejects
    assert read.frame.title.tolist() == ["红色纯棉衬衫 男款", "黑色皮带", "无属性的商品"]
    assert read.frame.tags.tolist() == [["color:红色"], ["color:黑色"], []]
    with pytest.raises(SpecError, match="split_fields.0.into: List should have at least 2 items"):
        parse_spec({**BASE, "split_fields": [{"column": "text", "separator": "\t", "into": ["title"]}]}, "s.yaml")


def test_values_that_differ_in_meaning_get_their_own_slug_and_spellings_of_one_value_are_reported(tmp_path):
    """``C++``, ``C#`` and ``C`` are three tags (slugs read as the value); ``T-Shirt`` and ``t shirt`` are one,
    and ``spec check`` says so. The display name stays as first written."""
    import yaml

    from pipeline.validation.validate import preview_catalog

    path = tmp_path / "skills.csv"
    path.write_text("id,name,skill,kind\n1,Course one,C++,T-Shirt\n2,Course two,C,t shirt\n3,Course three,C#,Mug\n"
                    "4,Course four,#1 Pick,Mug\n")  # fmt: skip
    raw = {**BASE, "facets": {"skill": {"column": "skill"}, "kind": {"column": "kind"}}}
    read = read_catalog(path, parse_spec(raw))
    assert [t[0] for t in read.frame.tags] == ["skill:c-plus-plus", "skill:c", "skill:c-sharp", "skill:no-1-pick"]
    assert read.tags["skill:c-plus-plus"].name == "C++" and read.tags["kind:t-shirt"].name == "T-Shirt"
    assert read.merged == {"kind:t-shirt": {"T-Shirt", "t shirt"}}
    spec_path = tmp_path / "skills.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    warnings = preview_catalog(path, str(spec_path), show=0).warnings
    assert "'T-Shirt', 't shirt' differ only in case or punctuation: one tag kind:t-shirt" in " ".join(warnings)
