"""The review queue in Postgres: what waits for a reviewer, and what was decided, by whom and when.

Items come in three kinds, each with its reason and score:

- ``model_tag``: a model tag stored below the review line (``product_tags.review_state = 'pending'``);
- ``candidate``: a value a catalog import found no library tag for (``tags.status = 'candidate'``);
- ``suspect_label``: a human label that out-of-fold probabilities doubt (``suspects.enqueue_catalog``).

``sync`` enqueues whatever waits (idempotent: one open item per kind, product and tag). ``decide`` applies one
decision in one transaction: the item is locked, the product tags or the library change, the item is marked
decided and an event row records the action, actor and details. Nothing is deleted: a rejected model tag stays
as ``rejected`` (a negative for the next training), a merged or rejected candidate is ``retired``.

=========  =====================================================================================================
action     effect
=========  =====================================================================================================
accept     model tag / suspect label: the tag is confirmed (a model tag's pending ancestors too); a
           ``reviewer`` product tag is written
reject     model tag: ``rejected``; suspect label: the human tag is rejected; candidate: ``retired``
correct    model tag / suspect label: rejected, and the product gets ``--tag`` from the reviewer instead
merge      candidate: becomes a synonym of ``--tag`` (its names, every locale); its products move to that tag
promote    candidate: becomes an active library tag
=========  =====================================================================================================
"""

from __future__ import annotations

import json
import logging

import sqlalchemy as sa

from pipeline.errors import ReviewError

log = logging.getLogger(__name__)

KINDS = ("model_tag", "candidate", "suspect_label")
ACTIONS = {
    "model_tag": ("accept", "reject", "correct"),
    "suspect_label": ("accept", "reject", "correct"),
    "candidate": ("promote", "merge", "reject"),
}


def sync(conn: sa.Connection, product_pks: list[int] | None = None) -> dict[str, int]:
    """Enqueue pending model tags and candidate tags not yet in the queue; returns how many of each were added.

    Of a product's pending tags in one hierarchy only the deepest is enqueued: its ancestors come with it (batch
    tagging stores them with the leaf's score) and follow the decision on it. ``product_pks``: only those products'
    pending model tags (the real-time worker's batch, in its own transaction); candidate tags are left to the
    full sync."""
    only = {"pks": product_pks}
    pending = conn.execute(
        sa.text(
            """
            with recursive up (product_pk, ancestor) as (
                select pt.product_pk, t.parent_id from product_tags pt join tags t on t.id = pt.tag_id
                where pt.source = 'model' and pt.review_state = 'pending' and t.parent_id is not null
                  and (cast(:pks as bigint[]) is null or pt.product_pk = any(:pks))
                union
                select up.product_pk, t.parent_id from up join tags t on t.id = up.ancestor
                where t.parent_id is not null
            )
            insert into review_items (kind, product_pk, tag_id, reason, score, model_name, model_version)
            select 'model_tag', pt.product_pk, pt.tag_id,
                   'model score ' || round(pt.score::numeric, 3) || ' is below the review line',
                   pt.score, pt.model_name, pt.model_version
            from product_tags pt
            where pt.source = 'model' and pt.review_state = 'pending'
              and (cast(:pks as bigint[]) is null or pt.product_pk = any(:pks))
              and not exists (select 1 from up where up.product_pk = pt.product_pk and up.ancestor = pt.tag_id)
            on conflict (kind, coalesce(product_pk, 0), tag_id) where state = 'open' do nothing
            """
        ),
        only,
    ).rowcount
    if product_pks is not None:
        return {"model_tag": pending, "candidate": 0}
    candidates = conn.execute(
        sa.text(
            """
            insert into review_items (kind, tag_id, reason, score)
            select 'candidate', t.id,
                   'no library tag of facet ' || f.slug || ' matches; on ' || count(pt.product_pk) || ' product(s)',
                   count(pt.product_pk)
            from tags t join facets f on f.id = t.facet_id
            left join product_tags pt on pt.tag_id = t.id
            where t.status = 'candidate'
            group by t.id, f.slug
            on conflict (kind, coalesce(product_pk, 0), tag_id) where state = 'open' do nothing
            """
        )
    ).rowcount
    if pending or candidates:
        log.info("review queue: %d pending model tags and %d candidate tags enqueued", pending, candidates)
    return {"model_tag": pending, "candidate": candidates}


# the names of tag ``t`` as {locale: name}
_NAMES_OF_T = (
    "coalesce((select jsonb_object_agg(n.locale, n.name) from tag_names n where n.tag_id = t.id), '{}'::jsonb)"
)

_ITEM_SQL = f"""
    select i.id, i.kind, i.state, i.reason, i.score, i.model_name, i.model_version, i.decision, i.decided_by,
           i.decided_at, i.created_at, t.slug as tag, f.slug as facet, t.status as tag_status,
           {_NAMES_OF_T} as tag_names,
           p.id as product_pk, p.product_id, p.catalog, p.title, p.brand, d.slug as decided_tag
    from review_items i
    join tags t on t.id = i.tag_id
    join facets f on f.id = t.facet_id
    left join products p on p.id = i.product_pk
    left join tags d on d.id = i.decided_tag_id
"""


def list_items(
    conn: sa.Connection,
    *,
    kind: str | None = None,
    facet: str | None = None,
    catalog: str | None = None,
    state: str = "open",
    limit: int = 50,
) -> list[dict]:
    """Queue items, lowest score first (the least sure model tags, the most used candidates last)."""
    if kind is not None and kind not in KINDS:
        raise ReviewError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    q = (
        _ITEM_SQL
        + """
        where i.state = :state
          and (cast(:kind as text) is null or i.kind = cast(:kind as text))
          and (cast(:facet as text) is null or f.slug = cast(:facet as text))
          and (cast(:catalog as text) is null or p.catalog = cast(:catalog as text))
        order by i.score nulls last, i.id
        limit :limit
    """
    )
    params = {"state": state, "kind": kind, "facet": facet, "catalog": catalog, "limit": limit}
    return [dict(r) for r in conn.execute(sa.text(q), params).mappings()]


def get_item(conn: sa.Connection, item_id: int) -> dict:
    row = conn.execute(sa.text(_ITEM_SQL + " where i.id = :id"), {"id": item_id}).mappings().first()
    if row is None:
        raise ReviewError(f"no review item {item_id}")
    item = dict(row)
    item["events"] = [
        dict(e)
        for e in conn.execute(
            sa.text("select action, actor, details, created_at from review_events where item_id = :id order by id"),
            {"id": item_id},
        ).mappings()
    ]
    return item


def _tag_id(conn: sa.Connection, slug: str | None, action: str) -> tuple[int, str]:
    if not slug:
        raise ReviewError(f"{action} needs the tag to use: --tag FACET:VALUE")
    row = conn.execute(sa.text("select id, status from tags where slug = :s"), {"s": slug}).first()
    if row is None:
        raise ReviewError(f"no tag {slug!r} in the library")
    if row.status != "active":
        raise ReviewError(f"tag {slug!r} is {row.status}, not an active library tag")
    return row.id, slug


def _reviewer_tag(conn: sa.Connection, product_pk: int, tag_id: int) -> None:
    conn.execute(
        sa.text(
            """
            insert into product_tags (product_pk, tag_id, source, review_state) values (:p, :t, 'reviewer', 'accepted')
            on conflict (product_pk, tag_id, source) do update set review_state = 'accepted', updated_at = now()
            """
        ),
        {"p": product_pk, "t": tag_id},
    )


def _set_state(conn: sa.Connection, product_pk: int, tag_id: int, source: str, state: str) -> None:
    conn.execute(
        sa.text(
            "update product_tags set review_state = :st, updated_at = now() "
            "where product_pk = :p and tag_id = :t and source = :src"
        ),
        {"st": state, "p": product_pk, "t": tag_id, "src": source},
    )


def _accept_ancestors(conn: sa.Connection, product_pk: int, tag_id: int) -> int:
    return conn.execute(
        sa.text(
            """
            with recursive up (id) as (
                select parent_id from tags where id = :t and parent_id is not null
                union
                select t.parent_id from up join tags t on t.id = up.id where t.parent_id is not null
            )
            update product_tags set review_state = 'accepted', updated_at = now()
            where product_pk = :p and source = 'model' and review_state = 'pending' and tag_id in (select id from up)
            """
        ),
        {"p": product_pk, "t": tag_id},
    ).rowcount


def _set_tag_status(conn: sa.Connection, tag_id: int, status: str) -> None:
    conn.execute(sa.text("update tags set status = :st, updated_at = now() where id = :t"), {"st": status, "t": tag_id})


def decide(conn: sa.Connection, item_id: int, action: str, actor: str, tag: str | None = None) -> dict:
    """Apply one decision to item ``item_id`` (see the module doc) in the caller's transaction; returns the item.

    Raises:
        ReviewError: no such item, already decided, an action its kind does not take, or a missing/unknown --tag.
    """
    row = conn.execute(
        sa.text("select * from review_items where id = :id for update"), {"id": item_id}
    ).mappings().first()  # fmt: skip
    if row is None:
        raise ReviewError(f"no review item {item_id}")
    if row["state"] != "open":
        raise ReviewError(
            f"review item {item_id} was already decided: {row['decision']} by {row['decided_by']} at "
            f"{row['decided_at']:%Y-%m-%d %H:%M}"
        )
    kind, allowed = row["kind"], ACTIONS[row["kind"]]
    if action not in allowed:
        raise ReviewError(f"a {kind} item takes {', '.join(allowed)}, not {action!r}")
    pk, tag_id = row["product_pk"], row["tag_id"]
    details: dict = {}
    decided_tag = None
    human_or_model = "model" if kind == "model_tag" else "human"
    if action == "accept":
        _set_state(conn, pk, tag_id, human_or_model, "accepted")
        _reviewer_tag(conn, pk, tag_id)
        if kind == "model_tag":  # an accepted leaf confirms the pending ancestors stored with it
            details["ancestors_accepted"] = _accept_ancestors(conn, pk, tag_id)
    elif action == "reject" and kind != "candidate":
        _set_state(conn, pk, tag_id, human_or_model, "rejected")
    elif action == "correct":
        decided_tag, slug = _tag_id(conn, tag, action)
        _set_state(conn, pk, tag_id, human_or_model, "rejected")
        _reviewer_tag(conn, pk, decided_tag)
        details["tag"] = slug
    elif action == "promote":
        _set_tag_status(conn, tag_id, "active")
    elif action == "reject":  # a candidate
        _set_tag_status(conn, tag_id, "retired")
    elif action == "merge":
        decided_tag, slug = _tag_id(conn, tag, action)
        same = conn.scalar(
            sa.text("select a.facet_id = b.facet_id from tags a, tags b where a.id = :a and b.id = :b"),
            {"a": tag_id, "b": decided_tag},
        )
        if not same:
            raise ReviewError(f"{slug!r} is in another facet than the candidate; merge within one facet")
        synonyms = conn.execute(
            sa.text(
                """
                insert into tag_synonyms (tag_id, locale, synonym)
                select :into, locale, name from tag_names where tag_id = :t
                on conflict do nothing
                """
            ),
            {"into": decided_tag, "t": tag_id},
        ).rowcount
        moved = conn.execute(
            sa.text(
                """
                insert into product_tags (product_pk, tag_id, source, model_name, model_version, score, review_state)
                select product_pk, :into, source, model_name, model_version, score, review_state
                from product_tags where tag_id = :t
                on conflict (product_pk, tag_id, source) do nothing
                """
            ),
            {"into": decided_tag, "t": tag_id},
        ).rowcount
        conn.execute(sa.text("delete from product_tags where tag_id = :t"), {"t": tag_id})
        _set_tag_status(conn, tag_id, "retired")
        details |= {"tag": slug, "synonyms_added": synonyms, "product_tags_moved": moved}
    conn.execute(
        sa.text(
            """
            update review_items set state = 'decided', decision = :a, decided_tag_id = :d, decided_by = :by,
                   decided_at = now()
            where id = :id
            """
        ),
        {"a": action, "d": decided_tag, "by": actor, "id": item_id},
    )
    conn.execute(
        sa.text("insert into review_events (item_id, action, actor, details) values (:id, :a, :by, cast(:d as jsonb))"),
        {"id": item_id, "a": action, "by": actor, "d": json.dumps(details, ensure_ascii=False)},
    )
    log.info("review item %d (%s): %s by %s %s", item_id, kind, action, actor, details or "")
    return get_item(conn, item_id)


def product_tags(conn: sa.Connection, product_pks: list[int]) -> dict[int, list[dict]]:
    """Product pk -> its tags (every source), model tags by score first, with their names per locale."""
    rows = conn.execute(
        sa.text(
            f"""
            select pt.product_pk, t.slug, f.slug as facet, pt.source, pt.score, pt.review_state,
                   {_NAMES_OF_T} as names
            from product_tags pt join tags t on t.id = pt.tag_id join facets f on f.id = t.facet_id
            where pt.product_pk = any(:pks)
            order by pt.product_pk, pt.source <> 'model', pt.score desc nulls last, t.slug
            """
        ),
        {"pks": list(product_pks)},
    ).mappings()
    out: dict[int, list[dict]] = {}
    for r in rows:
        out.setdefault(r["product_pk"], []).append(dict(r))
    return out


def facet_tags(conn: sa.Connection, facets: list[str]) -> dict[str, list[str]]:
    """Facet slug -> the slugs of its active library tags (what a correction or a merge may name)."""
    rows = conn.execute(
        sa.text(
            "select f.slug as facet, t.slug from tags t join facets f on f.id = t.facet_id "
            "where t.status = 'active' and f.slug = any(:f) order by t.slug"
        ),
        {"f": list(facets)},
    ).all()
    out: dict[str, list[str]] = {f: [] for f in facets}
    for facet, slug in rows:
        out[facet].append(slug)
    return out


def filters(conn: sa.Connection) -> dict[str, list[str]]:
    """The facets and catalogs that open items belong to (the review page's filter choices)."""
    q = """
        select distinct f.slug as facet, p.catalog from review_items i join tags t on t.id = i.tag_id
        join facets f on f.id = t.facet_id left join products p on p.id = i.product_pk where i.state = 'open'
    """
    rows = conn.execute(sa.text(q)).all()
    return {"facets": sorted({r.facet for r in rows}), "catalogs": sorted({r.catalog for r in rows if r.catalog})}
