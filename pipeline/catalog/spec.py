"""Dataset specs: YAML files that map a source catalog's columns onto the catalog contract.

A spec is looked up by name among the specs shipped in ``pipeline/catalog/specs/`` or given as a path to a YAML file,
so a shop can bring its own catalog without code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import SpecError

FORMATS = ("csv", "jsonl", "parquet", "delimited")


@dataclass(frozen=True)
class FacetRule:
    """How one facet's values are read from a source row."""

    name: str
    exclusive: bool
    column: str | None = None  # source column holding the value(s)
    from_category_path: bool = False  # the facet is the category path (leaf + hierarchy)
    split: str | None = None  # multi-valued cell separator
    pattern: re.Pattern | None = None  # named group ``value`` extracts the value from each item
    rules: tuple[tuple[re.Pattern, str], ...] = ()  # first matching (pattern, value) wins
    value_map: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    format: str
    locale: str
    columns: dict[str, str]  # contract field -> source column (product_id, title, description, brand)
    facets: dict[str, FacetRule]
    category_path: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()
    null_values: frozenset[str] = frozenset({""})
    encoding: str = "utf-8"
    member: str | None = None
    csv_delimiter: str = ","
    overflow: str | None = None  # "rejoin" | None
    overflow_column: str | None = None
    delimited_separator: str | None = None
    delimited_fields: tuple[str, ...] = ()
    description: str = ""
    source_path: str = ""
    data_file: str | None = None  # the shared catalog file this spec describes, relative to TAGGER_DATA_DIR
    encoder: str | None = None  # the encoder to train on (pipeline.training.encoders); None: chosen by locale

    @property
    def exclusive_facets(self) -> list[str]:
        return [f for f, r in self.facets.items() if r.exclusive]


def available_specs() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("pipeline.catalog.specs").iterdir() if p.name.endswith(".yaml"))


def load_spec(name_or_path: str | Path) -> DatasetSpec:
    """Load a shipped spec by name (``myntra``) or any spec YAML by path.

    Raises:
        SpecError: unknown name, unreadable YAML, or a spec that misses a required key.
    """
    candidate = Path(str(name_or_path))
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        text, source = candidate.read_text(encoding="utf-8"), str(candidate)
    else:
        res = resources.files("pipeline.catalog.specs") / f"{name_or_path}.yaml"
        if not res.is_file():
            raise SpecError(
                f"unknown dataset spec {str(name_or_path)!r}: shipped specs are {', '.join(available_specs())}; "
                "or pass the path of a spec YAML file"
            )
        text, source = res.read_text(encoding="utf-8"), f"pipeline/catalog/specs/{name_or_path}.yaml"
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"spec {source} is not valid YAML: {exc}") from exc
    return parse_spec(raw, source)


def _require(raw: dict, key: str, source: str) -> Any:
    if key not in raw or raw[key] in (None, ""):
        raise SpecError(f"spec {source} lacks required key {key!r}")
    return raw[key]


def _compile(pattern: str, source: str, where: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise SpecError(f"spec {source}: bad regular expression in {where}: {pattern!r} ({exc})") from exc


def _facet(name: str, raw: dict, source: str) -> FacetRule:
    if not isinstance(raw, dict):
        raise SpecError(f"spec {source}: facet {name!r} must be a mapping")
    from_path = raw.get("from") == "category_path"
    if not from_path and not raw.get("column"):
        raise SpecError(f"spec {source}: facet {name!r} needs 'column' or 'from: category_path'")
    pattern = raw.get("pattern")
    if pattern and "(?P<value>" not in pattern:
        raise SpecError(f"spec {source}: facet {name!r} pattern needs a named group (?P<value>...)")
    rules = tuple(
        (_compile(r["pattern"], source, f"facet {name} rules"), str(r["value"])) for r in raw.get("rules", [])
    )
    return FacetRule(
        name=name,
        exclusive=bool(raw.get("exclusive", False)),
        column=raw.get("column"),
        from_category_path=from_path,
        split=raw.get("split"),
        pattern=_compile(pattern, source, f"facet {name}") if pattern else None,
        rules=rules,
        value_map={str(k): str(v) for k, v in (raw.get("value_map") or {}).items()},
    )


def parse_spec(raw: Any, source: str = "<spec>") -> DatasetSpec:
    if not isinstance(raw, dict):
        raise SpecError(f"spec {source} must be a YAML mapping, got {type(raw).__name__}")
    fmt = _require(raw, "format", source)
    if fmt not in FORMATS:
        raise SpecError(f"spec {source}: format {fmt!r} is not one of {', '.join(FORMATS)}")
    columns = dict(_require(raw, "columns", source))
    for key in ("product_id", "title"):
        if key not in columns:
            raise SpecError(f"spec {source}: columns must map {key!r} to a source column")
    facets = {n: _facet(n, r, source) for n, r in (raw.get("facets") or {}).items()}
    csv_opts = raw.get("csv") or {}
    delim = raw.get("delimited") or {}
    if fmt == "delimited" and not (delim.get("separator") and delim.get("fields")):
        raise SpecError(f"spec {source}: format 'delimited' needs delimited.separator and delimited.fields")
    return DatasetSpec(
        name=str(_require(raw, "name", source)),
        format=fmt,
        locale=str(raw.get("locale", "en")),
        columns=columns,
        facets=facets,
        category_path=tuple(raw.get("category_path") or ()),
        attributes=tuple(raw.get("attributes") or ()),
        null_values=frozenset(str(v) for v in raw.get("null_values", [""])),
        encoding=str(raw.get("encoding", "utf-8")),
        member=raw.get("member"),
        csv_delimiter=str(csv_opts.get("delimiter", ",")),
        overflow=csv_opts.get("overflow"),
        overflow_column=csv_opts.get("overflow_column"),
        delimited_separator=delim.get("separator"),
        delimited_fields=tuple(delim.get("fields") or ()),
        description=str(raw.get("description", "")),
        source_path=source,
        data_file=raw.get("data_file"),
        encoder=str(raw["encoder"]) if raw.get("encoder") else None,
    )


def default_source(spec: str | DatasetSpec, data_dir: Path) -> str:
    """The catalog file a spec names with ``data_file`` (under ``data_dir``, i.e. TAGGER_DATA_DIR).

    Raises:
        SpecError: the spec names no ``data_file``: the caller must say which catalog to read.
    """
    spec_obj = spec if isinstance(spec, DatasetSpec) else load_spec(spec)
    if not spec_obj.data_file:
        raise SpecError(
            f"spec {spec_obj.name!r} names no data_file; pass the catalog (--source PATH_OR_SNAPSHOT_ID, or set "
            "TAGGER_CATALOG_SOURCE)"
        )
    return str(Path(data_dir) / spec_obj.data_file)


def resolve_catalog(settings, spec: str | None = None, source: str | None = None) -> tuple[str, str]:
    """``(source, spec)`` of the catalog to read: the arguments, else TAGGER_CATALOG_SOURCE / TAGGER_CATALOG_SPEC,
    else the spec's ``data_file``. Relative paths that exist under TAGGER_DATA_DIR resolve there; snapshot ids,
    ``db:`` sources and other paths pass through as given."""
    spec = spec or settings.catalog_spec
    if source is None and spec == settings.catalog_spec:
        source = settings.catalog_source
    if source is None:
        return default_source(spec, settings.data_dir), spec
    if not source.startswith("db:") and not Path(source).is_absolute() and (settings.data_dir / source).exists():
        return str(settings.data_dir / source), spec
    return source, spec
