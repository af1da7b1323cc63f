"""Paths and small slices of the real shared catalogs."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

from pipeline.settings import _default_shared_data

DATA = _default_shared_data()
MYNTRA_ZIP = DATA / "myntra_fashion_styles" / "styles.csv.zip"
PRODUCT1M_DEV = DATA / "product1m_zh" / "product1m_dev_ossurl_v2.txt"
PRODUCT1M_TEST = DATA / "product1m_zh" / "product1m_test_ossurl_v2.txt"
SHOPIFY = DATA / "shopify_product_taxonomy"


def myntra_lines() -> list[str]:
    with zipfile.ZipFile(MYNTRA_ZIP) as zf:
        return zf.read("styles.csv").decode("utf-8").splitlines()


def myntra_slice(dest: Path, rows: int, *, start: int = 0, extra_lines: list[str] | None = None) -> Path:
    """Write the header + ``rows`` data lines (from ``start``) of the real Myntra CSV to ``dest``."""
    lines = myntra_lines()
    body = lines[1 + start : 1 + start + rows] + list(extra_lines or [])
    dest.write_text("\n".join([lines[0], *body]) + "\n", encoding="utf-8")
    return dest


def myntra_rows_with_commas() -> list[str]:
    """The real Myntra lines whose titles hold unquoted commas (11 or 12 fields)."""
    lines = myntra_lines()
    return [ln for ln in lines[1:] if len(next(csv.reader(io.StringIO(ln)))) > 10]


def product1m_slice(dest: Path, rows: int) -> Path:
    lines = PRODUCT1M_TEST.read_text(encoding="utf-8").splitlines()[:rows]
    dest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dest


def myntra_records(rows: int, start: int = 0) -> list[dict]:
    """``rows`` real Myntra rows as dicts (the 10-field ones: titles without unquoted commas)."""
    lines = myntra_lines()
    header = lines[0].split(",")
    out = []
    for ln in lines[1 + start :]:
        fields = next(csv.reader(io.StringIO(ln)))
        if len(fields) == len(header):
            out.append(dict(zip(header, fields, strict=True)))
        if len(out) == rows:
            break
    return out


def foreign_shapes(dest: Path, rows: int) -> dict[str, Path]:
    """Real Myntra rows rewritten in shapes its spec cannot read (issue 18): a marketplace CSV with no id, the
    category tree in one column ending in the product name cut short, and key/value specifications as a Ruby
    hash; nested JSON Lines; Parquet with struct and list columns."""
    import json

    import pandas as pd

    recs = myntra_records(rows)
    flip = pd.DataFrame(
        {
            "product_name": [r["productDisplayName"] for r in recs],
            "product_category_tree": [
                json.dumps(
                    [
                        f"{r['masterCategory']} >> {r['subCategory']} >> {r['articleType']} >> "
                        f"{r['productDisplayName'][:20]}..."
                    ]
                )
                for r in recs  # fmt: skip
            ],
            "product_specifications": [
                '{"product_specification"=>['
                + ", ".join(
                    f'{{"key"=>"{k}", "value"=>"{v}"}}'
                    for k, v in (("Color", r["baseColour"]), ("Ideal For", r["gender"]), ("Occasion", r["usage"]))
                    if v
                )
                + "]}"
                for r in recs  # fmt: skip
            ],
            "season": [r["season"] for r in recs],
        }
    )
    dest.mkdir(parents=True, exist_ok=True)
    out = {"csv": dest / "flipkart_like.csv", "jsonl": dest / "nested.jsonl", "parquet": dest / "nested.parquet"}
    flip.to_csv(out["csv"], index=False)
    nested = [
        {"sku": f"M-{r['id']}", "name": r["productDisplayName"],
         "labels": {"coarse": [r["masterCategory"]], "fine": [r["articleType"]]},
         "attrs": {"color": r["baseColour"], "gender": r["gender"]}}
        for r in recs
    ]  # fmt: skip
    out["jsonl"].write_text("\n".join(json.dumps(n) for n in nested) + "\n", encoding="utf-8")
    pd.DataFrame(nested).to_parquet(out["parquet"])
    return out
