"""The review queue on a real Postgres (issue 19): what waits for a reviewer enters once, every decision changes
product tags or the library in one transaction and leaves an event row, and bad decisions are one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import namedtuple

import pytest
import sqlalchemy as sa
from helpers.data import myntra_slice

from pipeline.catalog import taglib
from pipeline.catalog.importers import import_catalog
from pipeline.errors import ReviewError
from pipeline.review import queue
from pipeline.settings import Settings
from pipeline.tagging.batch import _store, library_ids

pytestmark = pytest.mark.integration
TAGGER = [sys.executable, "-m", "pipeline.cli"]


@pytest.fixture
def shop(tmp_path, fresh_database):
    """A Myntra slice imported into an empty library (its values are candidate tags; gender and usage are then
    curated to active), with two model tags stored below the review line."""
    settings = Settings(home=tmp_path / "home", database_url=fresh_database("review"))
    import_catalog(settings, myntra_slice(tmp_path / "m.csv", 30), "myntra")
    engine = taglib.ensure_schema(settings)
    with engine.begin() as conn:
        conn.execute(sa.text("update tags set status = 'active' where slug like 'gender:%' or slug like 'usage:%'"))
        ids = library_ids(conn)
        products = conn.execute(sa.text("select id, product_id from products order by id limit 2")).all()
        for (pk, _), slug, score in zip(products, ("gender:female", "usage:sports"), (0.31, 0.42), strict=True):
            conn.execute(
                sa.text("insert into product_tags (product_pk, tag_id, source, model_name, model_version, score, "
                        "review_state) values (:p, :t, 'model', 'catalog-tagger', 3, :s, 'pending')"),
                {"p": pk, "t": ids[slug], "s": score},
            )  # fmt: skip
    return settings, engine, [pk for pk, _ in products], ids


def _tags(conn, pk: int) -> set[tuple[str, str, str]]:
    q = ("select t.slug, pt.source, pt.review_state from product_tags pt join tags t on t.id = pt.tag_id "
         "where pt.product_pk = :p")  # fmt: skip
    return {tuple(r) for r in conn.execute(sa.text(q), {"p": pk}).all()}


def test_pending_model_tags_and_candidates_enter_the_queue_once(shop):
    _, engine, _, ids = shop
    with engine.begin() as conn:
        n_candidates = conn.scalar(sa.text("select count(*) from tags where status = 'candidate'"))
        assert queue.sync(conn) == {"model_tag": 2, "candidate": n_candidates}
        assert queue.sync(conn) == {"model_tag": 0, "candidate": 0}  # idempotent
        items = queue.list_items(conn, kind="model_tag")
    assert [(i["tag"], i["score"]) for i in items] == [("gender:female", 0.31), ("usage:sports", 0.42)]
    assert items[0]["reason"] == "model score 0.310 is below the review line" and items[0]["model_version"] == 3
    assert items[0]["title"] and items[0]["tag_names"]["en"].lower() == "female"


def test_accept_reject_and_correct_change_product_tags_and_leave_events(shop):
    _, engine, (pk1, pk2), ids = shop
    with engine.begin() as conn:
        queue.sync(conn)
        first, second = queue.list_items(conn, kind="model_tag")
        accepted = queue.decide(conn, first["id"], "accept", "ana")
        assert {("gender:female", "model", "accepted"), ("gender:female", "reviewer", "accepted")} <= _tags(conn, pk1)
        assert accepted["state"] == "decided" and accepted["decided_by"] == "ana"
        assert [e["action"] for e in accepted["events"]] == ["accept"]
        corrected = queue.decide(conn, second["id"], "correct", "bo", tag="usage:casual")
        assert {("usage:sports", "model", "rejected"), ("usage:casual", "reviewer", "accepted")} <= _tags(conn, pk2)
        assert corrected["decided_tag"] == "usage:casual"
        assert corrected["events"][0]["details"] == {"tag": "usage:casual"}
    with engine.begin() as conn, pytest.raises(ReviewError, match=r"already decided: accept by ana at"):
        queue.decide(conn, first["id"], "reject", "bo")
    with engine.begin() as conn, pytest.raises(ReviewError, match=r"a model_tag item takes accept, reject, correct"):
        queue.decide(conn, _open_model(conn), "promote", "bo")


def _open_model(conn) -> int:
    """A fresh open model_tag item (a third pending model tag)."""
    pk = conn.scalar(sa.text("select max(id) from products"))
    tag = conn.scalar(sa.text("select id from tags where slug = 'gender:male'"))
    conn.execute(sa.text("insert into product_tags (product_pk, tag_id, source, score, review_state) "
                         "values (:p, :t, 'model', 0.2, 'pending') on conflict do nothing"),
                 {"p": pk, "t": tag})  # fmt: skip
    queue.sync(conn)
    return next(i["id"] for i in queue.list_items(conn, kind="model_tag") if i["tag"] == "gender:male")


def test_a_rejected_model_tag_stays_rejected_when_the_product_is_tagged_again(shop):
    _, engine, (pk1, _), ids = shop
    with engine.begin() as conn:
        queue.sync(conn)
        item = queue.list_items(conn, kind="model_tag")[0]
        queue.decide(conn, item["id"], "reject", "ana")
        Row = namedtuple("Row", "id")
        again = [[{"slug": "gender:female", "score": 0.9}, {"slug": "gender:male", "score": 0.8}]]
        _store(conn, [Row(pk1)], again, ["models:/catalog-tagger/4"], library_ids(conn), 0.5)
        states = _tags(conn, pk1)
    assert ("gender:female", "model", "rejected") in states and ("gender:female", "model", "accepted") not in states
    assert ("gender:male", "model", "accepted") in states


def test_a_pending_leaf_and_its_ancestors_are_one_item_and_accepting_it_confirms_them(shop):
    """Batch tagging stores a category leaf with its ancestors at the leaf's score: one decision, not three."""
    _, engine, _, _ = shop
    with engine.begin() as conn:
        leaf = conn.execute(sa.text("select c.id, c.slug from tags c join tags p on p.id = c.parent_id "
                                    "where p.parent_id is not null order by c.slug limit 1")).one()  # fmt: skip
        chain = conn.execute(sa.text("with recursive up (id) as (select parent_id from tags where id = :t union "
                                     "select t.parent_id from up join tags t on t.id = up.id where t.parent_id "
                                     "is not null) select id from up"), {"t": leaf.id}).scalars().all()  # fmt: skip
        pk = conn.scalar(sa.text("select max(id) from products"))
        for tag_id in [leaf.id, *chain]:
            conn.execute(sa.text("insert into product_tags (product_pk, tag_id, source, score, review_state) "
                                 "values (:p, :t, 'model', 0.3, 'pending') on conflict do nothing"),
                         {"p": pk, "t": tag_id})  # fmt: skip
        queue.sync(conn)
        mine = [i for i in queue.list_items(conn, kind="model_tag") if i["product_pk"] == pk]
        assert len(chain) >= 2 and [i["tag"] for i in mine] == [leaf.slug]  # the ancestors are not items
        decided = queue.decide(conn, mine[0]["id"], "accept", "ana")
        states = conn.execute(sa.text("select tag_id, review_state from product_tags where product_pk = :p and "
                                      "source = 'model'"), {"p": pk}).all()  # fmt: skip
    assert {t: st for t, st in states if t in [leaf.id, *chain]} == {t: "accepted" for t in [leaf.id, *chain]}
    assert decided["events"][0]["details"] == {"ancestors_accepted": len(chain)}


def test_candidates_are_promoted_merged_as_synonyms_or_rejected(shop):
    _, engine, _, _ = shop
    with engine.begin() as conn:
        queue.sync(conn)
        cands = {i["tag"]: i for i in queue.list_items(conn, kind="candidate", limit=500)}
        colors = sorted(s for s in cands if s.startswith("color:"))
        keep, merged = colors[0], colors[1]
        queue.decide(conn, cands[keep]["id"], "promote", "ana")
        n_products = conn.scalar(sa.text("select count(*) from product_tags pt join tags t on t.id = pt.tag_id "
                                         "where t.slug = :s"), {"s": merged})  # fmt: skip
        item = queue.decide(conn, cands[merged]["id"], "merge", "ana", tag=keep)
        status = dict(conn.execute(sa.text("select slug, status from tags where slug in (:a, :b)"),
                                   {"a": keep, "b": merged}).all())  # fmt: skip
        synonyms = conn.scalars(sa.text("select synonym from tag_synonyms s join tags t on t.id = s.tag_id "
                                        "where t.slug = :s"), {"s": keep}).all()  # fmt: skip
        assert status == {keep: "active", merged: "retired"}
        assert item["events"][0]["details"]["product_tags_moved"] == n_products > 0
        # the next import maps the merged value onto the kept tag
        assert taglib.find_by_name(conn, "color", synonyms) == {s.lower(): keep for s in synonyms}
        seasons = sorted(s for s in cands if s.startswith("season:"))
        with pytest.raises(ReviewError, match="in another facet"):
            queue.decide(conn, cands[seasons[0]]["id"], "merge", "ana", tag=keep)
    with engine.begin() as conn:
        queue.decide(conn, cands[seasons[0]]["id"], "reject", "ana")
        assert conn.scalar(sa.text("select status from tags where slug = :s"), {"s": seasons[0]}) == "retired"


def test_the_cli_lists_decides_and_refuses_in_one_line(shop):
    settings, engine, _, _ = shop
    env = {**os.environ, "TAGGER_DATABASE_URL": settings.database_url, "TAGGER_HOME": str(settings.home)}
    out = subprocess.run([*TAGGER, "review", "list", "--kind", "model_tag", "--json"], env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    items = json.loads(out.stdout)
    assert [i["tag"] for i in items] == ["gender:female", "usage:sports"]
    ok = subprocess.run([*TAGGER, "review", "accept", str(items[0]["id"]), "--by", "ana"], env=env,
                        capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ok.returncode == 0 and "accept by ana" in ok.stdout, ok.stderr
    for args, message in [
        (["accept", str(items[0]["id"])], "already decided: accept by ana"),
        (["correct", str(items[1]["id"]), "--tag", "usage:nope"], "no tag 'usage:nope' in the library"),
        (["accept", "999999"], "no review item 999999"),
    ]:
        bad = subprocess.run([*TAGGER, "review", *args], env=env, capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr


def test_reviewer_decisions_feed_the_next_snapshot_and_the_run_that_trains_on_it(shop):
    """A corrected label replaces the human tag of its facet in a db:products snapshot; the snapshot counts the
    reviewer labels, training reads the count (MLflow param, bundle, model card)."""
    from pipeline.catalog.snapshot import load_snapshot
    from pipeline.evaluation import model_card
    from pipeline.training.train import reviewer_labels
    from pipeline.validation.validate import validate_catalog

    settings, engine, (pk1, pk2), _ = shop
    with engine.begin() as conn:
        queue.sync(conn)
        first, second = queue.list_items(conn, kind="model_tag")
        queue.decide(conn, first["id"], "accept", "ana")  # gender:female on product 1
        queue.decide(conn, second["id"], "correct", "ana", tag="usage:formal")  # usage on product 2
        pid2, human_usage = conn.execute(
            sa.text("select p.product_id, t.slug from products p join product_tags pt on pt.product_pk = p.id "
                    "join tags t on t.id = pt.tag_id "
                    "where p.id = :p and pt.source = 'human' and t.slug like 'usage:%'"),
            {"p": pk2},
        ).one()  # fmt: skip
    assert human_usage != "usage:formal"
    result = validate_catalog("db:products/myntra", "myntra", settings, progress=False)
    frame = load_snapshot(settings, result.snapshot_id).set_index("product_id")
    usage = [t for t in frame.loc[pid2, "tags"] if t.startswith("usage:")]
    assert usage == ["usage:formal"]  # the reviewer's tag, not the human one
    assert reviewer_labels(f"snapshot:{result.snapshot_id}", settings) == 2
    card = model_card.render(meta={"reviewer_labels": 2}, metrics={"model": {"micro_f1": 0.9, "macro_f1": 0.8,
                             "precision_at_1": 0.9, "ece": 0.05, "facets": {}}, "n_train": 1, "n_val": 1, "n_test": 1,
                             "test_digest": "x"}, dropped={}, history=[], options={})  # fmt: skip
    assert "- Reviewer labels: 2 (tags a reviewer accepted or corrected" in card


def _planted_shop(tmp_path, database_url: str):
    """400 Myntra products imported; the gender label of 12 whose title says "Men" flipped to female."""
    settings = Settings(home=tmp_path / "home", database_url=database_url)
    import_catalog(settings, myntra_slice(tmp_path / "m.csv", 400), "myntra")
    engine = taglib.ensure_schema(settings)
    with engine.begin() as conn:
        female = conn.scalar(sa.text("select id from tags where slug = 'gender:female'"))
        planted = conn.execute(
            sa.text("select p.id, p.product_id from products p join product_tags pt on pt.product_pk = p.id "
                    "join tags t on t.id = pt.tag_id where t.slug = 'gender:male' and p.title like '% Men %' "
                    "order by p.id limit 12"),
        ).all()  # fmt: skip
        for pk, _ in planted:
            conn.execute(sa.text("update product_tags set tag_id = :f where product_pk = :p and source = 'human' "
                                 "and tag_id = (select id from tags where slug = 'gender:male')"),
                         {"f": female, "p": pk})  # fmt: skip
    return settings, engine, planted


def test_planted_wrong_labels_are_found_by_cleanlab_and_enqueued_as_suspects(tmp_path, fresh_database):
    """Flip the gender label of 12 products whose title says "Men" to female: most of them are among the
    suspects (precision far above the 3% a random pick would have), and they enter the queue once."""
    settings, engine, planted = _planted_shop(tmp_path, fresh_database("suspects"))
    env = {**os.environ, "TAGGER_DATABASE_URL": settings.database_url, "TAGGER_HOME": str(settings.home)}
    cmd = [*TAGGER, "review", "suspects", "--spec", "myntra", "--top", "200"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    with engine.connect() as conn:
        items = queue.list_items(conn, kind="suspect_label", facet="gender", limit=500)
    flagged = {(i["product_id"], i["tag"]) for i in items}
    hits = sum((pid, "gender:female") in flagged for _, pid in planted)
    assert len(planted) == 12 and hits >= 10, (hits, len(items))
    assert hits / len(items) > 3 * len(planted) / 400  # gender flags' precision against a random pick of rows
    female_item = next(i for i in items if (i["product_id"], i["tag"]) == (planted[0][1], "gender:female"))
    assert "the rest of the catalog suggests gender:male" in female_item["reason"]
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and " 0 new in the review queue" in again.stdout, again.stdout
    with engine.begin() as conn:
        pk = planted[0][0]
        conn.execute(sa.text("update tags set status = 'active' where slug like 'gender:%'"))  # curated
        queue.decide(conn, female_item["id"], "correct", "ana", tag="gender:male")
        assert {("gender:female", "human", "rejected"), ("gender:male", "reviewer", "accepted")} <= _tags(conn, pk)


def test_the_retrain_step_enqueues_the_suspects_of_the_rows_it_trains_on(tmp_path, fresh_database):
    """tagger_retrain's find_suspects task: a db:products snapshot's rows (as training samples them) go through
    cleanlab and the least likely labels of the snapshot's catalog enter the queue; a file snapshot of the same
    catalog finds the same products by the spec's name and adds nothing twice."""
    from pipeline.orchestration.steps import step_suspects
    from pipeline.validation.validate import validate_catalog

    settings, engine, planted = _planted_shop(tmp_path, fresh_database("step_suspects"))
    settings = settings.model_copy(update={"review_suspects_top": 100})
    snap = validate_catalog("db:products/myntra", "myntra", settings, progress=False)
    out = step_suspects(settings, snap.snapshot_id, "myntra", {"min_tag_count": 3})
    with engine.connect() as conn:
        items = queue.list_items(conn, kind="suspect_label", limit=500)
    hits = sum((pid, "gender:female") in {(i["product_id"], i["tag"]) for i in items} for _, pid in planted)
    assert out["catalog"] == "myntra" and out["rows"] == 400 and out["enqueued"] == len(items) <= 100
    assert hits >= 10, (hits, out)
    csv_snap = validate_catalog(tmp_path / "m.csv", "myntra", settings, progress=False)
    again = step_suspects(settings, csv_snap.snapshot_id, "myntra", {"min_tag_count": 3, "max_rows": 300})
    assert again["catalog"] == "myntra" and again["rows"] == 300 and again["suspects"] > 0
    none = step_suspects(settings.model_copy(update={"review_suspects_top": 0}), snap.snapshot_id, "myntra", {})
    assert none == {"rows": 0, "suspects": 0, "enqueued": 0}
