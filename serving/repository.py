"""The Triton model repository, generated from tagger bundles. Version numbers = registry version numbers.

::

    <repo>/<model>/config.pbtxt         python backend, dynamic batching, version policy (rewritten by deploy)
    <repo>/<model>/<N>/model.py         serving/triton_model/model.py
    <repo>/<model>/<N>/labels.py        copy of pipeline/training/labels.py (the stub needs no `pipeline` package)
    <repo>/<model>/<N>/tfidf.py         copy of pipeline/training/tfidf.py, with tfidf.json + tfidf.npz when the bundle
                                        is a hybrid (encoder scores fused with the TF-IDF linear model's)
    <repo>/<model>/<N>/text.py          copy of pipeline/catalog/text.py: a product sent as JSON becomes the
                                        model text by the version's own template (version.json text_template)
    <repo>/<model>/<N>/model.onnx       exported + optimised + parity-checked (serving.export)
    <repo>/<model>/<N>/tokenizer.json   fast tokenizer of the bundle's encoder
    <repo>/<model>/<N>/label_map.json, thresholds.json, golden.json, model_card.md
    <repo>/<model>/<N>/version.json     model_uri (models:/<name>/<N>), text template, bundle meta, export numbers

A version folder is written under a temporary name and renamed into place, so Triton never sees half of one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import pipeline.catalog.text
import pipeline.training.labels
import pipeline.training.tfidf
from pipeline.errors import BundleError
from serving.export import export_onnx
from serving.smoke import bundle_texts, golden_from_bundle

log = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).with_name("triton_model")
MAX_BATCH_SIZE = 64
MAX_TEXT_BYTES = 4096
# How long Triton holds a batch open for more requests. 500 us, measured with bench_serving's cells on 2 cores:
# 2000 us idled the instances between 1-item requests (320 items/s at concurrency 8, against 365 at 500 us).
QUEUE_DELAY_US = 500
# Items per ONNX Runtime run inside model.py (a dynamic batch of up to 64 is cut into runs of this size, sorted
# by length). Short runs keep the activations in the core's L2: int8 MiniLM on real titles, one thread, took
# 1.0-1.1 ms/item in runs of 8, 1.2 in runs of 16 and 3.2 in runs of 64.
ONNX_BATCH = 8


def labels_source() -> Path:

    return Path(pipeline.training.labels.__file__)


def text_source() -> Path:

    return Path(pipeline.catalog.text.__file__)


def tfidf_source() -> Path:

    return Path(pipeline.training.tfidf.__file__)


def frozen_test_split(bundle_path: Path, limit: int = 1000) -> tuple[list[str] | None, list[list[str]] | None]:
    """(texts, tag slugs) of the bundle's frozen test split (``test_split.jsonl``), or (None, None)."""
    path = Path(bundle_path) / "test_split.jsonl"
    if not path.exists():
        return None, None
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:limit] if line.strip()]
    # served answers include the ancestors of a predicted leaf: score against the truth with its ancestors too
    ancestors = json.loads((Path(bundle_path) / "label_map.json").read_text(encoding="utf-8")).get("ancestors", {})
    tags = [list(dict.fromkeys([*r["tags"], *(a for t in r["tags"] for a in ancestors.get(t, []))])) for r in rows]
    return [r["text"] for r in rows], tags


def build_version(
    bundle_path: str | Path,
    repo_dir: str | Path,
    model_name: str,
    version: int,
    model_uri: str,
    *,
    parity_texts: list[str] | None = None,
    golden: list[dict] | None = None,
    quantize: bool = False,
    gpu: bool | None = None,
) -> Path:
    """Write ``<repo>/<model>/<version>/`` from a bundle; write ``config.pbtxt`` too if there is none yet.

    ``golden``: [{"text", "expected": [slugs]}] smoke examples stored with the version (default: the bundle's
    ``golden.json``, written at training from held-out texts).

    Raises:
        BundleError: the bundle is incomplete or the ONNX export fails parity.
    """

    bundle_path, model_dir = Path(bundle_path), Path(repo_dir) / model_name
    final = model_dir / str(int(version))
    tmp = model_dir / f".{int(version)}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        texts = parity_texts or bundle_texts(bundle_path, 32)
        test_texts, test_tags = frozen_test_split(bundle_path) if quantize else (None, None)
        res = export_onnx(
            bundle_path, tmp / "onnx", parity_texts=texts, quantize=quantize, test_texts=test_texts, test_tags=test_tags
        )
        onnx_file = Path(res.onnx_path).name
        (tmp / "onnx" / onnx_file).replace(tmp / onnx_file)
        shutil.rmtree(tmp / "onnx")

        enc = bundle_path / "encoder"
        if not (enc / "tokenizer.json").exists():
            raise BundleError(f"bundle {bundle_path} has no fast tokenizer (encoder/tokenizer.json); re-save it")
        shutil.copy2(enc / "tokenizer.json", tmp / "tokenizer.json")
        for name in ("label_map.json", "thresholds.json", "model_card.md", "metrics.json", "tfidf.json", "tfidf.npz"):
            if (bundle_path / name).exists():
                shutil.copy2(bundle_path / name, tmp / name)
        _card_section(tmp / "model_card.md", model_uri, res)
        shutil.copy2(TEMPLATE_DIR / "model.py", tmp / "model.py")
        shutil.copy2(labels_source(), tmp / "labels.py")
        shutil.copy2(tfidf_source(), tmp / "tfidf.py")
        shutil.copy2(text_source(), tmp / "text.py")

        meta = json.loads((bundle_path / "bundle.json").read_text())
        (tmp / "golden.json").write_text(
            json.dumps(golden if golden is not None else golden_from_bundle(bundle_path), ensure_ascii=False, indent=1)
        )
        (tmp / "version.json").write_text(
            json.dumps(
                {
                    "model_uri": model_uri,
                    "version": int(version),
                    "onnx_file": onnx_file,
                    "max_length": int(meta.get("max_length", 64)),
                    "pad_id": _pad_id(enc),
                    "text_template": pipeline.catalog.text.template_of(meta),
                    "bundle": {k: v for k, v in meta.items() if isinstance(v, str | int | float | bool)},
                    "export": {k: v for k, v in asdict(res).items() if not k.endswith("_path")},
                },
                indent=1,
                ensure_ascii=False,
            )
        )
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not (model_dir / "config.pbtxt").exists():
        write_config(repo_dir, model_name, [int(version)], registered_name=model_uri.split("/")[1], gpu=gpu)
    log.info("wrote %s (%s, %s)", final, model_uri, onnx_file)
    return final


def _card_section(card: Path, model_uri: str, res) -> None:
    """Append the export numbers (parity, int8 decision) to the served copy of the model card."""
    lines = [
        "",
        f"## Serving export ({model_uri})",
        "",
        f"- ONNX opset {res.opset}, transformer graph optimisation: {'on' if res.optimized else 'off'}",
        f"- parity with PyTorch: max |logit diff| {res.parity_max_abs_diff:.2e} on {res.parity_texts} real titles",
    ]
    if res.int8_path:
        f1 = (f"micro-F1 {res.f1_int8:.4f} vs fp32 {res.f1_fp32:.4f} on the frozen test split"
              if res.f1_int8 is not None else "not checked on the frozen test split")  # fmt: skip
        lines.append(f"- int8 dynamic quantisation: max |logit diff| {res.int8_max_abs_diff:.2e}; {f1}; "
                     f"{'served' if res.int8_kept else 'not served'}")  # fmt: skip
    text = card.read_text(encoding="utf-8") if card.exists() else "# Product tagger\n"
    card.write_text(text.rstrip("\n") + "\n" + "\n".join(lines) + "\n", encoding="utf-8")


def _pad_id(encoder_dir: Path) -> int:
    tok = json.loads((encoder_dir / "tokenizer.json").read_text(encoding="utf-8"))
    pad = (tok.get("padding") or {}).get("pad_id")
    if pad is not None:
        return int(pad)
    cfg = json.loads((encoder_dir / "config.json").read_text()) if (encoder_dir / "config.json").exists() else {}
    return int(cfg.get("pad_token_id") or 0)


def versions_on_disk(repo_dir: str | Path, model_name: str) -> list[int]:
    d = Path(repo_dir) / model_name
    return sorted(int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit()) if d.exists() else []


def cpu_layout(cores: int | None = None) -> tuple[int, int]:
    """(model instances, ONNX Runtime threads each) for KIND_CPU: one instance per core up to 4, the cores
    shared between them. Several single-threaded instances beat one multi-threaded one on short titles: ORT's
    thread pool cannot split a small matmul well, while separate instances run separate batches side by side
    (bench_serving on 2 cores: 16-item requests at concurrency 32, 523 vs 332 items/s)."""
    cores = max(1, cores or os.cpu_count() or 1)
    instances = min(4, cores)
    return instances, max(1, cores // instances)


def config_text(
    model_name: str,
    versions: list[int],
    *,
    registered_name: str,
    gpu: bool = False,
    instances: int | None = None,
    max_batch_size: int = MAX_BATCH_SIZE,
    max_text_bytes: int = MAX_TEXT_BYTES,
    ort_threads: int | None = None,
    onnx_batch: int = ONNX_BATCH,
) -> str:
    """config.pbtxt: dynamic batching, ``specific`` version policy (the versions Triton keeps loaded).

    ``instances``/``ort_threads`` None: :func:`cpu_layout` on CPU; one instance with ORT's default on a GPU.
    """
    auto_instances, auto_threads = (1, 0) if gpu else cpu_layout()
    instances = auto_instances if instances is None else instances
    ort_threads = auto_threads if ort_threads is None else ort_threads
    vs = ", ".join(str(v) for v in sorted(set(versions)))
    params = {
        "registered_model": registered_name,
        "max_text_bytes": str(max_text_bytes),
        "ort_threads": str(ort_threads),
        "onnx_batch": str(onnx_batch),
        **{f"model_uri.{v}": f"models:/{registered_name}/{v}" for v in sorted(set(versions))},
    }
    param_txt = "\n".join(f'  {{ key: "{k}" value: {{ string_value: "{v}" }} }},' for k, v in params.items())
    out = lambda n, t, d: f'  {{ name: "{n}" data_type: {t} dims: [ {d} ] }}'  # noqa: E731
    return f"""# Generated by serving.repository; deploy rewrites version_policy. Do not edit by hand.
name: "{model_name}"
backend: "python"
max_batch_size: {max_batch_size}
version_policy: {{ specific: {{ versions: [ {vs} ] }} }}
input [
  {{ name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] }}
]
output [
{out("TAGS", "TYPE_STRING", 1)},
{out("SLUGS", "TYPE_STRING", -1)},
{out("SCORES", "TYPE_FP32", -1)},
{out("FACETS", "TYPE_STRING", -1)},
{out("MODEL_URI", "TYPE_STRING", 1)}
]
instance_group [ {{ count: {instances} kind: {"KIND_GPU" if gpu else "KIND_CPU"} }} ]
dynamic_batching {{ max_queue_delay_microseconds: {QUEUE_DELAY_US} }}
parameters [
{param_txt.rstrip(",")}
]
"""


def write_config(
    repo_dir: str | Path, model_name: str, versions: list[int], *, gpu: bool | None = None, **kwargs
) -> Path:
    """Atomically (re)write ``config.pbtxt`` so that ``versions`` are the ones loaded on the next ``load``.

    ``gpu=None`` keeps the instance kind of the existing config (KIND_CPU for a new one).
    """
    path = Path(repo_dir) / model_name / "config.pbtxt"
    if gpu is None:
        gpu = path.exists() and "KIND_GPU" in path.read_text()
    kwargs["gpu"] = gpu
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pbtxt.tmp")
    tmp.write_text(config_text(model_name, versions, **kwargs))
    tmp.replace(path)
    return path


def remove_version(repo_dir: str | Path, model_name: str, version: int) -> None:
    shutil.rmtree(Path(repo_dir) / model_name / str(int(version)), ignore_errors=True)
