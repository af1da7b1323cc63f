"""Build the training dataset: load a source, split by title, map tags to outputs, tokenise, batch.

Splits are grouped by *normalised title* (``pipeline.catalog.splits.split_of`` hashes it, 80/10/10), so the
same title always lands in the same split (Myntra has 44k rows but only 31k distinct titles) and a product keeps
its split as the catalog grows. The test split is identified by ``test_digest`` (sha256 over its sorted
``(product_id, normalised title)`` pairs) so every model is compared on the same rows.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.catalog import text
from pipeline.catalog.readers import facet_of, parent_of, read_catalog
from pipeline.catalog.spec import DatasetSpec
from pipeline.catalog.splits import SPLITS, normalise_title, split_of  # one split rule for validation and training
from pipeline.errors import TrainingError
from pipeline.training.labels import LabelMap
from pipeline.training.options import TrainOptions

log = logging.getLogger(__name__)


def split_digest(frame: pd.DataFrame) -> str:
    """sha256 over the sorted (product_id, normalised title) pairs of the rows given (the test split)."""
    pairs = sorted(zip(frame["product_id"].astype(str), frame["title"].map(normalise_title), strict=True))
    h = hashlib.sha256()
    for pid, title in pairs:
        h.update(f"{pid}\t{title}\n".encode())
    return h.hexdigest()


def dataset_digest(frame: pd.DataFrame) -> str:
    """sha256 over the sorted (product_id, normalised title, sorted tags) of all rows."""
    rows = sorted(
        f"{pid}\t{normalise_title(t)}\t{'|'.join(sorted(tags))}"
        for pid, t, tags in zip(frame["product_id"].astype(str), frame["title"], frame["tags"], strict=True)
    )
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


# ---- text -------------------------------------------------------------------------------------------------
text_template = text.template_for  # the spec's model-text template (pipeline.catalog.text)


# ---- source -----------------------------------------------------------------------------------------------
def load_source(source: str | Path, spec: DatasetSpec, settings) -> tuple[pd.DataFrame, str]:
    """Contract rows from a catalog path (read through ``spec``) or a snapshot id; returns (frame, source uri).

    Raises:
        CatalogError: neither a readable file nor a known snapshot id.
        ValidationFailed: the snapshot failed validation.
    """
    source = str(source).removeprefix("snapshot:")  # a bundle records its snapshot source as snapshot:<id>
    path = Path(source)
    if path.exists():
        read = read_catalog(path, spec)
        if read.rejects:
            log.warning("%d rows of %s could not be parsed and are left out", len(read.rejects), path)
        return read.frame, str(path.resolve())
    # deferred: snapshots live in Postgres, and the GPU machine that runs the fit (bench_gpu) has no database stack
    from pipeline.catalog.snapshot import load_snapshot

    return load_snapshot(settings, source), f"snapshot:{source}"


# ---- labels ------------------------------------------------------------------------------------------------
def _ancestors(slug: str) -> list[str]:
    out, cur = [], parent_of(slug)
    while cur:
        out.append(cur)
        cur = parent_of(cur)
    return out


def slug_name(slug: str) -> str:
    """The readable name of a tag slug: its last path segment, dashes as spaces (``kurta-sets`` -> ``kurta sets``)."""
    return slug.split(":", 1)[1].rsplit("/", 1)[-1].replace("-", " ")


def build_label_map(train_tags: pd.Series, spec: DatasetSpec, min_count: int) -> tuple[LabelMap, dict[str, int]]:
    """Label map from the tags seen in the training split; tags under ``min_count`` are left out.

    Returns (label map, left-out tag -> training count).
    """
    counts = Counter(t for tags in train_tags for t in tags)
    facet_tags: dict[str, list[str]] = {f: [] for f in spec.facets}
    dropped: dict[str, int] = {}
    for slug, n in counts.items():
        facet = facet_of(slug)
        if facet not in facet_tags:
            continue
        if n < min_count:
            dropped[slug] = n
        else:
            facet_tags[facet].append(slug)
    kept = [s for tags in facet_tags.values() for s in tags]
    if not kept:
        raise TrainingError(
            f"no tag has {min_count} or more training examples ({len(counts)} tags seen); "
            "use more rows or lower min_tag_count"
        )
    ancestors = {s: _ancestors(s) for s in kept}
    names = {s: {spec.locale: slug_name(s)} for s in set(kept) | {a for v in ancestors.values() for a in v}}
    lm = LabelMap.build(facet_tags, {f: r.exclusive for f, r in spec.facets.items()}, ancestors, names)
    return lm, dict(sorted(dropped.items(), key=lambda kv: -kv[1]))


def targets(tags: pd.Series, label_map: LabelMap) -> np.ndarray:
    """[B, N] bool: which outputs are true for each row (tags outside the map are ignored)."""
    index = {s: i for i, s in enumerate(label_map.slugs)}
    y = np.zeros((len(tags), len(label_map)), dtype=bool)
    for r, row_tags in enumerate(tags):
        for t in row_tags:
            if t in index:
                y[r, index[t]] = True
    return y


# ---- the prepared dataset ------------------------------------------------------------------------------------
@dataclass
class Prepared:
    """The catalog as training reads it, built once: rows with their split and model text, the label map, and
    each split's targets (computed on first use and kept)."""

    frame: pd.DataFrame  # contract rows + ``split`` + ``text``
    label_map: LabelMap
    dropped: dict[str, int]
    template: list[dict]  # how each row's model text was built (pipeline.catalog.text)
    dataset_digest: str
    test_digest: str
    _targets: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def part(self, split: str) -> pd.DataFrame:
        return self.frame[self.frame["split"] == split]

    def texts(self, split: str) -> list[str]:
        return self.part(split)["text"].tolist()

    def fit_texts(self) -> list[str]:
        """The texts a model may learn from (training and validation): a vocabulary is trimmed to these, so the
        test split stays text the model has never seen, as new products are."""
        return self.frame.loc[self.frame["split"] != "test", "text"].tolist()

    def y(self, split: str) -> np.ndarray:
        if split not in self._targets:
            self._targets[split] = targets(self.part(split)["tags"], self.label_map)
        return self._targets[split]


def prepare(
    frame: pd.DataFrame,
    spec: DatasetSpec,
    *,
    min_tag_count: int = 5,
    split_seed: int = 0,
    max_rows: int | None = None,
    max_train_rows: int | None = None,
    sample_seed: int = 13,
) -> Prepared:
    """Split, build texts and the label map. ``max_rows`` samples the whole catalog first (demo slices);
    ``max_train_rows`` caps only the training split (val/test stay whole, so test stays the frozen split)."""
    frame = frame.reset_index(drop=True)
    frame = frame[frame["title"].astype(str).str.strip() != ""]
    if max_rows is not None and len(frame) > max_rows:
        frame = frame.sample(n=max_rows, random_state=sample_seed).sort_index()
    data_digest = dataset_digest(frame)
    template = text_template(spec)
    frame = frame.assign(
        split=[split_of(t, split_seed) for t in frame["title"]],
        text=[text.build_text(r, template) for r in frame.to_dict(orient="records")],
    )
    if max_train_rows is not None:
        train_idx = frame.index[frame["split"] == "train"]
        if len(train_idx) > max_train_rows:
            rng = np.random.default_rng(sample_seed)
            drop = rng.choice(train_idx, size=len(train_idx) - max_train_rows, replace=False)
            frame = frame.drop(index=drop)
    sizes = frame["split"].value_counts()
    for s in SPLITS:
        if sizes.get(s, 0) == 0:
            raise TrainingError(f"the {s} split is empty ({len(frame)} rows in all); train on more rows")
    lm, dropped = build_label_map(frame.loc[frame["split"] == "train", "tags"], spec, min_tag_count)
    log.info(
        "dataset: %d rows (train %d, val %d, test %d), %d tags in the head, %d left out (< %d examples)",
        len(frame),
        sizes["train"],
        sizes["val"],
        sizes["test"],
        len(lm),
        len(dropped),
        min_tag_count,
    )
    return Prepared(frame, lm, dropped, template, data_digest, split_digest(frame[frame["split"] == "test"]))


# ---- tokenised batches ----------------------------------------------------------------------------------------
def tokenize(texts: list[str], tokenizer, max_length: int) -> list[list[int]]:
    """Token ids per text, truncated to ``max_length``, no padding (padding happens per batch)."""
    return tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)["input_ids"]


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffled batches of similar lengths, a pure function of (seed, epoch) so a resumed run sees the same order.

    Shuffle, cut into mega-batches of 50 batches, sort each by length, cut into batches, shuffle the batches.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    mega = batch_size * 50
    batches = []
    for i in range(0, len(order), mega):
        chunk = sorted(order[i : i + mega].tolist(), key=lambda j: -lengths[j])
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(ids: list[list[int]], pad_id: int, multiple: int = 8):
    """Dynamic padding: [B, T] input_ids and attention_mask, T = the longest sequence rounded up to ``multiple``.

    Rounding keeps the number of distinct shapes small for cuBLAS (CUDA); on the CPU the trainer passes 1
    (``pipeline.training.loop.pad_multiple``).
    """
    import torch

    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    width = int(-(-lengths.max() // multiple) * multiple)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    for r, x in enumerate(ids):  # one numpy row copy per sequence (a torch.tensor per row costs more)
        input_ids[r, : len(x)] = x
    mask = (np.arange(width) < lengths[:, None]).astype(np.int64)
    return torch.from_numpy(input_ids), torch.from_numpy(mask)


def prepare_data(frame: pd.DataFrame, spec: DatasetSpec, options: TrainOptions) -> Prepared:
    """Splits, label map and texts exactly as training builds them (benchmarks re-derive the same test split)."""
    return prepare(
        frame,
        spec,
        min_tag_count=options.min_tag_count,
        split_seed=options.split_seed,
        max_rows=options.max_rows,
        max_train_rows=options.max_train_rows,
        sample_seed=options.seed,
    )
