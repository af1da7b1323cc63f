"""Importers: the Shopify taxonomy into the tag library, and catalogs (through a dataset spec) as products.

Both are idempotent (a second run changes nothing), transactional (one transaction: a failure leaves the
database as it was) and bulk (multi-row upserts and COPY, never row by row).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import sqlalchemy as sa
import yaml

from pipeline.catalog import taglib
from pipeline.catalog.readers import CatalogRead, read_catalog, tag_slug
from pipeline.catalog.spec import DatasetSpec, load_spec
from pipeline.errors import CatalogError
from pipeline.settings import Settings

log = logging.getLogger(__name__)

# Shopify attributes that matter for tagging products: friendly_id -> (facet slug, exclusive)
SHOPIFY_FACETS: dict[str, tuple[str, bool]] = {
    "color": ("color", False),
    "pattern": ("pattern", False),
    "material": ("material", False),
    "fabric": ("fabric", False),
    "target_gender": ("gender", True),
    "age_group": ("age_group", True),
    "season": ("season", True),
}
_GID_LINE = re.compile(r"^gid://shopify/(?P<kind>\w+)/(?P<id>\S+)\s*:\s*(?P<rest>.*)$")


@dataclass(frozen=True)
class ImportResult:
    kind: str
    source: str
    facets: int
    tags: int
    new_tags: int
    products: int
    product_tags: int
    seconds: float

    def to_json(self) -> str:
        return json.dumps(asdict(self))


# ---- Shopify taxonomy ----------------------------------------------------------------------------------
def _gid_file(path: Path) -> dict[str, str]:
    """Parse a dist/*.txt file: id -> text after ' : ' (comment lines skipped)."""
    if not path.is_file():
        raise CatalogError("expected file of the Shopify taxonomy is missing", path=str(path))
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        m = _GID_LINE.match(line.strip())
        if not m:
            raise CatalogError(
                f"line is not 'gid://shopify/<Kind>/<id> : <text>': {line[:80]!r}", path=str(path), row=n
            )
        out[m["id"]] = m["rest"].strip()
    return out


def _strip_attr(value: str) -> str:
    return re.sub(r"\s*\[[^\]]*\]\s*$", "", value)


def shopify_taxonomy(root: Path) -> tuple[list[taglib.FacetDef], list[taglib.TagDef]]:
    """Read the Shopify taxonomy folder into facet and tag definitions (en + zh names)."""

    root = Path(root)
    cats_en = _gid_file(root / "dist/en/categories.txt")
    cats_zh = _gid_file(root / "dist/zh-CN/categories.txt")
    attr_en = _gid_file(root / "dist/en/attributes.txt")
    attr_zh = _gid_file(root / "dist/zh-CN/attributes.txt")
    vals_zh = {k: _strip_attr(v) for k, v in _gid_file(root / "dist/zh-CN/attribute_values.txt").items()}
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        attributes = yaml.load((root / "data/attributes.yml").read_text(encoding="utf-8"), Loader=loader)
        values = yaml.load((root / "data/values.yml").read_text(encoding="utf-8"), Loader=loader)
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogError(f"cannot read Shopify attribute data ({exc})", path=str(root / "data")) from exc

    facets = [
        taglib.FacetDef(
            "category",
            exclusive=True,
            hierarchical=True,
            names={"en": "Category", "zh": "类目"},
            source="shopify",
        )
    ]
    tags: list[taglib.TagDef] = []
    for cid, path_en in cats_en.items():
        name_en = path_en.rsplit(" > ", 1)[-1]
        name_zh = cats_zh.get(cid, "").rsplit(" > ", 1)[-1] or None
        parent = cid.rsplit("-", 1)[0] if "-" in cid else None
        tags.append(
            taglib.TagDef(
                slug=f"category:{cid}",
                facet="category",
                names={"en": name_en, **({"zh": name_zh} if name_zh else {})},
                parent=f"category:{parent}" if parent else None,
                source="shopify",
                external_id=f"gid://shopify/TaxonomyCategory/{cid}",
            )
        )
    by_handle = {v["friendly_id"]: v for v in values}  # attributes list values by friendly_id
    for attr in attributes["base_attributes"]:
        fid = attr.get("friendly_id")
        if fid not in SHOPIFY_FACETS:
            continue
        facet, exclusive = SHOPIFY_FACETS[fid]
        aid = str(attr["id"])
        facets.append(
            taglib.FacetDef(
                facet,
                exclusive=exclusive,
                names={
                    "en": attr_en.get(aid, attr["name"]),
                    **({"zh": attr_zh[aid]} if aid in attr_zh else {}),
                },
                source="shopify",
            )
        )
        seen = set()
        for handle in attr.get("values", []):
            v = by_handle.get(handle)
            if v is None:
                continue
            slug = tag_slug(facet, v["name"])
            if slug in seen:
                continue
            seen.add(slug)
            zh = vals_zh.get(str(v["id"]))
            tags.append(
                taglib.TagDef(
                    slug=slug,
                    facet=facet,
                    names={"en": v["name"], **({"zh": zh} if zh else {})},
                    source="shopify",
                    external_id=f"gid://shopify/TaxonomyValue/{v['id']}",
                )
            )
    return facets, tags


def import_shopify(settings: Settings, root: str | Path) -> ImportResult:
    """Load the Shopify taxonomy (categories with hierarchy, tagging attributes) into the tag library."""
    t0 = time.perf_counter()
    facets, tags = shopify_taxonomy(Path(root))
    engine = taglib.ensure_schema(settings)
    with engine.begin() as conn:
        before = len(taglib.tag_ids(conn))
        taglib.upsert_facets(conn, facets)
        taglib.upsert_tags(conn, tags)
        after = len(taglib.tag_ids(conn))
    res = ImportResult("shopify", str(root), len(facets), len(tags), after - before, 0, 0, time.perf_counter() - t0)
    log.info(
        "Shopify taxonomy: %d facets, %d tags (%d new) in %.1f s",
        res.facets,
        res.tags,
        res.new_tags,
        res.seconds,
    )
    return res


# ---- catalogs -------------------------------------------------------------------------------------------
def _check_strict(read: CatalogRead) -> None:
    """Imports are strict: every row must parse and ids must be unique (validation quarantines instead)."""
    if read.rejects:
        r = read.rejects[0]
        more = f" (and {len(read.rejects) - 1} more rows)" if len(read.rejects) > 1 else ""
        raise CatalogError(
            f"{r.reason}: {r.value[:120]!r}{more}; run `tagger validate` to quarantine bad rows",
            path=read.path,
            row=r.row_number,
        )
    frame = read.frame
    if frame.empty:
        raise CatalogError("no product rows to import (header only?)", path=read.path)
    missing_id = frame[frame.product_id.isna() | (frame.product_id == "")]
    if len(missing_id):
        raise CatalogError("product_id is empty", path=read.path, row=int(missing_id.row_number.iloc[0]))
    empty_title = frame[frame.title.str.strip() == ""]
    if len(empty_title):
        raise CatalogError("title is empty", path=read.path, row=int(empty_title.row_number.iloc[0]))
    dup = frame[frame.product_id.duplicated(keep=False)]
    if len(dup):
        first = dup.groupby("product_id").row_number.apply(list).head(3).to_dict()
        raise CatalogError(f"duplicate product_id values (id: rows): {first}", path=read.path)


def _content_hash(row) -> str:
    payload = json.dumps(
        [
            row.title,
            row.description,
            row.brand,
            row.locale,
            row.category_path,
            row.attributes,
            sorted(row.tags),
        ],
        ensure_ascii=False,
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _resolve_tags(conn: sa.Connection, read: CatalogRead, spec: DatasetSpec) -> dict[str, str]:
    """Map every slug seen in the catalog onto a library slug; unknown values become candidate tags.

    A value matches an existing tag when its slug exists or its name equals (case-insensitively) a name
    or synonym of a tag of the same facet. Returns catalog slug -> library slug.
    """
    facets = [
        taglib.FacetDef(
            name,
            exclusive=rule.exclusive,
            hierarchical=rule.from_category_path,
            names={"en": name.replace("_", " ").title()},
            source=spec.name,
        )
        for name, rule in spec.facets.items()
    ]
    taglib.upsert_facets(conn, facets)
    existing = taglib.tag_ids(conn, read.tags)
    mapping = {s: s for s in read.tags if s in existing}
    by_facet: dict[str, list] = {}
    for ref in read.tags.values():
        # A catalog's own category tree keeps its slugs: matching one node by name would orphan its children.
        if ref.slug not in mapping and not spec.facets[ref.facet].from_category_path:
            by_facet.setdefault(ref.facet, []).append(ref)
    for facet, refs in by_facet.items():
        found = taglib.find_by_name(conn, facet, [r.name for r in refs])
        for r in refs:
            if r.name.lower() in found:
                mapping[r.slug] = found[r.name.lower()]
    new = [
        taglib.TagDef(
            slug=ref.slug,
            facet=ref.facet,
            names={spec.locale: ref.name},
            parent=ref.parent,
            status="candidate",
            source=spec.name,
        )
        for ref in sorted(read.tags.values(), key=lambda r: r.slug.count("/"))
        if ref.slug not in mapping
    ]
    if new:
        taglib.upsert_tags(conn, new)
        mapping.update({t.slug: t.slug for t in new})
    return mapping


def _copy_rows(conn: sa.Connection, table: str, columns: list[str], rows) -> None:
    cur = conn.connection.dbapi_connection.cursor()
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as cp:
        for r in rows:
            cp.write_row(r)


def import_catalog(
    settings: Settings, path: str | Path, spec: str | DatasetSpec, catalog: str | None = None
) -> ImportResult:
    """Load a catalog as products with their human tags, mapped onto the tag library.

    Raises:
        CatalogError: the file or a row is bad (nothing is written).
        SpecError: unknown spec.
    """
    t0 = time.perf_counter()
    spec = load_spec(spec) if isinstance(spec, str) else spec
    catalog = catalog or spec.name
    read = read_catalog(path, spec)
    _check_strict(read)
    frame = read.frame
    engine = taglib.ensure_schema(settings)
    with engine.begin() as conn:
        before_tags = len(taglib.tag_ids(conn))
        mapping = _resolve_tags(conn, read, spec)
        conn.execute(
            sa.text(
                "create temp table stage_products (product_id text, title text, description text, brand text, "
                "locale text, category_path jsonb, attributes jsonb, content_hash text, tags jsonb) on commit drop"
            )
        )
        _copy_rows(
            conn,
            "stage_products",
            [
                "product_id",
                "title",
                "description",
                "brand",
                "locale",
                "category_path",
                "attributes",
                "content_hash",
                "tags",
            ],
            (
                (
                    r.product_id,
                    r.title,
                    r.description,
                    r.brand,
                    r.locale,
                    json.dumps(r.category_path, ensure_ascii=False),
                    json.dumps(r.attributes, ensure_ascii=False),
                    _content_hash(r),
                    json.dumps(sorted({mapping[s] for s in r.tags}), ensure_ascii=False),
                )
                for r in frame.itertuples(index=False)
            ),
        )
        changed = conn.execute(
            sa.text(
                """
            insert into products as p (catalog, product_id, title, description, brand, locale, category_path,
                                       attributes, content_hash)
            select :catalog, product_id, title, description, brand, locale, category_path, attributes, content_hash
            from stage_products
            on conflict (catalog, product_id) do update set
                title = excluded.title, description = excluded.description, brand = excluded.brand,
                locale = excluded.locale, category_path = excluded.category_path,
                attributes = excluded.attributes, content_hash = excluded.content_hash, updated_at = now()
            where p.content_hash <> excluded.content_hash
            """
            ),
            {"catalog": catalog},
        ).rowcount
        # Human tags: make the stored set equal to the file's set, touching only what differs.
        conn.execute(
            sa.text(
                """
            create temp table stage_tags on commit drop as
            select p.id as product_pk, t.id as tag_id
            from stage_products s
            join products p on p.catalog = :catalog and p.product_id = s.product_id
            cross join lateral jsonb_array_elements_text(s.tags) as st(slug)
            join tags t on t.slug = st.slug
            """
            ),
            {"catalog": catalog},
        )
        conn.execute(
            sa.text(
                """
            delete from product_tags pt using products p
            where pt.product_pk = p.id and p.catalog = :catalog and pt.source = 'human'
              and p.product_id in (select product_id from stage_products)
              and not exists (select 1 from stage_tags s where s.product_pk = pt.product_pk and s.tag_id = pt.tag_id)
            """
            ),
            {"catalog": catalog},
        )
        added = conn.execute(
            sa.text(
                "insert into product_tags (product_pk, tag_id, source, review_state) "
                "select product_pk, tag_id, 'human', 'accepted' from stage_tags on conflict do nothing"
            )
        ).rowcount
        n_tags = conn.scalar(sa.text("select count(*) from stage_tags"))
        new_tags = len(taglib.tag_ids(conn)) - before_tags
    res = ImportResult(
        "catalog", str(path), len(spec.facets), n_tags, new_tags, len(frame), n_tags, time.perf_counter() - t0
    )
    log.info(
        "catalog %s: %d products (%d new or changed), %d human tags (%d new), %d new candidate tags in %.1f s",
        catalog,
        len(frame),
        changed,
        n_tags,
        added,
        new_tags,
        res.seconds,
    )
    return res
