"""What a dataset spec says, as plain dataclasses (no pydantic: the training path and the GPU machine read these).

:mod:`pipeline.catalog.schema` checks a spec's YAML and builds a :class:`DatasetSpec`; :mod:`pipeline.catalog.spec`
loads specs by name or path and re-exports these classes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FORMATS = ("csv", "jsonl", "parquet", "delimited")
PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")  # a field path: names and [index] parts


def path_root(path: str) -> str:
    """The first name of a field path (``labels`` of ``labels.coarse[0]``)."""
    m = PATH_PART.match(path)
    return m.group(1) if m and m.group(1) else path


def attribute_name(path: str) -> str:
    """The name an attribute read from ``path`` carries in the contract and the model text: its last key
    (``material`` of ``attribute_list.material``; a plain column keeps its name)."""
    names = [m.group(1) for m in PATH_PART.finditer(path) if m.group(1)]
    return names[-1] if names else path


ATTRIBUTE_LIST = "attribute_list"  # the record field an attribute list is read into (facets: attribute_list.color)


@dataclass(frozen=True)
class FacetRule:
    """How one facet's values are read from a source row."""

    name: str
    exclusive: bool
    column: str | None = None  # field path of the value(s) (a list value gives several)
    from_category_path: bool = False  # the facet is the category path (leaf + hierarchy)
    split: str | None = None  # multi-valued cell separator
    pattern: re.Pattern | None = None  # named group ``value`` extracts the value from each item
    rules: tuple[tuple[re.Pattern, str], ...] = ()  # first matching (pattern, value) wins
    value_map: dict[str, str] = field(default_factory=dict)
    split_after: str | None = None  # splits each extracted value again (extract, then split)
    drop: tuple[re.Pattern, ...] = ()  # values matching any of these are left out (after extracting and splitting)


@dataclass(frozen=True)
class CategoryColumn:
    """A category path held in ONE field (``Home >> Curtains >> Eyelet curtains``)."""

    column: str  # field path
    split: re.Pattern  # the separator between levels (a literal ``split`` is escaped into a pattern)
    unwrap: bool = True  # a cell holding a JSON list (``["a >> b"]``) reads its first string
    drop: tuple[re.Pattern, ...] = ()  # levels matching any of these are dropped (a trailing product name "...")
    max_depth: int | None = None


@dataclass(frozen=True)
class AttributeList:
    """Key/value attributes held in ONE field, read into the record as ``attribute_list.<name>``."""

    column: str  # field path
    format: str  # auto | json | hash | pairs
    pair_separator: str | None = None  # pairs: between pairs (``#;#``)
    key_separator: str | None = None  # pairs: between key and value (``#:#``)
    keys: dict[str, str] = field(default_factory=dict)  # source key (casefolded) -> name; others keep their key


@dataclass(frozen=True)
class SplitField:
    """One source field holding several (``title<TAB>attributes``): split into named fields the spec reads."""

    column: str  # field path
    separator: str
    into: tuple[str, ...]  # the new fields, in order (the last one keeps the rest)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    format: str
    locale: str
    columns: dict[str, str]  # contract field -> source field path (product_id, title, description, brand)
    facets: dict[str, FacetRule]
    category_path: tuple[str, ...] = ()  # one field path per level, root first
    category_column: CategoryColumn | None = None  # or the whole path in one field
    attributes: tuple[str, ...] = ()
    null_values: frozenset[str] = frozenset({""})
    encoding: str = "utf-8"
    member: str | None = None
    csv_delimiter: str = ","
    overflow: str | None = None  # "rejoin" | None
    overflow_column: str | None = None
    delimited_separator: str | None = None
    delimited_fields: tuple[str, ...] = ()
    delimited_header: bool = False
    description: str = ""
    source_path: str = ""
    data_file: str | None = None  # the shared catalog file this spec describes, relative to TAGGER_DATA_DIR
    encoder: str | None = None  # the encoder to train on (pipeline.training.encoders); None: chosen by locale
    product_id_hash: tuple[str, ...] = ()  # no id field: product_id = a stable hash of these fields
    attribute_list: AttributeList | None = None
    split_fields: tuple[SplitField, ...] = ()  # applied first: their parts are fields like the file's own
    text_template: tuple[dict, ...] = ()  # the model's input text (pipeline.catalog.text); () = the default

    @property
    def exclusive_facets(self) -> list[str]:
        return [f for f, r in self.facets.items() if r.exclusive]

    def facets_in_text(self, template: list[dict]) -> list[str]:
        """Facets whose source field also feeds the model text (``template``): the model reads the answer off its
        input, and their near-perfect F1 inflates micro-F1."""
        fed = {self.columns[p["field"]] for p in template if p["field"] in self.columns}
        names = {p["field"].split(".", 1)[1] for p in template if p["field"].startswith("attributes.")}
        if any(p["field"] == "attributes" for p in template):
            names |= {attribute_name(a) for a in self.attributes}
        return [
            f
            for f, rule in self.facets.items()
            if rule.column
            and (rule.column in fed or (rule.column in self.attributes and attribute_name(rule.column) in names))
        ]

    def source_fields(self) -> list[str]:
        """Every field path the spec reads (for the check that a file has them)."""
        out = [*self.columns.values(), *self.category_path, *self.product_id_hash]
        out += [self.category_column.column] if self.category_column else []
        out += [self.attribute_list.column] if self.attribute_list else []
        out += [r.column for r in self.facets.values() if r.column]
        made = {ATTRIBUTE_LIST} | {name for sf in self.split_fields for name in sf.into}  # not the file's
        out = [p for p in out if p not in made and path_root(p) not in made]
        out += [sf.column for sf in self.split_fields]
        return list(dict.fromkeys(out))
