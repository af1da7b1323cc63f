"""Open-vocabulary tags: library tags the trained head has never seen, predicted by similarity of names.

Every tag gets a vector: the mean of the sentence embeddings of its names and synonyms (every locale), mean-pooled
and L2-normalised (:func:`embedder`). A product's text gets one the same way. Which encoder makes them matters:
``bench/bench_open_vocab.py`` found that the pretrained encoder's vectors calibrate and the fine-tuned one's do not
(classification pulls the known tags apart). For a facet, the tags the head knows compete with the tags it does not
know:

    the head predicts p (its best tag of the facet); c is the unknown tag most similar to the text;
    c is predicted (source ``open_vocab``) when  sim(text, c) >= tau  and  sim(text, c) - sim(text, p) >= delta

so a new tag wins only where its name fits the text at least as well as the name of what the head chose. In an
exclusive facet it replaces the head's tag (and its ancestors).

``tau`` and ``delta`` are calibrated per facet on the validation split, with no example of any new tag, by
pretending each known tag in turn is new: the head's choice becomes its best *other* tag, and the rule's hits on
rows that carry the pretended tag (and its false alarms on the rest) give a precision/recall curve. The pair with
the best recall at the target precision is kept (:func:`calibrate`).

Brute force: a library facet holds at most a few thousand tags, a [B, H] @ [H, T] product per request (10,816
Shopify categories x 384 dims: 16 MB, well under a millisecond per product); a vector index (pgvector, FAISS)
pays only well beyond that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def phrases(names: dict[str, str], synonyms: dict[str, Sequence[str]] | None = None) -> list[str]:
    """The phrases a tag is known by: its names in every locale and its synonyms, each once."""
    out: list[str] = []
    for p in [*names.values(), *(s for syns in (synonyms or {}).values() for s in syns)]:
        p = " ".join(str(p).split())
        if p and p not in out:
            out.append(p)
    return out


@dataclass
class TagVectors:
    """Unit vectors of tags: ``vectors[i]`` for ``slugs[i]`` of ``facets[i]``."""

    slugs: list[str]
    facets: list[str]
    vectors: np.ndarray  # [T, H] float32, rows L2-normalised

    @classmethod
    def build(cls, tags: dict[str, tuple[str, list[str]]], embed: Callable[[list[str]], np.ndarray]) -> TagVectors:
        """``tags``: slug -> (facet, phrases). A tag's vector is the normalised mean of its phrases' vectors."""
        slugs = [s for s, (_, ps) in tags.items() if ps]
        flat = [p for s in slugs for p in tags[s][1]]
        owner = np.repeat(np.arange(len(slugs)), [len(tags[s][1]) for s in slugs])
        emb = embed(flat) if flat else np.zeros((0, 1), dtype=np.float32)
        sums = np.zeros((len(slugs), emb.shape[1]), dtype=np.float64)
        np.add.at(sums, owner, emb)
        return cls(slugs, [tags[s][0] for s in slugs], normalise(sums).astype(np.float32))

    def index(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.slugs)}


@dataclass
class FacetRule:
    tau: float
    delta: float
    precision: float  # on the calibration simulation
    recall: float
    n_pretended: int  # known tags pretended new

    @property
    def f1(self) -> float:
        return 2 * self.precision * self.recall / (self.precision + self.recall)


def calibrate(
    sims: np.ndarray,
    head_scores: np.ndarray,
    truth: np.ndarray,
    *,
    target_precision: float = 0.8,
    min_rows: int = 3,
    deltas: Sequence[float] = (0.0, 0.02, 0.05, 0.1),
) -> FacetRule | None:
    """Pick (tau, delta) for one facet from a leave-one-tag-out simulation on labelled rows.

    ``sims`` [N, K] similarity of each row's text to each of the facet's K known (leaf) tags; ``head_scores``
    [N, K] the head's scores of the same tags; ``truth`` [N] the index of the row's true tag (or -1). Each tag with
    ``min_rows`` rows is pretended new in turn. Returns the pair with the most recall at ``target_precision`` (or
    the best F1 if none reaches it), or None when no tag has enough rows.
    """
    n, k = sims.shape
    order = np.argsort(-head_scores, axis=1)
    top1, top2 = order[:, 0], order[:, 1] if k > 1 else order[:, 0]
    counts = np.bincount(truth[truth >= 0], minlength=k)
    pretend = np.flatnonzero(counts >= min_rows)
    if not len(pretend):
        return None
    rows = np.arange(n)
    pos_s, pos_m, neg_s, neg_m = [], [], [], []
    for t in pretend:
        choice = np.where(top1 == t, top2, top1)  # the head without t: its best other tag
        s_t = sims[:, t]
        margin = s_t - sims[rows, choice]
        is_t = truth == t
        pos_s.append(s_t[is_t])
        pos_m.append(margin[is_t])
        neg_s.append(s_t[~is_t])
        neg_m.append(margin[~is_t])
    ps, pm, ns, nm = (np.concatenate(x) for x in (pos_s, pos_m, neg_s, neg_m))
    taus = np.unique(np.quantile(ps, np.linspace(0.0, 0.95, 40)))
    rules = []
    for delta in deltas:
        for tau in taus:
            tp = int(np.sum((ps >= tau) & (pm >= delta)))
            fp = int(np.sum((ns >= tau) & (nm >= delta)))
            if tp:
                rules.append(FacetRule(float(tau), float(delta), tp / (tp + fp), tp / len(ps), len(pretend)))
    reached = [r for r in rules if r.precision >= target_precision]
    if reached:
        return max(reached, key=lambda r: r.recall)
    return max(rules, key=lambda r: r.f1, default=None)


def decide(
    sims_new: np.ndarray,
    sims_choice: np.ndarray,
    rule: FacetRule,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: (predicted?, index of the best unknown tag, its similarity). ``sims_new`` [N, C] to the facet's
    unknown tags; ``sims_choice`` [N] to the head's chosen tag."""
    best = sims_new.argmax(axis=1)
    s = sims_new[np.arange(len(best)), best]
    hit = (s >= rule.tau) & (s - sims_choice >= rule.delta)
    return hit, best, s


def embedder(encoder, tokenizer, max_length: int = 48, batch_size: int = 128) -> Callable[[list[str]], np.ndarray]:
    """texts -> [N, H] unit vectors: the encoder's mean-pooled last layer over real tokens (the features the head
    reads), L2-normalised. ``encoder``: a transformers model (a bundle's ``model.encoder``, or a pretrained one)."""
    import torch

    from pipeline.training.bundle import mean_pool

    @torch.inference_mode()
    def embed(texts: list[str]) -> np.ndarray:
        encoder.eval()
        out = []
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i : i + batch_size], truncation=True, max_length=max_length, padding=True,
                            return_tensors="pt")  # fmt: skip
            out.append(mean_pool(encoder, enc["input_ids"], enc["attention_mask"]).float().numpy())
        dim = encoder.config.hidden_size
        return normalise(np.concatenate(out)) if out else np.zeros((0, dim), dtype=np.float32)

    return embed
