"""A Chinese tagging catalog built from the shipped NER data (``../shared/data/alibaba_ecommerce_ner_zh``).

Each of the 4,987 e-commerce titles (train + dev + test of the source, one character per line in BIEOS) becomes one
product: its text is the joined characters, its ``brand`` tags the ``HP`` spans and its ``product_word`` tags the
``HC`` spans (both multi-valued). Our own title-hash split replaces the source's; tags with fewer than
``min_tag_count`` training examples are left out by training as usual. Writes ``ner_zh.jsonl`` and the dataset spec
``ner_zh.yaml`` (``locale: zh``) into ``--out``.

    .venv/bin/python bench/ner_catalog.py --out /tmp/ner
    .venv/bin/python bench/bench_encoders.py --spec /tmp/ner/ner_zh.yaml --source /tmp/ner/ner_zh.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SPEC = """# Chinese e-commerce titles with brand (HP) and product-word (HC) spans, from alibaba_ecommerce_ner_zh (BIEOS)
name: ner_zh
format: jsonl
locale: zh
columns: {product_id: id, title: title}
facets:
  brand: {exclusive: false, column: brand, split: "|"}
  product_word: {exclusive: false, column: product_word, split: "|"}
"""


def spans(lines: list[tuple[str, str]]) -> dict[str, list[str]]:
    """``{entity type: [span text, ...]}`` of one BIEOS-tagged text."""
    out: dict[str, list[str]] = {}
    current, kind = [], None
    for ch, tag in lines:
        head, _, typ = tag.partition("-")
        if head == "S":
            out.setdefault(typ, []).append(ch)
        elif head == "B":
            current, kind = [ch], typ
        elif head in ("I", "E") and kind == typ:
            current.append(ch)
            if head == "E":
                span = "".join(current).strip()  # the source tags a space as a span's end now and then
                if span:
                    out.setdefault(typ, []).append(span)
                current, kind = [], None
        else:
            current, kind = [], None
    return out


def read_bieos(path: Path) -> list[list[tuple[str, str]]]:
    texts, cur = [], []
    for raw in path.read_text(encoding="utf-8").split("\n"):
        if raw == "":
            if cur:
                texts.append(cur)
            cur = []
            continue
        ch, _, tag = raw.rpartition("\t")
        cur.append((ch, tag))
    if cur:
        texts.append(cur)
    return texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=None, help="default: TAGGER_DATA_DIR/alibaba_ecommerce_ner_zh")
    args = ap.parse_args()
    from pipeline.settings import Settings

    data = args.data or Settings().data_dir / "alibaba_ecommerce_ner_zh"
    args.out.mkdir(parents=True, exist_ok=True)
    n, seen = 0, set()
    with (args.out / "ner_zh.jsonl").open("w", encoding="utf-8") as fh:
        for part in ("train", "dev", "test"):
            for i, text in enumerate(read_bieos(data / "ecommerce" / f"{part}.txt.bieos")):
                title = "".join(ch for ch, _ in text).strip()
                if not title or title in seen:  # the source repeats a few texts
                    continue
                seen.add(title)
                found = spans(text)
                row = {"id": f"{part}-{i}", "title": title, "brand": "|".join(dict.fromkeys(found.get("HP", []))),
                       "product_word": "|".join(dict.fromkeys(found.get("HC", [])))}  # fmt: skip
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
    (args.out / "ner_zh.yaml").write_text(SPEC, encoding="utf-8")
    print(f"{n} products -> {args.out / 'ner_zh.jsonl'} (spec {args.out / 'ner_zh.yaml'})")


if __name__ == "__main__":
    main()
