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
