"""The model card (Markdown) written into every bundle: data, splits, metrics, tags left out, limitations."""

from __future__ import annotations


def _row(name: str, model: float, base: float | None, enc: float | None) -> str:
    b = f"{base:.4f}" if base is not None else "-"
    d = f"{model - base:+.4f}" if base is not None else "-"
    e = f"{enc:.4f}" if enc is not None else "-"
    return f"| {name} | {model:.4f} | {e} | {b} | {d} |"


def _facet(block: dict | None, facet: str, key: str) -> float | None:
    return block["facets"][facet][key] if block else None


def _explained(examples: list[dict]) -> list[str]:
    from pipeline.evaluation.explain import highlighted, word_shares

    lines = ["", "## Explained examples (test split)",
             "Words that drove each predicted tag (share of the decision; integrated gradients on the encoder fused "
             "with the TF-IDF half's n-gram weights, `pipeline.evaluation.explain`). `tagger explain TEXT` explains "
             "any title.", ""]  # fmt: skip
    for ex in examples:
        lines.append(f"- {ex['text']}")
        for tag in ex["tags"]:
            words = word_shares(tag) or "no word for it"
            lines.append(f"  - `{tag['slug']}` {tag['score']:.2f}: {highlighted(ex['text'], tag)} ({words})")
    return lines


def render(
    *,
    meta: dict,
    metrics: dict,
    dropped: dict[str, int],
    history: list[dict],
    options: dict,
    examples: list[dict] | None = None,
) -> str:
    """The bundle's model card (Markdown); ``examples`` are :func:`pipeline.evaluation.explain.explain` outputs."""
    m, b, enc = metrics["model"], metrics.get("baseline"), metrics.get("encoder")
    hybrid = metrics.get("hybrid")
    lines = [
        f"# Tagger model card: {meta.get('spec')} ({meta.get('run_id', '')})",
        "",
        "## Data",
        f"- Source: `{meta.get('source')}` through dataset spec `{meta.get('spec')}`",
        f"- Dataset digest: `{meta.get('dataset_digest')}`",
        *(
            [
                f"- Reviewer labels: {meta['reviewer_labels']} (tags a reviewer accepted or corrected, in place of the "
                "human tags of their facet)"
            ]  # fmt: skip
            if meta.get("reviewer_labels") is not None
            else []
        ),
        f"- Model text: {' | '.join(meta.get('text_fields', []))} (max {meta.get('max_length')} tokens)",
        f"- Encoder: {meta.get('encoder', 'a local folder')} (`{meta.get('encoder_source')}`)"
        + (f", texts prefixed {meta['encoder_prefix']!r} by its tokenizer" if meta.get("encoder_prefix") else ""),
        "- Scores: "
        + (
            "hybrid: per facet (1 - w) x encoder probability + w x TF-IDF linear model probability, w chosen on "
            "validation: " + ", ".join(f"{f} w={w:g}" for f, w in hybrid["weights"].items())
            if hybrid
            else "the fine-tuned encoder alone"
        ),
        "",
        "## Splits",
        "Grouped by normalised title (pipeline.catalog.splits.split_of: hash of the lower-cased, whitespace-collapsed "
        "title,",
        "80/10/10): no title in two splits. The test split is frozen and identified by its digest.",
        f"- train {metrics['n_train']}, validation {metrics['n_val']}, test {metrics['n_test']} rows",
        f"- Test digest: `{metrics['test_digest']}`",
        "",
        "## Metrics (frozen test split)",
        "| metric | tagger (as served) | encoder alone | TF-IDF baseline | tagger - baseline |",
        "|---|---|---|---|---|",
    ]
    for key in ("micro_f1", "macro_f1", "precision_at_1", "ece"):
        lines.append(_row(key, m[key], b[key] if b else None, enc[key] if enc else None))
    for f, e in m["facets"].items():
        key = "accuracy" if e["exclusive"] else "micro_f1"
        lines.append(_row(f"{f} {key}", e[key], _facet(b, f, key), _facet(enc, f, key)))
    leaked = metrics.get("facets_in_text")
    if leaked:
        without = m["micro_f1_without_text_facets"]
        lines += ["", f"**Warning:** facet(s) {', '.join(leaked)} read a field that is also in the model text, so the "
                  f"tagger reads the answer off its input; micro-F1 without them: {without:.4f}"
                  + (f" (TF-IDF baseline {b['micro_f1_without_text_facets']:.4f})" if b else "") + "."]  # fmt: skip
    cal = metrics.get("calibration")
    if cal:
        temps = ", ".join(f"{f} T={t:g}" for f, t in cal["encoder_temperatures"].items())
        lines += ["", f"Calibration: the encoder's logits are temperature-scaled per facet on validation ({temps}); "
                  f"ECE of the served scores on the test split {cal['ece_before']:.4f} before, {cal['ece_after']:.4f} "
                  "after."]  # fmt: skip
    lines += [
        "",
        "## Training",
        f"- Options: `{options}`",
        "",
        "| epoch | step | train loss | val micro-F1 |",
        "|---|---|---|---|",
    ]
    lines += [f"| {h['epoch']} | {h['step']} | {h['train_loss']:.4f} | {h['val_micro_f1']:.4f} |" for h in history]
    lines += ["", f"## Tags left out ({len(dropped)}: fewer than {options.get('min_tag_count')} training examples)", ""]
    lines.append(", ".join(f"`{s}` ({n})" for s, n in dropped.items()) if dropped else "None.")
    if examples:
        lines += _explained(examples)
    lines += [
        "",
        "## Known limitations",
        "- Only the text is used (no images); colour and season are often not stated in the title, so they are",
        "  guessed from correlations (brand, article type, year).",
        "- Tags listed above as left out are never predicted. Rows whose true tag was left out count as errors.",
        "- Exclusive facets always predict one value (threshold 0); multi-valued thresholds are tuned on validation.",
        "- Scores are softmax/sigmoid outputs; check the ECE above before reading them as probabilities.",
        "- Trained on one catalog snapshot; drift in titles or new tags needs retraining.",
    ]
    return "\n".join(lines) + "\n"
