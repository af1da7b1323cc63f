"""Why a bundle gave a text its tags: which words drove each predicted tag.

Two halves, as the tagger fuses them:

- **encoder**: Captum's layer integrated gradients of the tag's logit with respect to the word-embedding layer,
  from a baseline where the text's tokens are padding (special and prefix tokens kept), summed over the hidden
  size per token, then per word through the tokenizer's offsets;
- **TF-IDF half** (hybrid bundles): each n-gram's exact share of the tag's decision value (tf-idf value times the
  linear weight); word n-grams credit their words, char n-grams the word they sit in.

Each half's word scores are normalised to sum of absolute values 1, then weighted as the bundle fuses the facet
(``1 - w`` encoder, ``w`` TF-IDF). A positive word pushed the tag up, a negative one pushed it down.

The cost is about ``steps`` encoder passes per tag (a few tens of milliseconds per tag for MiniLM on a CPU core;
``bench`` numbers in the README): explanations are computed on request (``tagger explain``, the review page's
explain call, the model card's examples), never on the serving path.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.training.bundle import Bundle
from pipeline.training.labels import postprocess_scores

# A word: one CJK character (Chinese has no spaces; its tokenizers cut per character or short runs), or a run of
# other letters and digits.
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
WORD = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")
DEFAULT_STEPS = 16


@dataclass
class TagExplanation:
    slug: str
    facet: str
    score: float
    words: list[dict]  # [{"word", "start", "end", "weight"}] in text order; sum of |weight| <= 1
    encoder_tokens: list[tuple[str, float]] = field(default_factory=list)  # the strongest tokens, strongest first
    ngrams: list[tuple[str, float]] = field(default_factory=list)  # TF-IDF n-grams by contribution, strongest first
    tfidf_weight: float = 0.0

    def top_words(self, k: int = 5) -> list[tuple[str, float]]:
        ranked = sorted(self.words, key=lambda w: -w["weight"])
        return [(w["word"], round(w["weight"], 3)) for w in ranked[:k] if w["weight"] > 0]

    def to_dict(self, k: int = 5) -> dict:
        return {
            "slug": self.slug,
            "facet": self.facet,
            "score": round(self.score, 4),
            "top_words": self.top_words(k),
            "words": [{**w, "weight": round(w["weight"], 4)} for w in self.words],
            "encoder_tokens": [(t, round(v, 4)) for t, v in self.encoder_tokens[:k]],
            "ngrams": [(t, round(v, 4)) for t, v in self.ngrams[:k]],
            "tfidf_weight": round(self.tfidf_weight, 3),
        }


def words_of(text: str) -> list[tuple[str, int, int]]:
    return [(m.group(), m.start(), m.end()) for m in WORD.finditer(text)]


def _spread(spans: list[tuple[int, int]], values: np.ndarray, words: list[tuple[str, int, int]]) -> np.ndarray:
    """Per-word sums of ``values`` given per span (a token or n-gram), each span's value split evenly over the
    words it overlaps."""
    out = np.zeros(len(words), np.float64)
    for (s, e), v in zip(spans, values, strict=True):
        hit = [i for i, (_, ws, we) in enumerate(words) if ws < e and s < we]
        for i in hit:
            out[i] += v / len(hit)
    return out


def _normalised(v: np.ndarray) -> np.ndarray:
    total = np.abs(v).sum()
    return v / total if total > 0 else v


def encoder_attributions(bundle: Bundle, text: str, targets: list[int], steps: int = DEFAULT_STEPS):
    """([T] token strings, [T] (start, end) offsets, [len(targets), T] attributions) for the text's own tokens."""
    from captum.attr import LayerIntegratedGradients  # deferred: only explanations need Captum

    tok = bundle.tokenizer
    enc = tok(text, truncation=True, max_length=bundle.max_length, return_offsets_mapping=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    offsets = [tuple(map(int, o)) for o in enc["offset_mapping"][0].tolist()]
    own = torch.tensor([e > s for s, e in offsets])  # tokens of the text; special and prefix tokens have (0, 0)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    reference = torch.where(own, torch.full_like(ids[0], pad), ids[0]).unsqueeze(0)
    model = bundle.model.eval()

    def forward(input_ids, attention_mask):
        return model(input_ids, attention_mask).float()

    lig = LayerIntegratedGradients(forward, model.encoder.get_input_embeddings())
    n = len(targets)
    attr = lig.attribute(
        ids.expand(n, -1),
        baselines=reference.expand(n, -1),
        additional_forward_args=(mask.expand(n, -1),),
        target=list(targets),
        n_steps=steps,
        internal_batch_size=max(n * steps, 1),
    )  # [n, T, H]
    per_token = attr.sum(-1).detach().float().numpy()  # [n, T]
    keep = np.flatnonzero(own.numpy())
    tokens = tok.convert_ids_to_tokens(ids[0, keep].tolist())
    return tokens, [offsets[i] for i in keep], per_token[:, keep]


def _term_pattern(term: str, analyzer: str) -> str:
    """Where an n-gram sits in the lower-cased text: a char_wb n-gram's padding space marks a word edge."""
    core = re.escape(term.strip())
    if analyzer != "char_wb":
        return rf"(?<!\w)({core})(?!\w)"
    return ("(?<!\\w)" if term.startswith(" ") else "") + f"({core})" + ("(?!\\w)" if term.endswith(" ") else "")


def tfidf_contributions(bundle: Bundle, text: str, target: int) -> list[tuple[str, float, list[tuple[int, int]]]]:
    """[(n-gram, contribution to the tag's decision value, spans in the text)] for the bundle's TF-IDF half,
    strongest first; char n-grams that differ only in their word-edge padding are summed as one."""
    scorer = bundle.tfidf
    rows, cols, vals = scorer.features([text])
    if not len(cols):
        return []
    contrib = vals * scorer.coef[cols, target]
    lower = text.lower()
    merged: dict[str, tuple[float, set]] = {}  # " grey", "grey " and " grey " are one n-gram to a reader
    for (term, analyzer), v in zip(scorer.terms(cols), contrib.tolist(), strict=True):
        spans = {m.span(1) for m in re.finditer(_term_pattern(term, analyzer), lower)} if term.strip() else set()
        total, seen = merged.get(term.strip(), (0.0, set()))
        merged[term.strip()] = (total + float(v), seen | spans)
    out = [(term, v, sorted(spans)) for term, (v, spans) in merged.items()]
    return sorted(out, key=lambda t: -abs(t[1]))


def explain(
    bundle: Bundle,
    text: str,
    *,
    slugs: list[str] | None = None,
    also: list[str] | None = None,
    steps: int = DEFAULT_STEPS,
) -> dict:
    """The bundle's predicted tags for ``text`` (or ``slugs``), then the tags in ``also`` that are not among
    them, each with the words that drove it.

    Returns ``{"text", "predicted", "tags": [TagExplanation.to_dict()], "seconds"}``.
    """
    t0 = time.perf_counter()
    lm = bundle.label_map
    scores = bundle.scores([text])[0]  # one scoring pass: the prediction below is read off these scores
    predicted = [t["slug"] for t in postprocess_scores(scores[None], lm, bundle.thresholds)[0]]
    slugs = predicted if slugs is None else list(slugs)
    slugs += [s for s in also or () if s not in slugs]
    index = {s: i for i, s in enumerate(lm.slugs)}
    slugs = [s for s in slugs if s in index]  # ancestors added by postprocess have no output of their own
    facet_of = lm.facet_of_index()
    words = words_of(text)
    tags: list[TagExplanation] = []
    if slugs:
        targets = [index[s] for s in slugs]
        tokens, spans, attr = encoder_attributions(bundle, text, targets, steps)
        fuse = bundle.tfidf.weight_vector(lm) if bundle.tfidf is not None else np.zeros(len(lm), np.float32)
        for k, (slug, j) in enumerate(zip(slugs, targets, strict=True)):
            enc_words = _normalised(_spread(spans, attr[k], words))
            w = float(fuse[j])
            ngrams = []
            tf_words = np.zeros(len(words))
            if w > 0:
                contrib = tfidf_contributions(bundle, text, j)
                ngrams = [(term, v) for term, v, _ in contrib]
                shares = [(span, v / len(spans)) for _, v, spans in contrib for span in spans]  # per occurrence
                if shares:
                    tf_words = _normalised(_spread([sp for sp, _ in shares], np.array([v for _, v in shares]), words))
            combined = (1.0 - w) * enc_words + w * tf_words
            order = np.argsort(-np.abs(attr[k]))
            tags.append(
                TagExplanation(
                    slug=slug,
                    facet=facet_of[j],
                    score=float(scores[j]),
                    words=[
                        {"word": t, "start": s, "end": e, "weight": float(v)}
                        for (t, s, e), v in zip(words, combined, strict=True)
                    ],  # fmt: skip
                    encoder_tokens=[(tokens[i], float(attr[k, i])) for i in order],
                    ngrams=ngrams,
                    tfidf_weight=w,
                )
            )
    return {
        "text": text,
        "predicted": predicted,
        "tags": [t.to_dict() for t in tags],
        "seconds": round(time.perf_counter() - t0, 4),
    }


def word_shares(tag: dict, k: int = 3) -> str:
    """``"Men +0.61, Pink +0.26"``: the tag's ``k`` strongest words with their share (CLI, demo, model card)."""
    return ", ".join(f"{w} {v:+.2f}" for w, v in tag["top_words"][:k])


def highlighted(text: str, tag: dict, k: int = 3) -> str:
    """The text with the tag's ``k`` strongest positive words in **bold** (Markdown, for the model card)."""
    strongest = sorted((w for w in tag["words"] if w["weight"] > 0), key=lambda w: -w["weight"])[:k]
    out, last = [], 0
    for w in sorted(strongest, key=lambda w: w["start"]):
        out += [text[last : w["start"]], f"**{text[w['start'] : w['end']]}**"]
        last = w["end"]
    return "".join(out + [text[last:]])
