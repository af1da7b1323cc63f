"""Integration tests on a real Postgres: migrations, importers, idempotency, bad input, embedded server."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import sqlalchemy as sa
from helpers.data import SHOPIFY, myntra_slice, product1m_slice

from pipeline.catalog import taglib
from pipeline.catalog.importers import import_catalog, import_shopify
from pipeline.core import migrate
from pipeline.errors import CatalogError
from pipeline.settings import Settings
from pipeline.tagging.batch import library_ids

pytestmark = pytest.mark.integration


@pytest.fixture
def empty_db_settings(tmp_path, fresh_database):
    return Settings(home=tmp_path / "home", database_url=fresh_database("taglib"))


@pytest.fixture(scope="module")
def shopify_db(fresh_database, tmp_path_factory):
    """One database with the whole Shopify taxonomy imported (shared by this module's tests)."""
    s = Settings(home=tmp_path_factory.mktemp("home"), database_url=fresh_database("shopify"))
    result = import_shopify(s, SHOPIFY)
    return s, result


def test_migrations_up_and_down_on_an_empty_database(empty_db_settings):
    engine = sa.create_engine(empty_db_settings.database_url)
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert {"tags", "facets", "products", "product_tags", "alias_events"} <= set(sa.inspect(engine).get_table_names())
    migrate.downgrade(engine)
    assert migrate.current_revision(engine) is None
    assert "tags" not in sa.inspect(engine).get_table_names()
    migrate.upgrade(engine)  # and back up again
    assert migrate.current_revision(engine) == migrate.head_revision()
    engine.dispose()


def test_migration_0002_spells_out_plus_and_sharp_in_slugs_made_by_the_old_rule(empty_db_settings):
    """A library made before 0002 (C++ and C# slugged to ``lang:c``-like slugs) gets readable unique slugs; a child
    follows its renamed parent; slugs not made from a name (Shopify ids) stay; old slugs still resolve."""
    engine = sa.create_engine(empty_db_settings.database_url)
    migrate.upgrade(engine, "0001")
    rows = [  # id, slug, parent, en name
        (1, "lang:c", None, "C++"),
        (2, "lang:c-2", None, "C#"),  # hand-made slug: not the old rule's, stays
        (3, "category:a", None, "A+"),
        (4, "category:a/shirts", 3, "Shirts"),
        (5, "category:aa-1", None, "Apparel & Accessories+"),  # an external id: stays
        (6, "lang:java", None, "Java"),
    ]
    with engine.begin() as conn:
        conn.execute(sa.text("insert into facets (id, slug) values (1, 'lang'), (2, 'category')"))
        for tag_id, slug, parent, name in rows:
            facet = 2 if slug.startswith("category") else 1
            conn.execute(sa.text("insert into tags (id, slug, facet_id, parent_id) values (:i, :s, :f, :p)"),
                         {"i": tag_id, "s": slug, "f": facet, "p": parent})  # fmt: skip
            conn.execute(sa.text("insert into tag_names values (:i, 'en', :n)"), {"i": tag_id, "n": name})
    migrate.upgrade(engine)
    with engine.connect() as conn:
        slugs = dict(conn.execute(sa.text("select id, slug from tags")).all())
        renames = dict(conn.execute(sa.text("select old_slug, new_slug from tag_slug_renames")).all())
        assert library_ids(conn)["lang:c"] == library_ids(conn)["lang:c-plus-plus"] == 1  # batch tagging's map
    assert slugs == {1: "lang:c-plus-plus", 2: "lang:c-2", 3: "category:a-plus", 4: "category:a-plus/shirts",
                     5: "category:aa-1", 6: "lang:java"}  # fmt: skip
    assert renames == {"lang:c": "lang:c-plus-plus", "category:a": "category:a-plus",
                       "category:a/shirts": "category:a-plus/shirts"}  # fmt: skip
    migrate.downgrade(engine, "0001")
    with engine.connect() as conn:
        assert dict(conn.execute(sa.text("select id, slug from tags")).all()) == {r[0]: r[1] for r in rows}
    engine.dispose()


def test_shopify_import_has_hierarchy_and_both_languages(shopify_db):
    settings, result = shopify_db
    assert result.tags > 10595  # all categories plus attribute values
    engine = taglib.ensure_schema(settings)
    with engine.connect() as conn:
        zh = taglib.names(conn, ["category:aa-1-13", "color:black", "gender:female"], "zh")
        assert zh == {"category:aa-1-13": "服装上衣", "color:black": "黑色", "gender:female": "女性"}
        parent = conn.scalar(
            sa.text("select p.slug from tags t join tags p on p.id = t.parent_id where t.slug = 'category:aa-1-13'")
        )
        assert parent == "category:aa-1"
        n_cat = conn.scalar(
            sa.text("select count(*) from tags t join facets f on f.id=t.facet_id where f.slug='category'")
        )
        assert n_cat == 10595
        exclusive = dict(conn.execute(sa.text("select slug, exclusive from facets")).all())
        assert exclusive["category"] and exclusive["gender"] and not exclusive["color"]


def test_shopify_import_is_idempotent(shopify_db):
    settings, _ = shopify_db
    again = import_shopify(settings, SHOPIFY)
    assert again.new_tags == 0


def test_catalog_import_maps_onto_library_and_is_idempotent(shopify_db, tmp_path):
    settings, _ = shopify_db
    path = myntra_slice(tmp_path / "m.csv", 300)
    first = import_catalog(settings, path, "myntra")
    assert first.products == 300 and first.product_tags > 1000
    engine = taglib.ensure_schema(settings)
    with engine.connect() as conn:
        # "Black" in Myntra is the library's color:black (active, from Shopify), not a new candidate
        status = conn.scalar(sa.text("select status from tags where slug='color:black'"))
        assert status == "active"
        # Myntra's "Navy Blue" is mapped by the spec onto the library's Navy: no duplicate candidate
        assert conn.scalar(sa.text("select status from tags where slug='color:navy'")) == "active"
        assert conn.scalar(sa.text("select count(*) from tags where slug='color:navy-blue'")) == 0
        # "Charcoal" is not in the library: a candidate of the right facet
        row = conn.execute(
            sa.text(
                "select t.status, f.slug from tags t join facets f on f.id=t.facet_id where t.slug='color:charcoal'"
            )
        ).one()
        assert tuple(row) == ("candidate", "color")
        stamp = conn.scalar(sa.text("select max(updated_at) from products"))
        counts = conn.execute(sa.text("select count(*) from product_tags")).scalar()
    second = import_catalog(settings, path, "myntra")
    assert second.new_tags == 0
    with engine.connect() as conn:
        assert conn.scalar(sa.text("select max(updated_at) from products")) == stamp  # nothing rewritten
        assert conn.execute(sa.text("select count(*) from product_tags")).scalar() == counts


def test_chinese_catalog_round_trips(empty_db_settings, tmp_path):
    path = product1m_slice(tmp_path / "p.txt", 100)
    import_catalog(empty_db_settings, path, "product1m")
    engine = taglib.ensure_schema(empty_db_settings)
    with engine.connect() as conn:
        title = conn.scalar(sa.text("select title from products where product_id='588193613533'"))
        assert title == "香港直邮韩国AHC黄金水乳霜套盒蜗牛玻尿酸水精华面霜眼霜三件套"
        names = taglib.names(conn, ["brand:ahc"], "zh")
        assert names["brand:ahc"] == "AHC"


def test_bad_row_leaves_database_untouched(empty_db_settings, tmp_path):
    path = myntra_slice(tmp_path / "m.csv", 20)
    path.write_bytes(path.read_bytes() + "77,Men,Apparel,Topwear,Shirts,Red,Fall,2012,Casual,红色\n".encode("gbk"))
    with pytest.raises(CatalogError, match=r"m\.csv, row 21: invalid utf-8 byte"):
        import_catalog(empty_db_settings, path, "myntra")
    engine = taglib.ensure_schema(empty_db_settings)
    with engine.connect() as conn:
        assert conn.scalar(sa.text("select count(*) from products")) == 0
        assert conn.scalar(sa.text("select count(*) from tags")) == 0


def test_duplicate_ids_name_the_rows(empty_db_settings, tmp_path):
    lines = myntra_slice(tmp_path / "m.csv", 3).read_text().splitlines()
    (tmp_path / "d.csv").write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(CatalogError, match=r"duplicate product_id values \(id: rows\): \{'15970': \[1, 4\]\}"):
        import_catalog(empty_db_settings, tmp_path / "d.csv", "myntra")


def test_sql_looking_strings_are_data(empty_db_settings, tmp_path):
    lines = myntra_slice(tmp_path / "m.csv", 1).read_text().splitlines()
    evil = "Robert'); DROP TABLE products;-- Shirt"
    lines.append(f'5,Men,Apparel,Topwear,Shirts,Red,Fall,2012,Casual,"{evil}"')
    (tmp_path / "e.csv").write_text("\n".join(lines) + "\n")
    import_catalog(empty_db_settings, tmp_path / "e.csv", "myntra")
    engine = taglib.ensure_schema(empty_db_settings)
    with engine.connect() as conn:
        assert conn.scalar(sa.text("select title from products where product_id='5'")) == evil


def test_embedded_postgres_starts_is_reused_and_stops(tmp_path):
    """No database URL: the CLI starts pgserver under HOME, a second process reuses it, `stop` stops it."""
    env = {"TAGGER_HOME": str(tmp_path / "home"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}  # pgserver may useradd
    run = [sys.executable, "-m", "pipeline.cli"]
    out = subprocess.run([*run, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    status = subprocess.run([*run, "services", "status", "--json"], env=env, capture_output=True, text=True, timeout=60)
    pg = next(r for r in json.loads(status.stdout)["services"] if r["name"] == "postgres")
    pid_line = (tmp_path / "home" / "pgdata" / "postmaster.pid").read_text().splitlines()[0]
    assert pg["kind"] == "embedded" and pg["state"] == "running" and pg["own"] and str(pg["pid"]) == pid_line, pg
    pid_line = (tmp_path / "home" / "pgdata" / "postmaster.pid").read_text().splitlines()[0]
    again = subprocess.run([*run, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0
    assert (tmp_path / "home" / "pgdata" / "postmaster.pid").read_text().splitlines()[0] == pid_line  # reused
    stop = subprocess.run([*run, "services", "stop"], env=env, capture_output=True, text=True, timeout=60)
    assert "stopped the embedded PostgreSQL" in stop.stdout, stop.stdout + stop.stderr
    assert not (tmp_path / "home" / "pgdata" / "postmaster.pid").exists()


def test_cli_reports_bad_spec_without_traceback(tmp_path):
    env = {"TAGGER_HOME": str(tmp_path / "home"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}  # pgserver may useradd
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "catalog", "import", "x.csv", "--spec", "nope"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "unknown dataset spec 'nope'" in out.stderr and "Traceback" not in out.stderr
