"""Label map and post-processing: logits -> tags. NumPy only, so the Triton model can ship a copy of it.

The head emits one logit per tag. Tags of a facet occupy one contiguous slice of the output:
an *exclusive* facet is a softmax over its slice (one tag or none when the best probability is below its
threshold); a *multi-valued* facet is one sigmoid per tag with a per-tag threshold. A predicted tag brings its
ancestors (hierarchy), each with the score of the predicted descendant.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class FacetSlice:
    name: str
    exclusive: bool
    start: int
    end: int  # exclusive bound


@dataclass(frozen=True)
class LabelMap:
    """Tag slug <-> output index, the facet of each index, and the ancestors of each tag."""

    slugs: tuple[str, ...]
    facets: tuple[FacetSlice, ...]
    ancestors: dict[str, tuple[str, ...]] = field(default_factory=dict)
    names: dict[str, dict[str, str]] = field(default_factory=dict)  # slug -> locale -> name

    def __len__(self) -> int:
        return len(self.slugs)

    def index(self, slug: str) -> int:
        return self.slugs.index(slug)

    def facet_of_index(self) -> list[str]:
        out = [""] * len(self.slugs)
        for f in self.facets:
            for i in range(f.start, f.end):
                out[i] = f.name
        return out

    @classmethod
    def build(
        cls,
        facet_tags: dict[str, list[str]],
        exclusive: dict[str, bool],
        ancestors: dict[str, list[str]] | None = None,
        names: dict[str, dict[str, str]] | None = None,
    ) -> LabelMap:
        slugs: list[str] = []
        slices = []
        for facet in sorted(facet_tags):
            tags = sorted(facet_tags[facet])
            if not tags:
                continue
            slices.append(FacetSlice(facet, bool(exclusive.get(facet, False)), len(slugs), len(slugs) + len(tags)))
            slugs.extend(tags)
        anc = {s: tuple(a) for s, a in (ancestors or {}).items() if s in set(slugs) and a}
        return cls(tuple(slugs), tuple(slices), anc, dict(names or {}))

    def to_json(self) -> dict:
        return {
            "tags": [{"index": i, "slug": s} for i, s in enumerate(self.slugs)],
            "facets": [f.__dict__ for f in self.facets],
            "ancestors": {k: list(v) for k, v in self.ancestors.items()},
            "names": self.names,
        }

    @classmethod
    def from_json(cls, raw: dict) -> LabelMap:
        slugs = tuple(t["slug"] for t in sorted(raw["tags"], key=lambda t: t["index"]))
        facets = tuple(FacetSlice(**f) for f in raw["facets"])
        return cls(slugs, facets, {k: tuple(v) for k, v in raw.get("ancestors", {}).items()}, raw.get("names", {}))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), ensure_ascii=False, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> LabelMap:
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def probabilities(logits: np.ndarray, label_map: LabelMap) -> np.ndarray:
    """[B, N] logits -> [B, N] scores: softmax within exclusive facets, sigmoid elsewhere."""
    logits = np.asarray(logits, dtype=np.float32)
    probs = np.empty_like(logits)
    for f in label_map.facets:
        block = logits[:, f.start : f.end]
        probs[:, f.start : f.end] = _softmax(block) if f.exclusive else 1.0 / (1.0 + np.exp(-block))
    return probs


def score(logits: np.ndarray, label_map: LabelMap, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logits [B, N] -> (scores [B, N], predictions [B, N] bool), exactly as served."""
    probs = probabilities(logits, label_map)
    return probs, decide(probs, label_map, np.asarray(thresholds, dtype=np.float32))


def decide(probs: np.ndarray, label_map: LabelMap, thresholds: np.ndarray) -> np.ndarray:
    """[B, N] scores -> [B, N] bool predictions (before hierarchy expansion)."""
    pred = np.zeros(probs.shape, dtype=bool)
    for f in label_map.facets:
        block = probs[:, f.start : f.end]
        if f.exclusive:
            best = block.argmax(axis=1)
            rows = np.arange(len(block))
            keep = block[rows, best] >= thresholds[f.start + best]
            pred[rows[keep], f.start + best[keep]] = True
        else:
            pred[:, f.start : f.end] = block >= thresholds[f.start : f.end]
    return pred


def postprocess(
    logits: np.ndarray, label_map: LabelMap, thresholds: np.ndarray, top_k: int | None = None
) -> list[list[dict]]:
    """[B, N] logits -> per item a list of ``{"slug", "facet", "score"}``, best first, ancestors included.

    ``top_k`` caps the number of *predicted* tags per item (ancestors of kept tags are always added).
    """
    return postprocess_scores(probabilities(logits, label_map), label_map, thresholds, top_k)


def postprocess_scores(
    probs: np.ndarray, label_map: LabelMap, thresholds: np.ndarray, top_k: int | None = None
) -> list[list[dict]]:
    """:func:`postprocess` from [B, N] scores (already softmaxed/sigmoided, e.g. the hybrid's fused scores)."""
    pred = decide(probs, label_map, np.asarray(thresholds, dtype=np.float32))
    facet_idx = label_map.facet_of_index()
    out: list[list[dict]] = []
    for b in range(probs.shape[0]):
        idx = np.flatnonzero(pred[b])
        idx = idx[np.argsort(-probs[b, idx], kind="stable")]
        if top_k is not None and top_k > 0:
            idx = idx[:top_k]
        items: dict[str, dict] = {}
        for i in idx:
            slug, score = label_map.slugs[i], float(probs[b, i])
            items.setdefault(slug, {"slug": slug, "facet": facet_idx[i], "score": score})
            for anc in label_map.ancestors.get(slug, ()):
                items.setdefault(anc, {"slug": anc, "facet": facet_idx[i], "score": score})
        out.append(list(items.values()))
    return out
