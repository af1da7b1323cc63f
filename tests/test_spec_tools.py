"""``tagger spec init`` drafts specs for shapes it has never seen; ``tagger spec check`` previews a file through a
spec without writing anything; a drafted spec goes through validation and training (issue 18)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.data import MYNTRA_ZIP, PRODUCT1M_TEST, myntra_slice

from pipeline.catalog.draft import draft_spec
from pipeline.catalog.importers import import_catalog
from pipeline.catalog.readers import read_catalog
from pipeline.catalog.samples import foreign_shapes
from pipeline.catalog.spec import parse_spec
from pipeline.errors import CatalogError
from pipeline.settings import Settings

TAGGER = [sys.executable, "-m", "pipeline.cli"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return foreign_shapes(tmp_path_factory.mktemp("shapes"), 300)


@pytest.mark.unit
def test_init_reads_a_marketplace_csv_with_a_tree_column_a_ruby_hash_and_no_id(shapes):
    spec = yaml.safe_load(draft_spec(shapes["csv"]))
    assert spec["format"] == "csv" and spec["columns"] == {"title": "product_name"}
    assert spec["product_id_hash"] == ["product_name"]
    assert spec["category_path"] == {"column": "product_category_tree", "split": " >> ", "drop": [r"(\.\.\.|…)$"]}
    assert spec["attribute_list"]["format"] == "hash"
    assert spec["attribute_list"]["keys"] == {"color": ["Color"], "ideal_for": ["Ideal For"], "occasion": ["Occasion"]}
    assert spec["facets"]["category"] == {"exclusive": True, "from": "category_path"}
    assert spec["facets"]["color"] == {"exclusive": True, "column": "attribute_list.color"}
    assert {"ideal_for", "occasion", "season"} <= set(spec["facets"])
    parse_spec(spec)


@pytest.mark.unit
@pytest.mark.parametrize("shape", ["jsonl", "parquet"])
def test_init_reads_nested_records_into_field_paths(shapes, shape):
    spec = yaml.safe_load(draft_spec(shapes[shape]))
    assert spec["format"] == shape and spec["columns"] == {"title": "name", "product_id": "sku"}
    assert spec["category_path"] == ["labels.coarse", "labels.fine"]  # the finer level goes with one coarser
    assert spec["facets"]["color"] == {"exclusive": True, "column": "attrs.color"}
    assert spec["facets"]["gender"] == {"exclusive": True, "column": "attrs.gender"}


@pytest.mark.unit
def test_init_finds_myntras_category_levels_and_every_facet_its_hand_written_spec_has():
    spec = yaml.safe_load(draft_spec(MYNTRA_ZIP))
    assert spec["member"] == "styles.csv" and spec["columns"] == {"title": "productDisplayName", "product_id": "id"}
    assert spec["category_path"] == ["masterCategory", "subCategory", "articleType"]
    assert {r.get("column") for r in spec["facets"].values()} >= {"gender", "baseColour", "season", "usage"}


@pytest.mark.unit
def test_init_reads_a_line_format_split_by_a_multi_character_separator(tmp_path):
    """Product1M's file: ``id#####title#####url#####url#####label#;#label``, no header; the links are left out."""
    sample = tmp_path / "p1m.txt"
    sample.write_text("\n".join(PRODUCT1M_TEST.read_text(encoding="utf-8").splitlines()[:300]) + "\n", encoding="utf-8")
    text = draft_spec(sample)
    spec = yaml.safe_load(text)
    assert spec["format"] == "delimited" and spec["locale"] == "zh"
    assert spec["delimited"] == {"separator": "#####", "fields": [f"field_{i}" for i in range(1, 6)]}
    assert spec["columns"] == {"title": "field_2", "product_id": "field_1"}
    assert spec["facets"] == {"field_5": {"exclusive": False, "column": "field_5", "split": "#;#"}}
    assert "field_3 (links), field_4 (links)" in text
    read = read_catalog(sample, parse_spec(spec))
    assert read.rows_read == 300 and not read.rejects
    first = read.frame.iloc[0]
    assert first["product_id"] == "588193613533" and first["title"].startswith("香港直邮韩国AHC")
    assert "field_5:ahc-黄金面霜" in first["tags"]


@pytest.mark.unit
def test_init_reads_a_header_line_of_a_line_format_and_a_csv_with_empty_columns_stays_csv(tmp_path):
    rows = [f"{i}||Cotton shirt number {i} in blue||{'Shirts' if i % 2 else 'Tops'}" for i in range(40)]
    piped = tmp_path / "piped.txt"
    piped.write_text("sku||product name||kind\n" + "\n".join(rows) + "\n", encoding="utf-8")
    spec = yaml.safe_load(draft_spec(piped))
    assert spec["delimited"] == {"separator": "||", "fields": ["sku", "product name", "kind"], "header": True}
    assert spec["columns"] == {"title": "product name", "product_id": "sku"}
    read = read_catalog(piped, parse_spec(spec))
    assert read.rows_read == 40 and len(read.frame) == 40 and read.frame.iloc[0]["product_id"] == "0"
    empty = tmp_path / "empty.csv"  # ",," on every data line is an empty column, not a separator
    empty.write_text("id,title,note,kind\n" + "\n".join(f"{i},Cotton shirt number {i},,Shirts" for i in range(40)))
    assert yaml.safe_load(draft_spec(empty))["format"] == "csv"


@pytest.mark.integration
def test_check_previews_the_products_table_as_validation_reads_it(tmp_path, fresh_database):
    """``spec check db:products/<catalog>`` reads the rows an import stored (writes nothing); a catalog the table
    does not hold is one line."""
    settings = Settings(home=tmp_path / "home", database_url=fresh_database("speccheck"))
    import_catalog(settings, myntra_slice(tmp_path / "m.csv", 40), "myntra")
    env = {**os.environ, "TAGGER_DATABASE_URL": settings.database_url, "TAGGER_HOME": str(settings.home)}
    cmd = [*TAGGER, "spec", "check", "db:products/myntra", "--spec", "myntra"]
    out = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    preview = json.loads(out.stdout)
    assert preview["rows_read"] == 40 == preview["accepted"] + preview["quarantined"]
    assert preview["facets"]["gender"]["rows"] == preview["accepted"]
    assert preview["items"][0]["tags"] and preview["items"][0]["model_text"]
    missing = subprocess.run([*TAGGER, "spec", "check", "db:products/nope", "--spec", "myntra"], env=env,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert missing.returncode == 2 and "holds no rows for catalog 'nope'" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1 and "Traceback" not in missing.stderr


@pytest.mark.unit
def test_init_on_files_it_cannot_read_says_why_in_one_line(tmp_path):
    numbers = tmp_path / "numbers.csv"
    numbers.write_text("a,b\n1,2\n3,4\n")
    for path, message in [(numbers, "no field looks like a product title"), (tmp_path / "none.csv", "not found")]:
        with pytest.raises(CatalogError, match=message):
            draft_spec(path)
    out = subprocess.run([*TAGGER, "spec", "init", str(numbers)], capture_output=True, text=True)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


@pytest.mark.integration
def test_init_edit_check_validate_train_round_trip(shapes, tmp_path, settings):
    """The drafted spec, with only a facet renamed by hand, previews, validates, trains and evaluates (by run id,
    from a snapshot through a spec file; and on another held-out file)."""
    from pipeline.training.options import TrainOptions
    from pipeline.training.train import train
    from pipeline.validation.validate import validate_catalog

    draft = tmp_path / "shop.yaml"
    out = subprocess.run([*TAGGER, "spec", "init", str(shapes["csv"]), "--name", "shop", "-o", str(draft)],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    draft.write_text(draft.read_text().replace("  ideal_for: ", "  gender: "))  # the one edit: a name

    out = subprocess.run([*TAGGER, "spec", "check", str(shapes["csv"]), "--spec", str(draft), "--json"],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    preview = json.loads(out.stdout)
    assert preview["rows_read"] == 300 == preview["accepted"] + preview["quarantined"]
    assert preview["facets"]["gender"]["tags"] >= 2 and preview["facets"]["category"]["rows"] == preview["accepted"]
    assert set(preview["by_rule"]) <= {"product_id_unique"}  # hashed ids: an identical title is the same product
    first = preview["items"][0]
    assert first["category_path"] and not first["category_path"][-1].endswith("...")
    assert first["model_text"].startswith(first["title"])

    result = validate_catalog(str(shapes["csv"]), str(draft), settings)
    assert result.rows_read == result.rows_accepted + result.rows_quarantined == 300 and result.verdict != "fail"
    opts = TrainOptions(max_length=32, batch_size=16, epochs=1, max_steps=4, min_tag_count=3, progress=False,
                        checkpoint_every=10**6)  # fmt: skip
    _library_name(settings, "season:summer", zh="夏季")  # the bundle carries every locale the library has
    trained = train(result.snapshot_id, str(draft), settings, opts)
    bundle = Path(trained.bundle_path)
    assert json.loads((bundle / "bundle.json").read_text())["spec"] == "shop"
    label_map = json.loads((bundle / "label_map.json").read_text())
    slugs = [t["slug"] for t in label_map["tags"]]
    assert label_map["names"]["season:summer"] == {"en": "summer", "zh": "夏季"}
    assert any(s.startswith("gender:") for s in slugs) and any(s.startswith("category:") for s in slugs)

    from pipeline.evaluation.evaluate import evaluate

    ev = evaluate(trained.run_id, settings)  # a run trained from a snapshot id through a spec given by path
    assert ev.test_digest == trained.test_digest and ev.n_test > 0
    other = evaluate(trained.bundle_path, settings, on=str(shapes["csv"]))  # another held-out file, all its rows
    assert other.n_test == 300 and 0 <= other.metrics["micro_f1"] <= 1


def _library_name(settings, slug: str, **names: str) -> None:
    import sqlalchemy as sa

    from pipeline import db

    eng = sa.create_engine(settings.database_url)  # migrated by the validation step before
    ins = sa.dialects.postgresql.insert
    with eng.begin() as conn:
        conn.execute(ins(db.facets).values(slug=slug.split(":")[0]).on_conflict_do_nothing())
        fid = conn.scalar(sa.select(db.facets.c.id).where(db.facets.c.slug == slug.split(":")[0]))
        conn.execute(ins(db.tags).values(slug=slug, facet_id=fid).on_conflict_do_nothing())
        tid = conn.scalar(sa.select(db.tags.c.id).where(db.tags.c.slug == slug))
        for locale, name in names.items():
            conn.execute(ins(db.tag_names).values(tag_id=tid, locale=locale, name=name).on_conflict_do_nothing())
    eng.dispose()


@pytest.mark.unit
def test_init_takes_a_long_tailed_list_field_as_multi_valued_tags_and_a_listed_brand_as_a_facet(tmp_path):
    """NER-like rows (a Chinese title; brand and product-word spans joined by '|', most of them rare): both are
    tag facets, split on '|', as the hand-written spec of bench/ner_catalog.py has them."""
    rng = __import__("random").Random(0)
    common = ["玩具", "套装", "外套", "配件", "装饰", "手机", "耳机", "面膜", "口红", "鞋", "包", "表"]
    makers = ["索尼", "飞利浦", "移动", "联通", "电信", "华为", "小米", "苹果", "三星", "海尔", "美的", "格力"]
    rows = []
    for i in range(400):
        words = [rng.choice(common)] + [f"稀有{i}"] * (i % 2)  # one common word, and a rare one every other row
        brands = [rng.choice(makers)] + [f"品牌{i}"] * (i % 3 == 0)
        title = f"{''.join(brands)}{''.join(words)} 新款 {i} 号"
        rows.append({"id": f"t-{i}", "title": title, "brand": "|".join(brands), "product_word": "|".join(words)})
    path = tmp_path / "ner.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    spec = yaml.safe_load(draft_spec(path))
    assert spec["locale"] == "zh" and "brand" not in spec["columns"]
    assert spec["facets"]["product_word"] == {"exclusive": False, "column": "product_word", "split": "|"}
    assert spec["facets"]["brand"] == {"exclusive": False, "column": "brand", "split": "|"}
