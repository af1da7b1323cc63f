"""TF-IDF baseline: word + char n-grams with linear one-vs-rest classifiers (scikit-learn).

Trained on the same split and texts as the tagger. It returns *logits* in the tagger's label layout (decision
function values), so the same post-processing and metrics apply: softmax/argmax inside exclusive facets,
sigmoid >= 0.5 (decision >= 0) for multi-valued tags. Its scores are not calibrated probabilities.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import FeatureUnion
from sklearn.svm import LinearSVC

from pipeline.training.labels import LabelMap

log = logging.getLogger(__name__)


@dataclass
class Baseline:
    vectorizer: object
    models: dict  # facet -> (classifier, output columns of the facet it predicts)
    label_map: LabelMap
    fit_seconds: float

    def logits(self, texts: list[str]) -> np.ndarray:
        x = self.vectorizer.transform(texts)
        out = np.full((len(texts), len(self.label_map)), -10.0, dtype=np.float32)
        for f in self.label_map.facets:
            clf, cols = self.models.get(f.name, (None, None))
            if clf is None:
                continue
            dec = clf.decision_function(x)
            if dec.ndim == 1:  # binary problem: one column for the positive class
                dec = np.stack([-dec, dec], axis=1)
            out[:, np.asarray(cols)] = dec
        return out


def fit_baseline(texts: list[str], y: np.ndarray, label_map: LabelMap, seed: int = 13) -> Baseline:
    """Fit TF-IDF (word 1-2 grams + char_wb 2-5 grams) and one linear SVM (one-vs-rest) per facet."""

    t0 = time.perf_counter()
    vec = FeatureUnion(
        [
            ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), min_df=1, sublinear_tf=True)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True)),
        ]
    )
    x = vec.fit_transform(texts)
    models = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # OvR warns about labels that are never/always present
        for f in label_map.facets:
            block = y[:, f.start : f.end]
            if f.exclusive:
                rows = block.any(axis=1)
                labels = block[rows].argmax(axis=1)
                present = np.unique(labels)
                if len(present) < 2:
                    continue
                clf = LinearSVC(C=0.5, random_state=seed).fit(x[rows], labels)
                models[f.name] = (clf, [f.start + int(c) for c in clf.classes_])
            else:
                cols = [j for j in range(block.shape[1]) if 0 < block[:, j].sum() < len(block)]
                if not cols:
                    continue
                clf = OneVsRestClassifier(LinearSVC(C=0.5, random_state=seed)).fit(x, block[:, cols].astype(int))
                models[f.name] = (clf, [f.start + j for j in cols])
    took = time.perf_counter() - t0
    log.info("baseline: TF-IDF %d features, %d facet classifiers, fitted in %.1f s", x.shape[1], len(models), took)
    return Baseline(vec, models, label_map, took)
