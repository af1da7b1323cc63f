"""Real catalog titles and golden examples: parity texts for the export, smoke test for a deploy.

Golden examples are ``[{"text": ..., "expected": [slug, ...]}]``. A bundle may ship its own ``golden.json``
(curated); otherwise they are the bundle's PyTorch predictions on real titles, so the smoke test checks that
the served graph + tokenizer + post-processing reproduce the registered model.
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from pipeline.errors import DeployError

log = logging.getLogger(__name__)


@lru_cache(maxsize=2)
def _titles(data_dir: str) -> tuple[str, ...]:
    base = Path(data_dir)
    out: list[str] = []
    zpath = base / "myntra_fashion_styles" / "styles.csv.zip"
    if zpath.exists():
        with zipfile.ZipFile(zpath) as zf:
            lines = zf.read("styles.csv").decode("utf-8").splitlines()[1:4001]
        out += [ln.split(",", 9)[9] for ln in lines if ln.count(",") >= 9]
    zh = base / "product1m_zh" / "product1m_test_ossurl_v2.txt"
    if zh.exists():
        with zh.open(encoding="utf-8") as fh:
            for i, ln in enumerate(fh):
                if i >= 1000:
                    break
                parts = ln.split("#####")
                if len(parts) > 1 and parts[1].strip():
                    out.append(parts[1].strip())
    return tuple(t for t in out if t.strip())


def sample_titles(n: int, data_dir: str | Path | None = None, *, zh_share: float = 0.25) -> list[str]:
    """``n`` real product titles (Myntra en + Product1M zh), deterministic; raises if no catalog is found."""
    if data_dir is None:
        from pipeline.settings import _default_shared_data

        data_dir = _default_shared_data()
    titles = _titles(str(data_dir))
    zh = [t for t in titles if not t.isascii()]
    en = [t for t in titles if t.isascii()]
    if not titles:
        raise DeployError(f"no real catalog titles under {data_dir}; set TAGGER_DATA_DIR to the shared data")
    n_zh = min(len(zh), int(n * zh_share))
    picked = en[: n - n_zh] + zh[:n_zh]
    while len(picked) < n:  # cycle for large n
        picked += titles[: n - len(picked)]
    return picked


CONFIDENT = 0.8


def golden_from_bundle(bundle_path: str | Path, n: int = 16) -> list[dict]:
    """The bundle's ``golden.json`` if it has one, else its own predictions on ``n`` real titles."""
    path = Path(bundle_path) / "golden.json"
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    from pipeline.bundle import load_bundle

    texts = sample_titles(n)
    preds = load_bundle(bundle_path).predict(texts)
    # Only confident tags: the served graph may be int8 (logits within ~0.1 of PyTorch), which can flip a
    # borderline tag but not one the model is sure of.
    golden = [
        {"text": t, "expected": [p["slug"] for p in pred if p["score"] >= CONFIDENT]}
        for t, pred in zip(texts, preds, strict=True)
    ]
    return [g for g in golden if g["expected"]]


@dataclass(frozen=True)
class SmokeResult:
    version: int
    examples: int
    failures: list[dict] = field(default_factory=list)
    model_uri: str = ""

    @property
    def passed(self) -> bool:
        return not self.failures


def smoke_test(grpc_url: str, model_name: str, version: int, golden: list[dict], timeout: float = 30.0) -> SmokeResult:
    """Send the golden texts to exactly ``version``; every expected slug must come back for every text."""
    from serving.client import TaggerClient

    if not golden:
        return SmokeResult(version, 0)
    with TaggerClient(grpc_url, model_name, model_version=version, timeout=timeout, retries=1) as client:
        res = client.infer([g["text"] for g in golden])
    failures = []
    for g, got in zip(golden, res.tags, strict=True):
        missing = sorted(set(g["expected"]) - {t["slug"] for t in got})
        if missing:
            failures.append({"text": g["text"], "missing": missing, "got": [t["slug"] for t in got]})
    uri = res.model_uris[0] if res.model_uris else ""
    if not uri.endswith(f"/{version}"):
        failures.append({"text": "(model uri)", "missing": [f".../{version}"], "got": [uri]})
    return SmokeResult(version, len(golden), failures, uri)
