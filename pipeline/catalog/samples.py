"""Real product titles from the shipped catalogs (Myntra en, Product1M zh), for tests and load benchmarks.

Serving never uses these: a deployed model's smoke and parity texts come from its own bundle.
"""

from __future__ import annotations

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
