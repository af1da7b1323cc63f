"""Dataset specs: YAML files that map a source catalog's columns onto the catalog contract.

A spec is looked up by name among the specs shipped in ``pipeline/catalog/specs/`` or given as a path to a YAML file,
so a shop can bring its own catalog without code.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pipeline.catalog.spec_model import AttributeList, DatasetSpec, FacetRule  # noqa: F401  (re-exported)
from pipeline.errors import SpecError


def available_specs() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("pipeline.catalog.specs").iterdir() if p.name.endswith(".yaml"))


def load_spec(name_or_path: str | Path) -> DatasetSpec:
    """Load a shipped spec by name (``myntra``) or any spec YAML by path.

    Raises:
        SpecError: unknown name, unreadable YAML, or a spec that breaks the schema (one line naming the key).
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
        raise SpecError(f"spec {source} is not valid YAML: {' '.join(str(exc).split())}") from exc
    return parse_spec(raw, source)


def parse_spec(raw: Any, source: str = "<spec>") -> DatasetSpec:
    """A spec from its YAML mapping, checked by the schema (:mod:`pipeline.catalog.schema`, pydantic; imported
    here so that the training path, which only reads :class:`DatasetSpec`, needs no pydantic).

    Raises:
        SpecError: one line naming the first problem (an unknown key with the allowed ones, a wrong type, a
            missing key, a bad regular expression).
    """
    from pipeline.catalog.schema import build_spec

    return build_spec(raw, source)


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
