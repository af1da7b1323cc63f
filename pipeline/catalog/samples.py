"""Real product titles and rows from the shipped catalogs (Myntra en, Product1M zh), for tests and benchmarks:
titles for load tests, and Myntra rows rewritten in foreign shapes (``foreign_shapes``) for the spec tools.

Serving never uses these: a deployed model's smoke and parity texts come from its own bundle.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from functools import lru_cache
from pathlib import Path

from pipeline.catalog.spec import load_spec
from pipeline.errors import CatalogError
from pipeline.settings import Settings


@lru_cache(maxsize=2)
def _titles(data_dir: str) -> tuple[str, ...]:
    base = Path(data_dir)
    out: list[str] = []
    zpath = base / load_spec("myntra").data_file
    if zpath.exists():
        with zipfile.ZipFile(zpath) as zf:
            lines = zf.read("styles.csv").decode("utf-8").splitlines()[1:4001]
        out += [ln.split(",", 9)[9] for ln in lines if ln.count(",") >= 9]
    zh = base / load_spec("product1m").data_file
    if zh.exists():
        with zh.open(encoding="utf-8") as fh:
            for i, ln in enumerate(fh):
                if i >= 1000:
                    break
                parts = ln.split("#####")
                if len(parts) > 1 and parts[1].strip():
                    out.append(parts[1].strip())
    return tuple(t for t in out if t.strip())


def sample_titles(n: int, data_dir: str | Path | None = None, *, zh_share: float = 0.25) -> list[str]:
    """``n`` real product titles (Myntra en + Product1M zh), deterministic; raises if no catalog is found."""
    data_dir = data_dir or Settings().data_dir
    titles = _titles(str(data_dir))
    zh = [t for t in titles if not t.isascii()]
    en = [t for t in titles if t.isascii()]
    if not titles:
        raise CatalogError(f"no real catalog titles under {data_dir}; set TAGGER_DATA_DIR to the shared data")
    n_zh = min(len(zh), int(n * zh_share))
    picked = en[: n - n_zh] + zh[:n_zh]
    while len(picked) < n:  # cycle for large n
        picked += titles[: n - len(picked)]
    return picked


def myntra_records(rows: int, start: int = 0, data_dir: str | Path | None = None) -> list[dict]:
    """``rows`` real Myntra rows as dicts (the 10-field ones: titles without unquoted commas)."""
    with zipfile.ZipFile(Path(data_dir or Settings().data_dir) / load_spec("myntra").data_file) as zf:
        lines = zf.read("styles.csv").decode("utf-8").splitlines()
    header = lines[0].split(",")
    out = []
    for ln in lines[1 + start :]:
        fields = next(csv.reader(io.StringIO(ln)))
        if len(fields) == len(header):
            out.append(dict(zip(header, fields, strict=True)))
        if len(out) == rows:
            break
    return out


def foreign_shapes(dest: Path, rows: int, data_dir: str | Path | None = None) -> dict[str, Path]:
    """Real Myntra rows rewritten in shapes its spec cannot read (issue 18): a marketplace CSV with no id, the
    category tree in one column ending in the product name cut short, and key/value specifications as a Ruby
    hash; nested JSON Lines; Parquet with struct and list columns."""
    import pandas as pd

    recs = myntra_records(rows, data_dir=data_dir)
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
