"""The model's input text, built from a product by a template: the same code in training, batch tagging and Triton.

A template is a list of parts, each ``{"field": F, "max_chars": N or None}``; F is ``title``, ``brand``,
``description``, ``attributes`` (every attribute as ``name: value``) or ``attributes.<name>`` (one attribute).
Non-empty parts are joined with `` | `` in template order; a part longer than ``max_chars`` is cut.

Standard library only: ``serving.repository`` copies this file beside the Triton model (like ``labels.py``), so
a served version builds a product's text exactly as its training did (the template rides in the bundle).
"""

from __future__ import annotations

FIELDS = ("title", "brand", "description", "attributes")
SEPARATOR = " | "
DESCRIPTION_CHARS = 300  # the default cap of the description part (a few sentences; titles carry most signal)


def part(field: str, max_chars: int | None = None) -> dict:
    return {"field": field, "max_chars": max_chars}


def check_field(field: str) -> str:
    """``field`` if a template may name it, else ValueError naming the allowed ones."""
    if field in FIELDS or (field.startswith("attributes.") and len(field) > len("attributes.")):
        return field
    raise ValueError(f"text field {field!r} is not one of {', '.join(FIELDS)} or attributes.<name>")


def default_template(has_brand: bool, has_attributes: bool, has_description: bool) -> list[dict]:
    """Title first (truncation keeps it), then brand, attributes and a capped description when the catalog has them."""
    parts = [part("title")]
    parts += [part("brand")] if has_brand else []
    parts += [part("attributes")] if has_attributes else []
    parts += [part("description", DESCRIPTION_CHARS)] if has_description else []
    return parts


def template_for(spec) -> list[dict]:
    """A dataset spec's ``text:`` template, else the default: title, brand, attributes, capped description (each
    when the spec maps it). ``spec`` is a :class:`pipeline.catalog.spec.DatasetSpec` (not imported: this file
    travels alone to Triton)."""
    if spec.text_template:
        return [dict(p) for p in spec.text_template]
    return default_template("brand" in spec.columns, bool(spec.attributes), "description" in spec.columns)


def from_fields(fields: list[str]) -> list[dict]:
    """The template of a bundle that recorded only its field names (before templates): the description capped."""
    return [part(f, DESCRIPTION_CHARS if f == "description" else None) for f in fields]


def _cut(text: str, cap: int | None) -> str:
    return text[:cap].rstrip() if cap else text


def build_text(product: dict, template: list[dict]) -> str:
    """``title | brand | name: value | description`` as ``template`` says (empty parts skipped)."""
    out = []
    attrs = product.get("attributes") or {}
    for p in template:
        field, cap = p["field"], p.get("max_chars")
        if field == "attributes":
            out += [_cut(f"{k}: {v}", cap) for k, v in attrs.items() if v not in (None, "")]
        elif field.startswith("attributes."):
            name = field.split(".", 1)[1]
            value = attrs.get(name)
            if value not in (None, ""):
                out.append(_cut(f"{name}: {value}", cap))
        else:
            value = product.get(field)
            if isinstance(value, str) and value.strip():
                out.append(_cut(value.strip(), cap))
    return SEPARATOR.join(out)


def template_of(meta: dict) -> list[dict]:
    """The template a bundle (its ``bundle.json`` meta) builds texts with: its own, or rebuilt from the field names
    a bundle made before templates recorded (``text_fields``)."""
    if isinstance(meta.get("text_template"), list):
        return meta["text_template"]
    return from_fields(meta.get("text_fields") or ["title"])


def template_fields(template: list[dict]) -> list[str]:
    return [p["field"] for p in template]
