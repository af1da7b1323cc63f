"""Catalog snapshots: read a source into the contract, digest it, record it, load it back.

A snapshot is the content of one catalog read (rows in the catalog contract, see :mod:`pipeline.catalog.readers`).
Its id is ``<spec>-<digest[:16]>``: the same rows give the same id whatever the file format or row order, so
recording a snapshot again is an upsert. Accepted rows are kept as Parquet at
``settings.home_dir/snapshots/<snapshot_id>/accepted.parquet`` and the row in the ``snapshots`` table points
at it.

Sources: a file path (CSV, JSONL, Parquet, delimited, optionally zip/gz) read through the dataset spec, or the
products table in Postgres written ``db:products`` (catalog = spec name) or ``db:products/<catalog>``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from pipeline import db
from pipeline.catalog.readers import CONTRACT_COLUMNS, CatalogRead, Reject, TagRef, facet_of, parent_of, read_catalog
from pipeline.catalog.spec import DatasetSpec
from pipeline.core.services import get_engine
from pipeline.errors import CatalogError, ValidationFailed
from pipeline.settings import Settings

log = logging.getLogger(__name__)

DB_PREFIX = "db:"
_DIGEST_FIELDS = [c for c in CONTRACT_COLUMNS if c != "row_number"]


# ---- digest --------------------------------------------------------------------------------------------
def _row_key(row: tuple) -> bytes:
    text = json.dumps(list(row), ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).digest()


def content_digest(frame: pd.DataFrame, rejects: list[Reject] | None = None) -> str:
    """sha256 of the rows' content (contract fields except ``row_number``), independent of row order.

    Same rows -> same digest across runs and file formats; any changed, added or removed row (including
    unparseable ones) -> a new digest.
    """
    cols = [frame[c].map(_plain) for c in _DIGEST_FIELDS]
    keys = sorted(_row_key(row) for row in zip(*cols, strict=True))
    keys += sorted(_row_key(("reject", r.value)) for r in rejects or [])
    h = hashlib.sha256()
    for k in keys:
        h.update(k)
    return h.hexdigest()


def _plain(value):
    """JSON-stable form of a cell: numpy arrays (from Parquet) -> lists, NaN -> None."""
    if value is None:
        return None
    if isinstance(value, float) and value != value:
        return None
    if hasattr(value, "tolist") and not isinstance(value, str):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def snapshot_id_for(spec_name: str, digest: str) -> str:
    return f"{spec_name}-{digest[:16]}"


def snapshot_dir(settings: Settings, snapshot_id: str) -> Path:
    return settings.home_dir / "snapshots" / snapshot_id


# ---- reading sources -----------------------------------------------------------------------------------
def read_source(
    source: str | Path,
    spec: DatasetSpec,
    engine: sa.Engine | None = None,
    on_rows: Callable[[int], None] | None = None,
    limit: int | None = None,
) -> CatalogRead:
    """Read a file through ``spec`` (``on_rows``, ``limit``: see :func:`read_catalog`), or the products table when
    ``source`` starts with ``db:`` (its first ``limit`` rows).

    Raises:
        CatalogError: the file as a whole is unusable, or the products table holds no such catalog.
    """
    text = str(source)
    if not text.startswith(DB_PREFIX):
        return read_catalog(source, spec, limit=limit, on_rows=on_rows)
    if engine is None:
        raise CatalogError(f"source {text!r} reads from Postgres but no database engine was given")
    read = read_products_table(engine, spec, text)
    if limit is not None:
        read.frame = read.frame.head(limit)
    return read


def read_products_table(engine: sa.Engine, spec: DatasetSpec, source: str) -> CatalogRead:
    """Rows of the ``products`` table (one catalog) with their accepted human and reviewer tags, as the contract.

    A reviewer's decision wins: in a facet where a product has a reviewer tag (``tagger review accept/correct``),
    its human tags of that facet are left out; a human tag a reviewer rejected is no longer ``accepted``. The count
    of reviewer tags kept is ``reviewer_labels`` (validation records it with the snapshot)."""
    target = source[len(DB_PREFIX) :]
    table, _, catalog = target.partition("/")
    if table != "products":
        raise CatalogError(f"unknown database source {source!r}; use 'db:products' or 'db:products/<catalog>'")
    catalog = catalog or spec.name
    p, pt, t = db.products, db.product_tags, db.tags
    tag_q = (
        sa.select(pt.c.product_pk, t.c.slug, pt.c.source)
        .join(t, t.c.id == pt.c.tag_id)
        .join(p, p.c.id == pt.c.product_pk)
        .where(p.c.catalog == catalog, pt.c.source.in_(("human", "reviewer")), pt.c.review_state == "accepted")
    )
    prod_q = sa.select(p).where(p.c.catalog == catalog).order_by(p.c.id)
    with engine.connect() as conn:
        prods = conn.execute(prod_q).mappings().all()
        tag_rows = conn.execute(tag_q).all()
    if not prods:
        raise CatalogError(f"the products table holds no rows for catalog {catalog!r}", path=source)
    by_product: dict[int, dict[str, list[str]]] = {}
    for pk, slug, src in tag_rows:
        by_product.setdefault(pk, {}).setdefault(src, []).append(slug)
    rows, seen, reviewed = [], {}, 0
    for i, rec in enumerate(prods, start=1):
        mine = by_product.get(rec["id"], {})
        decided = {facet_of(s) for s in mine.get("reviewer", [])}
        reviewed += len(mine.get("reviewer", []))
        tags = sorted({*mine.get("reviewer", []), *(s for s in mine.get("human", []) if facet_of(s) not in decided)})
        for slug in tags:
            seen.setdefault(slug, TagRef(slug, facet_of(slug), slug.split(":", 1)[1], parent_of(slug)))
        rows.append(
            {
                "row_number": i,
                "product_id": rec["product_id"],
                "title": rec["title"] or "",
                "description": rec["description"],
                "brand": rec["brand"],
                "locale": rec["locale"],
                "category_path": list(rec["category_path"] or []),
                "attributes": dict(rec["attributes"] or {}),
                "tags": tags,
            }
        )
    frame = pd.DataFrame(rows, columns=CONTRACT_COLUMNS)
    return CatalogRead(frame=frame, rejects=[], tags=seen, spec=spec, path=source, reviewer_labels=reviewed)


# ---- accepted rows on disk -----------------------------------------------------------------------------
def write_accepted(frame: pd.DataFrame, path: Path) -> Path:
    """Write contract rows as Parquet (``attributes`` as JSON text: Parquet cannot hold empty structs)."""
    out = frame.copy()
    out["attributes"] = out["attributes"].map(lambda d: json.dumps(d or {}, ensure_ascii=False, sort_keys=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_parquet(path, index=False)
    return path


def read_accepted(path: str | Path) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    frame["attributes"] = frame["attributes"].map(lambda s: json.loads(s) if s else {})
    for col in ("category_path", "tags"):
        frame[col] = frame[col].map(lambda v: [] if v is None else list(v))
    return frame


# ---- records in Postgres -------------------------------------------------------------------------------
def record_snapshot(engine: sa.Engine, record: dict, quarantine_rows: list[dict]) -> None:
    """Upsert the snapshot row and replace its quarantine rows (a rerun leaves one consistent record)."""
    s = db.snapshots
    stmt = pg_insert(s).values(**record)
    stmt = stmt.on_conflict_do_update(
        index_elements=[s.c.id], set_={k: stmt.excluded[k] for k in record if k != "id"} | {"created_at": sa.func.now()}
    )
    with engine.begin() as conn:
        conn.execute(stmt)
        conn.execute(sa.delete(db.quarantine).where(db.quarantine.c.snapshot_id == record["id"]))
        if quarantine_rows:
            rows = [{"snapshot_id": record["id"], **{k: _pg_text(v) for k, v in q.items()}} for q in quarantine_rows]
            conn.execute(sa.insert(db.quarantine), rows)


def _pg_text(value):
    # PostgreSQL text cannot hold NUL characters; keep them visible instead
    return value.replace("\x00", "\\x00") if isinstance(value, str) else value


def last_accepted(engine: sa.Engine, spec_name: str, exclude: str | None = None) -> dict | None:
    """The newest snapshot of ``spec_name`` with verdict pass or warn (other than ``exclude``), or None."""
    s = db.snapshots
    q = (
        sa.select(s)
        .where(s.c.spec == spec_name, s.c.verdict.in_(("pass", "warn")))
        .order_by(s.c.created_at.desc())
        .limit(1)
    )
    if exclude:
        q = q.where(s.c.id != exclude)
    with engine.connect() as conn:
        row = conn.execute(q).mappings().first()
    return dict(row) if row else None


def get_snapshot(engine: sa.Engine, snapshot_id: str) -> dict | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.snapshots).where(db.snapshots.c.id == snapshot_id)).mappings().first()
    return dict(row) if row else None


def load_snapshot(settings: Settings, snapshot_id: str) -> pd.DataFrame:
    """The accepted contract rows of a recorded snapshot (plus a ``split`` column from :func:`split_of`).

    Raises:
        CatalogError: unknown snapshot id, or its accepted Parquet file is gone.
        ValidationFailed: the snapshot's verdict is *fail*; it must not be trained on.
    """

    row = get_snapshot(get_engine(settings), snapshot_id)
    if row is None:
        raise CatalogError(f"unknown snapshot {snapshot_id!r}; run `tagger validate PATH --spec NAME` to make one")
    if row["verdict"] == "fail":
        raise ValidationFailed(
            f"snapshot {snapshot_id!r} failed validation (report: {row['report_path']}); fix the catalog and "
            "validate again"
        )
    path = Path(row["accepted_path"] or "")
    if not path.is_file():
        raise CatalogError(
            f"accepted rows of snapshot {snapshot_id!r} are missing at {path}; validate the catalog again",
        )
    return read_accepted(path)
