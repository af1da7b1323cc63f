"""The promotion gate: may a registered version replace the champion?

The policy (YAML, ``pipeline/registry/policies/default.yaml`` unless told otherwise) sets absolute floors and ceilings,
a margin over the TF-IDF baseline, the largest allowed regression per metric and per facet against the current
``champion`` on the same frozen test split, and the least improvement that justifies a change. Verdicts:
``approve``; ``reject`` with every failed rule named; ``needs-review`` (not comparable, too small a gain, or a
policy in manual mode). The verdict is written as version tags (``gate_verdict``, ``gate_failed_rules``) and as
JSON under ``HOME/reports/gate``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml

from pipeline import registry
from pipeline.core import tracking
from pipeline.errors import ConfigError
from pipeline.settings import Settings

log = logging.getLogger(__name__)

POLICY_DIR = Path(__file__).with_name("policies")
POLICY_KEYS = {
    "name", "review", "floors", "ceilings", "baseline_margin", "encoder_margin", "max_regression",
    "min_improvement", "on_small_improvement", "on_different_test_split",
}  # fmt: skip
VERDICTS = ("approve", "reject", "needs-review")


@dataclass(frozen=True)
class GateResult:
    verdict: str  # approve | reject | needs-review
    failed_rules: list[str]  # "rule.id: detail", every rule that was broken (or that needs a human)
    details: dict = field(default_factory=dict)
    version: int | None = None
    champion: int | None = None
    policy: str = "default"

    def to_json(self) -> dict:
        return asdict(self)


def load_policy(policy: str | Path | dict | None = None, settings: Settings | None = None) -> dict:
    """A policy dict from a dict, a YAML path, a shipped name (``default``, ``manual``) or the settings.

    Raises:
        ConfigError: the file does not exist, is not a mapping, or has unknown keys or values.
    """
    if isinstance(policy, dict):
        raw = policy
    else:
        source = policy or (settings.gate_policy if settings else None) or "default"
        path = Path(source)
        if not path.suffix and (POLICY_DIR / f"{source}.yaml").exists():
            path = POLICY_DIR / f"{source}.yaml"
        if not path.is_file():
            shipped = ", ".join(sorted(p.stem for p in POLICY_DIR.glob("*.yaml")))
            raise ConfigError(f"gate policy {str(source)!r} not found; give a YAML path or one of: {shipped}")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"gate policy {path} must be a YAML mapping, got {type(raw).__name__}")
        raw.setdefault("name", path.stem)
    unknown = set(raw) - POLICY_KEYS
    if unknown:
        raise ConfigError(f"gate policy has unknown keys {sorted(unknown)}; allowed: {sorted(POLICY_KEYS)}")
    for key in ("on_small_improvement", "on_different_test_split"):
        if raw.get(key, "needs-review") not in ("needs-review", "reject"):
            raise ConfigError(f"gate policy {key}={raw[key]!r}; use needs-review or reject")
    if raw.get("review", "auto") not in ("auto", "manual"):
        raise ConfigError(f"gate policy review={raw['review']!r}; use auto or manual")
    return raw


def _facet_f1(metrics: dict) -> dict[str, float]:
    return {f: float(v.get("micro_f1", 0.0)) for f, v in metrics["model"].get("facets", {}).items()}


def _absolute_rules(policy: dict, metrics: dict) -> list[str]:
    model, failed = metrics["model"], []
    for key, floor in (policy.get("floors") or {}).items():
        value = model.get(key)
        if value is None:
            failed.append(f"floor.{key}: metric missing from metrics.json")
        elif value < floor:
            failed.append(f"floor.{key}: {value:.4f} < {floor:.4f}")
    for key, ceiling in (policy.get("ceilings") or {}).items():
        value = model.get(key)
        if value is None:
            failed.append(f"ceiling.{key}: metric missing from metrics.json")
        elif value > ceiling:
            failed.append(f"ceiling.{key}: {value:.4f} > {ceiling:.4f}")
    baseline = metrics.get("baseline") or {}
    for key, margin in (policy.get("baseline_margin") or {}).items():
        if baseline.get(key) is not None and model.get(key) is not None and model[key] - baseline[key] < margin:
            failed.append(f"baseline.{key}: {model[key]:.4f} vs TF-IDF baseline {baseline[key]:.4f} (margin {margin})")
    # a hybrid can match its TF-IDF half with the encoder contributing nothing: this asks the encoder alone to be
    # within (or above) a margin of the baseline; a bundle without an "encoder" block is encoder-only (the model)
    encoder = metrics.get("encoder") or {}
    for key, margin in (policy.get("encoder_margin") or {}).items():
        if encoder.get(key) is not None and baseline.get(key) is not None and encoder[key] - baseline[key] < margin:
            failed.append(
                f"encoder.{key}: encoder alone {encoder[key]:.4f} vs TF-IDF baseline {baseline[key]:.4f} "
                f"(margin {margin})"
            )
    return failed


def _regression_rules(policy: dict, cand: dict, champ: dict, champ_version: int) -> list[str]:
    limits, failed = dict(policy.get("max_regression") or {}), []
    facet_default = limits.pop("facet_micro_f1", None)
    facet_limits = limits.pop("facets", None) or {}
    for key, limit in limits.items():
        a, b = cand["model"].get(key), champ["model"].get(key)
        if a is not None and b is not None and b - a > limit:
            failed.append(f"regression.{key}: {a:.4f} vs champion v{champ_version} {b:.4f} (max drop {limit})")
    cand_f, champ_f = _facet_f1(cand), _facet_f1(champ)
    for facet, b in champ_f.items():
        limit = facet_limits.get(facet, facet_default)
        if limit is None:
            continue
        if facet not in cand_f:
            failed.append(f"regression.facet.{facet}: facet missing from the candidate (champion has it)")
        elif b - cand_f[facet] > limit:
            failed.append(
                f"regression.facet.{facet}: micro-F1 {cand_f[facet]:.4f} vs champion v{champ_version} {b:.4f} "
                f"(max drop {limit})"
            )
    return failed


def evaluate_policy(policy: dict, cand: dict, champ: dict | None, champ_version: int | None) -> tuple[str, list, dict]:
    """Pure gate logic: (verdict, failed_rules, details) for candidate and champion metrics.json bodies."""
    failed = _absolute_rules(policy, cand)
    review: list[str] = []
    details: dict = {"candidate_micro_f1": cand["model"].get("micro_f1")}
    for system in ("baseline", "encoder"):  # reported always: what the encoder adds over the TF-IDF half
        if (cand.get(system) or {}).get("micro_f1") is not None:
            details[f"{system}_micro_f1"] = cand[system]["micro_f1"]
    if champ is not None:
        details["champion_micro_f1"] = champ["model"].get("micro_f1")
        if champ.get("test_digest") != cand.get("test_digest"):
            rule = f"comparable.test_split: champion v{champ_version} was scored on another test split"
            (failed if policy.get("on_different_test_split") == "reject" else review).append(rule)
        else:
            failed += _regression_rules(policy, cand, champ, champ_version)
            for key, least in (policy.get("min_improvement") or {}).items():
                a, b = cand["model"].get(key), champ["model"].get(key)
                if a is None or b is None:
                    continue
                details[f"delta_{key}"] = round(a - b, 6)
                if a - b < least:
                    rule = f"improvement.{key}: {a - b:+.4f} over champion v{champ_version} < {least}"
                    (failed if policy.get("on_small_improvement") == "reject" else review).append(rule)
    if failed:
        return "reject", failed, details
    if review:
        return "needs-review", review, details
    if policy.get("review") == "manual":
        return "needs-review", ["review.manual: the policy asks a reviewer to approve every candidate"], details
    return "approve", [], details


def gate(settings: Settings, version: int, policy: str | Path | dict | None = None) -> GateResult:
    """Judge ``version`` against the policy and the current champion; tag the version with the verdict.

    ``settings.review_mode == "manual"`` turns an approval into needs-review, like a manual policy.

    Raises:
        RegistryError: the version (or the champion's metrics) cannot be read.
        ConfigError: the policy is invalid.
    """
    pol = load_policy(policy, settings)
    if settings.review_mode == "manual":
        pol = {**pol, "review": "manual"}
    client = tracking.client(settings)
    name = settings.registered_model_name
    registry.get_version(settings, version, client)
    cand = registry.version_metrics(settings, version)
    champ_version = registry.get_alias(settings, registry.CHAMPION)
    if champ_version == int(version):
        champ_version = None  # re-gating the champion: judge it on its own merits
    champ = registry.version_metrics(settings, champ_version) if champ_version else None
    verdict, failed, details = evaluate_policy(pol, cand, champ, champ_version)
    result = GateResult(verdict, failed, details, int(version), champ_version, pol.get("name", "custom"))

    tags = {
        "gate_verdict": verdict,
        "gate_failed_rules": json.dumps(failed, ensure_ascii=False)[:4900],
        "gate_policy": result.policy,
        "gate_champion": str(champ_version or ""),
        "gate_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, value)
    out = settings.reports_dir / "gate" / f"{name}-v{int(version)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result.to_json(), indent=1, ensure_ascii=False))
    log.info("gate %s v%s: %s %s", name, version, verdict, "; ".join(failed))
    return result


@dataclass(frozen=True)
class Decision:
    gate: GateResult
    review: dict | None  # the reviewer's decision tags when one was awaited
    move: registry.AliasMove | None  # the promotion, when there was one
    outcome: str  # promoted | rejected | awaiting-review


def gate_and_promote(
    settings: Settings,
    version: int,
    *,
    actor: str,
    policy: str | Path | dict | None = None,
    review_timeout_s: float = 86400,
    poll_s: float = 10,
) -> Decision:
    """The registry stage of the pipeline: gate, then (manual mode) wait for a reviewer, then promote.

    approve: promote. reject: stop. needs-review: in manual mode (settings or policy) block until a reviewer
    sets ``approval`` on the version, then promote or stop; in auto mode stop with ``awaiting-review``.

    Raises:
        RegistryError: the review did not come within ``review_timeout_s``.
    """
    result = gate(settings, version, policy)
    manual = settings.review_mode == "manual" or load_policy(policy, settings).get("review") == "manual"
    review = None
    if result.verdict == "reject":
        return Decision(result, None, None, "rejected")
    if result.verdict == "needs-review":
        if not manual:
            return Decision(result, None, None, "awaiting-review")
        log.info("version %s waits for a reviewer (approval=approved|rejected in the MLflow UI)", version)
        review = registry.wait_for_review(settings, version, timeout_s=review_timeout_s, poll_s=poll_s)
        if review["approval"] != "approved":
            return Decision(result, review, None, "rejected")
    reason = f"gate {result.verdict}" + (
        f"; approved by {review['approved_by']}: {review['approval_reason']}" if review else ""
    )
    move = registry.promote(settings, version, actor=actor, reason=reason, gate_verdict=result.verdict)
    return Decision(result, review, move, "promoted")
