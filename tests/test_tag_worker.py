"""Real-time tagging against the real parts: the outbox triggers in Postgres, LISTEN/NOTIFY, a tritonserver of this
module's own (it is restarted here), and the worker as a thread or as a real `tagger tag-worker` process.

A product inserted is tagged within a second; an update re-tags it; a worker killed (SIGKILL) mid-drain and
restarted tags every product exactly once; Triton restarted and Postgres dropping the worker's connections are
survived with nothing lost; a product Triton refuses does not block the others."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import pytest
import sqlalchemy as sa
from helpers.env import home_env, tagger_env
from helpers.fixtures_registry import ANCESTORS, EXCLUSIVE, FACETS
from helpers.fixtures_serving import GOLDEN

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "tagger_rt"


@pytest.fixture(scope="module")
def rt(fresh_database, golden_bundle, tmp_path_factory):
    """A home with the golden library, the golden bundle served by its own Triton, and an empty outbox."""
    from pipeline.catalog.taglib import FacetDef, TagDef, upsert_facets, upsert_tags
    from serving.repository import build_version
    from serving.server import TritonServer, free_port

    root = tmp_path_factory.mktemp("rt")
    grpc = f"127.0.0.1:{free_port()}"
    env = home_env(
        fresh_database,
        root,
        "rt",
        triton_grpc_url=grpc,
        triton_http_url=f"127.0.0.1:{free_port()}",
        triton_metrics_port=free_port(),
        triton_model_name=MODEL,
    )
    with tagger_env(env) as (settings, mp):
        engine = sa.create_engine(settings.database_url, pool_pre_ping=True)  # survives the connection cut below
        with engine.begin() as conn:
            upsert_facets(conn, [FacetDef(f, EXCLUSIVE[f], f == "category") for f in FACETS])
            tags = [
                TagDef(s, f, {"en": s.split(":")[1]}, parent=(ANCESTORS.get(s) or [None])[0])
                for f, slugs in FACETS.items()
                for s in slugs
            ]
            upsert_tags(conn, tags)
        build_version(golden_bundle(6.0), settings.model_repository, MODEL, 1, "models:/rt/1", golden=GOLDEN)
        server = TritonServer(settings, load=[MODEL]).start()
        try:
            yield {"settings": settings, "engine": engine, "server": server, "mp": mp}
        finally:
            server.stop()
            engine.dispose()


def _insert(engine, titles: list[str], catalog: str = "rt") -> list[int]:
    with engine.begin() as conn:
        return list(
            conn.execute(
                sa.text(
                    "insert into products (catalog, product_id, title, content_hash) "
                    "select :c, gen_random_uuid()::text, t, 'h' from unnest(cast(:titles as text[])) as t "
                    "returning id"
                ),
                {"c": catalog, "titles": titles},
            ).scalars()
        )


def _tags(engine, pks: list[int]) -> dict[int, list[str]]:
    rows = sa.text(
        "select pt.product_pk, t.slug from product_tags pt join tags t on t.id = pt.tag_id "
        "where pt.source = 'model' and pt.product_pk = any(:pks) order by t.slug"
    )
    out: dict[int, list[str]] = {pk: [] for pk in pks}
    with engine.connect() as conn:
        for pk, slug in conn.execute(rows, {"pks": pks}).all():
            out[pk].append(slug)
    return out


def _outbox(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(sa.text("select count(*) from tag_outbox"))


def _wait(pred, timeout: float, step: float = 0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        time.sleep(step)
    return pred()


class _Thread:
    """A TagWorker running ``run()`` in a thread (poll 30 s: only a NOTIFY wakes it quickly)."""

    def __init__(self, settings, **kw):
        from pipeline.tagging.realtime import TagWorker

        self.worker = TagWorker(settings, **{"poll_s": 30.0, "retry_s": 0.2, **kw})
        self.thread = threading.Thread(target=self.worker.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.worker

    def __exit__(self, *exc):
        self.worker.stop()
        # the LISTEN wait ends at its poll timeout at the latest; wake it now
        with self.worker.engine.begin() as conn:
            conn.execute(sa.text("select pg_notify('tagger_outbox', '')"))
        self.thread.join(timeout=40)
        assert not self.thread.is_alive()


def test_a_new_product_is_tagged_within_a_second_and_an_update_retags_it(rt):
    import psycopg

    from pipeline.tagging.realtime import TAGGED, listen_conninfo

    engine = rt["engine"]
    with engine.begin() as conn:
        conn.execute(sa.text("delete from tag_outbox"))
    with _Thread(rt["settings"]) as worker, psycopg.connect(listen_conninfo(engine), autocommit=True) as listen:
        listen.execute(f"LISTEN {TAGGED}")  # what a storefront does to hear that tags are ready
        time.sleep(0.5)  # the worker listens
        [pk] = _insert(engine, [GOLDEN[0]["text"]])
        t0 = time.monotonic()
        heard = next(listen.notifies(timeout=5, stop_after=1), None)
        latency = time.monotonic() - t0
        assert heard is not None and heard.payload == str(pk)
        assert _tags(engine, [pk])[pk] == sorted(GOLDEN[0]["expected"])  # committed before the notification
        assert latency < 1.0, f"insert committed -> tags committed took {latency:.2f} s"

        with engine.begin() as conn:  # the storefront changes the title: the tags follow
            conn.execute(sa.text("update products set title = :t where id = :pk"), {"t": GOLDEN[1]["text"], "pk": pk})
        assert _wait(lambda: _tags(engine, [pk])[pk] == sorted(GOLDEN[1]["expected"]), timeout=5)
        with engine.begin() as conn:  # a change outside the text does not re-tag (seen before the worker can take it)
            conn.execute(sa.text("update products set locale = 'zh' where id = :pk"), {"pk": pk})
            assert conn.scalar(sa.text("select count(*) from tag_outbox where product_pk = :pk"), {"pk": pk}) == 0
            conn.execute(sa.text("update products set brand = 'Puma' where id = :pk"), {"pk": pk})
            assert conn.scalar(sa.text("select count(*) from tag_outbox where product_pk = :pk"), {"pk": pk}) == 1
        assert _wait(lambda: _outbox(engine) == 0, timeout=5)
    assert worker.stats.products == 3 and worker.stats.failed_batches == 0
    print(f"insert committed -> tags committed: {latency * 1000:.0f} ms")


def test_a_burst_is_tagged_in_batches_and_a_refused_product_blocks_nothing(rt):
    engine = rt["engine"]
    titles = [g["text"] for g in GOLDEN] * 25 + ["   "]  # 100 good products and one Triton refuses (no title)
    with _Thread(rt["settings"], max_batch=32) as worker:
        time.sleep(0.5)
        pks = _insert(engine, titles)
        assert _wait(lambda: _outbox(engine) == 0, timeout=30)
    tags = _tags(engine, pks)
    assert all(tags[pk] == sorted(GOLDEN[i % 4]["expected"]) for i, pk in enumerate(pks[:-1]))
    assert tags[pks[-1]] == [] and worker.stats.refused == 1
    assert worker.stats.batches < 101 / 2, "a burst must be tagged in batches, not one call per product"


def test_a_storefront_write_is_tagged_before_a_bulk_import_backlog(rt):
    engine = rt["engine"]
    bulk = _insert(engine, [g["text"] for g in GOLDEN] * 100)  # one 400-row statement: the bulk lane
    [one] = _insert(engine, [GOLDEN[3]["text"]])  # then a storefront insert
    with engine.connect() as conn:
        lanes = dict(conn.execute(sa.text("select priority, count(*) from tag_outbox group by priority")).all())
    assert lanes == {1: 400, 0: 1}
    with _Thread(rt["settings"], max_batch=16):
        assert _wait(lambda: _outbox(engine) == 0, timeout=60)
    with engine.connect() as conn:
        when = sa.text(
            "select min(created_at), max(created_at) from product_tags "
            "where source = 'model' and product_pk = any(:pks)"
        )
        one_at, _ = conn.execute(when, {"pks": [one]}).one()
        bulk_first, bulk_last = conn.execute(when, {"pks": bulk}).one()
    assert one_at < bulk_first < bulk_last  # alone in the first batch (oldest first would have made it the last)


def test_the_worker_survives_a_triton_restart_and_postgres_dropping_its_connections(rt):
    settings, engine, server = rt["settings"], rt["engine"], rt["server"]
    with _Thread(settings, max_batch=16, retry_s=0.2) as worker:
        time.sleep(0.5)
        server.stop()  # Triton goes away while products keep arriving
        down = _insert(engine, [g["text"] for g in GOLDEN] * 5)
        assert _wait(lambda: worker.stats.failed_batches > 0, timeout=30)
        assert _outbox(engine) == len(down)  # rolled back: nothing taken, nothing lost
        server.start()
        assert _wait(lambda: _outbox(engine) == 0, timeout=60)

        with engine.begin() as conn:  # what a Postgres restart does to a client: its connections are cut
            cut = conn.scalar(
                sa.text(
                    "select count(pg_terminate_backend(pid)) from pg_stat_activity "
                    "where datname = current_database() and pid <> pg_backend_pid()"
                )
            )
        assert cut >= 1
        later = _insert(engine, [g["text"] for g in GOLDEN] * 5)
        assert _wait(lambda: _outbox(engine) == 0, timeout=60)
    assert worker.stats.reconnects >= 1
    tags = _tags(engine, down + later)
    assert all(tags[pk] == sorted(GOLDEN[i % 4]["expected"]) for i, pk in enumerate(down))
    assert all(tags[pk] == sorted(GOLDEN[i % 4]["expected"]) for i, pk in enumerate(later))


def test_batch_tagging_clears_the_outbox_rows_it_covers_but_not_a_newer_change(rt):
    from pipeline.tagging.batch import tag_batch

    engine = rt["engine"]
    catalog = f"batch-{uuid.uuid4().hex[:6]}"
    pks = _insert(engine, [g["text"] for g in GOLDEN], catalog=catalog)
    res = tag_batch(rt["settings"], catalog=catalog, batch_size=64)  # no worker runs: the batch DAG's job
    assert res.products == 4
    with engine.connect() as conn:
        count = sa.text("select count(*) from tag_outbox where product_pk = any(:pks)")
        assert conn.scalar(count, {"pks": pks}) == 0
    with engine.begin() as conn:
        conn.execute(sa.text("update products set title = :t where id = :pk"), {"t": GOLDEN[2]["text"], "pk": pks[0]})
    with engine.connect() as conn:
        assert conn.scalar(count, {"pks": pks}) == 1  # the change waits for a worker (or the next batch run)


def test_a_worker_killed_mid_drain_and_restarted_by_tagger_services_tags_every_product_exactly_once(rt):
    """Last in the module: `tagger services stop` stops everything the home started, this module's Triton too."""
    import json
    import subprocess
    import sys

    from typer.testing import CliRunner

    from pipeline.cli import app
    from pipeline.core import records
    from pipeline.tagging import realtime

    settings, engine = rt["settings"], rt["engine"]
    pks = _insert(engine, [g["text"] for g in GOLDEN] * 150)  # 600 products in the outbox, no worker yet
    rec = realtime.start_detached(settings, ["--max-batch=8", "--linger-ms=0"])
    tagged = sa.text("select count(distinct product_pk) from product_tags where product_pk = any(:pks)")

    def n_tagged() -> int:
        with engine.connect() as conn:
            return conn.scalar(tagged, {"pks": pks})

    started = _wait(lambda: n_tagged() >= 40, timeout=60)
    os.killpg(rec.pid, signal.SIGKILL)  # mid-drain: no chance to finish its batch or clean up
    _wait(lambda: not records.alive(rec), timeout=10)
    assert started and not records.alive(rec)

    query = sa.text(
        "select product_pk, tag_id, created_at from product_tags where source = 'model' and product_pk = any(:pks)"
    )
    with engine.connect() as conn:
        before = {(r.product_pk, r.tag_id): r.created_at for r in conn.execute(query, {"pks": pks}).all()}
        left = conn.scalar(sa.text("select count(*) from tag_outbox where product_pk = any(:pks)"), {"pks": pks})
    done = {pk for pk, _ in before}
    assert 0 < len(done) < len(pks), "the kill must land mid-drain"
    assert left == len(pks) - len(done), "each product is either tagged or still in the outbox, never both/neither"

    def tagger(*args: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "pipeline.cli", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    bad = CliRunner().invoke(app, ["services", "start", "tag-wroker"])
    assert "unknown service 'tag-wroker'" in str(bad.exception)
    assert tagger("services", "start", "tag-worker").returncode == 0  # the restart: waits until it listens
    rec = records.read(settings, realtime.RECORD)
    assert rec and records.alive(rec) and realtime.listening(settings, rec.pid)
    rows = {r["name"]: r for r in json.loads(tagger("services", "status", "--json").stdout)["services"]}
    assert rows[realtime.RECORD]["state"] == "running" and rows[realtime.RECORD]["pid"] == rec.pid
    assert _wait(lambda: _outbox(engine) == 0, timeout=120)
    stop = tagger("services", "stop")
    assert f"stopped {realtime.RECORD} (pid {rec.pid})" in stop.stdout
    assert not records.alive(rec) and records.read(settings, realtime.RECORD) is None

    with engine.connect() as conn:
        after = {(r.product_pk, r.tag_id): r.created_at for r in conn.execute(query, {"pks": pks}).all()}
    assert {pk for pk, _ in after} == set(pks)  # nothing lost
    assert all(after[k] == v for k, v in before.items()), "a product tagged before the kill was tagged again"
    tags = _tags(engine, pks)
    assert all(tags[pk] == sorted(GOLDEN[i % 4]["expected"]) for i, pk in enumerate(pks))
