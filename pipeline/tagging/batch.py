"""Batch tagging: tag products new or changed since a watermark through Triton and store the tags.

Products are read in keyset order ``(updated_at, id)`` after the watermark kept in ``job_state``. Each batch is
one transaction that replaces the batch's model tags and advances the watermark, so a run killed midway and
rerun ends with every product tagged exactly once by the serving model: nothing lost, nothing duplicated.
Predictions scoring below ``review_below`` are stored with ``review_state='pending'`` for a reviewer.

The same transaction deletes the real-time outbox rows (:mod:`pipeline.tagging.realtime`) its batch covers: those of
its products written at or before the version it read, not a newer one, and not those a worker holds now.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from datetime import datetime

import sqlalchemy as sa

from pipeline.catalog.taglib import ensure_schema
from pipeline.errors import TagLibraryError
from pipeline.review import queue
from pipeline.settings import Settings
from serving.client import TaggerClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchTagResult:
    products: int
    tags_written: int
    pending_review: int
    batches: int
    model_uri: str | None
    watermark: str | None
    seconds: float
    review_enqueued: int = 0  # pending model tags (and candidate tags) newly in the review queue

    def to_dict(self) -> dict:
        return asdict(self)


def watermark_key(catalog: str | None) -> str:
    return f"batch_tag:{catalog or '*'}"


def read_watermark(conn: sa.Connection, catalog: str | None) -> tuple[datetime | None, int]:
    value = conn.scalar(sa.text("select value from job_state where name = :n"), {"n": watermark_key(catalog)})
    if not value:
        return None, 0
    return datetime.fromisoformat(value["updated_at"]), int(value["id"])


def _next_batch(conn, catalog: str | None, mark: tuple[datetime | None, int], size: int) -> list:
    ts, last_id = mark
    q = """
        select id, title, description, brand, attributes, updated_at from products
        where (cast(:catalog as text) is null or catalog = cast(:catalog as text))
          and (cast(:ts as timestamptz) is null or (updated_at, id) > (cast(:ts as timestamptz), :last_id))
        order by updated_at, id limit :size
    """
    return conn.execute(sa.text(q), {"catalog": catalog, "ts": ts, "last_id": last_id, "size": size}).all()


def product_of(row) -> dict:
    """A products row as the tagger reads it: Triton builds the model text with the serving version's template."""
    return {"title": row.title, "brand": row.brand, "description": row.description, "attributes": row.attributes}


def library_ids(conn) -> dict[str, int]:
    """Tag slug -> id of every tag not retired, and of slugs renamed since (a model trained before still knows
    the old slug)."""
    ids = dict(conn.execute(sa.text("select slug, id from tags where status <> 'retired'")).all())
    renamed = "select r.old_slug, t.id from tag_slug_renames r join tags t on t.slug = r.new_slug"
    for old, tag_id in conn.execute(sa.text(renamed)).all():
        ids.setdefault(old, tag_id)
    return ids


def _store(conn, rows, tags: list[list[dict]], uris: list[str], slug_ids: dict[str, int], review_below: float):
    pks = [r.id for r in rows]
    # a model tag a reviewer rejected stays rejected (a negative for training): it is neither deleted nor re-added
    conn.execute(
        sa.text(
            "delete from product_tags where source = 'model' and review_state <> 'rejected' and product_pk = any(:pks)"
        ),
        {"pks": pks},
    )
    values, pending = [], 0
    for row, item_tags, uri in zip(rows, tags, uris, strict=True):
        name, _, version = uri.removeprefix("models:/").rpartition("/")
        for t in item_tags:
            tag_id = slug_ids.get(t["slug"])
            if tag_id is None:
                continue  # the model knows a tag the library has since retired/removed
            state = "pending" if t["score"] < review_below else "accepted"
            pending += state == "pending"
            values.append(
                {
                    "p": row.id,
                    "t": tag_id,
                    "m": name,
                    "v": int(version) if version.isdigit() else None,
                    "s": float(t["score"]),
                    "r": state,
                }
            )
    if values:
        conn.execute(
            sa.text(
                "insert into product_tags (product_pk, tag_id, source, model_name, model_version, score, review_state)"
                " values (:p, :t, 'model', :m, :v, :s, :r) on conflict (product_pk, tag_id, source) do nothing"
            ),
            values,
        )
    return len(values), pending


def tag_rows(conn, client, rows, slug_ids: dict[str, int], review_below: float) -> tuple[int, int, str | None]:
    """Tag products ``rows`` through Triton and replace their model tags in ``conn``'s transaction (the one step
    batch tagging and the real-time worker share); returns (tags written, pending review, answering model URI).

    Raises:
        ServingError: Triton refused or is unreachable (nothing is written; the caller's transaction rolls back).
    """
    result = client.infer_products([product_of(r) for r in rows])
    written, pending = _store(conn, rows, result.tags, result.model_uris, slug_ids, review_below)
    return written, pending, (result.model_uris[-1] if result.model_uris else None)


def _clear_outbox(conn, rows) -> int:
    """Delete the outbox rows these products' tags now cover (a version at or before the one read); rows a
    real-time worker holds are skipped (it is tagging them), so the two never wait on each other."""
    return conn.execute(
        sa.text(
            """
            delete from tag_outbox o using (
                select o2.id from tag_outbox o2
                join unnest(cast(:pks as bigint[]), cast(:ts as timestamptz[])) as r(pk, ts) on r.pk = o2.product_pk
                where o2.product_updated_at <= r.ts
                for update of o2 skip locked
            ) covered where o.id = covered.id
            """
        ),
        {"pks": [r.id for r in rows], "ts": [r.updated_at for r in rows]},
    ).rowcount


def tag_batch(
    settings: Settings,
    *,
    catalog: str | None = None,
    batch_size: int = 256,
    review_below: float = 0.5,
    max_products: int | None = None,
    client=None,
) -> BatchTagResult:
    """Tag every product new or changed since the watermark; return counts.

    Raises:
        ServingError: Triton refused or is unreachable (the current batch is rolled back, earlier ones stay).
    """

    t0 = time.perf_counter()
    client = client or TaggerClient(settings.triton_grpc_url, settings.triton_model_name)
    engine = ensure_schema(settings)
    with engine.connect() as conn:
        slug_ids = library_ids(conn)
    if not slug_ids:
        raise TagLibraryError("the tag library is empty: import a taxonomy or catalog first")
    n_products = n_tags = n_pending = batches = 0
    last_uri, mark = None, None
    while max_products is None or n_products < max_products:
        with engine.begin() as conn:
            mark = read_watermark(conn, catalog)
            size = batch_size if max_products is None else min(batch_size, max_products - n_products)
            rows = _next_batch(conn, catalog, mark, size)
            if not rows:
                break
            written, pending, uri = tag_rows(conn, client, rows, slug_ids, review_below)
            _clear_outbox(conn, rows)
            new_mark = {"updated_at": rows[-1].updated_at.isoformat(), "id": rows[-1].id}
            conn.execute(
                sa.text(
                    "insert into job_state (name, value, updated_at) values (:n, cast(:v as jsonb), now()) "
                    "on conflict (name) do update set value = excluded.value, updated_at = now()"
                ),
                {"n": watermark_key(catalog), "v": json.dumps(new_mark)},
            )
        n_products += len(rows)
        n_tags += written
        n_pending += pending
        batches += 1
        last_uri = uri or last_uri
        mark = (rows[-1].updated_at, rows[-1].id)
        log.info("batch %d: %d products, %d tags (%d pending review)", batches, len(rows), written, pending)
    with engine.begin() as conn:  # what waits for a reviewer enters the review queue (idempotent)
        enqueued = sum(queue.sync(conn).values())
    res = BatchTagResult(
        n_products,
        n_tags,
        n_pending,
        batches,
        last_uri,
        mark[0].isoformat() if mark and mark[0] else None,
        time.perf_counter() - t0,
        enqueued,
    )
    log.info(
        "batch tagging: %d products, %d tags, %d pending review in %.1f s", n_products, n_tags, n_pending, res.seconds
    )
    return res
