"""Explanations (issue 19) on a real trained bundle: the encoder half is true integrated gradients (the token
attributions add up to the logit's change from the padded baseline), the TF-IDF half is the exact decomposition of
the decision value, words are cut the way a reader reads them (English words, Chinese characters), and ``tagger
explain`` prints them or fails in one line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from pipeline.evaluation.explain import encoder_attributions, explain, highlighted, tfidf_contributions, words_of
from pipeline.training.bundle import load_bundle

pytestmark = pytest.mark.integration
TEXT = "Puma Men Grey Solid Round Neck T-shirt"


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return load_bundle(tiny_bundle.path)


def test_words_are_english_words_and_single_chinese_characters():
    assert [w for w, _, _ in words_of("Men's T-shirt 2pc")] == ["Men", "s", "T", "shirt", "2pc"]
    assert [w for w, _, _ in words_of("耐克Nike 男鞋")] == ["耐", "克", "Nike", "男", "鞋"]
    assert words_of("  ") == []


def test_token_attributions_add_up_to_the_logit_change_from_the_padded_baseline(bundle):
    """Integrated gradients' completeness: sum of attributions = F(text) - F(baseline), here within 2% of the gap."""
    slugs = [t["slug"] for t in bundle.predict([TEXT])[0]][:3]
    targets = [bundle.label_map.index(s) for s in slugs]
    tokens, spans, attr = encoder_attributions(bundle, TEXT, targets, steps=64)
    enc = bundle.tokenizer(TEXT, truncation=True, max_length=bundle.max_length, return_offsets_mapping=True,
                           return_tensors="pt")  # fmt: skip
    own = torch.tensor([e > s for s, e in enc["offset_mapping"][0].tolist()])
    reference = torch.where(own, torch.full_like(enc["input_ids"][0], bundle.tokenizer.pad_token_id),
                            enc["input_ids"][0]).unsqueeze(0)  # fmt: skip
    with torch.inference_mode():
        model = bundle.model.eval()
        gap = (model(enc["input_ids"], enc["attention_mask"]) - model(reference, enc["attention_mask"]))[0]
    expected = gap[targets].numpy()
    assert len(tokens) == len(spans) == attr.shape[1] == int(own.sum())
    assert np.allclose(attr.sum(1), expected, rtol=0.02, atol=0.02 * np.abs(expected).max()), (attr.sum(1), expected)
    assert all(TEXT[s:e].lower().replace(" ", "") for s, e in spans)  # every token points into the text


def test_tfidf_contributions_sum_to_the_decision_value(bundle):
    assert bundle.tfidf is not None, "the tiny bundle is a hybrid (TF-IDF half fused)"
    j = bundle.label_map.index(bundle.predict([TEXT])[0][0]["slug"])
    parts = tfidf_contributions(bundle, TEXT, j)
    decision = bundle.tfidf.decision([TEXT])[0, j]
    assert abs(sum(v for _, v, _ in parts) + bundle.tfidf.intercept[j] - decision) < 1e-4
    assert all(TEXT.lower()[s:e] == term for term, _, spans in parts for s, e in spans)
    assert tfidf_contributions(bundle, "ʘʘʘ ꙮꙮ", j) == []  # no known n-gram: nothing to credit


def test_explain_gives_every_predicted_tag_its_words_and_a_tag_asked_for(bundle):
    predicted = [t["slug"] for t in bundle.predict([TEXT])[0] if t["slug"] in bundle.label_map.slugs]
    extra = next(s for s in bundle.label_map.slugs if s not in predicted)
    out = explain(bundle, TEXT, slugs=predicted + [extra])
    assert [t["slug"] for t in out["tags"]] == predicted + [extra]
    for tag in out["tags"]:
        weights = np.array([w["weight"] for w in tag["words"]])
        assert [w["word"] for w in tag["words"]] == [w for w, _, _ in words_of(TEXT)]
        # each half normalised to sum |.| = 1, then fused with weights (1 - w, w): at most 1, less where they disagree
        assert 0.0 < np.abs(weights).sum() <= 1.0 + 1e-3
        assert 0.0 <= tag["tfidf_weight"] <= 1.0
    scores = bundle.scores([TEXT])[0]
    assert out["tags"][0]["score"] == pytest.approx(float(scores[bundle.label_map.index(predicted[0])]), abs=1e-4)
    marked = highlighted(TEXT, out["tags"][0], k=2)
    assert marked.count("**") == 4 and marked.replace("**", "") == TEXT


def test_tagger_explain_prints_json_and_refuses_a_missing_bundle_in_one_line(tiny_bundle, tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    ok = CliRunner().invoke(app, ["explain", "Nike Women Pink Running Shoes", "--bundle", str(tiny_bundle.path),
                                  "--json", "--steps", "8", "--tag", "gender:male"])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    out = json.loads(ok.stdout[ok.stdout.index("{") :])
    assert out["tags"] and all(t["words"] for t in out["tags"]) and out["predicted"]
    assert "gender:male" in [t["slug"] for t in out["tags"]]  # asked for, predicted or not
    cmd = [sys.executable, "-m", "pipeline.cli", "explain", "Nike Women Pink Running Shoes"]
    bad = subprocess.run([*cmd, "--bundle", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [f"error: {tmp_path} is not a model bundle (no bundle.json)"]


def test_the_model_card_explains_the_first_test_split_titles(tiny_bundle):
    card = (tiny_bundle.path / "model_card.md").read_text(encoding="utf-8")
    first = json.loads((tiny_bundle.path / "test_split.jsonl").read_text(encoding="utf-8").splitlines()[0])["text"]
    section = card.split("## Explained examples (test split)")[1].split("\n## ")[0]
    assert f"- {first}\n  - `" in section
    assert section.count("**") >= 2  # words that drove a tag, in bold
