"""``tagger spec init``: a draft dataset spec for a catalog file never seen before, each guess with its reason.

The first rows (``SAMPLE_ROWS``) are read as they are: format from the name and content, encoding by trying
UTF-8, UTF-8 with BOM, GB18030 and Latin-1 in turn, the CSV delimiter by ``csv.Sniffer``. Nested JSON (JSONL and
Parquet records, CSV cells holding JSON objects) is flattened into field paths (``attrs.color``,
``labels.coarse[0]``), the same paths the spec language reads. Each field is then described by what its values
look like, and roles are guessed from names and values:

- id: a unique, short, space-free field (a name like ``id``/``sku`` first); none -> ``product_id_hash``;
- title: a name like ``title``/``name``, else the text field of 15-200 characters that is most often unique;
- description: a name like ``description``, else the longest text field (over 150 characters on average);
- brand: a name like ``brand``/``vendor``;
- a category tree: values that split on ``>>``, ``>`` or ``/`` into 2+ levels in most rows (a trailing level
  ending in ``...`` is dropped: a product name cut short);
- a key/value attribute list: JSON objects or ``{key, value}`` arrays, ``"k"=>"v"`` hashes, or ``k#:#v#;#``
  pairs in most rows;
- a category path in several fields: a chain of fields, coarse to fine, where each finer value goes with one
  coarser value (``masterCategory`` > ``subCategory`` > ``articleType``), one of them named like a level;
- tag facets: other text fields whose values repeat (at most ``MAX_FACET_VALUES`` distinct, and at most half
  as many as the rows), fields of several values per row (``a|b``) with 10+ items seen 3+ times (a long tail of
  rare tags is left out by training's ``min_tag_count``; up to ``MAX_LIST_TAGS`` distinct),
  and keys of an attribute list that repeat; exclusive when no value holds a list separator. A brand-named field
  of single values is the brand (model text); one holding lists is a facet.

The draft is YAML with a comment on every guess, meant to be read and edited, then checked with
``tagger spec check``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import CatalogError

SAMPLE_ROWS = 2000
MAX_FACET_VALUES = 200
MAX_LIST_TAGS = 5000  # a field of several values per row whose items repeat is a tag field up to this many tags
ENCODINGS = ("utf-8", "utf-8-sig", "gb18030", "latin-1")
_ID_NAME = re.compile(r"(^|[_\-. ])(id|sku|uniq_?id|item_?id|product_?id|pid|asin|code)$", re.I)
_TITLE_NAME = re.compile(r"(title|name|productdisplayname|product_name)$", re.I)
_DESC_NAME = re.compile(r"(desc|description|body|details?|summary)$", re.I)
_BRAND_NAME = re.compile(r"(brand|vendor|manufacturer|maker)$", re.I)
_NOT_TITLE = re.compile(r"brand|vendor|categor|image|url|file|user|seller|shop|store", re.I)
_TREE_SPLITS = (">>", " > ", "/")
_PAIRS = (("#;#", "#:#"), (";", ":"), ("|", ":"))
_LINK = re.compile(r"([a-z][a-z0-9+.-]*://|www\.)\S+$|\S+\.(jpe?g|png|gif|webp|pdf|html?)$", re.I)
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_LIST_SEPS = ("#;#", "|", ";")  # longest first: "#;#" holds ";"
_RUN = re.compile(r"([^\w\s\"',;])\1+")  # a run of one repeated symbol: "#####", "||", "::" (",," is a CSV)
_HEADER_NAME = re.compile(r"[A-Za-z_][\w .\-]{0,40}")


@dataclass
class FieldInfo:
    path: str
    cells: list[str | None] = field(default_factory=list)  # one per sampled row (None: empty or absent)

    @property
    def rows(self) -> int:
        return len(self.cells)

    @property
    def values(self) -> list[str]:
        return [c for c in self.cells if c is not None]

    @property
    def filled(self) -> float:
        return len(self.values) / max(self.rows, 1)

    @property
    def distinct(self) -> int:
        return len(set(self.values))

    @property
    def unique_share(self) -> float:
        return self.distinct / max(len(self.values), 1)

    @property
    def mean_len(self) -> float:
        return sum(map(len, self.values)) / max(len(self.values), 1)


@dataclass
class Draft:
    format: str
    encoding: str
    delimiter: str | None
    member: str | None
    rows_sampled: int
    fields: dict[str, FieldInfo]
    line_fields: list[str] = field(default_factory=list)  # format delimited: the fields of a line, in order
    header: bool = False  # format delimited: the first line names the fields
    guesses: dict[str, Any] = field(default_factory=dict)  # spec key -> value
    comments: dict[str, str] = field(default_factory=dict)  # spec key (or facet name) -> why


# ---- reading a sample ------------------------------------------------------------------------------------------
def _raw_bytes(path: Path) -> tuple[bytes, str, str | None]:
    """(bytes, the name that tells the format, the zip member) of a plain, .gz or single-member .zip file."""
    import gzip
    import zipfile

    name = path.name.lower()
    if name.endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.namelist() if not m.endswith("/")]
            if len(members) != 1:
                raise CatalogError(f"zip archive holds {len(members)} files; unpack the catalog first", path=str(path))
            return zf.read(members[0])[: 8 << 20], members[0].lower(), members[0]
    if name.endswith(".gz"):
        with gzip.open(path) as fh:
            return fh.read(8 << 20), name[:-3], None
    with path.open("rb") as fh:
        return fh.read(8 << 20), name, None


def _decode(data: bytes) -> tuple[str, str]:
    for enc in ENCODINGS:
        try:
            text = data.decode(enc)
        except UnicodeDecodeError as exc:
            if exc.start > len(data) - 4:  # the sample cut a character in half: decode the rest
                return data[: exc.start].decode(enc), enc
            continue
        return (text[1:] if text.startswith("\ufeff") else text), enc
    raise AssertionError("latin-1 decodes any bytes")


def _flatten(value: Any, prefix: str, out: dict[str, Any], depth: int = 0) -> None:
    """Field paths of a nested value: objects by key, the first item of a list of objects or lists; a list of
    scalars stays one field (a list of values)."""
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
    if isinstance(value, dict) and depth < 4:
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out, depth + 1)
    elif isinstance(value, list) and value and isinstance(value[0], dict | list) and depth < 4:
        if isinstance(value[0], dict) and {"key", "value"} <= set(value[0]):
            out[prefix] = value  # a {key, value} list: an attribute list, not fields
        else:
            _flatten(value[0], f"{prefix}[0]", out, depth + 1)
    else:
        out[prefix] = value


def _as_text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False) if value else None
    text = str(value).strip()
    return text or None


def _line_separator(lines: list[str]) -> tuple[str, bool] | None:
    """(separator, first line is a header) of a line format split by a run of one symbol (``#####``, ``||``),
    found the same number of times on the first line and on 95%+ of the first 200; None when there is no such
    run. A header is a first line whose every part reads like a field name and appears nowhere below."""
    lines = [ln for ln in lines[:200] if ln.strip()]
    if len(lines) < 2:
        return None
    per_line = [{(run, ln.count(run)) for run in {m.group(0) for m in _RUN.finditer(ln)}} for ln in lines]
    counts = Counter(pair for pairs in per_line for pair in pairs)
    first = per_line[0]
    best = max(((n, run) for (run, k), n in counts.items() if (run, k) in first), key=lambda t: (t[0], len(t[1])),
               default=None)  # fmt: skip
    if best is None or best[0] < 0.95 * len(lines):
        return None
    sep = best[1]
    head = lines[0].split(sep)
    header = all(_HEADER_NAME.fullmatch(h.strip()) for h in head) and not any(
        h in ln.split(sep) for ln in lines[1:50] for h in head
    )
    return sep, header


def read_sample(path: str | Path, rows: int = SAMPLE_ROWS) -> Draft:
    """The first ``rows`` records of ``path`` as flattened fields, with the format, encoding and delimiter found.

    Raises:
        CatalogError: missing, empty, or unreadable as CSV, JSON Lines or Parquet.
    """
    path = Path(path)
    if not path.is_file():
        raise CatalogError("file not found", path=str(path))
    records: list[dict] = []
    delimiter, member, encoding = None, None, "utf-8"
    names: list[str] = []  # a delimited line format's field names, in order
    header = False
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.ParquetFile(path).iter_batches(batch_size=rows)
            records = next(table).to_pylist()
        except Exception as exc:
            raise CatalogError(f"cannot read as Parquet ({type(exc).__name__}: {exc})", path=str(path)) from exc
        fmt = "parquet"
    else:
        data, name, member = _raw_bytes(path)
        text, encoding = _decode(data)
        if not text.strip():
            raise CatalogError("file is empty", path=str(path))
        first = text.lstrip()[:1]
        if name.endswith((".jsonl", ".ndjson", ".json")) or first == "{":
            fmt = "jsonl"
            for i, line in enumerate(text.splitlines()):
                if len(records) >= rows:
                    break
                if line.strip():
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise CatalogError(f"line {i + 1} is not JSON ({exc.msg}); one object per line is expected",
                                           path=str(path)) from None  # fmt: skip
                    if isinstance(rec, dict):
                        records.append(rec)
        elif (line_sep := _line_separator(text[: 256 << 10].splitlines())) is not None:
            fmt, delimiter = "delimited", line_sep[0]
            lines = [ln for ln in text.splitlines() if ln.strip()]
            names = ([h.strip() for h in lines[0].split(delimiter)] if line_sep[1]
                     else [f"field_{i + 1}" for i in range(lines[0].count(delimiter) + 1)])  # fmt: skip
            header = line_sep[1]
            for ln in lines[int(header) : int(header) + rows]:
                parts = ln.split(delimiter)
                if len(parts) == len(names):
                    records.append(dict(zip(names, parts, strict=True)))
        else:
            fmt = "csv"
            head = text[: 64 << 10]
            try:
                delimiter = csv.Sniffer().sniff(head.split("\n", 1)[0], delimiters=",\t;|").delimiter
            except csv.Error:
                delimiter = ","
            reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
            for rec in reader:
                if len(records) >= rows:
                    break
                records.append({k.strip(): v for k, v in rec.items() if k is not None})
    fields: dict[str, FieldInfo] = {}
    for r, rec in enumerate(records):
        flat: dict[str, Any] = {}
        for k, v in rec.items():
            if isinstance(v, str) and v.strip()[:1] == "{" and fmt == "csv":  # a CSV cell holding a JSON object
                with contextlib.suppress(ValueError):
                    v = json.loads(v)
            _flatten(v, str(k), flat)
        for k, v in flat.items():
            info = fields.setdefault(k, FieldInfo(k, [None] * r))
            info.cells.append(_as_text(v))
        for info in fields.values():
            info.cells += [None] * (r + 1 - len(info.cells))
    if not records:
        raise CatalogError("no records found (a header alone, or no JSON objects)", path=str(path))
    return Draft(fmt, encoding, delimiter, member, len(records), fields, line_fields=names, header=header)


# ---- guessing roles --------------------------------------------------------------------------------------------
def _tree_split(info: FieldInfo) -> str | None:
    for sep in _TREE_SPLITS:
        hits = sum(1 for v in info.values if len([p for p in v.split(sep) if p.strip()]) >= 2)
        if info.values and hits / len(info.values) >= 0.8 and (sep != "/" or info.mean_len < 120):
            return sep
    return None


def _attribute_format(info: FieldInfo) -> tuple[str, str | None, str | None] | None:
    vals = info.values[:200]
    if not vals:
        return None
    share = lambda pred: sum(1 for v in vals if pred(v)) / len(vals)  # noqa: E731
    if share(lambda v: "=>" in v and v.lstrip()[:1] in "{[") >= 0.8:
        return "hash", None, None
    if share(lambda v: v.lstrip()[:1] == "[" and '"key"' in v) >= 0.8:
        return "json", None, None
    for pair, kv in _PAIRS:
        if share(lambda v, p=pair, k=kv: v.count(k) >= 2 and v.count(p) >= 1) >= 0.8:
            return "pairs", pair, kv
    return None


_LEVEL_NAME = re.compile(r"categ|type|class|dept|department|group|family|segment|level|coarse|fine|master|sub", re.I)


def _determines(child: FieldInfo, parent: FieldInfo) -> bool:
    """Each value of ``child`` goes with one value of ``parent`` (in 99% of the rows both have): a finer level."""
    pairs = [(c, p) for c, p in zip(child.cells, parent.cells, strict=True) if c is not None and p is not None]
    if len(pairs) < 0.5 * child.rows:
        return False
    top = Counter(pairs)
    best: dict[str, int] = {}
    for (c, _), n in top.items():
        best[c] = max(best.get(c, 0), n)
    return sum(best.values()) >= 0.99 * len(pairs)


def _level_chain(cands: dict[str, FieldInfo]) -> list[str]:
    """The longest chain of fields, coarse to fine, where each finer field determines the coarser one, with a
    level-like name among them (``masterCategory`` > ``subCategory`` > ``articleType``): a category path in
    several columns. [] when none has 2 levels."""
    order = sorted(cands, key=lambda p: cands[p].distinct)
    best: list[str] = []
    for root in order:
        chain = [root]
        for p in order:
            if cands[p].distinct > cands[chain[-1]].distinct and _determines(cands[p], cands[chain[-1]]):
                chain.append(p)
        if len(chain) > len(best) and any(_LEVEL_NAME.search(p) for p in chain):
            best = chain
    return best if len(best) >= 2 else []


def _name(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", text.replace("[0]", "").lower()).strip("_") or "facet"


def _attribute_facets(info: FieldInfo, attr: dict) -> dict[str, tuple[dict, str]]:
    """Keys of an attribute list that make tag facets (in 30%+ of the rows, few distinct values); adds each to
    ``attr["keys"]`` under a plain name. Returns ``{facet: (rule, why)}``."""
    from pipeline.catalog.readers import parse_attribute_list
    from pipeline.catalog.spec import AttributeList

    rule = AttributeList(attr["column"], attr["format"], attr.get("pair_separator"), attr.get("key_separator"))
    parsed = [parse_attribute_list(v, rule) for v in info.values]
    out: dict[str, tuple[dict, str]] = {}
    keys: dict[str, list[str]] = {}
    for key, n in Counter(k for d in parsed for k in d).most_common():
        vals = [str(d[key]) for d in parsed if key in d and not isinstance(d[key], list)]
        distinct = len(set(vals))
        if n < 0.3 * len(parsed) or not vals or distinct > MAX_FACET_VALUES or distinct > max(2, 0.2 * n):
            continue
        name = _name(key)
        if name in keys:
            continue
        keys[name] = [key]
        top = ", ".join(v for v, _ in Counter(vals).most_common(3))
        reason = f"key {key!r} of {attr['column']}: in {n} of {len(parsed)} rows, {distinct} distinct (e.g. {top})"
        out[name] = ({"exclusive": True, "column": f"attribute_list.{name}"}, reason)
    if keys:
        attr["keys"] = keys
    return out


def _list_separator(info: FieldInfo) -> str | None:
    """The separator of a field that holds several values in more than 10% of its rows (``a|b``), else None."""
    vals = info.values[:500]
    return next((s for s in _LIST_SEPS if vals and sum(s in v for v in vals) / len(vals) > 0.1), None)


def _looks_like_links(info: FieldInfo) -> bool:
    """URLs or file paths (``https://…/a.jpg``) in most rows: neither text nor tags."""
    vals = info.values[:200]
    return bool(vals) and sum(1 for v in vals if _LINK.match(v)) >= 0.8 * len(vals)


def _looks_numeric(info: FieldInfo) -> bool:
    return bool(info.values) and all(re.fullmatch(r"-?\d+(\.\d+)?", v) for v in info.values[:200])


def guess(draft: Draft) -> Draft:
    """Fill ``draft.guesses`` (spec keys) and ``draft.comments`` (why) from the sampled fields."""
    fields = {p: f for p, f in draft.fields.items() if f.values}
    g, why = draft.guesses, draft.comments
    used: set[str] = set()
    attr_facets: dict[str, tuple[dict, str]] = {}

    def pick(name_rx, ok) -> str | None:
        named = [p for p, f in fields.items() if p not in used and name_rx.search(p.split(".")[-1]) and ok(f)]
        return named[0] if named else None

    ident = pick(_ID_NAME, lambda f: f.unique_share > 0.99 and f.filled > 0.99)
    if ident is None:
        cands = [p for p, f in fields.items() if f.unique_share > 0.999 and f.filled > 0.999 and f.mean_len <= 40
                 and not any(" " in v for v in f.values[:200])]  # fmt: skip
        ident = cands[0] if cands else None
        why_id = "unique, short and without spaces in every sampled row" if ident else ""
    else:
        why_id = "named like an id, unique in every sampled row"
    links = [p for p, f in fields.items() if _looks_like_links(f)]
    texts = {p: f for p, f in fields.items() if not _looks_numeric(f) and p not in links}
    title = pick(_TITLE_NAME, lambda f: 5 <= f.mean_len <= 300 and f.filled > 0.9)
    if title and _NOT_TITLE.search(title.split(".")[-1]):
        title = None
    why_title = "named like a title"
    if title is None:
        cands = sorted((p for p, f in texts.items() if 15 <= f.mean_len <= 200 and f.filled > 0.9 and p != ident),
                       key=lambda p: -fields[p].unique_share)  # fmt: skip
        title, why_title = (cands[0], "the most often unique text of 15-200 characters") if cands else (None, "")
    if title is None:
        raise CatalogError("no field looks like a product title (a text of 15-200 characters in most rows); "
                           "write columns.title by hand")  # fmt: skip
    used |= {title} | ({ident} if ident else set())
    columns: dict[str, str] = {"title": title}
    why["columns.title"] = f"{title}: {why_title} (mean {fields[title].mean_len:.0f} characters)"
    if ident:
        columns["product_id"] = ident
        why["columns.product_id"] = f"{ident}: {why_id}"
    desc = pick(_DESC_NAME, lambda f: f.mean_len > 20)
    if desc is None:
        long = [p for p, f in texts.items() if p not in used and f.mean_len > 150 and f.filled > 0.5]
        desc = max(long, key=lambda p: fields[p].mean_len) if long else None
    if desc:
        columns["description"] = desc
        used.add(desc)
        why["columns.description"] = f"{desc}: long text (mean {fields[desc].mean_len:.0f} characters)"
    brand = pick(_BRAND_NAME, lambda f: f.mean_len < 60 and _list_separator(f) is None)  # a list: tags
    if brand:
        columns["brand"] = brand
        used.add(brand)
        why["columns.brand"] = f"{brand}: named like a brand ({fields[brand].distinct} distinct values sampled)"
    g["columns"] = columns
    if not ident:
        g["product_id_hash"] = [title] + ([desc] if desc else [])
        why["product_id_hash"] = "no unique id field: a product is identified by a hash of these fields"

    for p, f in texts.items():
        if p in used:
            continue
        sep = _tree_split(f)
        if sep and "category_path" not in g:
            tree: dict[str, Any] = {"column": p, "split": f" {sep.strip()} " if sep != "/" else "/"}
            parts = [v.strip('[]" ').split(sep)[-1].strip() for v in f.values[:200]]
            if sum(1 for x in parts if x.endswith(("...", "…"))) / max(len(parts), 1) > 0.2:
                tree["drop"] = [r"(\.\.\.|…)$"]
            depth = Counter(len([x for x in v.split(sep) if x.strip()]) for v in f.values)
            g["category_path"] = tree
            why["category_path"] = (f"{p}: splits on {sep.strip()!r} into 2+ levels in most rows (depths seen: "
                                    f"{dict(sorted(depth.items()))})")  # fmt: skip
            used.add(p)
            continue
        fmt = _attribute_format(f)
        if fmt and "attribute_list" not in g:
            attr: dict[str, Any] = {"column": p, "format": fmt[0]}
            if fmt[0] == "pairs":
                attr |= {"pair_separator": fmt[1], "key_separator": fmt[2]}
            attr_facets = _attribute_facets(f, attr)
            g["attribute_list"] = attr
            why["attribute_list"] = f"{p}: key/value pairs ({fmt[0]}) in most rows"
            used.add(p)
    if "category_path" not in g:
        low = {p: f for p, f in texts.items() if p not in used and 2 <= f.distinct <= min(1000, 0.5 * f.rows)
               and f.filled > 0.9}  # fmt: skip
        chain = _level_chain(low)
        if chain:
            g["category_path"] = chain
            levels = " > ".join(f"{p} ({low[p].distinct})" for p in chain)
            why["category_path"] = f"levels coarse to fine, each finer value within one coarser (distinct: {levels})"
            used |= set(chain)
    facets: dict[str, dict] = {}
    if "category_path" in g:
        facets["category"] = {"exclusive": True, "from": "category_path"}
        why["facets.category"] = "the category path: one hierarchical tag per product (its ancestors come along)"
    for fname, (rule, reason) in attr_facets.items():
        facets[fname] = rule
        why[f"facets.{fname}"] = reason
    for p, f in texts.items():
        if p in used or f.filled < 0.3:
            continue
        multi = _list_separator(f)
        items = [x.strip() for v in f.values for x in (v.split(multi) if multi else [v]) if x.strip()]
        distinct = len(set(items))
        few = distinct <= MAX_FACET_VALUES and distinct <= max(2, 0.5 * len(items))
        counts = Counter(items)
        # several values per row, a long tail: a tag field when enough of its items repeat to be learned
        repeating_list = multi is not None and distinct <= MAX_LIST_TAGS and sum(n >= 3 for n in counts.values()) >= 10
        if (few or repeating_list) and sum(map(len, items)) / max(len(items), 1) < 60:
            name = _name(p.split(".")[-1])
            while name in facets:
                name += "_"
            rule: dict[str, Any] = {"exclusive": multi is None, "column": p}
            if multi:
                rule["split"] = multi
            facets[name] = rule
            top = ", ".join(v for v, _ in counts.most_common(3))
            why[f"facets.{name}"] = (f"{p}: {distinct} distinct values in {len(f.values)} rows (e.g. {top})"
                                     + (f"; several per row, split on {multi!r}" if multi else ""))  # fmt: skip
            used.add(p)
    g["facets"] = facets
    left = [p for p in fields if p not in used]
    if left:
        named = [f"{p} (links)" if p in links else p for p in left[:12]]
        why["left out"] = ", ".join(named) + (" ..." if len(left) > 12 else "")
    titles = fields[title].values[:500]
    cjk = sum(len(_CJK.findall(t)) for t in titles) / max(sum(map(len, titles)), 1)
    g["locale"] = "zh" if cjk > 0.3 else ("mixed" if cjk > 0.05 else "en")
    why["locale"] = f"{cjk:.0%} of the title characters are CJK"
    return draft


# ---- writing ------------------------------------------------------------------------------------------------
def _yaml_value(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False)  # JSON scalars, lists and objects are YAML flow values


def render(draft: Draft, name: str, source: str) -> str:
    """The draft as commented YAML (every guess says why)."""
    g, why = draft.guesses, draft.comments
    lines = [
        f"# Draft spec written by `tagger spec init` from the first {draft.rows_sampled} records of {source}.",
        "# Every guess says why; check it with `tagger spec check FILE --spec THIS` before importing.",
        f"name: {name}",
        f"format: {draft.format}",
        f"encoding: {draft.encoding}",
        f"locale: {g['locale']}   # {why['locale']}",
    ]
    if draft.member:
        lines.append(f"member: {_yaml_value(draft.member)}")
    if draft.format == "csv" and draft.delimiter and draft.delimiter != ",":
        lines.append(f"csv: {{delimiter: {_yaml_value(draft.delimiter)}}}")
    if draft.format == "delimited":
        named = "named by the first line" if draft.header else "no header line: fields numbered in order"
        lines += [
            "delimited:",
            f"  separator: {_yaml_value(draft.delimiter)}   # found the same number of times on every sampled line",
            f"  fields: {_yaml_value(draft.line_fields)}   # {named}; rename them freely (and below)",
        ]
        if draft.header:
            lines.append("  header: true")
    lines.append("columns:")
    for k, v in g["columns"].items():
        lines.append(f"  {k}: {_yaml_value(v)}   # {why.get(f'columns.{k}', '')}")
    if "product_id_hash" in g:
        lines.append(f"product_id_hash: {_yaml_value(g['product_id_hash'])}   # {why['product_id_hash']}")
    if "category_path" in g:
        lines.append(f"category_path: {_yaml_value(g['category_path'])}")
        lines.append(f"  # {why['category_path']}")
    if "attribute_list" in g:
        lines.append(f"attribute_list: {_yaml_value(g['attribute_list'])}")
        lines.append(f"  # {why['attribute_list']}; add keys: {{facet: [source key, synonym...]}} to merge keys")
    lines.append("facets:" if g["facets"] else "facets: {}   # no low-cardinality field found: add tag fields by hand")
    for fname, rule in g["facets"].items():
        lines.append(f"  {fname}: {_yaml_value(rule)}   # {why.get(f'facets.{fname}', '')}")
    if "left out" in why:
        lines.append(f"# not used: {why['left out']}")
    return "\n".join(lines) + "\n"


def draft_spec(path: str | Path, name: str | None = None) -> str:
    """``tagger spec init``: the commented YAML of a draft spec for ``path`` (parsed once to be sure it is valid).

    Raises:
        CatalogError: the file cannot be read or has no title-like field.
    """
    import yaml

    from pipeline.catalog.spec import parse_spec

    path = Path(path)
    name = name or re.sub(r"[^0-9a-z]+", "_", path.name.split(".")[0].lower()).strip("_") or "catalog"
    text = render(guess(read_sample(path)), name, path.name)
    parse_spec(yaml.safe_load(text), f"draft of {path.name}")  # a draft that does not load is a bug here
    return text
