"""Gate policy logic (pure) and policy files."""

from __future__ import annotations

import pytest
import yaml
from helpers.fixtures_registry import metrics

from pipeline.errors import ConfigError
from pipeline.registry.gate import POLICY_DIR, evaluate_policy, load_policy

pytestmark = pytest.mark.unit


@pytest.fixture
def policy():
    return load_policy("default")


def test_shipped_policies_load():
    default, manual = load_policy(), load_policy("manual")
    assert default["name"] == "default" and default["review"] == "auto"
    assert manual["name"] == "manual" and manual["review"] == "manual"
    assert default["floors"]["micro_f1"] == manual["floors"]["micro_f1"] == 0.5
    assert {p.stem for p in POLICY_DIR.glob("*.yaml")} == {"default", "manual", "demo"}
    assert load_policy("demo")["baseline_margin"]["micro_f1"] < 0  # the demo lets a model trail the baseline


def test_no_champion_floors_decide(policy):
    assert evaluate_policy(policy, metrics(0.8), None, None)[:2] == ("approve", [])
    bad = metrics(0.3)
    bad["model"]["ece"] = 0.4
    verdict, failed, _ = evaluate_policy(policy, bad, None, None)
    assert verdict == "reject"
    assert failed == [
        "floor.micro_f1: 0.3000 < 0.5000",
        "floor.precision_at_1: 0.3500 < 0.5000",
        "ceiling.ece: 0.4000 > 0.2000",
        "baseline.micro_f1: 0.3000 vs TF-IDF baseline 0.5000 (margin 0.0)",
    ]


def test_regressions_per_facet_all_named(policy):
    champ = metrics(0.80)
    cand = metrics(0.85, facets={"color": 0.77, "gender": 0.785})  # color drops 0.03 > 0.02; gender 0.015 ok
    verdict, failed, details = evaluate_policy(policy, cand, champ, 3)
    assert verdict == "reject"
    assert failed == ["regression.facet.color: micro-F1 0.7700 vs champion v3 0.8000 (max drop 0.02)"]
    assert details["delta_micro_f1"] == pytest.approx(0.05)

    strict = {**policy, "max_regression": {**policy["max_regression"], "facets": {"gender": 0.01}}}
    assert [r.split(":")[0] for r in evaluate_policy(strict, cand, champ, 3)[1]] == [
        "regression.facet.color",
        "regression.facet.gender",
    ]
    del cand["model"]["facets"]["gender"]
    assert "regression.facet.gender: facet missing from the candidate" in evaluate_policy(policy, cand, champ, 3)[1][1]


def test_small_gain_and_other_split_need_review(policy):
    champ = metrics(0.80)
    verdict, failed, _ = evaluate_policy(policy, metrics(0.803), champ, 2)
    assert verdict == "needs-review" and failed == ["improvement.micro_f1: +0.0030 over champion v2 < 0.005"]
    assert evaluate_policy({**policy, "on_small_improvement": "reject"}, metrics(0.803), champ, 2)[0] == "reject"

    other = metrics(0.70, test_digest="sha256:other")  # worse, but not comparable: no regression rules
    verdict, failed, _ = evaluate_policy(policy, other, champ, 2)
    assert verdict == "needs-review"
    assert failed == ["comparable.test_split: champion v2 was scored on another test split"]
    assert evaluate_policy({**policy, "on_different_test_split": "reject"}, other, champ, 2)[0] == "reject"


def test_manual_review_turns_approve_into_needs_review():
    verdict, failed, _ = evaluate_policy(load_policy("manual"), metrics(0.9), metrics(0.8), 1)
    assert verdict == "needs-review" and failed[0].startswith("review.manual")
    assert evaluate_policy(load_policy("manual"), metrics(0.3), None, None)[0] == "reject"


def test_bad_policies_are_named(tmp_path):
    with pytest.raises(
        ConfigError, match=r"gate policy 'strict' not found; give a YAML path or one of: default, demo, manual"
    ):
        load_policy("strict")
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"floors": {"micro_f1": 0.9}, "max_regresion": {}}))
    with pytest.raises(ConfigError, match=r"unknown keys \['max_regresion'\]"):
        load_policy(path)
    path.write_text(yaml.safe_dump({"on_small_improvement": "ignore"}))
    with pytest.raises(ConfigError, match="on_small_improvement='ignore'; use needs-review or reject"):
        load_policy(str(path))
    path.write_text(yaml.safe_dump({"floors": {"micro_f1": 0.9}}))
    assert load_policy(path)["name"] == "p"


def test_encoder_margin_can_require_the_encoder_to_add_something(policy):
    """The hybrid may equal its TF-IDF half while its encoder learned nothing: ``encoder_margin`` rejects that;
    the encoder's score is reported whether or not a policy asks."""
    cand = metrics(0.8)
    cand["encoder"] = {**cand["model"], "micro_f1": 0.42}  # TF-IDF baseline is 0.5
    verdict, failed, details = evaluate_policy(policy, cand, None, None)
    assert verdict == "approve" and details["encoder_micro_f1"] == 0.42 and details["baseline_micro_f1"] == 0.5
    strict = {**policy, "encoder_margin": {"micro_f1": -0.05}}
    verdict, failed, _ = evaluate_policy(strict, cand, None, None)
    assert verdict == "reject"
    assert failed == ["encoder.micro_f1: encoder alone 0.4200 vs TF-IDF baseline 0.5000 (margin -0.05)"]
    cand["encoder"]["micro_f1"] = 0.47  # within 5 points
    assert evaluate_policy(strict, cand, None, None)[:2] == ("approve", [])
    del cand["encoder"]  # an encoder-only bundle: the model is the encoder, baseline_margin judges it
    assert evaluate_policy(strict, cand, None, None)[:2] == ("approve", [])
