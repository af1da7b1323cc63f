"""Read a catalog file through its dataset spec into the catalog contract.

The contract (one row per product, a pandas DataFrame with these columns):

=============  ==========================================================================
row_number     1-based line/record number in the source (for messages and quarantine)
product_id     str, unique within the catalog
title          str, non-empty
description    str | None
brand          str | None
locale         str (``en``, ``zh``...)
category_path  list[str], root first (may be empty)
attributes     dict[str, str] of extra source columns named by the spec
tags           list[str] of tag slugs ``facet:value`` (category: ``category:root/child/leaf``)
=============  ==========================================================================

Rows that cannot be parsed at all (undecodable bytes, wrong field count) are returned as
:class:`Reject` records instead, so that callers can quarantine them: rows read = len(frame) + len(rejects).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.catalog.spec_model import (
    ATTRIBUTE_LIST,
    PATH_PART,
    AttributeList,
    CategoryColumn,
    DatasetSpec,
    FacetRule,
    attribute_name,
    path_root,
)
from pipeline.errors import CatalogError

ROWS_PER_REPORT = 5000  # read_catalog's on_rows cadence

CONTRACT_COLUMNS = [
    "row_number",
    "product_id",
    "title",
    "description",
    "brand",
    "locale",
    "category_path",
    "attributes",
    "tags",
]
_SLUG_STRIP = re.compile(r"[^\w]+", re.UNICODE)
# symbols that change what a value means are spelled out before the rest of the punctuation goes: C++ and C, C# and
# C, A+ and A stay apart; "#" before a number reads "no" (#1 -> no-1). Other punctuation is a separator.
_SLUG_WORDS = ((re.compile(r"#(?=\s*\d)"), " no "), (re.compile(r"#"), " sharp "), (re.compile(r"\+"), " plus "))
csv.field_size_limit(16 * 1024 * 1024)


def slugify(value: str) -> str:
    """Lower-case, NFKC-normalised; ``+`` and ``#`` spelled out (``c-plus-plus``, ``c-sharp``), then runs of other
    non-word characters become ``-`` (CJK characters are kept). Values that differ only in case, spacing or other
    punctuation (``T-Shirt``, ``t shirt``) share a slug: one tag, and ``CatalogRead.merged`` lists them."""
    text = unicodedata.normalize("NFKC", value).strip().lower()
    for pattern, word in _SLUG_WORDS:
        text = pattern.sub(word, text)
    return _SLUG_STRIP.sub("-", text).strip("-_") or "_"


def tag_slug(facet: str, value: str) -> str:
    return f"{facet}:{slugify(value)}"


def category_slug(path: list[str] | tuple[str, ...]) -> str:
    return "category:" + "/".join(slugify(p) for p in path)


def facet_of(slug: str) -> str:
    return slug.split(":", 1)[0]


def parent_of(slug: str) -> str | None:
    """Parent in the hierarchy encoded by a path slug (``category:a/b`` -> ``category:a``), else None."""
    facet, _, value = slug.partition(":")
    if "/" not in value:
        return None
    return f"{facet}:{value.rsplit('/', 1)[0]}"


@dataclass(frozen=True)
class Reject:
    row_number: int
    reason: str
    value: str


@dataclass(frozen=True)
class TagRef:
    """A tag seen in a catalog: its slug, facet, display name (source locale) and parent slug."""

    slug: str
    facet: str
    name: str
    parent: str | None = None


@dataclass
class CatalogRead:
    frame: pd.DataFrame
    rejects: list[Reject]
    tags: dict[str, TagRef] = field(default_factory=dict)
    spec: DatasetSpec | None = None
    path: str = ""
    merged: dict[str, set[str]] = field(default_factory=dict)  # slug -> the distinct values written that share it
    reviewer_labels: int = 0  # db:products reads: tags a reviewer decided (they replace human tags of their facet)

    @property
    def rows_read(self) -> int:
        return len(self.frame) + len(self.rejects)


# ---- opening files -------------------------------------------------------------------------------------
def _read_bytes(path: Path, spec: DatasetSpec) -> bytes:
    if not path.exists():
        raise CatalogError("file not found", path=str(path))
    name = path.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                members = [m for m in zf.namelist() if not m.endswith("/")]
                member = spec.member if spec.member in members else (members[0] if len(members) == 1 else None)
                if member is None:
                    raise CatalogError(
                        f"zip archive holds {members}; set 'member' in spec {spec.name!r} to pick one",
                        path=str(path),
                    )
                return zf.read(member)
        if name.endswith(".gz"):
            return gzip.decompress(path.read_bytes())
    except zipfile.BadZipFile as exc:
        raise CatalogError(f"not a zip archive although its name ends in .zip ({exc})", path=str(path)) from exc
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise CatalogError(f"compressed file is corrupt or truncated ({exc})", path=str(path)) from exc
    return path.read_bytes()


def _bad_utf8(text: str) -> str | None:
    """Describe the first undecodable byte (decoded with surrogateescape), or None if the text is clean."""
    for i, ch in enumerate(text):
        if "\udc80" <= ch <= "\udcff":
            return f"invalid {{enc}} byte 0x{ord(ch) - 0xDC00:02x} at character {i}"
    return None


def _records_csv(data: bytes, spec: DatasetSpec, path: str) -> Iterator[tuple[int, dict | None, Reject | None]]:
    text = data.decode(spec.encoding, errors="surrogateescape")
    if not text.strip():
        raise CatalogError("file is empty (no header, no rows)", path=path)
    if text.startswith("\ufeff"):
        text = text[1:]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=spec.csv_delimiter)
    header = next(reader)
    header = [h.strip() for h in header]
    _check_columns(header, spec, path)
    width = len(header)
    overflow_at = header.index(spec.overflow_column) if spec.overflow_column in header else None
    for fields in reader:
        row = reader.line_num - 1  # data rows are numbered from 1, the header is row 0
        if not fields or fields == [""]:
            continue
        raw_line = spec.csv_delimiter.join(fields)
        bad = _bad_utf8(raw_line)
        if bad:
            yield row, None, Reject(row, bad.format(enc=spec.encoding), _escape(raw_line))
            continue
        if len(fields) > width and spec.overflow == "rejoin" and overflow_at is not None:
            extra = len(fields) - width
            joined = spec.csv_delimiter.join(fields[overflow_at : overflow_at + extra + 1])
            fields = fields[:overflow_at] + [joined] + fields[overflow_at + extra + 1 :]
        if len(fields) != width:
            reason = f"expected {width} fields, got {len(fields)}"
            yield row, None, Reject(row, reason, raw_line[:500])
            continue
        yield row, dict(zip(header, fields, strict=True)), None


def _records_delimited(data: bytes, spec: DatasetSpec, path: str):
    text = data.decode(spec.encoding, errors="surrogateescape")
    if not text.strip():
        raise CatalogError("file is empty", path=path)
    fields_names = list(spec.delimited_fields)
    _check_columns(fields_names, spec, path)
    header = spec.delimited_header
    for i, line in enumerate(text.splitlines(), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if header:  # the first non-empty line names the fields
            header = False
            continue
        bad = _bad_utf8(line)
        if bad:
            yield i, None, Reject(i, bad.format(enc=spec.encoding), _escape(line))
            continue
        parts = line.split(spec.delimited_separator)
        if len(parts) != len(fields_names):
            reason = f"expected {len(fields_names)} fields separated by {spec.delimited_separator!r}, got {len(parts)}"
            yield i, None, Reject(i, reason, line[:500])
            continue
        yield i, dict(zip(fields_names, parts, strict=True)), None


def _records_jsonl(data: bytes, spec: DatasetSpec, path: str):
    text = data.decode(spec.encoding, errors="surrogateescape")
    if not text.strip():
        raise CatalogError("file is empty", path=path)
    checked = False
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        bad = _bad_utf8(line)
        if bad:
            yield i, None, Reject(i, bad.format(enc=spec.encoding), _escape(line))
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            yield i, None, Reject(i, f"not valid JSON ({exc.msg} at column {exc.colno})", line[:500])
            continue
        if not isinstance(rec, dict):
            yield i, None, Reject(i, f"a JSON object was expected, got {type(rec).__name__}", line[:500])
            continue
        broken = next((k for k, v in rec.items() if isinstance(v, str) and not _encodable(v)), None)
        if broken is not None:
            yield i, None, Reject(i, f"field {broken!r} is not valid UTF-8 (lone surrogate escape)", line[:500])
            continue
        if not checked:
            _check_columns(list(rec), spec, path)
            checked = True
        yield i, rec, None


def _records_parquet(path: Path, spec: DatasetSpec):
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many types for a non-parquet file
        raise CatalogError(f"cannot read as Parquet ({type(exc).__name__}: {exc})", path=str(path)) from exc
    _check_columns(list(df.columns), spec, str(path))
    for col in [c for c in (spec.columns["title"],) if c in df.columns]:
        dtype = df[col].dtype
        if not (pd.api.types.is_string_dtype(dtype) or dtype is object or str(dtype) == "object"):
            raise CatalogError(
                f"column {col!r} has type {dtype}, expected string; fix the writer or map another column",
                path=str(path),
            )
    for i, rec in enumerate(df.to_dict(orient="records"), start=1):
        yield i, rec, None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _escape(text: str) -> str:
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")[:500]


def _check_columns(found: list[str], spec: DatasetSpec, path: str) -> None:
    needed = [field_root(p, found) for p in spec.source_fields()]
    missing = [c for c in dict.fromkeys(needed) if c not in found]
    if missing:
        raise CatalogError(
            f"missing required column(s) {missing} for spec {spec.name!r}; the file has {found}", path=path
        )


# ---- field paths: a column, or a path into a nested record or a column holding JSON ----------------------------
def field_root(path: str, columns: list[str] | dict) -> str:
    """The column a field path starts from (``labels`` of ``labels.coarse[0]``); a column whose own name has dots or
    brackets is its own root."""
    return path if path in columns else path_root(path)


def get_field(rec: dict, path: str) -> Any:
    """The value at ``path`` in a source record: a column (``title``), a key of a nested object (``attrs.color``),
    an item of a list (``labels.coarse[0]``); a string holding JSON (a CSV column) is parsed on the way. None when
    any step is missing."""
    if path in rec:
        return rec[path]
    cur: Any = rec
    for m in PATH_PART.finditer(path):
        if isinstance(cur, str) and cur.lstrip()[:1] in ("{", "["):
            try:
                cur = json.loads(cur)
            except ValueError:
                return None
        key, idx = m.group(1), m.group(2)
        if idx is not None:
            seq = cur.tolist() if hasattr(cur, "tolist") else cur  # Parquet list cells come as numpy arrays
            cur = seq[int(idx)] if isinstance(seq, list | tuple) and int(idx) < len(seq) else None
        else:
            cur = cur.get(key) if isinstance(cur, dict) else None
        if cur is None:
            return None
    return cur


def _as_values(value: Any) -> list:
    """A field's value as a list of items (a list field gives several, a scalar one)."""
    if value is None:
        return []
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
    return list(value) if isinstance(value, list | tuple) else [value]


# ---- mapping source records onto the contract ----------------------------------------------------------
def _clean(value, nulls: frozenset[str]) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN
        return None
    if isinstance(value, dict):
        value = json.dumps(value, ensure_ascii=False)
    elif not isinstance(value, str) and (isinstance(value, list | tuple) or hasattr(value, "tolist")):
        value = " ".join(str(v) for v in _as_values(value) if v is not None)
    text = str(value).strip()
    return None if text in nulls else text


def _facet_values(rule: FacetRule, value: Any, nulls: frozenset[str]) -> list[str]:
    items: list[str] = []
    for v in _as_values(value):
        cell = _clean(v, nulls)
        if cell is not None:
            items += cell.split(rule.split) if rule.split else [cell]
    extracted = []
    for item in items:  # split, then extract, then split again: the steps compose in this order
        item = item.strip()
        if not item or item in nulls:
            continue
        if rule.pattern is not None:
            m = rule.pattern.search(item + " ")
            if not m:
                continue
            item = m.group("value")
        extracted += [p.strip() for p in item.split(rule.split_after)] if rule.split_after else [item.strip()]
    values = []
    for item in extracted:
        if not item or item in nulls or any(d.search(item) for d in rule.drop):
            continue
        if rule.rules:
            item = next((v for p, v in rule.rules if p.search(item)), None)
            if item is None:
                continue
        values.append(rule.value_map.get(item, item))
    return list(dict.fromkeys(values))


def _category_levels(rule: CategoryColumn, value: Any, nulls: frozenset[str]) -> list[str]:
    """The levels of a category path held in one field: unwrapped (``["a >> b"]``), split, stripped, levels that
    match a ``drop`` pattern left out, cut to ``max_depth``."""
    items = _as_values(value)
    if not items:
        return []
    text = str(items[0]).strip()
    if rule.unwrap and text.startswith("["):
        try:
            inner = json.loads(text)
            text = str(inner[0]) if isinstance(inner, list) and inner else text
        except ValueError:
            text = text.strip("[]\"' ")
    levels = [p.strip() for p in rule.split.split(text)]
    levels = [p for p in levels if p and p not in nulls and not any(d.search(p) for d in rule.drop)]
    return levels[: rule.max_depth] if rule.max_depth else levels


_RUBY_ARROW = re.compile(r'"\s*=>\s*')


def _pairs_in(obj: Any) -> list[tuple[str, Any]]:
    """(key, value) pairs in parsed JSON: ``{k: v}``, ``{"key": k, "value": v}`` (or ``name``), and lists or
    wrapping objects of those (``{"product_specification": [{"key": "Color", "value": "Black"}, ...]}``)."""
    if isinstance(obj, list):
        return [p for item in obj for p in _pairs_in(item)]
    if not isinstance(obj, dict):
        return []
    if "value" in obj and set(obj) <= {"key", "name", "value"}:  # a {key, value} item; a value without key: none
        key = obj.get("key", obj.get("name"))
        return [(str(key), obj["value"])] if key is not None else []
    out = []
    for k, v in obj.items():
        out += _pairs_in(v) if isinstance(v, dict | list) else [(str(k), v)]
    return out


def parse_attribute_list(value: Any, rule: AttributeList) -> dict[str, Any]:
    """One field of key/value attributes -> ``{name: value}`` (a key given twice gives a list): JSON objects or
    arrays of ``{key, value}``, Ruby-style ``{"k"=>"v"}`` hashes, or ``k<key_separator>v<pair_separator>...``
    pairs; source keys are mapped through ``rule.keys`` (casefolded; synonyms share a name), others kept as given.
    A cell that none of these read gives no attributes."""
    pairs: list[tuple[str, Any]] = []
    if isinstance(value, dict | list):
        pairs = _pairs_in(value)
    elif value is not None:
        text = str(value).strip()
        if rule.format in ("auto", "json", "hash") and text[:1] in ("{", "["):
            try:
                pairs = _pairs_in(json.loads(_RUBY_ARROW.sub('": ', text) if "=>" in text else text))
            except ValueError:
                pairs = []
        if not pairs and rule.format in ("auto", "pairs") and rule.pair_separator and rule.key_separator:
            for item in text.split(rule.pair_separator):
                k, sep, v = item.partition(rule.key_separator)
                if sep and k.strip():
                    pairs.append((k, v))
    out: dict[str, Any] = {}
    for k, v in pairs:
        if v is None or (isinstance(v, str) and not v.strip()):
            continue
        name = rule.keys.get(k.strip().casefold(), k.strip())
        v = v.strip() if isinstance(v, str) else v
        if name in out:
            out[name] = [*_as_values(out[name]), v]
        else:
            out[name] = v
    return out


def _product_id(rec: dict, spec: DatasetSpec) -> str | None:
    if spec.columns.get("product_id"):
        pid = _clean(get_field(rec, spec.columns["product_id"]), frozenset())
        return pid if pid is None else str(pid)
    parts = [_clean(get_field(rec, p), frozenset()) or "" for p in spec.product_id_hash]
    if not any(parts):
        return None
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def _see(seen: dict[str, TagRef], merged: dict[str, set[str]], ref: TagRef) -> None:
    """Record the first display name of a slug; other values with the same slug are noted in ``merged``."""
    first = seen.setdefault(ref.slug, ref)
    if first.name != ref.name:
        merged.setdefault(ref.slug, {first.name}).add(ref.name)


def _to_contract(rec: dict, row: int, spec: DatasetSpec, seen: dict[str, TagRef], merged: dict[str, set[str]]) -> dict:
    nulls = spec.null_values
    col = spec.columns
    for sf in spec.split_fields:  # first: the parts are fields like the file's own
        value = _clean(get_field(rec, sf.column), frozenset())
        parts = value.split(sf.separator, len(sf.into) - 1) if value is not None else []
        rec = {**rec, **{name: (parts[i].strip() if i < len(parts) else None) for i, name in enumerate(sf.into)}}
    if spec.attribute_list is not None:  # read once; facets and attributes reach it as attribute_list.<name>
        rec = {
            **rec,
            ATTRIBUTE_LIST: parse_attribute_list(get_field(rec, spec.attribute_list.column), spec.attribute_list),
        }
    if spec.category_column is not None:
        path = _category_levels(spec.category_column, get_field(rec, spec.category_column.column), nulls)
    else:
        path = [p for p in (_clean(get_field(rec, c), nulls) for c in spec.category_path) if p]
    tags: list[str] = []
    for rule in spec.facets.values():
        if rule.from_category_path:
            for depth in range(1, len(path) + 1):
                slug = category_slug(path[:depth])
                _see(seen, merged, TagRef(slug, "category", path[depth - 1], parent_of(slug)))
            if path:
                tags.append(category_slug(path))
            continue
        for value in _facet_values(rule, get_field(rec, rule.column), nulls):
            slug = tag_slug(rule.name, value)
            _see(seen, merged, TagRef(slug, rule.name, value))
            tags.append(slug)
    attrs = {attribute_name(a): v for a in spec.attributes if (v := _clean(get_field(rec, a), nulls)) is not None}
    return {
        "row_number": row,
        "product_id": _product_id(rec, spec),
        "title": _clean(get_field(rec, col["title"]), frozenset()) or "",
        "description": _clean(get_field(rec, col["description"]), nulls) if "description" in col else None,
        "brand": _clean(get_field(rec, col["brand"]), nulls) if "brand" in col else None,
        "locale": spec.locale,
        "category_path": path,
        "attributes": attrs,
        "tags": list(dict.fromkeys(tags)),
    }


def read_catalog(
    path: str | Path, spec: DatasetSpec, limit: int | None = None, on_rows: Callable[[int], None] | None = None
) -> CatalogRead:
    """Read ``path`` through ``spec``; ``on_rows(n)`` hears the number of rows read so far, every
    ``ROWS_PER_REPORT`` rows and once at the end (a progress bar).

    Raises:
        CatalogError: the file as a whole is unusable (missing, empty, wrong format, missing columns).
            Row-level problems are returned in ``rejects`` instead.
    """
    path = Path(path)
    if spec.format == "parquet":
        records = _records_parquet(path, spec)
    else:
        data = _read_bytes(path, spec)
        reader = {"csv": _records_csv, "delimited": _records_delimited, "jsonl": _records_jsonl}[spec.format]
        records = reader(data, spec, str(path))
    rows, rejects, seen, merged = [], [], {}, {}
    for row, rec, reject in records:
        if reject is not None:
            rejects.append(reject)
        else:
            rows.append(_to_contract(rec, row, spec, seen, merged))
        if on_rows is not None and (len(rows) + len(rejects)) % ROWS_PER_REPORT == 0:
            on_rows(len(rows) + len(rejects))
        if limit is not None and len(rows) + len(rejects) >= limit:
            break
    if on_rows is not None:
        on_rows(len(rows) + len(rejects))
    frame = pd.DataFrame(rows, columns=CONTRACT_COLUMNS)
    frame["row_number"] = frame["row_number"].astype("int64")
    return CatalogRead(frame=frame, rejects=rejects, tags=seen, spec=spec, path=str(path), merged=merged)
