"""Explanations for reviewers: a registry version's bundle (the champion by default), loaded once, explains a
product's tags as that version reads the product (its own text template). See
:mod:`pipeline.evaluation.explain` for the method and its cost."""

from __future__ import annotations

import threading
from pathlib import Path

from pipeline.catalog.text import build_text, template_of
from pipeline.errors import ReviewError
from pipeline.settings import Settings

DEFAULT_STEPS = 16  # pipeline.evaluation.explain's (not imported here: it loads torch, a refusal should not wait)


def resolve_bundle(settings: Settings, *, bundle: str | Path | None = None, version: int | None = None) -> Path:
    """A bundle folder: ``bundle`` as given, else registry ``version``, else the champion's.

    Raises:
        ReviewError: no such folder, or no version given and no champion to fall back on.
    """
    from pipeline.registry import CHAMPION, bundle_for_version, get_alias

    if bundle is not None:
        path = Path(bundle)
        if not (path / "bundle.json").exists():
            raise ReviewError(f"{path} is not a model bundle (no bundle.json)")
        return path
    if version is None:
        version = get_alias(settings, CHAMPION)
        if version is None:
            raise ReviewError(
                f"no champion of {settings.registered_model_name} to explain with: name a --bundle or --version"
            )
    return bundle_for_version(settings, int(version))


class Explainer:
    """Loads each bundle once (a review page explains many items with the same version); thread-safe."""

    def __init__(self, settings: Settings, steps: int = DEFAULT_STEPS, bundle: str | Path | None = None):
        self.settings, self.steps = settings, steps
        self.bundle = bundle  # explain every item with this bundle instead of the item's version or the champion
        self._bundles: dict[str, object] = {}
        self._lock = threading.Lock()

    def _load(self, path: Path):
        from pipeline.training.bundle import load_bundle

        key = str(path.resolve())
        with self._lock:
            if key not in self._bundles:
                self._bundles[key] = load_bundle(path)
            return self._bundles[key]

    def text(self, text: str, *, bundle=None, version: int | None = None, slugs: list[str] | None = None) -> dict:
        """``text`` read as a product title."""
        return self.product({"title": text}, bundle=bundle, version=version, slugs=slugs)

    def product(self, product: dict, *, bundle=None, version: int | None = None, slugs=None) -> dict:
        """The bundle's predicted tags for ``product`` (plus ``slugs``), each with the words that drove it."""
        bundle = bundle or self.bundle
        path = resolve_bundle(self.settings, bundle=bundle, version=None if bundle else version)
        loaded = self._load(path)
        text = build_text(product, template_of(loaded.meta))
        from pipeline.evaluation.explain import explain

        with self._lock:  # one explanation at a time: Captum hooks the shared model's embedding layer
            out = explain(loaded, text, also=slugs, steps=self.steps)
        out["bundle"] = str(path)
        out["model_version"] = None if bundle else version
        return out
