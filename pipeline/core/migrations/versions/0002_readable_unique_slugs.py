"""Readable, unique slugs: "+" and "#" are spelled out (C++ -> c-plus-plus, C# -> c-sharp, #1 -> no-1).

Before, both were dropped like other punctuation, so ``C++``, ``C#`` and ``C`` shared the tag ``…:c``. Tags whose
slug was made from one of their names by the old rule and that name holds "+" or "#" (or whose parent is renamed)
get the new slug; ``tag_slug_renames`` keeps old -> new so bundles trained before still find their tags. A tag whose
new slug is already taken keeps its old one. Both slug rules are frozen here: later changes to
``pipeline.catalog.readers.slugify`` must not change what this migration did.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

import re
import unicodedata

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_STRIP = re.compile(r"[^\w]+", re.UNICODE)
_WORDS = ((re.compile(r"#(?=\s*\d)"), " no "), (re.compile(r"#"), " sharp "), (re.compile(r"\+"), " plus "))


def _old(value: str) -> str:
    return _STRIP.sub("-", unicodedata.normalize("NFKC", value).strip().lower()).strip("-_") or "_"


def _new(value: str) -> str:
    text = unicodedata.normalize("NFKC", value).strip().lower()
    for pattern, word in _WORDS:
        text = pattern.sub(word, text)
    return _STRIP.sub("-", text).strip("-_") or "_"


def upgrade() -> None:
    op.create_table(
        "tag_slug_renames",
        sa.Column("old_slug", sa.Text(), nullable=False),
        sa.Column("new_slug", sa.Text(), nullable=False),
        sa.Column("renamed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("old_slug"),
    )
    conn = op.get_bind()
    tags = conn.execute(sa.text("select id, slug, parent_id from tags")).all()
    names: dict[int, list[str]] = {}
    for tag_id, name in conn.execute(sa.text("select tag_id, name from tag_names")).all():
        names.setdefault(tag_id, []).append(name)
    slug_of = {t.id: t.slug for t in tags}
    taken = set(slug_of.values())
    renamed: dict[int, str] = {}
    for t in sorted(tags, key=lambda t: t.slug.count("/")):  # parents before children
        facet, _, value = t.slug.partition(":")
        head, _, last = value.rpartition("/")
        if head and t.parent_id in renamed and slug_of[t.parent_id].partition(":")[2] == head:
            head = renamed[t.parent_id].partition(":")[2]
        source = next((n for n in names.get(t.id, []) if _old(n) == last and ("+" in n or "#" in n)), None)
        new_last = _new(source) if source else last
        new = f"{facet}:{head + '/' if head else ''}{new_last}"
        if new != t.slug and new not in taken:
            renamed[t.id] = new
            taken.add(new)
    for tag_id, new in renamed.items():
        conn.execute(
            sa.text("update tags set slug = :new, updated_at = now() where id = :id"), {"new": new, "id": tag_id}
        )
        conn.execute(
            sa.text("insert into tag_slug_renames (old_slug, new_slug) values (:old, :new)"),
            {"old": slug_of[tag_id], "new": new},
        )


def downgrade() -> None:
    conn = op.get_bind()
    for old, new in conn.execute(sa.text("select old_slug, new_slug from tag_slug_renames")).all():
        conn.execute(sa.text("update tags set slug = :old where slug = :new"), {"old": old, "new": new})
    op.drop_table("tag_slug_renames")
