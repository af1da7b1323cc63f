"""Data Docs that render offline: the CDN links of Great Expectations' pages point at copies shipped in this package.

GX 1.x pages load jQuery, Bootstrap, bootstrap-table (which draws every table of the index from JSON), the date
picker and Font Awesome (the pass/fail icons) from CDNs, and the logo from S3: on a machine without internet
they render as a bare list. :func:`make_offline` copies ``static/datadocs`` (see its ``VENDOR.md``) into the
site and rewrites each page's links to relative paths; vega's three scripts are dropped from pages that draw no
chart. Idempotent: a page already rewritten is left as it is.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

log = logging.getLogger(__name__)
VENDOR = Path(__file__).parent / "static" / "datadocs"
SITE_VENDOR = Path("static") / "vendor"

CDN = {  # the links GX 1.x writes -> the copy under static/vendor
    "https://code.jquery.com/jquery-3.7.1.min.js": "js/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "js/popper.min.js",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "js/bootstrap.min.js",
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "css/bootstrap.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "js/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "css/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
        "js/bootstrap-table-filter-control.min.js",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
        "css/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css":
        "css/bootstrap-table-filter-control.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js":
        "js/bootstrap-datepicker.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css":
        "css/bootstrap-datepicker.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "css/fontawesome-all.min.css",
}  # fmt: skip
_DARK_THEME = re.compile(r'\s*<link[^>]+href="https://cdn\.jsdelivr\.net/npm/@forevolve/bootstrap-dark[^"]*"[^>]*>')
_VEGA = re.compile(r'\s*<script[^>]+src="https://cdn\.jsdelivr\.net/npm/vega(?:-lite|-embed)?@\d+"[^>]*></script>')
_LOGO = re.compile(r"https://great-expectations-web-assets\.s3\.[^\"']*/logo-long\.png[^\"']*")
_EXTERNAL = re.compile(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"')


def external_assets(html: str) -> list[str]:
    """The scripts and stylesheets a page still loads from another host."""
    return [u for u in _EXTERNAL.findall(html) if not u.startswith("https://greatexpectations.io")]


def make_offline(site_dir: Path) -> dict[str, int]:
    """Copy the vendored assets into ``site_dir`` and point every page at them; returns counts."""
    site_dir = Path(site_dir)
    shutil.copytree(VENDOR, site_dir / SITE_VENDOR, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.md"))
    pages = rewritten = 0
    left: set[str] = set()
    for page in site_dir.rglob("*.html"):
        pages += 1
        html = page.read_text(encoding="utf-8")
        root = Path(os.path.relpath(site_dir, page.parent))
        out = html
        for url, local in CDN.items():
            out = out.replace(url, (root / SITE_VENDOR / local).as_posix())
        out = _DARK_THEME.sub("", out)
        if "vegaEmbed(" not in out:
            out = _VEGA.sub("", out)
        out = _LOGO.sub((root / "static" / "images" / "logo-long.png").as_posix(), out)
        if out != html:
            page.write_text(out, encoding="utf-8")
            rewritten += 1
        left.update(external_assets(out))
    if left:  # a GX upgrade that links something new: the page still works online; say what is missing offline
        log.warning("Data Docs still load %d asset(s) from the internet: %s", len(left), ", ".join(sorted(left)))
    return {"pages": pages, "rewritten": rewritten, "external": len(left)}
