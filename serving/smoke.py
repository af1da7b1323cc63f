"""Smoke test of a deploy, and the held-out texts a bundle carries for it and for the export's parity check.

Golden examples are ``[{"text": ..., "expected": [slug, ...]}]``: training writes them into the bundle
(``golden.json``: held-out texts and the tags the tagger as served is sure of), so the smoke test checks that the
served graph + tokenizer + post-processing reproduce the registered model for any catalog, knowing only the bundle.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import DeployError
from pipeline.training.bundle import CONFIDENT, GOLDEN_FILE, SMOKE_EXAMPLES, TEST_SPLIT_FILE, load_bundle
from serving.client import TaggerClient

log = logging.getLogger(__name__)


def bundle_texts(bundle_path: str | Path, n: int) -> list[str]:
    """``n`` held-out texts the bundle carries, cycled when it has fewer: its frozen test split
    (``test_split.jsonl``), else the texts of its smoke examples (``golden.json``).

    Raises:
        DeployError: the bundle carries neither (it was not written by ``pipeline.training.train``).
    """
    split, golden = Path(bundle_path) / TEST_SPLIT_FILE, Path(bundle_path) / GOLDEN_FILE
    if split.exists():
        with split.open(encoding="utf-8") as fh:
            texts = [json.loads(line)["text"] for line in fh if line.strip()]
    elif golden.exists():
        texts = [g["text"] for g in json.loads(golden.read_text(encoding="utf-8"))]
    else:
        texts = []
    if not texts:
        raise DeployError(
            f"bundle {bundle_path} carries no held-out texts ({TEST_SPLIT_FILE} or {GOLDEN_FILE}): retrain it with "
            "`tagger train`, or pass parity texts"
        )
    return [texts[i % len(texts)] for i in range(n)]


def golden_from_bundle(bundle_path: str | Path, n: int = SMOKE_EXAMPLES) -> list[dict]:
    """The bundle's smoke examples (``golden.json``, written at training from held-out texts).

    A bundle without one (written before training stored them) gets the same thing built here: its own
    confident predictions on its held-out texts.
    """
    path = Path(bundle_path) / GOLDEN_FILE
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))[:n]
    texts = list(dict.fromkeys(bundle_texts(bundle_path, n)))
    preds = load_bundle(bundle_path).predict(texts)
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
