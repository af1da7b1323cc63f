"""The retraining steps as idempotent functions: what each Airflow task (and ``tagger demo``) calls.

Each step takes references (paths, snapshot ids, run ids, registry versions) and returns a small dict of
references, so DAG files only wire. Reruns are safe: a snapshot id is its content digest; a training run is
found again by the ``tagger.trigger`` tag of the run that asked for it; a registry version is found again by
its training run id; a deploy of the version already serving is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

import sqlalchemy as sa

from pipeline import registry
from pipeline.catalog.spec import resolve_catalog
from pipeline.core import tracking
from pipeline.errors import GateRejected, ServingError, ValidationFailed
from pipeline.evaluation.evaluate import evaluate_run
from pipeline.registry.gate import gate
from pipeline.review.suspects import enqueue_prepared
from pipeline.review.trigger import take_decisions
from pipeline.settings import Settings
from pipeline.tagging.batch import tag_batch
from pipeline.training.options import TrainOptions
from pipeline.training.train import train
from pipeline.validation.validate import validate_catalog
from serving.client import TaggerClient
from serving.deploy import deploy
from serving.server import TritonServer, claim_address, is_ready, own_server, wait_ready
from serving.smoke import golden_from_bundle, smoke_test

log = logging.getLogger(__name__)
TRIGGER_TAG = "tagger.trigger"


def run_request(params: dict, asset_events: list[dict] | None = None) -> dict:
    """What a tagger_retrain run was asked to do: the run's params, filled from the newest catalog Asset event's
    ``extra`` (a feed job emits ``{"source": ..., "spec": ..., "train": {...}}`` with the snapshot) where the
    params leave them unset."""
    extra = (asset_events or [{}])[-1] or {}
    return {
        "source": params.get("source") or extra.get("source"),
        "spec": params.get("spec") or extra.get("spec"),
        "train": dict(params.get("train") or extra.get("train") or {}),
        "force": bool(params.get("force") or extra.get("force")),
    }


def step_validate(settings: Settings, source: str | None, spec: str | None) -> dict:
    """Validate and snapshot the catalog (unset: the settings' catalog). Raises ValidationFailed on verdict
    *fail* (with the report path)."""

    source, spec = resolve_catalog(settings, spec, source)
    res = validate_catalog(source, spec, settings)
    out = {
        "spec": spec,
        "snapshot_id": res.snapshot_id,
        "verdict": res.verdict,
        "rows_read": res.rows_read,
        "rows_accepted": res.rows_accepted,
        "rows_quarantined": res.rows_quarantined,
        "report_path": res.report_path,
    }
    if res.verdict == "fail":
        raise ValidationFailed(
            f"catalog {source} failed validation ({'; '.join(res.reasons) or 'see report'}); "
            f"report: {res.report_path}; training was not started"
        )
    return out


def _find_run(settings: Settings, trigger: str) -> str | None:

    client = tracking.client(settings)
    exp = client.get_experiment_by_name(settings.mlflow_experiment)
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{TRIGGER_TAG}` = '{trigger}' and attributes.status = 'FINISHED'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def train_trigger(snapshot_id: str, options: dict, force_key: str | None = None) -> str:
    """Identity of a training request: the same snapshot with the same options is the same run."""

    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:12]
    return f"{snapshot_id}:{digest}" + (f":{force_key}" if force_key else "")


def step_train(settings: Settings, snapshot_id: str, spec: str, options: dict, trigger: str) -> dict:
    """Train on an accepted snapshot, unless the run asked for by ``trigger`` already finished."""

    found = _find_run(settings, trigger)
    if found and (settings.bundles_dir / found).is_dir():
        log.info("training run %s for %s already finished: reusing it", found, trigger)
        return {"run_id": found, "bundle_path": str(settings.bundles_dir / found), "reused": True}
    res = train(snapshot_id, spec, settings, TrainOptions(**options))
    tracking.client(settings).set_tag(res.run_id, TRIGGER_TAG, trigger)
    return {"run_id": res.run_id, "bundle_path": str(Path(res.bundle_path)), "reused": False}


def step_evaluate(settings: Settings, run_id: str, bundle_path: str) -> dict:
    """Score the run's held-out predictions (metrics.json, plots, model card, MLflow); reuses a finished one."""

    res = evaluate_run(bundle_path, settings)
    model, base = res.metrics["model"], res.metrics.get("baseline") or {}
    return {
        "run_id": run_id,
        "bundle_path": res.bundle_path,
        "micro_f1": model["micro_f1"],
        "baseline_micro_f1": base.get("micro_f1"),
        "reused": res.reused,
    }


def step_register(settings: Settings, run_id: str, bundle_path: str) -> dict:
    """Register the bundle as a new version (challenger), or return the version already made from ``run_id``."""

    client = tracking.client(settings)
    name = settings.registered_model_name
    try:
        existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except Exception:  # the registered model does not exist yet
        existing = []
    if existing:
        version = max(int(v.version) for v in existing)
        log.info("run %s is already registered as version %d", run_id, version)
        return {"version": version, "uri": f"models:/{name}/{version}", "reused": True}
    ref = registry.register_bundle(settings, bundle_path, run_id=run_id, actor="airflow")
    return {"version": ref.version, "uri": ref.uri, "reused": False}


def step_gate(settings: Settings, version: int) -> dict:
    """Judge the candidate; raises GateRejected (naming every failed rule) on *reject*."""

    if registry.get_alias(settings, registry.CHAMPION) == version:
        return {
            "version": version,
            "verdict": "approve",
            "failed_rules": [],
            "champion": version,
            "note": "already champion",
        }
    res = gate(settings, version)
    out = {"version": version, "verdict": res.verdict, "failed_rules": res.failed_rules, "champion": res.champion}
    if res.verdict == "reject":
        raise GateRejected(f"version {version} rejected: {'; '.join(res.failed_rules)}", res.failed_rules)
    return out


def ensure_triton(settings: Settings) -> Settings:
    """The settings to serve with, this home's Triton running on them (started when it is not; it runs on after
    this process until `tagger services stop`). An external Triton is used as it is.

    Raises:
        ServiceError: another process holds an address the user set (:func:`serving.server.claim_address`).
    """

    settings = claim_address(settings)
    if settings.triton_is_external:
        return settings
    if own_server(settings):
        if not is_ready(settings.triton_grpc_url, timeout=2.0):
            wait_ready(settings.triton_grpc_url)
        return settings
    TritonServer(settings).start()
    return settings


def step_check_serving(settings: Settings) -> dict:
    """Before any work: can this run deploy? Fails in seconds on an address held by a process this home did not
    start (rather than after training); moves the home's own ports when another process took them."""

    settings = claim_address(settings)
    if settings.triton_is_external and not is_ready(settings.triton_grpc_url, timeout=5.0):
        log.warning("the external Triton at %s is not ready now; deploy will retry", settings.triton_grpc_url)
    return {"triton_grpc_url": settings.triton_grpc_url, "external": settings.triton_is_external}


def step_deploy(settings: Settings, version: int) -> dict:
    """Deploy ``version`` to Triton and make it champion; a no-op when it already serves as champion."""

    settings = ensure_triton(settings)
    repo_dir = settings.model_repository / settings.triton_model_name / str(version)
    if (
        registry.get_alias(settings, registry.CHAMPION) == version
        and repo_dir.is_dir()
        and is_ready(settings.triton_grpc_url)
    ):
        with TaggerClient(settings.triton_grpc_url, settings.triton_model_name, model_version=version) as c:
            c.tag(["ping"])  # raises when the version is not loaded: then a real deploy is needed
        log.info("version %d already serves as champion: nothing to deploy", version)
        return {"version": version, "deployed": False}
    res = deploy(settings, version, actor="airflow", reason="tagger_retrain")
    return {"deployed": True, **{k: v for k, v in asdict(res).items() if k != "at"}}


def step_smoke(settings: Settings, version: int, n: int = 16) -> dict:
    """Golden examples of the served version through gRPC, after the deploy (what the storefront sees)."""

    golden = golden_from_bundle(registry.bundle_for_version(settings, version), n)
    res = smoke_test(settings.triton_grpc_url, settings.triton_model_name, version, golden)
    if not res.passed:
        raise ServingError(
            f"smoke test of served version {version} failed for {len(res.failures)} examples: {res.failures[:3]}"
        )
    return asdict(res)


def step_tag_batch(
    settings: Settings,
    *,
    catalog: str | None = None,
    batch_size: int = 256,
    review_below: float = 0.5,
    max_products: int | None = None,
) -> dict:
    """Tag what is new or changed since the watermark through Triton, exactly once (``tagger_batch_tag``)."""

    res = tag_batch(
        settings, catalog=catalog, batch_size=batch_size, review_below=review_below, max_products=max_products
    )
    return res.to_dict()


def step_suspects(settings: Settings, snapshot_id: str, spec: str, options: dict) -> dict:
    """Beside training: the rows this run trains on (same sample, same model text), their suspect human labels
    found and the ``review_suspects_top`` least likely enqueued for review. The products are looked up in the
    snapshot's catalog (``db:products/<catalog>``, else the spec's name, as ``tagger import`` names it); rows
    that are not in the products table are not enqueued."""
    from pipeline.catalog.spec import load_spec
    from pipeline.catalog.taglib import ensure_schema
    from pipeline.training.dataset import load_source, prepare_data

    if settings.review_suspects_top == 0:
        return {"rows": 0, "suspects": 0, "enqueued": 0}
    spec_obj = load_spec(spec)
    engine = ensure_schema(settings)
    frame, _ = load_source(snapshot_id, spec_obj, settings)
    with engine.connect() as conn:
        source = conn.scalar(sa.text("select source_uri from snapshots where id = :id"), {"id": snapshot_id}) or ""
    catalog = source.split("/", 1)[1] if source.startswith("db:products/") else spec_obj.name
    prep = prepare_data(frame, spec_obj, TrainOptions(**options))
    rows, found, added = enqueue_prepared(engine, prep, spec_obj, catalog, settings.review_suspects_top)
    log.info("suspect labels: %d among %d rows; %d new in the review queue (catalog %s)", found, rows, added, catalog)
    return {"catalog": catalog, "rows": rows, "suspects": found, "enqueued": added}


def step_review_watch(settings: Settings) -> dict | None:
    """The retraining request once a catalog has ``review_retrain_after`` new reviewer decisions, else None."""
    from pipeline.catalog.taglib import ensure_schema

    return take_decisions(ensure_schema(settings), settings.review_retrain_after)
