"""Open-vocabulary tags (issue 20): article types held out of training entirely, added to the library afterwards,
predicted by name similarity (``pipeline.tagging.open_vocab``) against a plain string match, in the same run.

1. ``--holdout`` leaf categories (each with 40-800 products, seeded) are removed from the catalog entirely; the
   tagger is trained on the rest through the real entry point (hybrid, MiniLM, ``--max-train-rows``).
2. The library's category leaves the head does not know (the held-out ones, and any left out for too few rows) are
   the open-vocabulary candidates; their vectors come from their names.
3. The rule's thresholds are calibrated per facet on the validation split, pretending each known tag new in turn.
4. Scored on the frozen test split of the whole catalog (held-out types in their natural share):
   - recall@1 / recall@5: the true type's rank among the unknown tags, on the held-out products;
   - predictions: how many open-vocabulary tags were given, precision, recall on the held-out products;
   - the baseline: an unknown tag's name (or the name without a final "s") found in the title as whole words;
   - the cost to the supervised tags: micro-F1 over the head's tags with and without the rule (an open-vocabulary
     tag replaces the head's tag in an exclusive facet), and micro-F1 over all tags.
   Both the fine-tuned encoder (what Triton serves) and the pretrained one give vectors, side by side.

    .venv/bin/python bench/bench_open_vocab.py [--holdout 10 --max-train-rows 8000 --epochs 2 --seed 0]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time

import numpy as np
from common import deepest, drop_database, read_rows, save, scratch_settings, write_csv

FACET = "category"


def leaf_of(tags: list[str]) -> str | None:
    return deepest(tags, FACET)


def string_match(titles: list[str], names: dict[str, str]) -> list[str | None]:
    """The baseline: the unknown tag whose name (or the name without a final "s") occurs in the title as whole
    words, the longest name when several do; None when none does."""
    pats = []
    for slug, name in names.items():
        forms = {name.lower(), name.lower().removesuffix("s")}
        pats.append((len(name), slug, re.compile(r"\b(" + "|".join(map(re.escape, sorted(forms))) + r")\b")))
    pats.sort(reverse=True)
    out = []
    for t in titles:
        low = t.lower()
        out.append(next((slug for _, slug, p in pats if p.search(low)), None))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="myntra")
    ap.add_argument("--holdout", type=int, default=10)
    ap.add_argument("--max-train-rows", type=int, default=8000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--target-precision", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bundle", default=None, help="a bundle this bench trained before (same --seed): skip training")
    args = ap.parse_args()

    import torch
    from transformers import AutoModel, AutoTokenizer

    from pipeline.catalog.spec import load_spec
    from pipeline.catalog.splits import split_of
    from pipeline.metrics import micro_f1
    from pipeline.tagging import open_vocab as ov
    from pipeline.training import encoders
    from pipeline.training.bundle import load_bundle
    from pipeline.training.dataset import load_source, prepare_data, slug_name
    from pipeline.training.labels import decide
    from pipeline.training.options import TrainOptions
    from pipeline.training.train import train

    torch.set_num_threads(2)
    settings = scratch_settings("openvocab")
    spec = load_spec(args.spec)
    home = settings.home_dir
    header, rows = read_rows(spec, settings.data_dir)
    whole = write_csv(home / "whole.csv", header, rows)
    frame, _ = load_source(whole, spec, settings)
    frame = frame.reset_index(drop=True)
    leaf = frame["tags"].map(leaf_of)
    counts = leaf.value_counts()
    eligible = sorted(counts[(counts >= 40) & (counts <= 800)].index)
    rng = np.random.default_rng(args.seed)
    held = sorted(rng.choice(eligible, size=args.holdout, replace=False).tolist())
    held_ids = set(frame.loc[leaf.isin(held), "product_id"].astype(str))
    at = header.index(spec.columns["product_id"])
    kept_rows = [r for r in rows if r[at] not in held_ids]
    train_file = write_csv(home / "without_held_out.csv", header, kept_rows)
    print(f"held out {len(held)} article types, {len(held_ids)} products: {', '.join(map(slug_name, held))}")

    opts = TrainOptions(max_train_rows=args.max_train_rows, epochs=args.epochs, min_steps=0, max_length=48,
                        progress=False, seed=args.seed)  # fmt: skip
    t0 = time.perf_counter()
    try:
        bundle_path = args.bundle or train(str(train_file), spec.name, settings, opts).bundle_path
    finally:
        drop_database(settings.database_url)
        drop_database(settings.mlflow_tracking_uri)
    train_s = time.perf_counter() - t0
    bundle = load_bundle(bundle_path)
    print(f"bundle {bundle_path}")
    lm = bundle.label_map
    f = next(x for x in lm.facets if x.name == FACET)
    known = list(lm.slugs[f.start : f.end])  # the head's category leaves
    assert not set(held) & set(known), "the bundle was trained with held-out types: another --seed?"
    library = sorted({t for t in leaf.dropna()})  # every leaf the catalog (so the library) has
    unknown = [s for s in library if s not in set(known)]
    print(f"trained in {train_s:.0f} s; head knows {len(known)} category leaves, {len(unknown)} unknown to it")

    # validation (calibration) and the frozen test split of the whole catalog
    prep = prepare_data(load_source(train_file, spec, settings)[0], spec,
                        TrainOptions(**{**bundle.meta["train_options"], "progress": False}))  # fmt: skip
    val = prep.part("val")
    test = frame[frame["title"].map(split_of) == "test"].reset_index(drop=True)
    test_text = test["title"].tolist()  # Myntra's model text is its title
    test_leaf = test["tags"].map(leaf_of)
    is_new = test_leaf.isin(held).to_numpy()

    scores_val = bundle.scores(val["text"].tolist())
    scores_test = bundle.scores(test_text)
    pred_test = decide(scores_test, lm, bundle.thresholds)

    pre_tok = AutoTokenizer.from_pretrained(encoders.encoder_path(bundle.meta.get("encoder"), home))
    pre_enc = AutoModel.from_pretrained(encoders.encoder_path(bundle.meta.get("encoder"), home))
    sources = {
        "fine-tuned (served)": ov.embedder(bundle.model.encoder, bundle.tokenizer, bundle.max_length),
        "pretrained": ov.embedder(pre_enc, pre_tok, bundle.max_length),
    }
    names = {s: slug_name(s) for s in library}
    out = {"held_out": held, "n_held_out_products": len(held_ids), "train_s": round(train_s, 1),
           "known_leaves": len(known), "unknown_leaves": len(unknown), "test_rows": len(test),
           "test_rows_new": int(is_new.sum()), "methods": {}}  # fmt: skip
    y_known = np.zeros((len(test), len(lm)), dtype=bool)
    index = {s: i for i, s in enumerate(lm.slugs)}
    for r, tags in enumerate(test["tags"]):
        for t in tags:
            if t in index:
                y_known[r, index[t]] = True
    all_slugs = list(lm.slugs) + unknown
    all_index = {s: i for i, s in enumerate(all_slugs)}
    y_all = np.zeros((len(test), len(all_slugs)), dtype=bool)
    for r, tags in enumerate(test["tags"]):
        for t in tags:
            if t in all_index and (not t.startswith(FACET + ":") or t == test_leaf[r]):
                y_all[r, all_index[t]] = True
    base_f1 = micro_f1(y_known, pred_test)

    def score(method: str, emitted: np.ndarray, chosen: list[str | None], ranks: np.ndarray | None, extra=None):
        correct = np.array([c is not None and c == t for c, t in zip(chosen, test_leaf, strict=True)])
        pred_known = pred_test.copy()
        pred_known[emitted, f.start : f.end] = False  # an exclusive facet: the new tag replaces the head's
        pred_all = np.zeros_like(y_all)
        pred_all[:, : len(lm)] = pred_known
        for r in np.flatnonzero(emitted):
            pred_all[r, all_index[chosen[r]]] = True
        res = {
            "given": int(emitted.sum()),
            "given_on_new": int((emitted & is_new).sum()),
            "precision": round(float((emitted & correct).sum() / max(emitted.sum(), 1)), 4),
            "recall_new": round(float((emitted & correct & is_new).sum() / max(is_new.sum(), 1)), 4),
            "supervised_micro_f1": round(micro_f1(y_known, pred_known), 4),
            "supervised_cost_points": round((base_f1 - micro_f1(y_known, pred_known)) * 100, 2),
            "all_tags_micro_f1": round(micro_f1(y_all, pred_all), 4),
        }
        if ranks is not None:
            res["recall_at_1"] = round(float(np.mean(ranks[is_new] < 1)), 4)
            res["recall_at_5"] = round(float(np.mean(ranks[is_new] < 5)), 4)
        out["methods"][method] = {**res, **(extra or {})}
        print(method, json.dumps(out["methods"][method]))

    none = np.zeros(len(test), dtype=bool)
    pred_all0 = np.zeros_like(y_all)
    pred_all0[:, : len(lm)] = pred_test
    out["head_only"] = {
        "supervised_micro_f1": round(base_f1, 4),
        "all_tags_micro_f1": round(micro_f1(y_all, pred_all0), 4),
    }
    print("head only", json.dumps(out["head_only"]))

    matched = string_match(test_text, {s: names[s] for s in unknown})
    score("string match", np.array([m is not None for m in matched]) | none, matched, None)

    known_idx = np.array([index[s] for s in known])
    val_truth = np.array([known.index(t) if t in known else -1 for t in val["tags"].map(leaf_of)])
    for label, embed in sources.items():
        t1 = time.perf_counter()
        tags = {s: (FACET, ov.phrases({"en": names[s]})) for s in library}
        vecs = ov.TagVectors.build(tags, embed)
        vi = vecs.index()
        k_vec = vecs.vectors[[vi[s] for s in known]]
        u_vec = vecs.vectors[[vi[s] for s in unknown]]
        v_val, v_test = embed(val["text"].tolist()), embed(test_text)
        rule = ov.calibrate(v_val @ k_vec.T, scores_val[:, known_idx], val_truth,
                            target_precision=args.target_precision)  # fmt: skip
        sims_new = v_test @ u_vec.T
        choice = scores_test[:, known_idx].argmax(axis=1)
        sims_choice = (v_test * k_vec[choice]).sum(axis=1)
        hit, best, _ = ov.decide(sims_new, sims_choice, rule)
        chosen = [unknown[b] for b in best]
        true_u = np.array([unknown.index(t) if t in unknown else -1 for t in test_leaf])
        ranks = np.full(len(test), 10**6)
        rows_u = np.flatnonzero(true_u >= 0)
        ranks[rows_u] = (sims_new[rows_u] > sims_new[rows_u, true_u[rows_u]][:, None]).sum(axis=1)
        secs = time.perf_counter() - t1
        score(f"open vocab, {label} encoder", hit, chosen, ranks,
              {"tau": round(rule.tau, 3), "delta": rule.delta, "calibration_precision": round(rule.precision, 3),
               "calibration_recall": round(rule.recall, 3), "pretended_tags": rule.n_pretended,
               "seconds": round(secs, 1)})  # fmt: skip
    out["machine"] = platform.processor() or platform.machine()
    path = save("bench_open_vocab", out)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
