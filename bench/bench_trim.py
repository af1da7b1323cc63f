"""Vocabulary trimming of a multilingual encoder: pieces kept and tokens per text, for several common-piece budgets.

Trimming (``pipeline.training.encoders._kept_ids``) keeps the pieces a catalog's training texts use, every single
character of their scripts, and the ``common`` most likely pieces written in those scripts. This measures, per
budget, on texts the trimmed tokenizer was NOT built from (only the tokenizer is needed; no model is loaded):

- the catalog's own test split (new products of the same shop),
- the load-test sample of ``bench_serving.py`` (2,000 real titles, a quarter Chinese),
- a foreign catalog (Myntra titles for a Chinese catalog, Product1M titles for an English one),

the mean tokens per text against the untrimmed tokenizer (serving time grows with the sequence length) and the
embedding rows kept (MB in fp32). Run:

    .venv/bin/python bench/bench_trim.py --spec product1m
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from common import save


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="product1m")
    ap.add_argument("--encoder", default="e5-small")
    ap.add_argument("--budgets", type=int, nargs="+", default=[0, 4000, 8000, 16000, 32000])
    args = ap.parse_args()
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from pipeline.catalog.samples import sample_titles
    from pipeline.catalog.spec import default_source, load_spec
    from pipeline.settings import Settings
    from pipeline.training import encoders
    from pipeline.training.dataset import load_source, prepare_data
    from pipeline.training.options import TrainOptions

    home = Path(os.environ.get("TAGGER_HOME") or tempfile.mkdtemp(prefix="bench_trim-"))
    settings = Settings(home=home)
    enc_dir = Path(encoders.encoder_path(args.encoder, home))
    hidden = json.loads((enc_dir / "config.json").read_text())["hidden_size"]
    spec = load_spec(args.spec)
    frame, _ = load_source(default_source(args.spec, settings.data_dir), spec, settings)
    prep = prepare_data(frame, spec, TrainOptions())
    fit_texts = prep.frame.loc[prep.frame["split"] != "test", "text"].tolist()  # what training trims to
    foreign_spec = "myntra" if spec.locale.startswith("zh") else "product1m"
    ff, _ = load_source(default_source(foreign_spec, settings.data_dir), load_spec(foreign_spec), settings)
    sets = {
        "test split": prep.part("test")["text"].tolist(),
        "serving sample": sample_titles(2000, settings.data_dir),
        f"{foreign_spec} titles": ff["title"].astype(str).head(2000).tolist(),
    }
    full = AutoTokenizer.from_pretrained(enc_dir)
    base = json.loads((enc_dir / "tokenizer.json").read_text(encoding="utf-8"))
    used = {i for ids in full(fit_texts)["input_ids"] for i in ids}

    def mean_tokens(tok, texts) -> float:
        return sum(len(e.ids) for e in tok.encode_batch(texts)) / len(texts)

    untrimmed = Tokenizer.from_file(str(enc_dir / "tokenizer.json"))
    rows = [{"budget": "untrimmed", "pieces": len(base["model"]["vocab"]),
             **{k: mean_tokens(untrimmed, v) for k, v in sets.items()}}]  # fmt: skip
    for budget in args.budgets:
        kept = encoders._kept_ids(base, used, fit_texts, common=budget)
        tok = Tokenizer.from_str(json.dumps(encoders.trimmed_spec(base, kept)))
        new_id = {old: new for new, old in enumerate(kept)}
        assert [e.ids for e in tok.encode_batch(fit_texts[:500])] == [
            [new_id[i] for i in e.ids] for e in untrimmed.encode_batch(fit_texts[:500])
        ], "trimming changed how the catalog's own texts tokenize"
        rows.append({"budget": budget, "pieces": len(kept), **{k: mean_tokens(tok, v) for k, v in sets.items()}})
    for r in rows:
        r["embedding_mb"] = r["pieces"] * hidden * 4 / 1e6
    result = {"command": f".venv/bin/python bench/bench_trim.py --spec {args.spec}", "spec": args.spec,
              "encoder": args.encoder, "fit_texts": len(fit_texts), "rows": rows}  # fmt: skip
    save(f"bench_trim_{spec.name}", result)
    names = list(sets)
    print(f"\n{args.spec} ({len(fit_texts)} training + validation texts), {args.encoder}: mean tokens per text")
    print("| common pieces | pieces kept | embeddings (fp32) | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for r in rows:
        cells = " | ".join(f"{r[n]:.1f}" for n in names)
        print(f"| {r['budget']} | {r['pieces']:,} | {r['embedding_mb']:.0f} MB | {cells} |")


if __name__ == "__main__":
    main()
