"""The TF-IDF half of the hybrid tagger, in NumPy only (Triton ships a copy beside ``labels.py``).

The fine-tuned encoder generalises (paraphrases, unseen wording, calibrated scores); the TF-IDF linear model
memorises surface n-grams (brand lines, product codes, colour words). Their errors differ, so the bundle keeps
both and fuses them per facet: ``p = (1 - w_f) * p_encoder + w_f * p_tfidf``, where ``p_tfidf`` is a softmax
(exclusive facet) or sigmoid (multi-valued) of the linear decision values times a per-facet temperature. The
temperature and the weight ``w_f`` are chosen on the validation split (``w_f = 0`` means "encoder only").

:meth:`TfidfScorer.from_baseline` copies a fitted scikit-learn baseline (``pipeline.training.baseline``) into plain
arrays; :meth:`TfidfScorer.decision` reproduces ``TfidfVectorizer`` (word 1-2 grams + char_wb 2-5 grams,
lowercase, sublinear tf, l2 norm per block) and the linear decision function exactly (tested against
scikit-learn). Files: ``tfidf.json`` (vocabularies, analyser settings, temperatures, weights) and
``tfidf.npz`` (idf, coefficients [F, N], intercepts [N]); no pickle.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

try:
    from pipeline.training.labels import probabilities
except ImportError:  # the Triton copy sits beside labels.py, without the pipeline package
    from labels import probabilities

CONFIG_FILE = "tfidf.json"
ARRAYS_FILE = "tfidf.npz"
ABSENT = -10.0  # decision value of a tag the linear model does not predict (as pipeline.training.baseline)
_WHITE = re.compile(r"\s\s+")


def _word_ngrams(text: str, pattern: re.Pattern, lo: int, hi: int) -> list[str]:
    tokens = pattern.findall(text)
    out = list(tokens) if lo == 1 else []
    for n in range(max(lo, 2), min(hi, len(tokens)) + 1):
        out.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return out


def _char_wb_ngrams(text: str, lo: int, hi: int) -> list[str]:
    out = []
    for w in _WHITE.sub(" ", text).split():
        out += _word_char_ngrams(w, lo, hi)
    return out


def _word_char_ngrams(word: str, lo: int, hi: int) -> list[str]:
    w = f" {word} "
    out = []
    for n in range(lo, hi + 1):
        out.extend(w[i : i + n] for i in range(max(1, len(w) - n + 1)))
        if len(w) <= n:  # a short word counts once, as scikit-learn does
            break
    return out


class TfidfScorer:
    """Texts -> linear decision values [B, N] in the tagger's label layout, and fused probabilities."""

    def __init__(self, config: dict, arrays: dict[str, np.ndarray]):
        self.config = config
        self.blocks = config["blocks"]  # [{"name", "analyzer", "ngram", "vocab": {term: column}}, ...]
        self._pattern = re.compile(config.get("token_pattern", r"(?u)\b\w\w+\b"))
        self.idf = [np.asarray(arrays[f"idf_{b['name']}"], np.float32) for b in self.blocks]
        self.offsets = np.cumsum([0] + [len(i) for i in self.idf]).tolist()
        self.coef = np.asarray(arrays["coef"], np.float32)  # [F, N]
        self.intercept = np.asarray(arrays["intercept"], np.float32)  # [N]
        self.temperatures: dict[str, float] = dict(config.get("temperatures", {}))
        self.weights: dict[str, float] = dict(config.get("weights", {}))
        # temperature scaling of the encoder's logits per facet, fitted on validation (1.0 where absent)
        self.encoder_temperatures: dict[str, float] = dict(config.get("encoder_temperatures", {}))
        self._word_cache: dict[str, dict[str, list[int]]] = {}  # block -> word -> char_wb vocabulary ids
        self._terms: list[tuple[str, str]] | None = None  # column -> (n-gram, analyzer), built on first use

    # ---- features -----------------------------------------------------------------------------------------
    def _ids(self, text: str, block: dict) -> list[int]:
        """Vocabulary ids of the text's n-grams in ``block`` (repeats kept: they are the counts)."""
        text, get = text.lower(), block["vocab"].get
        lo, hi = block["ngram"]
        if block["analyzer"] == "word":
            return [j for j in map(get, _word_ngrams(text, self._pattern, lo, hi)) if j is not None]
        # char_wb n-grams never cross a word boundary: ids per word, cached (catalog words repeat a lot)
        out, cache = [], self._word_cache.setdefault(block["name"], {})
        for w in _WHITE.sub(" ", text).split():
            ids = cache.get(w)
            if ids is None:
                if len(cache) > 200_000:
                    cache.clear()
                ids = cache[w] = [j for j in map(get, _word_char_ngrams(w, lo, hi)) if j is not None]
            out += ids
        return out

    def features(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The sparse tf-idf matrix of ``texts`` as (rows, columns, values), rows ascending.

        Vectorised over the batch: Python only maps n-grams to vocabulary ids; counting, sublinear tf, idf and
        the per-row l2 norm of each block are a handful of NumPy calls per batch, not per text.
        """
        rows, cols, vals = [], [], []
        for block, idf, off in zip(self.blocks, self.idf, self.offsets, strict=False):
            r, c = [], []
            for i, text in enumerate(texts):
                ids = self._ids(text, block)
                c += ids
                r += [i] * len(ids)
            if not c:
                continue
            keys, tf = np.unique(np.asarray(r, np.int64) * len(idf) + np.asarray(c, np.int64), return_counts=True)
            rr, cc = keys // len(idf), keys % len(idf)
            v = (1.0 + np.log(tf) if self.config.get("sublinear_tf", True) else tf.astype(np.float64)) * idf[cc]
            norm = np.sqrt(np.bincount(rr, weights=v * v, minlength=len(texts)))
            rows.append(rr)
            cols.append(cc + off)
            vals.append((v / np.maximum(norm[rr], 1e-12)).astype(np.float32))
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        rows, cols, vals = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
        order = np.argsort(rows, kind="stable")
        return rows[order], cols[order], vals[order]

    def terms(self, cols) -> list[tuple[str, str]]:
        """(n-gram, analyzer) of each feature column in ``cols`` (the inverse vocabulary, built once)."""
        if self._terms is None:
            self._terms = [("", "")] * self.offsets[-1]
            for block, off in zip(self.blocks, self.offsets, strict=False):
                for term, j in block["vocab"].items():
                    self._terms[off + j] = (term, block["analyzer"])
        return [self._terms[int(c)] for c in cols]

    def decision(self, texts: list[str]) -> np.ndarray:
        """[B, N] decision values (scikit-learn's ``decision_function`` per facet; ABSENT for unmodelled tags)."""
        out = np.repeat(self.intercept[None, :], len(texts), axis=0)
        rows, cols, vals = self.features(texts)
        if len(rows):  # one gather over the batch, summed per text (no BLAS call per text)
            starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
            out[rows[starts]] += np.add.reduceat(self.coef[cols] * vals[:, None], starts, axis=0)
        return out

    def fuse(self, logits: np.ndarray, decision: np.ndarray, label_map, *, calibrated: bool = True) -> np.ndarray:
        """[B, N] fused scores: per facet ``(1 - w) * p_encoder + w * p_tfidf`` (see the module doc); the encoder's
        logits temperature-scaled first (``calibrated=False``: as they come, for the before/after report)."""
        temps = self.encoder_temperatures if calibrated else {}
        p = probabilities(self.scaled(logits, label_map, temps), label_map)
        w = self.weight_vector(label_map)
        if not w.any():
            return p
        return (1.0 - w) * p + w * probabilities(self.scaled(decision, label_map), label_map)

    def scaled(self, values: np.ndarray, label_map, temperatures: dict | None = None) -> np.ndarray:
        """``values`` times each facet's temperature (the TF-IDF half's unless ``temperatures`` is given)."""
        temps = self.temperatures if temperatures is None else temperatures
        out = values.copy()
        for f in label_map.facets:
            out[:, f.start : f.end] *= float(temps.get(f.name, 1.0))
        return out

    def weight_vector(self, label_map) -> np.ndarray:
        w = np.zeros(len(label_map), np.float32)
        for f in label_map.facets:
            w[f.start : f.end] = float(self.weights.get(f.name, 0.0))
        return w

    # ---- files ------------------------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        folder = Path(folder)
        arrays = {f"idf_{b['name']}": i for b, i in zip(self.blocks, self.idf, strict=True)}
        np.savez(folder / ARRAYS_FILE, coef=self.coef, intercept=self.intercept, **arrays)
        cfg = {**self.config, "temperatures": self.temperatures, "weights": self.weights,
               "encoder_temperatures": self.encoder_temperatures}  # fmt: skip
        (folder / CONFIG_FILE).write_text(json.dumps(cfg, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> TfidfScorer | None:
        """The scorer stored in ``folder``, or None when the bundle has no TF-IDF half."""
        folder = Path(folder)
        if not (folder / CONFIG_FILE).exists():
            return None
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        with np.load(folder / ARRAYS_FILE, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return cls(config, arrays)

    @classmethod
    def from_baseline(cls, baseline) -> TfidfScorer:
        """Copy a fitted :class:`pipeline.training.baseline.Baseline` (two TfidfVectorizers + linear SVMs)."""
        blocks, idfs = [], {}
        for name, vec in baseline.vectorizer.transformer_list:
            if vec.analyzer not in ("word", "char_wb") or not vec.lowercase or vec.norm != "l2":
                raise ValueError(f"TF-IDF block {name!r} uses settings the NumPy scorer does not reproduce")
            vocab = {t: int(j) for t, j in vec.vocabulary_.items()}
            blocks.append({"name": name, "analyzer": vec.analyzer, "ngram": list(vec.ngram_range), "vocab": vocab})
            idfs[f"idf_{name}"] = vec.idf_.astype(np.float32)
        n_feat = sum(len(i) for i in idfs.values())
        lm = baseline.label_map
        coef = np.zeros((n_feat, len(lm)), np.float32)
        intercept = np.full(len(lm), ABSENT, np.float32)
        for clf, cols in baseline.models.values():
            est = clf.estimators_ if hasattr(clf, "estimators_") else None
            if est is not None:  # OneVsRestClassifier over multi-valued tags: one binary SVM per column
                w = np.stack([e.coef_.ravel() for e in est], axis=1)
                b = np.array([float(np.ravel(e.intercept_)[0]) for e in est])
            elif clf.coef_.shape[0] == 1:  # binary exclusive facet: decision d for class 1, -d for class 0
                w = np.stack([-clf.coef_[0], clf.coef_[0]], axis=1)
                b = np.array([-clf.intercept_[0], clf.intercept_[0]])
            else:
                w, b = clf.coef_.T, clf.intercept_
            coef[:, cols] = w
            intercept[cols] = b
        config = {"blocks": blocks, "sublinear_tf": True, "token_pattern": r"(?u)\b\w\w+\b"}
        return cls(config, {"coef": coef, "intercept": intercept, **idfs})


def served_scores(logits: np.ndarray, texts: list[str], label_map, tfidf: TfidfScorer | None) -> np.ndarray:
    """[B, N] the scores a tagger serves: encoder probabilities, fused with the TF-IDF half when it has one."""
    if tfidf is None:
        return probabilities(logits, label_map)
    return tfidf.fuse(logits, tfidf.decision(texts), label_map)
