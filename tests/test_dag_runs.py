"""DAG tests, level 3: real ``dag.test()`` runs against real Postgres, MLflow store and tritonserver on a tiny
Myntra slice: a failing validation stops before training; a model the gate rejects deploys nothing; the happy
path deploys to Triton and passes the smoke test; then the batch-tagging DAG tags every product exactly once."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
import yaml
from helpers.data import myntra_slice
from helpers.env import home_env, tagger_env
from helpers.fixtures_train import TINY_OPTIONS

from pipeline import registry
from pipeline.orchestration import airflow_local
from pipeline.settings import Settings, get_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _policy(path, **floors) -> str:
    path.write_text(yaml.safe_dump({"name": path.stem, "review": "auto", "floors": floors}))
    return str(path)


@pytest.fixture(scope="module")
def dag_env(fresh_database, serving_settings, triton, tmp_path_factory):
    """TAGGER_* environment for the DAG tasks (they read settings from the environment, like in production)."""
    root = tmp_path_factory.mktemp("dags")
    env = home_env(
        fresh_database,
        root,
        "dag",
        # the home that started the session's Triton: a home serves only from a server it started itself
        home=serving_settings.home_dir,
        registered_model_name="dag-tagger",
        triton_grpc_url=serving_settings.triton_grpc_url,
        triton_http_url=serving_settings.triton_http_url,
        triton_model_repository=serving_settings.model_repository,
        triton_model_name="dag_tagger",  # same server as the serving tests, its own model
    )
    with tagger_env(env) as (settings, mp):
        airflow_local.prepare(settings)
        yield {"settings": settings, "root": root, "mp": mp}


def _run(dag_env, dag_id: str, conf: dict, policy: str | None = None) -> dict:
    if policy:
        dag_env["mp"].setenv("TAGGER_GATE_POLICY", policy)
    get_settings.cache_clear()
    return airflow_local.run_dag(get_settings(), dag_id, conf)


def test_failing_validation_stops_before_training(dag_env):
    header_only = dag_env["root"] / "header.csv"
    header_only.write_text(myntra_slice(dag_env["root"] / "tmp.csv", 0).read_text())
    res = _run(dag_env, "tagger_retrain", {"source": str(header_only), "spec": "myntra", "train": TINY_OPTIONS})
    assert res["state"] == "failed"
    assert res["tasks"]["validate"] == "failed"
    assert res["tasks"]["train"] == "upstream_failed"
    assert res["tasks"]["deploy"] == "upstream_failed"


def test_a_foreign_server_on_the_deploy_address_fails_the_run_before_validation(dag_env, serving_settings):
    import socket

    with socket.socket() as foreign:  # listens where the settings say this home's Triton is
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        address = f"127.0.0.1:{foreign.getsockname()[1]}"
        dag_env["mp"].setenv("TAGGER_TRITON_GRPC_URL", address)
        try:
            res = _run(dag_env, "tagger_retrain", {"spec": "myntra", "train": TINY_OPTIONS})
        finally:
            dag_env["mp"].setenv("TAGGER_TRITON_GRPC_URL", serving_settings.triton_grpc_url)
            get_settings.cache_clear()
    assert res["state"] == "failed"
    assert list(res["tasks"])[0] == "check_serving" and res["tasks"]["check_serving"] == "failed"
    assert res["tasks"]["validate"] == "upstream_failed" and res["tasks"]["train"] == "upstream_failed"
    assert res["seconds"]["check_serving"] < 30


@pytest.fixture(scope="module")
def catalog(dag_env):
    return myntra_slice(dag_env["root"] / "myntra_240.csv", 240)


def test_rejected_model_deploys_nothing_then_approved_one_serves(dag_env, catalog):
    settings: Settings = dag_env["settings"]
    conf = {"source": str(catalog), "spec": "myntra", "train": TINY_OPTIONS}

    strict = _policy(dag_env["root"] / "strict.yaml", micro_f1=0.999)
    res = _run(dag_env, "tagger_retrain", conf, strict)
    assert res["tasks"]["train"] == "success" and res["tasks"]["register"] == "success"
    assert res["tasks"]["gate"] == "failed"
    assert res["tasks"]["deploy"] == "upstream_failed" and res["state"] == "failed"
    assert registry.get_alias(settings, registry.CHAMPION) is None
    assert not (settings.model_repository / "dag_tagger").exists()  # nothing was deployed

    # Same snapshot, same options: the rerun reuses the training run and the registry version (idempotent),
    # and a lenient policy approves it; deploy + smoke test go through the real tritonserver.
    lenient = _policy(dag_env["root"] / "lenient.yaml", micro_f1=0.0)
    res = _run(dag_env, "tagger_retrain", conf, lenient)
    assert res["state"] == "success", res
    assert set(res["tasks"].values()) == {"success"}
    versions = registry.list_versions(settings)
    assert len(versions) == 1  # no duplicate registry version
    champion = registry.get_alias(settings, registry.CHAMPION)
    assert champion == int(versions[0]["version"])
    assert (settings.model_repository / "dag_tagger" / str(champion)).is_dir()

    again = _run(dag_env, "tagger_retrain", conf, lenient)  # nothing changed: no retrain, no redeploy
    assert again["state"] == "success"
    assert len(registry.list_versions(settings)) == 1
    moves = [h for h in registry.history(settings) if h.get("alias") == "champion"]
    assert len(moves) == 1


def test_batch_tag_dag_tags_every_product_once(dag_env, catalog):
    from pipeline.catalog.importers import import_catalog

    settings = dag_env["settings"]
    import_catalog(settings, catalog, "myntra")
    res = _run(dag_env, "tagger_batch_tag", {"batch_size": 64, "review_below": 0.9})
    assert res["state"] == "success", res
    engine = sa.create_engine(settings.database_url)
    with engine.connect() as conn:
        tagged = conn.scalar(sa.text("select count(distinct product_pk) from product_tags where source='model'"))
        versions = conn.execute(
            sa.text("select distinct model_name, model_version from product_tags where source='model'")
        ).all()
        n_products = conn.scalar(sa.text("select count(*) from products"))
        pending = conn.execute(sa.text("select product_pk, tag_id from product_tags where review_state = 'pending'"))
        pending = set(map(tuple, pending.all()))
        queued = conn.execute(sa.text("select product_pk, tag_id from review_items where kind = 'model_tag' and "
                                      "state = 'open'")).all()  # fmt: skip
        parent = dict(conn.execute(sa.text("select id, parent_id from tags")).all())
    assert tagged == n_products == 240

    def with_ancestors(pk: int, tag: int | None) -> set:
        return {(pk, tag)} | with_ancestors(pk, parent[tag]) if tag is not None else set()

    # every model tag below the review line waits in the review queue: itself, or its deepest pending descendant
    assert queued and set(map(tuple, queued)) <= pending
    assert pending == set().union(*(with_ancestors(pk, t) for pk, t in queued)) & pending
    assert versions == [("dag-tagger", registry.get_alias(settings, registry.CHAMPION))]
    again = _run(dag_env, "tagger_batch_tag", {"batch_size": 64})  # watermark: nothing new to tag
    assert again["state"] == "success"
    with engine.connect() as conn:
        assert conn.scalar(sa.text("select count(distinct product_pk) from product_tags where source='model'")) == 240
    engine.dispose()


class _DiesAfter:
    """Fault injection: the real TaggerClient, but the process 'dies' before the (n+1)-th batch."""

    def __init__(self, client, n: int):
        self.client, self.n, self.calls = client, n, 0

    def infer_products(self, products):
        self.calls += 1
        if self.calls > self.n:
            raise KeyboardInterrupt("killed midway")
        return self.client.infer_products(products)


def test_batch_tagging_killed_midway_resumes_exactly_once(dag_env, catalog):
    from pipeline.catalog.importers import import_catalog
    from pipeline.tagging.batch import tag_batch
    from serving.client import TaggerClient

    settings = dag_env["settings"]
    import_catalog(settings, catalog, "myntra", catalog="killtest")
    real = TaggerClient(settings.triton_grpc_url, settings.triton_model_name)
    with pytest.raises(KeyboardInterrupt):
        tag_batch(settings, catalog="killtest", batch_size=50, client=_DiesAfter(real, 2))
    engine = sa.create_engine(settings.database_url)
    count = sa.text(
        "select count(distinct pt.product_pk) from product_tags pt join products p on p.id = pt.product_pk "
        "where pt.source = 'model' and p.catalog = 'killtest'"
    )
    with engine.connect() as conn:
        assert conn.scalar(count) == 100  # two committed batches; the third was rolled back
    rest = tag_batch(settings, catalog="killtest", batch_size=50, client=real)
    assert rest.products == 140  # only what was not done yet
    with engine.connect() as conn:
        assert conn.scalar(count) == 240
    assert tag_batch(settings, catalog="killtest", batch_size=50, client=real).products == 0
    real.close()
    engine.dispose()


def test_a_chinese_catalog_retrains_on_e5_through_the_dag_and_triton_answers_chinese_text(dag_env, tmp_path):
    """No encoder named: the catalog's locale (zh) picks e5-small inside the DAG's train task; the version it
    deploys carries e5's tokenizer (``query: `` prefix) and Triton tags Chinese text with it. Its own registered
    model and Triton model name, so the Myntra versions above are untouched."""
    from helpers.data import product1m_slice

    from serving.client import TaggerClient

    mp = dag_env["mp"]
    mp.setenv("TAGGER_REGISTERED_MODEL_NAME", "dag-tagger-zh")
    mp.setenv("TAGGER_TRITON_MODEL_NAME", "dag_tagger_zh")
    try:
        source = product1m_slice(tmp_path / "p1m.txt", 200)
        conf = {"source": str(source), "spec": "product1m", "train": {**TINY_OPTIONS, "max_steps": 8}}
        res = _run(dag_env, "tagger_retrain", conf, _policy(dag_env["root"] / "zh.yaml", micro_f1=0.0))
        assert res["state"] == "success", res
        settings = get_settings()
        version = registry.get_alias(settings, registry.CHAMPION)
        vdir = settings.model_repository / "dag_tagger_zh" / str(version)
        assert '"query: "' in (vdir / "tokenizer.json").read_text(encoding="utf-8")  # e5's prefix normaliser
        with TaggerClient(settings.triton_grpc_url, "dag_tagger_zh", timeout=60) as client:
            tags = client.tag(["香港直邮韩国AHC黄金水乳霜套盒", "欧莱雅男士洗面奶控油补水"])
        assert len(tags) == 2 and all(t["slug"].split(":")[0] in ("brand", "product_type") for ts in tags for t in ts)
    finally:
        mp.setenv("TAGGER_REGISTERED_MODEL_NAME", "dag-tagger")
        mp.setenv("TAGGER_TRITON_MODEL_NAME", "dag_tagger")
        get_settings.cache_clear()
