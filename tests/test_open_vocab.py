"""Open-vocabulary rule (pipeline.tagging.open_vocab): tag vectors, the leave-one-tag-out calibration, the decision."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.tagging import open_vocab as ov

pytestmark = pytest.mark.unit


def _unit(x):
    return ov.normalise(np.asarray(x, dtype=np.float64))


def test_phrases_keep_every_name_and_synonym_once():
    got = ov.phrases({"en": "Kurta  Sets", "zh": "库尔塔套装"}, {"en": ["kurta set", "Kurta Sets"]})
    assert got == ["Kurta Sets", "库尔塔套装", "kurta set"]


def test_a_tags_vector_is_the_normalised_mean_of_its_phrases():
    table = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [1.0, 1.0]}
    vecs = ov.TagVectors.build(
        {"t:x": ("t", ["a", "b"]), "t:y": ("t", ["c"]), "t:empty": ("t", [])},
        lambda texts: _unit([table[t] for t in texts]),
    )
    assert vecs.slugs == ["t:x", "t:y"] and vecs.facets == ["t", "t"]
    np.testing.assert_allclose(vecs.vectors, _unit([[1, 1], [1, 1]]), atol=1e-6)


def _world(seed: int, n_tags: int = 8, per_tag: int = 30, noise: float = 0.35):
    """Rows whose text vector is near their tag's name vector; the head is right 90% of the time."""
    rng = np.random.default_rng(seed)
    tag_vecs = _unit(rng.normal(size=(n_tags, 16)))
    truth = np.repeat(np.arange(n_tags), per_tag)
    text = _unit(tag_vecs[truth] + noise * rng.normal(size=(len(truth), 16)))
    head = rng.random((len(truth), n_tags))
    right = rng.random(len(truth)) < 0.9
    head[right, truth[right]] += 1.0
    return tag_vecs, truth, text, head


def test_calibration_reaches_the_target_precision_when_names_separate_the_tags():
    tag_vecs, truth, text, head = _world(0)
    rule = ov.calibrate(text @ tag_vecs.T, head, truth, target_precision=0.8)
    assert rule is not None and rule.n_pretended == 8
    assert rule.precision >= 0.8 and rule.recall > 0.5

    # a fresh world: tags 0-1 are new (not in the head), the rule finds their rows and rarely fires elsewhere
    tag_vecs, truth, text, head = _world(1)
    known, new = np.arange(2, 8), np.arange(0, 2)
    choice = known[head[:, known].argmax(axis=1)]
    sims_choice = (text * tag_vecs[choice]).sum(axis=1)
    hit, best, _ = ov.decide(text @ tag_vecs[new].T, sims_choice, rule)
    on_new = np.isin(truth, new)
    correct = hit & on_new & (new[best] == truth)
    assert correct.sum() / max(hit.sum(), 1) >= 0.7  # precision holds on unseen tags
    assert correct.sum() / on_new.sum() >= 0.5
    assert hit[~on_new].mean() < 0.1


def test_calibration_with_names_that_say_nothing_gives_a_rule_that_rarely_fires():
    rng = np.random.default_rng(2)
    _, truth, _, head = _world(2)
    sims = rng.uniform(-1, 1, size=head.shape)  # names that tell nothing about the texts
    rule = ov.calibrate(sims, head, truth, target_precision=0.8)
    assert rule is not None and rule.precision < 0.5  # it says the target is out of reach
    assert ov.calibrate(sims, head, np.full(len(truth), -1)) is None  # nothing to pretend with
