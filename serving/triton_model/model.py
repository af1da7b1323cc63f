"""Triton Python-backend model for one tagger version (copied into ``<repo>/<model>/<N>/`` by serving.repository).

Per request: ``TEXT`` (BYTES [B, 1], UTF-8 product texts) -> fast tokenizer (``tokenizers``) -> ONNX Runtime
(CUDA provider on a GPU instance, CPU otherwise) -> fused per facet with the TF-IDF linear model when the
version is a hybrid (``tfidf.py``) -> ``labels.postprocess_scores`` (thresholds, exclusive facets,
hierarchy). All valid requests of a dynamic batch share one ONNX run; an invalid request gets its own error
response and the others are answered normally (exactly one response per request).

Outputs per item: ``TAGS`` (JSON list of {"slug","facet","score"[,"name"]}), ``SLUGS``/``FACETS`` (BYTES
[B, K]) and ``SCORES`` (FP32 [B, K]) padded with ""/0 to the longest item, ``MODEL_URI`` (``models:/name/N``).
Request parameters: ``top_k`` (int > 0), ``locale`` (adds the tag's name in that locale when the label map
has one), ``input`` (``text``, the default, or ``product``: each item is then a product as a JSON object,
``{"title", "brand", "description", "attributes"}``, and this version builds its text with the template it was
trained with). ``labels.py``/``tfidf.py``/``text.py`` are copies of ``pipeline/`` modules so this file needs no
``pipeline`` package (NumPy, tokenizers and onnxruntime only).
"""

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from labels import LabelMap, postprocess_scores  # noqa: E402  (the copies beside this file)
from text import build_text  # noqa: E402
from tfidf import TfidfScorer, served_scores  # noqa: E402

OUTPUTS = frozenset({"TAGS", "SLUGS", "SCORES", "FACETS", "MODEL_URI"})


def _error(msg: str):
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    err = pb_utils.TritonError(msg, code) if code is not None else pb_utils.TritonError(msg)
    return pb_utils.InferenceResponse(output_tensors=[], error=err)


class TritonPythonModel:
    def initialize(self, args):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        cfg = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()}
        vdir = Path(args["model_repository"]) / args["model_version"]
        meta = json.loads((vdir / "version.json").read_text(encoding="utf-8"))
        self.model_uri = meta["model_uri"]
        self.template = meta.get("text_template") or [{"field": "title", "max_chars": None}]
        self.max_batch = int(cfg.get("max_batch_size", 0)) or 1 << 30
        self.max_text_bytes = int(params.get("max_text_bytes", "4096"))
        self.chunk = int(params.get("onnx_batch", "8"))

        self.label_map = LabelMap.load(vdir / "label_map.json")
        self.thresholds = np.asarray(json.loads((vdir / "thresholds.json").read_text())["thresholds"], np.float32)
        self.tokenizer = Tokenizer.from_file(str(vdir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(int(meta.get("max_length", 64)))
        self.pad_id = int(meta.get("pad_id", 0))
        self.tfidf = TfidfScorer.load(vdir)  # None: encoder-only version

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No busy-waiting intra-op threads: they would steal the cores the gRPC front end and the stub need.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        threads = int(params.get("ort_threads", "0"))
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if args.get("model_instance_kind") == "GPU" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers = [
                ("CUDAExecutionProvider", {"device_id": int(args.get("model_instance_device_id", 0))}),
                "CPUExecutionProvider",
            ]
        self.session = ort.InferenceSession(str(vdir / meta.get("onnx_file", "model.onnx")), opts, providers=providers)
        self.logger = pb_utils.Logger
        self.logger.log_info(f"{self.model_uri} loaded on {self.session.get_providers()[0]}")

    # ---- request parsing -----------------------------------------------------------------------------
    def _parse(self, request):
        params = json.loads(request.parameters() or "{}")
        kind = params.get("input", "text")
        if kind not in ("text", "product"):
            raise ValueError(f"parameter input={kind!r} must be 'text' or 'product'")
        tensor = pb_utils.get_input_tensor_by_name(request, "TEXT")
        if tensor is None:
            raise ValueError("input TEXT is missing; send a BYTES tensor of shape [batch, 1]")
        raw = tensor.as_numpy().reshape(-1)
        if len(raw) == 0:
            raise ValueError("TEXT holds no items; send at least one product text")
        if len(raw) > self.max_batch:
            raise ValueError(f"batch of {len(raw)} texts is over the maximum of {self.max_batch}; split it")
        limit = self.max_text_bytes * (16 if kind == "product" else 1)  # a product's JSON carries its description
        texts = []
        for i, item in enumerate(raw):
            b = item if isinstance(item, bytes) else str(item).encode("utf-8")
            if len(b) > limit:
                raise ValueError(f"TEXT item {i} has {len(b)} bytes, over the limit of {limit}; shorten it")
            try:
                text = b.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"TEXT item {i} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
            if kind == "product":
                text = self._product_text(i, text)
            if not text.strip():
                raise ValueError(f"TEXT item {i} is empty; send a non-empty product title")
            texts.append(text)
        top_k = params.get("top_k")
        if top_k is not None:
            try:
                top_k = int(top_k)
            except (TypeError, ValueError):
                raise ValueError(f"parameter top_k={top_k!r} is not an integer") from None
            if top_k <= 0:
                raise ValueError(f"parameter top_k={top_k} must be a positive integer")
        locale = params.get("locale")
        if locale is not None and not isinstance(locale, str):
            raise ValueError(f"parameter locale={locale!r} must be a string such as 'en' or 'zh'")
        return texts, top_k, locale

    def _product_text(self, i: int, raw: str) -> str:
        """A product sent as JSON -> this version's model text (its training template)."""
        try:
            product = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"TEXT item {i} is not a product JSON object ({exc.msg} at column {exc.colno})") from None
        if not isinstance(product, dict) or not isinstance(product.get("title"), str) or not product["title"].strip():
            raise ValueError(f'TEXT item {i} is not a product with a title; send {{"title": "...", ...}}')
        if not isinstance(product.get("attributes") or {}, dict):
            raise ValueError(f"TEXT item {i}: attributes must be an object of name: value")
        return build_text(product, self.template)

    # ---- model -----------------------------------------------------------------------------------------
    def _logits(self, texts):
        encs = self.tokenizer.encode_batch(texts)
        order = np.argsort([len(e.ids) for e in encs], kind="stable")  # similar lengths -> less padding
        out = np.empty((len(texts), len(self.label_map)), np.float32)
        for s in range(0, len(order), self.chunk):
            idx = order[s : s + self.chunk]
            t = max(len(encs[i].ids) for i in idx)
            ids = np.full((len(idx), t), self.pad_id, np.int64)
            mask = np.zeros((len(idx), t), np.int64)
            for r, i in enumerate(idx):
                n = len(encs[i].ids)
                ids[r, :n] = encs[i].ids
                mask[r, :n] = 1
            out[idx] = self.session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
        return out

    def _response(self, tags, locale, wanted):
        """Only the outputs the request asked for are built (all of them when it named none)."""
        if locale:
            for item in tags:
                for t in item:
                    name = self.label_map.names.get(t["slug"], {}).get(locale)
                    if name:
                        t["name"] = name
        out = []
        if "TAGS" in wanted:
            as_json = [[json.dumps(item, ensure_ascii=False).encode("utf-8")] for item in tags]
            out.append(pb_utils.Tensor("TAGS", np.array(as_json, dtype=object)))
        if wanted & {"SLUGS", "SCORES", "FACETS"}:
            k = max(1, max(len(item) for item in tags))
            slugs = np.full((len(tags), k), b"", dtype=object)
            facets = np.full((len(tags), k), b"", dtype=object)
            scores = np.zeros((len(tags), k), np.float32)
            for b, item in enumerate(tags):
                for j, t in enumerate(item):
                    slugs[b, j], facets[b, j], scores[b, j] = t["slug"].encode(), t["facet"].encode(), t["score"]
            padded = {"SLUGS": slugs, "SCORES": scores, "FACETS": facets}
            out += [pb_utils.Tensor(n, padded[n]) for n in ("SLUGS", "SCORES", "FACETS") if n in wanted]
        if "MODEL_URI" in wanted:
            out.append(pb_utils.Tensor("MODEL_URI", np.array([[self.model_uri.encode()]] * len(tags), dtype=object)))
        return pb_utils.InferenceResponse(output_tensors=out)

    def execute(self, requests):
        responses = [None] * len(requests)
        texts, jobs = [], []
        wanted = [set(q.requested_output_names()) or OUTPUTS for q in requests]
        for r, request in enumerate(requests):
            try:
                items, top_k, locale = self._parse(request)
            except ValueError as exc:
                responses[r] = _error(str(exc))
                continue
            jobs.append((r, len(texts), len(items), top_k, locale))
            texts.extend(items)
        if texts:
            try:
                scores = served_scores(self._logits(texts), texts, self.label_map, self.tfidf)
            except Exception as exc:  # answer every request rather than crash the stub
                for r, *_ in jobs:
                    responses[r] = pb_utils.InferenceResponse(
                        output_tensors=[], error=pb_utils.TritonError(f"{self.model_uri}: inference failed: {exc}")
                    )
                return responses
            for r, start, n, top_k, locale in jobs:
                tags = postprocess_scores(scores[start : start + n], self.label_map, self.thresholds, top_k=top_k)
                responses[r] = self._response(tags, locale, wanted[r])
        return responses

    def finalize(self):
        self.session = None
