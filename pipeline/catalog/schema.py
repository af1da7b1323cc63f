"""The dataset spec's YAML schema (pydantic): unknown keys and wrong types become one-line errors.

:func:`build_spec` checks a raw YAML mapping against the schema and builds the
:class:`~pipeline.catalog.spec.DatasetSpec` the readers use. Kept apart from :mod:`pipeline.catalog.spec` so the
training path (which only reads a ``DatasetSpec``) imports no pydantic.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.catalog.spec_model import FORMATS, AttributeList, CategoryColumn, DatasetSpec, FacetRule, SplitField
from pipeline.catalog.text import DESCRIPTION_CHARS, check_field
from pipeline.errors import SpecError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _RuleIn(_Strict):
    pattern: str = Field(description="regular expression searched in each value")
    value: str = Field(description="the tag value when it matches")


class _FacetIn(_Strict):
    exclusive: bool = False
    column: str | None = Field(None, description="field path: a column, or nested (attrs.color, labels.coarse[0])")
    from_: Literal["category_path"] | None = Field(None, alias="from")
    split: str | None = None
    pattern: str | None = None
    rules: list[_RuleIn] = Field(default_factory=list)
    value_map: dict[str, str] = Field(default_factory=dict)
    split_after: str | None = Field(None, description="split each value 'pattern' extracted again")
    drop: list[str] = Field(default_factory=list, description="leave out values matching any of these patterns")

    @model_validator(mode="after")
    def _source(self) -> _FacetIn:
        if self.from_ is None and not self.column:
            raise ValueError("needs 'column' (a field path) or 'from: category_path'")
        if self.pattern and "(?P<value>" not in self.pattern:
            raise ValueError("'pattern' needs a named group (?P<value>...)")
        return self


class _CategoryColumnIn(_Strict):
    column: str
    split: str | None = Field(None, description="literal separator between levels, e.g. ' >> '")
    split_regex: str | None = Field(None, description="or a regular expression")
    unwrap: bool = True
    drop: list[str] = Field(default_factory=list)
    max_depth: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_split(self) -> _CategoryColumnIn:
        if (self.split is None) == (self.split_regex is None):
            raise ValueError("give exactly one of 'split' (a literal separator) or 'split_regex'")
        return self


class _AttributeListIn(_Strict):
    column: str
    format: Literal["auto", "json", "hash", "pairs"] = "auto"
    pair_separator: str | None = None
    key_separator: str | None = None
    keys: dict[str, str | list[str]] = Field(default_factory=dict, description="name -> source key(s) (synonyms)")

    @model_validator(mode="after")
    def _pairs(self) -> _AttributeListIn:
        if self.format == "pairs" and not (self.pair_separator and self.key_separator):
            raise ValueError("format 'pairs' needs pair_separator and key_separator")
        return self


class _TextPartIn(_Strict):
    field: str = Field(description="title, brand, description, attributes or attributes.<name>")
    max_chars: int | None = Field(None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, data: Any) -> Any:  # a bare name; the description keeps its default cap
        if isinstance(data, str):
            return {"field": data, "max_chars": DESCRIPTION_CHARS if data == "description" else None}
        return data

    @model_validator(mode="after")
    def _known(self) -> _TextPartIn:
        check_field(self.field)
        return self


class _SplitFieldIn(_Strict):
    column: str
    separator: str = Field(min_length=1)
    into: list[str] = Field(min_length=2, description="names of the parts, in order; the last keeps the rest")


class _ColumnsIn(_Strict):
    product_id: str | None = None
    title: str
    description: str | None = None
    brand: str | None = None


class _CsvIn(_Strict):
    delimiter: str = ","
    overflow: Literal["rejoin"] | None = None
    overflow_column: str | None = None


class _DelimitedIn(_Strict):
    separator: str = Field(min_length=1)
    fields: list[str] = Field(min_length=1)
    header: bool = False  # the first line names the fields: skipped


class _SpecIn(_Strict):
    name: str = Field(min_length=1)
    format: Literal[FORMATS]  # type: ignore[valid-type]
    description: str = ""
    data_file: str | None = None
    locale: str = "en"
    member: str | None = None
    encoding: str = "utf-8"
    null_values: list[str] = Field(default_factory=lambda: [""])
    csv: _CsvIn | None = None
    delimited: _DelimitedIn | None = None
    columns: _ColumnsIn
    product_id_hash: list[str] = Field(default_factory=list, description="no id field: hash these field paths")
    category_path: list[str] | _CategoryColumnIn = Field(default_factory=list)
    attributes: list[str] = Field(default_factory=list)
    attribute_list: _AttributeListIn | None = None
    split_fields: list[_SplitFieldIn] = Field(default_factory=list)
    text: list[_TextPartIn] = Field(default_factory=list, description="the model's input text, in order")
    facets: dict[str, _FacetIn] = Field(default_factory=dict)
    encoder: str | None = None

    @model_validator(mode="after")
    def _whole(self) -> _SpecIn:
        if self.format == "delimited" and self.delimited is None:
            raise ValueError("format 'delimited' needs delimited.separator and delimited.fields")
        if not self.columns.product_id and not self.product_id_hash:
            raise ValueError("columns must map 'product_id' to a source field, or product_id_hash list the fields "
                             "whose hash identifies a product")  # fmt: skip
        return self


def _keys_at(model: Any, loc: tuple) -> list[str]:
    """The keys a spec mapping at ``loc`` accepts (aliases as written in YAML), walking the schema's types."""
    cur = model
    for part in loc:
        origin, args = typing.get_origin(cur), typing.get_args(cur)
        if origin in (types.UnionType, typing.Union):
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            cur = models[0] if models else cur
            origin, args = typing.get_origin(cur), typing.get_args(cur)
        if isinstance(cur, type) and issubclass(cur, BaseModel):
            name = next((n for n, f in cur.model_fields.items() if (f.alias or n) == part), part)
            cur = cur.model_fields[name].annotation if name in cur.model_fields else None
        elif origin is dict:
            cur = args[1]
        elif origin is list:
            cur = args[0]
    if typing.get_origin(cur) in (types.UnionType, typing.Union):
        cur = next((a for a in typing.get_args(cur) if isinstance(a, type) and issubclass(a, BaseModel)), cur)
    if isinstance(cur, type) and issubclass(cur, BaseModel):
        return [f.alias or n for n, f in cur.model_fields.items()]
    return []


_FRIENDLY = {
    "dict_type": "expected a mapping (key: value)",
    "model_type": "expected a mapping (key: value)",
    "model_attributes_type": "expected a mapping (key: value)",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
}


def _is_branch(part: Any) -> bool:
    """A union branch's tag in a pydantic error location (``list[str]``, ``function-after[..., _Model]``)."""
    return isinstance(part, str) and ("[" in part or part.startswith("_"))


def _one_line(exc: ValidationError, raw: dict, source: str) -> str:
    """The first schema error as one line: where (``facets.color``), what, and for an unknown key the allowed ones.

    A key that takes either a list or a mapping (``category_path``) reports one error per branch; the branch of
    the type the YAML gave is the one shown."""
    errors = exc.errors()
    err = errors[0]
    cut = next((i for i, p in enumerate(err["loc"]) if _is_branch(p)), None)
    if cut is not None:
        given: Any = raw
        for p in err["loc"][:cut]:
            given = given.get(p) if isinstance(given, dict) else None
        want_list = isinstance(given, list)
        same = [e for e in errors if e["loc"][:cut] == err["loc"][:cut] and len(e["loc"]) > cut]
        err = next((e for e in same if str(e["loc"][cut]).startswith("list[") == want_list), err)
    loc = tuple(p for p in err["loc"] if not _is_branch(p))
    where = ".".join(str(p) for p in loc)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 and cut is None else ""
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(_keys_at(_SpecIn, loc[:-1]))
        parent = ".".join(str(p) for p in loc[:-1]) or "the top level"
        return f"spec {source}: unknown key {loc[-1]!r} in {parent}; allowed: {allowed}{more}"
    if err["type"] == "missing":
        return f"spec {source}: {where} is required{more}"
    msg = _FRIENDLY.get(err["type"], err["msg"].removeprefix("Value error, "))
    got = err.get("input")
    shown = "" if err["type"].startswith("value_error") else f", got {type(got).__name__} {got!r:.60}"
    return f"spec {source}: {where + ': ' if where else ''}{msg}{shown}{more}"


def _compile(pattern: str, source: str, where: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise SpecError(f"spec {source}: bad regular expression in {where}: {pattern!r} ({exc})") from exc


def _facet(name: str, f: _FacetIn, source: str) -> FacetRule:
    return FacetRule(
        name=name,
        exclusive=f.exclusive,
        column=f.column,
        from_category_path=f.from_ == "category_path",
        split=f.split,
        pattern=_compile(f.pattern, source, f"facets.{name}.pattern") if f.pattern else None,
        rules=tuple((_compile(r.pattern, source, f"facets.{name}.rules"), r.value) for r in f.rules),
        value_map=dict(f.value_map),
        split_after=f.split_after,
        drop=tuple(_compile(d, source, f"facets.{name}.drop") for d in f.drop),
    )


def _category_column(c: _CategoryColumnIn, source: str) -> CategoryColumn:
    split = _compile(c.split_regex, source, "category_path.split_regex") if c.split_regex else re.compile(
        re.escape(c.split.strip()) if c.split.strip() else re.escape(c.split))  # fmt: skip
    drop = tuple(_compile(d, source, "category_path.drop") for d in c.drop)
    return CategoryColumn(column=c.column, split=split, unwrap=c.unwrap, drop=drop, max_depth=c.max_depth)


def _attribute_list(a: _AttributeListIn) -> AttributeList:
    keys = {}
    for name, sources in a.keys.items():
        for key in [sources] if isinstance(sources, str) else sources:
            keys[key.strip().casefold()] = name
    return AttributeList(a.column, a.format, a.pair_separator, a.key_separator, keys)


def build_spec(raw: Any, source: str = "<spec>") -> DatasetSpec:
    """A spec from its YAML mapping.

    Raises:
        SpecError: one line naming the first problem (an unknown key with the allowed ones, a wrong type, a
            missing key, a bad regular expression).
    """
    if not isinstance(raw, dict):
        raise SpecError(f"spec {source} must be a YAML mapping, got {type(raw).__name__}")
    try:
        s = _SpecIn.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_one_line(exc, raw, source)) from None
    columns = {k: v for k, v in s.columns.model_dump().items() if v}
    csv_opts = s.csv or _CsvIn()
    return DatasetSpec(
        name=s.name,
        format=s.format,
        locale=s.locale,
        columns=columns,
        facets={n: _facet(n, f, source) for n, f in s.facets.items()},
        category_path=tuple(s.category_path) if isinstance(s.category_path, list) else (),
        category_column=None if isinstance(s.category_path, list) else _category_column(s.category_path, source),
        attributes=tuple(s.attributes),
        null_values=frozenset(s.null_values),
        encoding=s.encoding,
        member=s.member,
        csv_delimiter=csv_opts.delimiter,
        overflow=csv_opts.overflow,
        overflow_column=csv_opts.overflow_column,
        delimited_separator=s.delimited.separator if s.delimited else None,
        delimited_fields=tuple(s.delimited.fields) if s.delimited else (),
        delimited_header=bool(s.delimited and s.delimited.header),
        description=s.description,
        source_path=source,
        data_file=s.data_file,
        encoder=s.encoder,
        product_id_hash=tuple(s.product_id_hash),
        attribute_list=_attribute_list(s.attribute_list) if s.attribute_list else None,
        split_fields=tuple(SplitField(f.column, f.separator, tuple(f.into)) for f in s.split_fields),
        text_template=tuple({"field": p.field, "max_chars": p.max_chars} for p in s.text),
    )
