"""Registry against a real Postgres-backed MLflow store: register, gate, review, promote, roll back, history."""

from __future__ import annotations

import json
import threading

import mlflow
import pytest
import sqlalchemy as sa
from helpers.fixtures_registry import metrics

from pipeline import registry
from pipeline.core import tracking
from pipeline.errors import BundleError, RegistryError
from pipeline.registry.gate import gate, gate_and_promote

pytestmark = pytest.mark.integration


def _alias(settings, alias):
    """Resolved the way SQL stores need it (search_model_versions does not return aliases there)."""
    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    try:
        return int(client.get_model_version_by_alias(settings.registered_model_name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def test_register_version_tags_card_and_challenger(registry_settings, make_bundle):
    s = registry_settings
    bundle = make_bundle(metrics(0.8), seed=1)
    ref = registry.register_bundle(s, bundle, actor="ci")
    assert (ref.name, ref.version, ref.uri, ref.created) == (
        s.registered_model_name,
        1,
        f"models:/{s.registered_model_name}/1",
        True,
    )

    mv = mlflow.MlflowClient(s.mlflow_tracking_uri).get_model_version(s.registered_model_name, "1")
    t = mv.tags
    assert t["dataset_digest"] == metrics()["dataset_digest"] and t["test_digest"] == metrics()["test_digest"]
    assert t["training_run"] == ref.run_id == mv.run_id
    assert t["micro_f1"] == "0.8000" and t["f1.color"] == "0.8000" and t["baseline_micro_f1"] == "0.5000"
    assert len(t["git_commit"]) == 40 or t["git_commit"] == "unknown"
    assert "Test micro-F1: 0.8" in mv.description  # the model card is the version's description
    assert _alias(s, "challenger") == 1 and registry.get_alias(s, "champion") is None

    # the run carries the card and the plots for reviewers; the model carries the whole bundle
    files = [a.path for a in mlflow.MlflowClient(s.mlflow_tracking_uri).list_artifacts(ref.run_id, "review/plots")]
    assert files == ["review/plots/facet_f1.png"]
    local = registry.bundle_for_version(s, 1)
    assert (local / "head.safetensors").exists() and (local / "plots" / "facet_f1.png").exists()
    assert registry.version_metrics(s, 1)["model"]["micro_f1"] == 0.8

    written = json.loads((s.reports_dir / "registry" / f"{s.registered_model_name}-v1.json").read_text())
    assert written["uri"] == ref.uri and written["tags"]["bundle_digest"] == t["bundle_digest"]

    again = registry.register_bundle(s, bundle)  # same bundle: same version, nothing moves
    assert (again.version, again.created) == (1, False)
    assert [(e["alias"], e["action"], e["to_version"], e["actor"]) for e in registry.history(s)] == [
        ("challenger", "set", 1, "ci")
    ]


def test_register_refuses_bad_bundles(registry_settings, make_bundle):
    s = registry_settings
    body = metrics(0.8)
    del body["model"]["precision_at_1"]
    with pytest.raises(RegistryError, match=r"metrics\.json lacks model\.precision_at_1"):
        registry.register_bundle(s, make_bundle(body))

    bad = make_bundle(metrics(0.8))
    lm = json.loads((bad / "label_map.json").read_text())
    lm["tags"].append({"index": len(lm["tags"]), "slug": "color:red"})
    (bad / "label_map.json").write_text(json.dumps(lm))
    with pytest.raises(BundleError, match=r"label map has 9 tags but the head has 8 outputs"):
        registry.register_bundle(s, bad)

    with pytest.raises(RegistryError, match="training run 'nope' is not in the tracking store"):
        registry.register_bundle(s, make_bundle(metrics(0.8)), run_id="nope")
    client = mlflow.MlflowClient(s.mlflow_tracking_uri)
    assert client.search_model_versions(f"name='{s.registered_model_name}'") == []
    assert registry.history(s) == [] and registry.get_alias(s, "challenger") is None

    # a training run that already exists gets the model attached to it
    run = client.create_run(tracking.configure(s), run_name="training")
    ref = registry.register_bundle(s, make_bundle(metrics(0.8), seed=5), run_id=run.info.run_id)
    mv = client.get_model_version(s.registered_model_name, str(ref.version))
    assert ref.run_id == mv.run_id == mv.tags["training_run"] == run.info.run_id


def test_gate_promote_review_rollback_history(registry_settings, make_bundle, engine):
    s = registry_settings
    v1 = registry.register_bundle(s, make_bundle(metrics(0.80), seed=1)).version
    r1 = gate(s, v1)
    assert (r1.verdict, r1.failed_rules, r1.champion) == ("approve", [], None)
    registry.promote(s, v1, actor="alice", reason="first model", gate_verdict=r1.verdict)
    assert _alias(s, "champion") == 1

    # better on the same split: approved and promoted; the old champion is remembered
    v2 = registry.register_bundle(s, make_bundle(metrics(0.83), seed=2)).version
    assert gate(s, v2).verdict == "approve"
    move = registry.promote(s, v2, actor="alice", reason="better")
    assert (move.from_version, move.to_version, move.gate_verdict) == (1, 2, "approve")
    assert (_alias(s, "champion"), _alias(s, "previous"), _alias(s, "challenger")) == (2, 1, None)

    # worse overall and on one facet, below a floor: rejected, every broken rule named, and not promotable
    v3 = registry.register_bundle(s, make_bundle(metrics(0.45, facets={"color": 0.2}), seed=3)).version
    assert _alias(s, "challenger") == v3
    r3 = gate(s, v3)
    assert r3.verdict == "reject" and r3.champion == 2
    rules = [r.split(":")[0] for r in r3.failed_rules]
    assert rules == ["floor.micro_f1", "baseline.micro_f1", "regression.micro_f1",
                     "regression.macro_f1", "regression.facet.category", "regression.facet.color",
                     "regression.facet.gender"]  # fmt: skip
    mv3 = mlflow.MlflowClient(s.mlflow_tracking_uri).get_model_version(s.registered_model_name, str(v3))
    assert mv3.tags["gate_verdict"] == "reject" and "regression.facet.color" in mv3.tags["gate_failed_rules"]
    with pytest.raises(RegistryError, match=r"cannot promote version 3 .* the gate rejected it"):
        registry.promote(s, v3, actor="mallory")

    # a gain below the least improvement: needs a reviewer; promotable only once approved
    v4 = registry.register_bundle(s, make_bundle(metrics(0.832), seed=4)).version
    r4 = gate(s, v4)
    assert r4.verdict == "needs-review" and r4.failed_rules[0].startswith("improvement.micro_f1: +0.0020")
    with pytest.raises(RegistryError, match="no reviewer approved it yet"):
        registry.promote(s, v4, actor="bob")
    registry.review(s, v4, approve=True, actor="carol", reason="small but consistent gain")
    assert registry.wait_for_review(s, v4, timeout_s=1, poll_s=0.1)["approved_by"] == "carol"
    registry.promote(s, v4, actor="bob", reason="approved by carol")
    assert registry.promote(s, v4, actor="bob").changed is False  # idempotent

    with pytest.raises(RegistryError, match="version 99 of model .* does not exist"):
        registry.promote(s, 99, actor="bob")
    assert (_alias(s, "champion"), _alias(s, "previous")) == (4, 2)  # errors moved nothing

    # roll back walks the promotion history: 4 -> 2 -> 1, then there is nothing left
    assert (registry.rollback(s, actor="ops", reason="bad tags").to_version, _alias(s, "previous")) == (2, 1)
    assert (registry.rollback(s, actor="ops", reason="still bad").to_version, _alias(s, "previous")) == (1, None)
    with pytest.raises(RegistryError, match="no previous champion to roll back to .*champion is version 1"):
        registry.rollback(s, actor="ops")
    assert _alias(s, "champion") == 1

    events = [(e["alias"], e["action"], e["from_version"], e["to_version"], e["actor"]) for e in registry.history(s)]
    assert events == [
        ("challenger", "set", None, 1, registry.default_actor()),
        ("champion", "promote", None, 1, "alice"),
        ("challenger", "set", None, 2, registry.default_actor()),
        ("champion", "promote", 1, 2, "alice"),
        ("challenger", "set", None, 3, registry.default_actor()),
        ("challenger", "set", 3, 4, registry.default_actor()),
        ("champion", "promote", 2, 4, "bob"),
        ("champion", "rollback", 4, 2, "ops"),
        ("champion", "rollback", 2, 1, "ops"),
    ]
    audit = registry.history(s)[6]
    assert (audit["reason"], audit["gate_verdict"]) == ("approved by carol", "needs-review")
    tags = mlflow.MlflowClient(s.mlflow_tracking_uri).get_model_version(s.registered_model_name, "4").tags
    assert tags["rolled_back"].endswith("by ops")

    # a rejected review blocks promotion too
    registry.review(s, v2, approve=False, actor="carol", reason="leaks test data")
    with pytest.raises(RegistryError, match=r"rejected by carol \(leaks test data\)"):
        registry.promote(s, v2, actor="bob")


def test_racing_promotions_are_serialized(registry_settings, make_bundle):
    s = registry_settings
    versions = [registry.register_bundle(s, make_bundle(metrics(0.8), seed=10 + i)).version for i in range(2)]
    barrier, errors = threading.Barrier(2), []

    def go(v):
        try:
            barrier.wait()
            registry.promote(s, v, actor=f"t{v}", reason="race")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    moves = [e for e in registry.history(s) if e["alias"] == "champion"]
    assert len(moves) == 2 and moves[0]["from_version"] is None
    assert moves[1]["from_version"] == moves[0]["to_version"]  # the second saw the first's result
    assert _alias(s, "champion") == moves[1]["to_version"] and _alias(s, "previous") == moves[0]["to_version"]


def test_wait_for_review_sees_a_ui_decision_and_times_out(registry_settings, make_bundle):
    s = registry_settings
    v = registry.register_bundle(s, make_bundle(metrics(0.8), seed=20)).version
    with pytest.raises(RegistryError, match=r"no review of version 1 .* within 0 s; set the version tag approval"):
        registry.wait_for_review(s, v, timeout_s=0, poll_s=0.05)
    client = mlflow.MlflowClient(s.mlflow_tracking_uri)
    # what a reviewer does in the UI: add version tags
    timer = threading.Timer(0.3, client.set_model_version_tag, (s.registered_model_name, "1", "approval", "Rejected"))
    timer.start()
    decision = registry.wait_for_review(s, v, timeout_s=20, poll_s=0.1)
    assert decision == {"approval": "rejected", "approved_by": "unknown (MLflow UI)", "approval_reason": ""}


def test_set_alias_to_unknown_version_changes_nothing(registry_settings, make_bundle, engine):
    s = registry_settings
    v = registry.register_bundle(s, make_bundle(metrics(0.8), seed=30)).version
    count = sa.text("select count(*) from alias_events where model_name = :m")
    with engine.connect() as conn:
        before = conn.execute(count, {"m": s.registered_model_name}).scalar()
    with pytest.raises(RegistryError, match="version 42 of model .* does not exist; `tagger models list`"):
        registry.set_alias(s, "challenger", 42, "x")
    with engine.connect() as conn:
        assert conn.execute(count, {"m": s.registered_model_name}).scalar() == before == 1
    assert _alias(s, "challenger") == v
    with pytest.raises(RegistryError, match="champion alias cannot be cleared"):
        registry.set_alias(s, "champion", None, "x")


def test_manual_mode_waits_for_the_reviewer(registry_settings, make_bundle):
    s = registry_settings.model_copy(update={"review_mode": "manual"})
    client = mlflow.MlflowClient(s.mlflow_tracking_uri)
    name = s.registered_model_name

    def reviewer(version, decision, who, why):  # what a reviewer does in the MLflow UI, a little later
        def act():
            for key, value in (("approved_by", who), ("approval_reason", why), ("approval", decision)):
                client.set_model_version_tag(name, str(version), key, value)

        timer = threading.Timer(0.5, act)
        timer.start()
        return timer

    v1 = registry.register_bundle(s, make_bundle(metrics(0.8), seed=50)).version
    reviewer(v1, "approved", "dana", "checked the samples")
    d = gate_and_promote(s, v1, actor="pipeline", review_timeout_s=30, poll_s=0.1)
    assert (d.gate.verdict, d.outcome, d.review["approved_by"]) == ("needs-review", "promoted", "dana")
    assert d.move.reason == "gate needs-review; approved by dana: checked the samples"

    v2 = registry.register_bundle(s, make_bundle(metrics(0.9), seed=51)).version
    reviewer(v2, "rejected", "erin", "wrong colours on shoes").join()
    d = gate_and_promote(s, v2, actor="pipeline", review_timeout_s=30, poll_s=0.1)
    assert (d.outcome, d.move, registry.get_alias(s, "champion")) == ("rejected", None, v1)
    with pytest.raises(RegistryError, match=r"rejected by erin \(wrong colours on shoes\)"):
        registry.promote(s, v2, actor="pipeline", gate_verdict="approve")  # a stale verdict cannot override
    assert [e["action"] for e in registry.history(s) if e["alias"] == "champion"] == ["promote"]
