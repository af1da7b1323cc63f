"""Reviewer decisions trigger retraining (issue 19): decisions are counted per catalog since the last trigger, on a
real Postgres; ``tagger_review_watch`` run by Airflow (``dag.test``) emits the ``review`` Asset event that
schedules ``tagger_retrain`` only once a catalog has enough, and counts each decision towards one trigger."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from helpers.data import myntra_slice
from helpers.env import home_env, tagger_env

from pipeline.catalog import taglib
from pipeline.catalog.importers import import_catalog
from pipeline.review import queue
from pipeline.review.trigger import pending_decisions, take_decisions
from pipeline.tagging.batch import library_ids

pytestmark = pytest.mark.integration


def _pending_model_tags(engine, n: int, catalog: str) -> list[int]:
    """``n`` pending model tags on products of ``catalog``, enqueued; their item ids."""
    with engine.begin() as conn:
        conn.execute(sa.text("update tags set status = 'active' where slug like 'gender:%'"))
        ids = library_ids(conn)
        gender = sorted(s for s in ids if s.startswith("gender:"))[0]
        pks = conn.execute(sa.text("select id from products where catalog = :c order by id limit :n"),
                           {"c": catalog, "n": n}).scalars().all()  # fmt: skip
        for pk in pks:
            conn.execute(sa.text("insert into product_tags (product_pk, tag_id, source, model_name, model_version, "
                                 "score, review_state) values (:p, :t, 'model', 'm', 1, 0.3, 'pending') "
                                 "on conflict do nothing"), {"p": pk, "t": ids[gender]})  # fmt: skip
        queue.sync(conn)
        items = queue.list_items(conn, kind="model_tag", catalog=catalog, limit=n)
    return [i["id"] for i in items]


def _decide(engine, item_ids: list[int], action: str = "reject") -> None:
    with engine.begin() as conn:
        for item_id in item_ids:
            queue.decide(conn, item_id, action, "ana")


def test_decisions_are_counted_per_catalog_and_towards_one_trigger_only(tmp_path, fresh_database):
    from pipeline.settings import Settings

    settings = Settings(home=tmp_path / "home", database_url=fresh_database("trigger"))
    import_catalog(settings, myntra_slice(tmp_path / "a.csv", 20), "myntra", catalog="shop-a")
    import_catalog(settings, myntra_slice(tmp_path / "b.csv", 20, start=20), "myntra", catalog="shop-b")
    engine = taglib.ensure_schema(settings)
    a, b = _pending_model_tags(engine, 6, "shop-a"), _pending_model_tags(engine, 6, "shop-b")
    _decide(engine, a[:4])
    _decide(engine, b[:2])
    with engine.connect() as conn:
        assert pending_decisions(conn) == {"shop-a": 4, "shop-b": 2}
    assert take_decisions(engine, threshold=5) is None  # no catalog has 5 yet: nothing taken
    _decide(engine, a[4:])
    request = take_decisions(engine, threshold=5)
    assert request["source"] == "db:products/shop-a" and request["decisions"] == 6
    assert request["spec"] is None  # no db:products snapshot of shop-a and no spec of that name: the default
    with engine.connect() as conn:
        assert pending_decisions(conn) == {"shop-b": 2}  # shop-a's six were taken once
    assert take_decisions(engine, threshold=5) is None


def test_the_watch_dag_emits_the_review_asset_only_past_the_threshold(tmp_path, fresh_database):
    from pipeline.orchestration import airflow_local

    env = home_env(fresh_database, tmp_path, "watch", review_retrain_after="3")
    with tagger_env(env) as (settings, _):
        import_catalog(settings, myntra_slice(tmp_path / "m.csv", 20), "myntra")
        engine = taglib.ensure_schema(settings)
        items = _pending_model_tags(engine, 4, "myntra")
        _decide(engine, items[:2])
        below = airflow_local.run_dag(settings, "tagger_review_watch")
        _decide(engine, items[2:3], "accept")
        at = airflow_local.run_dag(settings, "tagger_review_watch")
        again = airflow_local.run_dag(settings, "tagger_review_watch")

        from airflow.models.asset import AssetEvent, AssetModel
        from airflow.utils.session import create_session

        with create_session() as session:
            events = (
                session.query(AssetEvent)
                .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
                .filter(AssetModel.uri == "tagger://review/decisions", AssetEvent.source_run_id == at["run_id"])
                .all()
            )
            extras = [e.extra for e in events]
            skipped_runs = [below["run_id"], again["run_id"]]
            others = session.query(AssetEvent).filter(AssetEvent.source_run_id.in_(skipped_runs)).count()
        engine.dispose()
    assert below["tasks"] == {"count_decisions": "skipped"} and again["tasks"] == {"count_decisions": "skipped"}
    assert at["tasks"] == {"count_decisions": "success"}
    assert len(extras) == 1 and others == 0
    assert extras[0]["source"] == "db:products/myntra" and extras[0]["spec"] == "myntra"
    assert extras[0]["decisions"] == 3
