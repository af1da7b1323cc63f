"""``tagger demo``: the main job on embedded defaults, end to end, with progress shown.

import tag library + catalog (TAGGER_CATALOG_SPEC, Myntra by default) -> tagger_retrain DAG (validate, train,
evaluate, register, gate, deploy to Triton, smoke test) -> tagger_batch_tag DAG -> a new product written to
Postgres, tagged by the real-time worker (``tagger tag-worker``) -> tags of held-out products straight from Triton
over gRPC -> the new model against the baseline, the gate's verdict -> where to look next.
A second run reuses what exists (same snapshot, same training run, same served version).
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
from pathlib import Path

import typer
from rich.table import Table

from pipeline.commands import console
from pipeline.errors import TaggerError
from pipeline.settings import get_settings

# ~4 min of training on 2 cores; a demo slice trades the small-catalog floor of steps (min_steps) for speed
DEMO_TRAIN = {"max_rows": 3000, "epochs": 2, "min_steps": 0, "baseline": True}


def _step(console, n: int, title: str) -> None:
    console.rule(f"[bold cyan]{n}. {title}")


def _held_out(source: str, spec: str, k: int) -> list[dict]:
    """Products whose titles the model never saw: their normalised title hashes into the frozen test split."""
    from pipeline.catalog.readers import read_catalog
    from pipeline.catalog.spec import load_spec
    from pipeline.catalog.splits import split_of

    read = read_catalog(source, load_spec(spec))
    frame = read.frame[read.frame.title.map(lambda t: split_of(t) == "test")]
    # a spread of article types rather than eight T-shirts
    picks = frame.groupby(frame.category_path.map(lambda p: p[-1] if p else "")).head(1).sample(k, random_state=7)
    return picks[["product_id", "title", "tags"]].to_dict("records")


def _print_tasks(console, run: dict) -> None:
    """Each task in the order it ran, with its state and duration."""
    colours = {"success": "green", "failed": "red", "upstream_failed": "red", "skipped": "yellow"}
    for task, state in run["tasks"].items():
        secs = run.get("seconds", {}).get(task)
        took = f"{secs:6.1f} s" if secs is not None else "      -"
        console.print(f"  {task:18s} [{colours.get(state, 'white')}]{state:16s}[/] {took}")


def _print_result(console, settings, version: int, bundle) -> None:
    """Micro-F1 against the TF-IDF baseline with 95% intervals, the gate's verdict and why, the served version."""
    import json

    from pipeline.evaluation.evaluate import heldout_intervals

    names = {"model": "tagger (as served)", "encoder": "encoder alone", "baseline": "TF-IDF baseline"}
    table = Table(title="micro-F1, frozen test split", title_justify="left", box=None)
    for col in ("system", "micro-F1", "95% paired bootstrap"):
        table.add_column(col)
    intervals = heldout_intervals(bundle)
    if not intervals:
        console.print("(this bundle was trained before bundles carried held-out predictions: no intervals)")
    for key in sorted(intervals, key=list(names).index):
        point, low, high = intervals[key]
        table.add_row(names.get(key, key), f"{point:.4f}", f"[{low:.4f}, {high:.4f}]")
    console.print(table)
    meta_file = Path(bundle) / "bundle.json"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    if meta.get("encoder"):
        opts = meta.get("train_options") or {}
        console.print(f"encoder: [bold]{meta['encoder']}[/] (catalog locale {meta.get('locale')!r}; "
                      f"{opts.get('epochs')} epochs; `tagger encoders list` shows the others)")  # fmt: skip
    report = settings.reports_dir / "gate" / f"{settings.registered_model_name}-v{version}.json"
    if report.exists():
        gate = json.loads(report.read_text())
        why = "; ".join(gate.get("failed_rules") or []) or "no rule of the policy was broken"
        console.print(f"gate ({gate.get('policy')} policy): [bold]{gate.get('verdict')}[/]: {why}")
    console.print(
        f"serving: models:/{settings.registered_model_name}/{version} (champion) from Triton at "
        f"{settings.triton_grpc_url}"
    )


def _on_deployment(settings, conf: dict, dag_id: str = "tagger_retrain") -> dict:
    """Run ``dag_id`` on this home's real Airflow deployment (started when it is not running): tagger_retrain
    through a catalog Asset event (as a shop's feed job would), tagger_batch_tag through the REST API."""
    from pipeline.orchestration.deployment import AirflowAPI, Deployment

    dep = Deployment(settings)
    if not dep.pid("scheduler"):
        with console.status("starting Airflow: db migrate, scheduler, dag-processor, triggerer, api-server, worker"):
            dep.up()
    with AirflowAPI(dep.api_url) as api:
        before = {r["dag_run_id"] for r in api.runs(dag_id)}
        if dag_id == "tagger_retrain":
            api.emit_asset_event("tagger://catalog/snapshot", conf)
            run_id = api.wait_for_run(dag_id, after=before, timeout_s=120)
        else:
            run_id = api.trigger(dag_id, conf)
        console.print(f"run [bold]{run_id}[/] on {dep.api_url} (Celery worker logs: {dep.log_dir})")
        with console.status(f"{dag_id} running on the deployment"):
            api.wait_finished(dag_id, run_id, timeout_s=3600)
        summary = api.summary(dag_id, run_id)
    console.print(f"Airflow UI: {dep.api_url}/dags/{dag_id}/runs/{run_id}")
    return summary


def _deepest(slugs: list[str]) -> dict[str, str]:
    """facet -> most specific slug (a category leaf rather than its ancestors)."""
    out: dict[str, str] = {}
    for slug in slugs:
        facet = slug.split(":", 1)[0]
        if facet not in out or slug.count("/") > out[facet].count("/"):
            out[facet] = slug
    return out


def _show_predictions(console, settings, examples: list[dict]) -> None:
    from pipeline.catalog import taglib
    from pipeline.core.services import get_engine
    from serving.client import TaggerClient

    with TaggerClient(settings.triton_grpc_url, settings.triton_model_name) as client:
        result = client.infer([e["title"] for e in examples])
    with get_engine(settings).connect() as conn:
        slugs = {s for e in examples for s in e["tags"]} | {t["slug"] for ts in result.tags for t in ts}
        zh = taglib.names(conn, list(slugs), "zh")
    console.print(f"served by [bold]{result.model_uris[0]}[/]; [green]✓[/] = the human tag, [red]✗[/] = differs")
    for e, tags in zip(examples, result.tags, strict=True):
        human = _deepest(e["tags"])
        model = _deepest([t["slug"] for t in tags])
        score = {t["slug"]: t["score"] for t in tags}
        table = Table(title=f"[bold]{e['title']}[/]", title_justify="left", box=None, pad_edge=False)
        for col in ("facet", "human tag", "model tag", "score", "name (zh)"):
            table.add_column(col)
        for facet in sorted(set(human) | set(model)):
            h, m = human.get(facet, "—"), model.get(facet, "—")
            ok = "[green]✓[/]" if h == m else "[red]✗[/]"
            name = zh.get(m, "") if zh.get(m, m) != m else ""
            value = lambda slug: slug.split(":", 1)[-1]  # noqa: E731
            table.add_row(facet, value(h), f"{ok} {value(m)}", f"{score.get(m, 0):.2f}" if m in score else "", name)
        console.print(table)


def _show_realtime(console, settings, catalog: str, example: dict) -> None:
    """Start the tag worker, write a new product to Postgres as a storefront would, and show its tags when the
    worker says they are committed (``tagger_tagged``, the notification a storefront listens for)."""
    import psycopg
    import sqlalchemy as sa

    from pipeline.core.services import get_engine
    from pipeline.tagging import realtime

    rec = realtime.start_detached(settings)
    engine = get_engine(settings)
    pid = f"storefront-{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(realtime.listen_conninfo(engine), autocommit=True) as listen:
            listen.execute(f"LISTEN {realtime.TAGGED}")
            with engine.begin() as conn:
                pk = conn.scalar(
                    sa.text(
                        "insert into products (catalog, product_id, title, content_hash) values (:c, :p, :t, '') "
                        "returning id"
                    ),
                    {"c": catalog, "p": pid, "t": example["title"]},
                )
            t0 = time.perf_counter()  # the INSERT has committed
            heard = False
            while not heard and time.perf_counter() - t0 < 10:
                heard = any(str(pk) in n.payload.split(",") for n in listen.notifies(timeout=1, stop_after=1))
            waited = (time.perf_counter() - t0) * 1000
    finally:
        realtime.stop_detached(settings)
    if not heard:
        raise TaggerError(f"the tag worker did not tag product {pid} within 10 s; see {rec.log}")
    query = sa.text(
        "select t.slug, pt.score from product_tags pt join tags t on t.id = pt.tag_id "
        "where pt.product_pk = :pk and pt.source = 'model' order by t.slug"
    )
    with engine.connect() as conn:
        tags = conn.execute(query, {"pk": pk}).all()
    console.print(
        f"INSERT of {pid} ({example['title']!r}) committed -> {len(tags)} model tags committed {waited:.0f} ms "
        f"later by `tagger tag-worker` (pid {rec.pid}, stopped again): "
        + ", ".join(f"{slug} {score:.2f}" for slug, score in tags)
    )


def _show_explanation(console, settings, title: str, version: int) -> None:
    from pipeline.evaluation.explain import word_shares
    from pipeline.review.explanations import Explainer

    out = Explainer(settings).text(title, version=version)
    table = Table(title=f"[bold]{title}[/] ({out['seconds']:.1f} s)", title_justify="left", box=None, pad_edge=False)
    for col in ("tag", "score", "words (share of the decision)"):
        table.add_column(col)
    for t in out["tags"]:
        table.add_row(t["slug"], f"{t['score']:.2f}", word_shares(t))
    console.print(table)


def demo(
    rows: int = typer.Option(DEMO_TRAIN["max_rows"], help="Myntra rows sampled for training (whole catalog imported)."),
    epochs: int = typer.Option(DEMO_TRAIN["epochs"], help="Training epochs."),
    tag_products: int = typer.Option(2000, help="Products tagged by the batch-tagging DAG in this run."),
    airflow: bool = typer.Option(
        False,
        "--airflow",
        help="Run the DAGs on a real Airflow deployment (`tagger airflow up`: scheduler, Celery worker on Redis) "
        "instead of in-process dag.test(): a catalog Asset event starts tagger_retrain.",
    ),
) -> None:
    """Run the whole platform once on embedded defaults (Postgres, MLflow store, Triton, Airflow dag.test)."""
    from pipeline import registry
    from pipeline.catalog.importers import import_catalog, import_shopify
    from pipeline.catalog.spec import resolve_catalog
    from pipeline.commands.taglib import print_summary
    from pipeline.orchestration import airflow_local
    from pipeline.orchestration.steps import step_check_serving
    from serving.server import free_port

    t0 = time.perf_counter()
    # Library warnings (ONNX tracing, Airflow serializers, MLflow) would bury the demo's own output.
    warnings.simplefilter("ignore")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    if not os.environ.get("TAGGER_GATE_POLICY"):
        # The demo trains for minutes on a slice: gate it with the demo policy (pipeline/registry/policies/demo.yaml).
        os.environ["TAGGER_GATE_POLICY"] = "demo"
        get_settings.cache_clear()
    settings = get_settings()
    source, spec = resolve_catalog(settings)
    # Before minutes of work: a deploy into a server this home did not start is refused now, not after training.
    serving = step_check_serving(settings)
    settings = get_settings()  # the home may have moved to free ports
    console.print(f"home {settings.home_dir}; Triton of this home at {serving['triton_grpc_url']} (gRPC)")

    _step(console, 1, "Tag library: Shopify taxonomy (en + zh) into Postgres")
    res = import_shopify(settings, settings.taxonomy_path)
    console.print(f"{res.tags:,} tags in {res.facets} facets ({res.new_tags:,} new) in {res.seconds:.1f} s")

    _step(console, 2, "Catalog: Myntra fashion products with their human tags")
    res = import_catalog(settings, source, spec)
    console.print(f"{res.products:,} products, {res.product_tags:,} human tags in {res.seconds:.1f} s")
    print_summary()

    _step(
        console,
        3,
        "Airflow DAG tagger_retrain: validate -> train -> evaluate -> register -> gate -> deploy -> smoke test",
    )
    conf = {"source": source, "spec": spec, "train": {**DEMO_TRAIN, "max_rows": rows, "epochs": epochs}}
    if airflow:
        retrain, batch_conf = _on_deployment(settings, conf), {"max_products": tag_products}
    else:
        retrain = airflow_local.run_dag(settings, "tagger_retrain", conf)
    _print_tasks(console, retrain)
    if retrain["state"] != "success":
        raise TaggerError(f"tagger_retrain ended {retrain['state']}: {retrain['tasks']} (see the log above)")

    _step(console, 4, "Airflow DAG tagger_batch_tag: tag products through Triton, store in Postgres")
    if airflow:
        batch = _on_deployment(settings, batch_conf, dag_id="tagger_batch_tag")
    else:
        batch = airflow_local.run_dag(settings, "tagger_batch_tag", {"max_products": tag_products})
    _print_tasks(console, batch)
    if batch["state"] != "success":
        raise TaggerError(f"tagger_batch_tag ended {batch['state']}")
    print_summary()

    held_out = _held_out(source, spec, 9)
    _step(console, 5, "Real time: a product written to Postgres is tagged within a second (tagger tag-worker)")
    from pipeline.catalog.spec import load_spec

    _show_realtime(console, settings, load_spec(spec).name, held_out.pop())

    _step(console, 6, "Tags of held-out products (titles the model never saw), from Triton over gRPC")
    _show_predictions(console, settings, held_out)

    _step(console, 7, "The new model, the gate's verdict, what serves")
    champion = registry.get_alias(settings, registry.CHAMPION)
    bundle = registry.bundle_for_version(settings, champion)
    _print_result(console, settings, champion, bundle)

    _step(console, 8, "Why: the words that drove each tag of a held-out product (tagger explain)")
    _show_explanation(console, settings, held_out[0]["title"], champion)

    _step(console, 9, "Where to look next")
    from pipeline.core.services import get_engine

    with get_engine(settings).connect() as conn:
        import sqlalchemy as sa

        report = conn.scalar(sa.text("select report_path from snapshots order by created_at desc limit 1"))
        waiting = conn.scalar(sa.text("select count(*) from review_items where state = 'open'"))
    af_home = airflow_local.airflow_env(settings)["AIRFLOW_HOME"]
    ui_port = free_port()  # a port nobody holds now: never a fixed one another checkout may be using
    review_port = free_port()
    ui = (
        f"AIRFLOW_HOME={af_home} AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT={ui_port} "
        f".venv/bin/airflow standalone   (http://127.0.0.1:{ui_port})"
    )
    if airflow:
        from pipeline.orchestration.deployment import Deployment

        ui = f"{Deployment(settings).api_url}   (`tagger airflow status`; `tagger airflow down` stops it)"
    console.print(
        f"champion:           models:/{settings.registered_model_name}/{champion} served by Triton at "
        f"{settings.triton_grpc_url} (gRPC)\n"
        f"MLflow UI:          .venv/bin/tagger mlflow-ui   then open http://127.0.0.1:5000\n"
        f"validation report:  {report}\n"
        f"model card:         {bundle / 'model_card.md'}\n"
        f"Airflow UI:         {ui}\n"
        f"review queue:       {waiting:,} open items: .venv/bin/tagger review serve --port {review_port}   "
        f"(http://127.0.0.1:{review_port})\n"
        f"services:           .venv/bin/tagger services status [--json]   (what this home started, addresses)\n"
        f"stop services:      make services-stop\n"
        f"demo finished in {time.perf_counter() - t0:.0f} s"
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
