"""Suspect human labels: rows whose label the rest of the catalog contradicts, found with cleanlab.

For each exclusive facet, out-of-fold probabilities come from a TF-IDF logistic regression (word 1-2 grams and
character 2-4 grams of the model text, vectorised once for all facets) fitted by stratified k-fold, so no row is
scored by a model that saw its label. ``cleanlab.filter.find_label_issues`` (confident learning: a kept library
made for this) then ranks the rows whose given label is least likely; ``enqueue`` puts the top ones in the review
queue as ``suspect_label`` items with the label the rest of the catalog suggests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Suspect:
    row: int  # index into the texts given
    facet: str
    given: str  # the human label (slug)
    suggested: str  # the label the out-of-fold model prefers (slug)
    given_probability: float  # out-of-fold probability of the given label (low: suspect)


def text_features(texts: list[str]):
    """The TF-IDF matrix suspects are scored on: word 1-2 grams and character 2-4 grams of the model text, fitted
    once on every row (the vocabulary and idf read no label, so the folds may share them)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    return FeatureUnion([
        ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=2)),
    ]).fit_transform(texts)  # fmt: skip


def find_suspects(texts: list[str], tags: list[list[str]], exclusive: list[str], folds: int = 5,
                  seed: int = 13, n_jobs: int = 1) -> list[Suspect]:  # fmt: skip
    """Suspect labels of the exclusive ``facets``, least likely first across facets. Classes with fewer than
    ``folds`` rows are left out of a facet (k-fold needs every class in each training part). ``n_jobs``: folds
    fitted in parallel (-1: one per core; keep 1 inside DAG tasks, where forking a threaded process can hang)."""
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    out: list[Suspect] = []
    features = None
    for facet in exclusive:
        rows, labels = [], []
        for i, row_tags in enumerate(tags):
            mine = [t for t in row_tags if t.split(":", 1)[0] == facet]
            if len(mine) == 1:
                rows.append(i)
                labels.append(mine[0])
        classes, counts = np.unique(labels, return_counts=True)
        keep = set(classes[counts >= folds])
        rows = [r for r, lab in zip(rows, labels, strict=True) if lab in keep]
        labels = [lab for lab in labels if lab in keep]
        if len(keep) < 2:
            continue
        if features is None:
            features = text_features(texts)
        names = sorted(keep)
        y = np.array([names.index(lab) for lab in labels])
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        probs = cross_val_predict(LogisticRegression(max_iter=2000, C=10.0), features[rows], y, cv=cv,
                                  method="predict_proba", n_jobs=n_jobs)  # fmt: skip
        # n_jobs=1: cleanlab's own multiprocessing.Pool forks, which deadlocks in a threaded (task) process
        ranked = find_label_issues(y, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
        for k in ranked:
            out.append(Suspect(rows[k], facet, names[y[k]], names[int(probs[k].argmax())], float(probs[k, y[k]])))
        log.info("suspect labels: %s: %d of %d rows", facet, len(ranked), len(rows))
    return sorted(out, key=lambda s: s.given_probability)


def enqueue_catalog(engine: sa.Engine, spec, catalog: str | None = None, top: int = 50) -> tuple[int, int, int]:
    """``tagger review suspects``: the catalog's products (``db:products``, as training reads them) through
    ``spec``'s model text and exclusive facets, suspects found, the ``top`` least likely enqueued. Returns
    (products, suspects found, new queue items)."""
    from pipeline.catalog.snapshot import read_products_table
    from pipeline.catalog.text import build_text, template_for

    name = catalog or spec.name
    rows = read_products_table(engine, spec, f"db:products/{name}").frame.to_dict(orient="records")
    template = template_for(spec)
    texts = [build_text(r, template) for r in rows]
    return _find_and_enqueue(engine, spec, name, texts, rows, top, n_jobs=-1)  # a CLI process: every core


def enqueue_prepared(engine: sa.Engine, prep, spec, catalog: str, top: int) -> tuple[int, int, int]:
    """The rows a training run reads (``pipeline.training.dataset.Prepared``: its model texts and tags, every
    split), suspects found, the ``top`` least likely enqueued for the products of ``catalog`` that are in the
    products table. Returns (rows, suspects found, new queue items)."""
    rows = prep.frame[["product_id", "tags"]].to_dict(orient="records")
    return _find_and_enqueue(engine, spec, catalog, prep.frame["text"].tolist(), rows, top, n_jobs=1)


def _find_and_enqueue(engine, spec, catalog: str, texts: list[str], rows: list[dict], top: int, n_jobs: int):
    """Suspects of ``rows`` (``product_id``, ``tags``) read as ``texts``; the ``top`` least likely enqueued."""
    exclusive = [f for f, rule in spec.facets.items() if rule.exclusive]
    found = find_suspects(texts, [r["tags"] for r in rows], exclusive, n_jobs=n_jobs)
    with engine.begin() as conn:
        added = enqueue(conn, catalog, [str(r["product_id"]) for r in rows], found[:top])
    return len(rows), len(found), added


def enqueue(conn: sa.Connection, catalog: str, product_ids: list[str], suspects: list[Suspect]) -> int:
    """Put suspects in the review queue (kind ``suspect_label``, the human tag as the item's tag, its out-of-fold
    probability as the score); returns how many items are new (an open item is not enqueued twice)."""
    added = 0
    for s in suspects:
        added += conn.execute(
            sa.text(
                """
                insert into review_items (kind, product_pk, tag_id, reason, score)
                select 'suspect_label', p.id, t.id, :reason, :score
                from products p join product_tags pt on pt.product_pk = p.id join tags t on t.id = pt.tag_id
                where p.catalog = :catalog and p.product_id = :pid and t.slug = :given and pt.source = 'human'
                on conflict (kind, coalesce(product_pk, 0), tag_id) where state = 'open' do nothing
                """
            ),
            {
                "catalog": catalog,
                "pid": product_ids[s.row],
                "given": s.given,
                "score": s.given_probability,
                "reason": f"out-of-fold probability of this label {s.given_probability:.2f}; "
                f"the rest of the catalog suggests {s.suggested}",
            },
        ).rowcount
    return added
