"""Client of the tagger served by Triton over gRPC.

gRPC contract (model ``settings.triton_model_name``, default ``product_tagger``; version = registry version)::

    input   TEXT       BYTES [B, 1]   UTF-8 product texts (title, optionally + description), 1 <= B <= 64
    params  top_k      int > 0        cap on predicted tags per item (ancestors of kept tags always added)
            locale     string         e.g. "en", "zh": adds "name" where the model's label map has one
    output  TAGS       BYTES [B, 1]   JSON per item: [{"slug": "color:black", "facet": "color", "score": 0.93}, ...]
                                      best first, thresholds/exclusive facets/hierarchy applied server-side
            SLUGS      BYTES [B, K]   the same slugs, padded with "" to the longest item of the request
            FACETS     BYTES [B, K]   facet of each slug, padded with ""
            SCORES     FP32  [B, K]   score of each slug, padded with 0
            MODEL_URI  BYTES [B, 1]   "models:/<registered name>/<N>" that answered
    errors  INVALID_ARG per request: empty text, text over 4096 bytes, invalid UTF-8, bad top_k/locale;
            batch over max_batch_size (64) is refused by Triton itself. The server stays up.

Raw use with ``tritonclient.grpc``::

    import json, numpy as np, tritonclient.grpc as g
    c = g.InferenceServerClient("127.0.0.1:8001")
    x = g.InferInput("TEXT", [2, 1], "BYTES")
    x.set_data_from_numpy(np.array([["Puma Men Grey T-shirt"], ["AHC黄金面霜"]], dtype=object))
    r = c.infer("product_tagger", [x], parameters={"top_k": 3, "locale": "en"})
    tags = [json.loads(t[0]) for t in r.as_numpy("TAGS")]

:class:`TaggerClient` wraps that: sync ``tag`` and asyncio ``atag``, client-side batching of large inputs,
per-call timeouts, retries with exponential back-off on UNAVAILABLE (tenacity), and optional enrichment of slugs with
the tag library's names in the caller's locale.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aiogrpc
from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from pipeline.core.services import get_engine
from pipeline.errors import ServingError

log = logging.getLogger(__name__)

OUTPUTS = ("TAGS", "MODEL_URI")


@dataclass(frozen=True)
class TagResult:
    tags: list[list[dict]]
    model_uris: list[str]  # per item: which models:/name/N answered


def _inputs(module, texts: Sequence[str | bytes]):
    arr = np.array([[t.encode("utf-8") if isinstance(t, str) else bytes(t)] for t in texts], dtype=object)
    x = module.InferInput("TEXT", list(arr.shape), "BYTES")
    x.set_data_from_numpy(arr)
    return [x], [module.InferRequestedOutput(n) for n in OUTPUTS]


def _params(top_k: int | None, locale: str | None) -> dict:
    p: dict = {}
    if top_k is not None:
        p["top_k"] = int(top_k)
    if locale:
        p["locale"] = str(locale)
    return p


def _product(p: dict) -> dict:
    """The fields a product text is built from, JSON-ready (None and empty values left out)."""
    out = {k: p.get(k) for k in ("title", "brand", "description") if p.get(k)}
    attrs = p.get("attributes") or {}
    if attrs:
        out["attributes"] = {str(k): str(v) for k, v in dict(attrs).items() if v not in (None, "")}
    return out


def _unavailable(exc: Exception) -> bool:
    status = getattr(exc, "status", lambda: None)()
    return "UNAVAILABLE" in str(status or "") or "UNAVAILABLE" in str(exc)


def _refused(exc: Exception) -> bool:
    """The server answered and said no to the input (INVALID_ARGUMENT): the same input will be refused again."""
    status = getattr(exc, "status", lambda: None)()
    return "INVALID_ARG" in str(status or "") or "INVALID_ARG" in str(exc)


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    sleep = state.next_action.sleep if state.next_action else 0.0
    log.warning("Triton unavailable (%s); retry %d in %.2f s", exc, state.attempt_number, sleep)


def tag_names_from_library(settings) -> dict[str, dict[str, str]]:
    """slug -> locale -> name, read from the tag library (tables ``tags`` + ``tag_names``)."""
    from pipeline.catalog.taglib import all_names

    with get_engine(settings).connect() as conn:
        return all_names(conn)


class TaggerClient:
    """Tag product texts through Triton. ``names``: slug -> locale -> name, used to add ``name`` fields."""

    def __init__(
        self,
        url: str = "127.0.0.1:8001",
        model_name: str = "product_tagger",
        *,
        model_version: str | int = "",
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_batch: int = 64,
        names: Mapping[str, Mapping[str, str]] | None = None,
    ):
        self.url, self.model_name, self.model_version = url, model_name, str(model_version or "")
        self.timeout, self.retries, self.backoff, self.max_batch = timeout, retries, backoff, max_batch
        self.names = names
        self._sync = None
        self._aio = None

    # ---- plumbing -------------------------------------------------------------------------------------
    def _client(self):
        if self._sync is None:
            self._sync = grpcclient.InferenceServerClient(self.url)
        return self._sync

    def _chunks(self, texts: Sequence[str | bytes]) -> list[Sequence[str | bytes]]:
        return [texts[i : i + self.max_batch] for i in range(0, len(texts), self.max_batch)]

    def _error(self, exc: Exception, n: int) -> ServingError:
        return ServingError(
            f"tagging {n} texts with {self.model_name} at {self.url} failed: {exc}"
            + ("; is the Triton server running (`tagger serve`)?" if _unavailable(exc) else ""),
            refused=_refused(exc),
        )

    def _call_kwargs(self, outputs, params: dict) -> dict:
        return {
            "model_version": self.model_version,
            "outputs": outputs,
            "parameters": params or None,
            "client_timeout": self.timeout,
        }

    def _retry_policy(self, kind: type[Retrying] | type[AsyncRetrying] = Retrying):
        """UNAVAILABLE is tried again, up to ``retries`` more times, after ``backoff * 2**k`` s (k = 0, 1, ...);
        any other error, or the last try's, is raised as it came (the caller wraps it in ServingError)."""
        return kind(
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_exponential(multiplier=self.backoff, exp_base=2),
            retry=retry_if_exception(_unavailable),
            before_sleep=_log_retry,
            reraise=True,
        )

    def _decode(self, result) -> TagResult:
        tags = [json.loads(t[0]) for t in result.as_numpy("TAGS")]
        uris = [u[0].decode() for u in result.as_numpy("MODEL_URI")]
        return TagResult(tags, uris)

    def _enrich(self, res: TagResult, locale: str | None) -> TagResult:
        if self.names and locale:
            for item in res.tags:
                for t in item:
                    name = self.names.get(t["slug"], {}).get(locale)
                    if name:
                        t["name"] = name
        return res

    @staticmethod
    def _merge(parts: list[TagResult]) -> TagResult:
        return TagResult([t for p in parts for t in p.tags], [u for p in parts for u in p.model_uris])

    # ---- sync -----------------------------------------------------------------------------------------
    def _infer_chunk(self, chunk, params) -> TagResult:
        inputs, outputs = _inputs(grpcclient, chunk)

        def once() -> TagResult:
            r = self._client().infer(self.model_name, inputs, **self._call_kwargs(outputs, params))
            return self._decode(r)

        try:
            return self._retry_policy(Retrying)(once)
        except Exception as exc:
            raise self._error(exc, len(chunk)) from exc

    def infer(self, texts: Sequence[str | bytes], top_k: int | None = None, locale: str | None = None) -> TagResult:
        """Tags and the answering ``models:/`` URI per item; inputs over ``max_batch`` go as several requests."""
        params = _params(top_k, locale)
        parts = [self._infer_chunk(c, params) for c in self._chunks(texts)]
        return self._enrich(self._merge(parts), locale)

    def infer_products(
        self, products: Sequence[dict], top_k: int | None = None, locale: str | None = None
    ) -> TagResult:
        """:meth:`infer` for products as mappings (``title`` required; ``brand``, ``description``, ``attributes``
        optional): sent as JSON with ``input=product``, so the serving version builds each model text with the
        template it was trained with (``pipeline.catalog.text``), whatever the catalog's template is."""
        params = {**_params(top_k, locale), "input": "product"}
        items = [json.dumps(_product(p), ensure_ascii=False) for p in products]
        parts = [self._infer_chunk(c, params) for c in self._chunks(items)]
        return self._enrich(self._merge(parts), locale)

    def tag(
        self, texts: Sequence[str | bytes], top_k: int | None = None, locale: str | None = None
    ) -> list[list[dict]]:
        """Per text a list of ``{"slug", "facet", "score"[, "name"]}``, best first.

        Raises:
            ServingError: the server refused a text (message says which and why) or is unreachable.
        """
        return self.infer(texts, top_k, locale).tags

    # ---- asyncio --------------------------------------------------------------------------------------
    async def _ainfer_chunk(self, chunk, params) -> TagResult:
        if self._aio is None:
            self._aio = aiogrpc.InferenceServerClient(self.url)
        inputs, outputs = _inputs(aiogrpc, chunk)

        async def once() -> TagResult:
            r = await self._aio.infer(self.model_name, inputs, **self._call_kwargs(outputs, params))
            return self._decode(r)

        try:
            return await self._retry_policy(AsyncRetrying)(once)
        except Exception as exc:
            raise self._error(exc, len(chunk)) from exc

    async def ainfer(self, texts, top_k: int | None = None, locale: str | None = None) -> TagResult:
        params = _params(top_k, locale)
        parts = await asyncio.gather(*(self._ainfer_chunk(c, params) for c in self._chunks(texts)))
        return self._enrich(self._merge(list(parts)), locale)

    async def atag(self, texts, top_k: int | None = None, locale: str | None = None) -> list[list[dict]]:
        """asyncio twin of :meth:`tag`; chunks of a large input run concurrently."""
        return (await self.ainfer(texts, top_k, locale)).tags

    async def aclose(self) -> None:
        if self._aio is not None:
            await self._aio.close()
            self._aio = None

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    def __enter__(self) -> TaggerClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
