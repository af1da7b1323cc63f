"""The tag library in Postgres: facets, hierarchical tags with per-locale names and synonyms.

A small API over the tables in :mod:`pipeline.db`. Writes are bulk upserts keyed by slugs, so running the
same import twice changes nothing. Functions take a SQLAlchemy ``Connection`` so that callers decide the
transaction (an import is one transaction: it either lands whole or not at all).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from pipeline import db
from pipeline.core import migrate
from pipeline.core.services import get_engine
from pipeline.errors import TagLibraryError
from pipeline.settings import Settings


@dataclass(frozen=True)
class FacetDef:
    slug: str
    exclusive: bool
    hierarchical: bool = False
    names: dict[str, str] = field(default_factory=dict)
    source: str = "manual"


@dataclass(frozen=True)
class TagDef:
    slug: str
    facet: str
    names: dict[str, str]  # locale -> name
    parent: str | None = None  # parent slug (must exist or be in the same batch)
    status: str = "active"
    source: str = "manual"
    external_id: str | None = None
    synonyms: dict[str, list[str]] = field(default_factory=dict)


def ensure_schema(settings: Settings) -> sa.Engine:
    """Migrate the tag-library database to the head revision; return its engine."""
    engine = get_engine(settings)
    migrate.upgrade(engine)
    return engine


def upsert_facets(conn: sa.Connection, facets: Iterable[FacetDef]) -> dict[str, int]:
    """Insert or update facets; return slug -> id for all of them."""
    rows = [
        {
            "slug": f.slug,
            "exclusive": f.exclusive,
            "hierarchical": f.hierarchical,
            "names": f.names,
            "source": f.source,
        }
        for f in facets
    ]
    if rows:
        stmt = insert(db.facets).values(rows)
        # Names merge (a later import may add a locale); exclusivity is owned by whoever created the facet.
        stmt = stmt.on_conflict_do_update(
            index_elements=["slug"], set_={"names": db.facets.c.names.op("||")(stmt.excluded.names)}
        )
        conn.execute(stmt)
    return facet_ids(conn)


def facet_ids(conn: sa.Connection) -> dict[str, int]:
    return dict(conn.execute(sa.select(db.facets.c.slug, db.facets.c.id)).all())


def tag_ids(conn: sa.Connection, slugs: Iterable[str] | None = None) -> dict[str, int]:
    q = sa.select(db.tags.c.slug, db.tags.c.id)
    if slugs is not None:
        q = q.where(db.tags.c.slug.in_(list(slugs)))
    return dict(conn.execute(q).all())


def upsert_tags(conn: sa.Connection, tags: list[TagDef], batch: int = 5000) -> dict[str, int]:
    """Insert or update tags (names, synonyms, parent); return slug -> id for the given tags.

    Parents are resolved by slug, from the database or from the same batch.

    Raises:
        TagLibraryError: a facet or a parent does not exist.
    """
    fids = facet_ids(conn)
    missing = sorted({t.facet for t in tags} - set(fids))
    if missing:
        raise TagLibraryError(f"unknown facet(s) {missing}: create them with upsert_facets first")
    for i in range(0, len(tags), batch):
        chunk = tags[i : i + batch]
        stmt = insert(db.tags).values(
            [
                {
                    "slug": t.slug,
                    "facet_id": fids[t.facet],
                    "status": t.status,
                    "source": t.source,
                    "external_id": t.external_id,
                }
                for t in chunk
            ]
        )
        conn.execute(stmt.on_conflict_do_nothing(index_elements=["slug"]))
    ids = tag_ids(conn, [t.slug for t in tags] + [t.parent for t in tags if t.parent])
    # parents
    parent_rows = []
    for t in tags:
        if t.parent is None:
            continue
        if t.parent not in ids:
            raise TagLibraryError(f"tag {t.slug!r} names parent {t.parent!r}, which is not in the library")
        parent_rows.append({"tid": ids[t.slug], "pid": ids[t.parent]})
    if parent_rows:
        conn.execute(
            sa.text(
                "update tags set parent_id = v.pid, updated_at = now() from "
                "(select unnest(cast(:tids as int[])) as tid, unnest(cast(:pids as int[])) as pid) v "
                "where tags.id = v.tid and tags.parent_id is distinct from v.pid"
            ),
            {"tids": [r["tid"] for r in parent_rows], "pids": [r["pid"] for r in parent_rows]},
        )
    name_rows = [{"tag_id": ids[t.slug], "locale": loc, "name": n} for t in tags for loc, n in t.names.items() if n]
    for i in range(0, len(name_rows), batch):
        stmt = insert(db.tag_names).values(name_rows[i : i + batch])
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["tag_id", "locale"],
                set_={"name": stmt.excluded.name},
                where=db.tag_names.c.name != stmt.excluded.name,
            )
        )
    syn_rows = [
        {"tag_id": ids[t.slug], "locale": loc, "synonym": s}
        for t in tags
        for loc, syns in t.synonyms.items()
        for s in syns
    ]
    if syn_rows:
        conn.execute(insert(db.tag_synonyms).values(syn_rows).on_conflict_do_nothing())
    return {t.slug: ids[t.slug] for t in tags}


def find_by_name(conn: sa.Connection, facet: str, names: Iterable[str]) -> dict[str, str]:
    """Case-insensitive lookup of names/synonyms within a facet: lower(name) -> slug of an existing tag."""
    wanted = sorted({n.lower() for n in names})
    if not wanted:
        return {}
    q = sa.text(
        """
        select lower(x.name) as key, min(t.slug) as slug from (
            select tag_id, name from tag_names
            union all select tag_id, synonym from tag_synonyms
        ) x join tags t on t.id = x.tag_id join facets f on f.id = t.facet_id
        where f.slug = :facet and lower(x.name) = any(:names)
        group by lower(x.name)
        """
    )
    return dict(conn.execute(q, {"facet": facet, "names": wanted}).all())


def names(conn: sa.Connection, slugs: Iterable[str], locale: str = "en") -> dict[str, str]:
    """slug -> name in ``locale`` (falls back to English, then to the slug)."""
    slugs = list(dict.fromkeys(slugs))
    q = sa.text(
        """
        select t.slug, coalesce(l.name, e.name, t.slug) from tags t
        left join tag_names l on l.tag_id = t.id and l.locale = :loc
        left join tag_names e on e.tag_id = t.id and e.locale = 'en'
        where t.slug = any(:slugs)
        """
    )
    found = dict(conn.execute(q, {"loc": locale, "slugs": slugs}).all())
    return {s: found.get(s, s) for s in slugs}


def all_names(conn: sa.Connection, slugs: Iterable[str] | None = None) -> dict[str, dict[str, str]]:
    """slug -> locale -> display name, every locale the library has (``slugs``: only these)."""
    q = "select t.slug, n.locale, n.name from tags t join tag_names n on n.tag_id = t.id"
    params: dict = {}
    if slugs is not None:
        q += " where t.slug = any(:slugs)"
        params["slugs"] = list(slugs)
    out: dict[str, dict[str, str]] = {}
    for slug, locale, name in conn.execute(sa.text(q), params):
        out.setdefault(slug, {})[locale] = name
    return out


def library_slugs(conn: sa.Connection, statuses: tuple[str, ...] = ("active", "candidate")) -> dict[str, str]:
    """slug -> status for every tag with one of ``statuses``."""
    q = sa.select(db.tags.c.slug, db.tags.c.status).where(db.tags.c.status.in_(statuses))
    return dict(conn.execute(q).all())


def summary(conn: sa.Connection) -> dict:
    """Counts for a human: facets with tags per status, products, product tags by source."""
    per_facet = conn.execute(
        sa.text(
            "select f.slug, f.exclusive, count(t.id) filter (where t.status='active'), "
            "count(t.id) filter (where t.status='candidate') "
            "from facets f left join tags t on t.facet_id = f.id group by f.slug, f.exclusive order by f.slug"
        )
    ).all()
    products = dict(conn.execute(sa.text("select catalog, count(*) from products group by catalog")).all())
    ptags = dict(conn.execute(sa.text("select source, count(*) from product_tags group by source")).all())
    return {
        "facets": [{"facet": f, "exclusive": ex, "active": a, "candidate": c} for f, ex, a, c in per_facet],
        "products": products,
        "product_tags": ptags,
    }
