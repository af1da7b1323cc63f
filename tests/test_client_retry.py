"""TaggerClient's retries against a real gRPC server (no Triton): a stand-in for Triton's ``ModelInfer`` on
127.0.0.1 that answers UNAVAILABLE (or another status) a given number of times, then a proper response."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from concurrent import futures

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2
from tritonclient.utils import serialize_byte_tensor

from pipeline.errors import ServingError
from serving.client import TaggerClient

pytestmark = pytest.mark.unit

TAGS = [{"slug": "color:black", "facet": "color", "score": 0.9}]
URI = "models:/catalog-tagger/7"


class FakeTriton:
    """``inference.GRPCInferenceService/ModelInfer`` that fails ``failures`` times with ``code``, then answers."""

    def __init__(self, failures: int, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE):
        self.failures, self.code, self.calls = failures, code, 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        handler = grpc.unary_unary_rpc_method_handler(
            self._infer,
            request_deserializer=service_pb2.ModelInferRequest.FromString,
            response_serializer=service_pb2.ModelInferResponse.SerializeToString,
        )
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {"ModelInfer": handler}),)
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")  # a free port chosen by the OS

    def _infer(self, request, context):
        self.calls += 1
        if self.calls <= self.failures:
            context.abort(self.code, f"fake failure {self.calls}")
        n = request.inputs[0].shape[0]
        resp = service_pb2.ModelInferResponse(model_name=request.model_name, id=request.id)
        for name, value in (("TAGS", json.dumps(TAGS)), ("MODEL_URI", URI)):
            out = resp.outputs.add(name=name, datatype="BYTES")
            out.shape.extend([n, 1])
            resp.raw_output_contents.append(serialize_byte_tensor(np.array([[value]] * n, dtype=object)).item())
        return resp

    def __enter__(self) -> FakeTriton:
        self.server.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop(grace=None)


def _delays(caplog) -> list[float]:
    return [float(m) for r in caplog.records for m in re.findall(r"retry \d+ in ([\d.]+) s", r.getMessage())]


def test_unavailable_is_retried_with_exponential_backoff_then_answers(caplog):
    caplog.set_level(logging.WARNING, logger="serving.client")
    with FakeTriton(failures=2) as srv, TaggerClient(f"127.0.0.1:{srv.port}", retries=3, backoff=0.05) as c:
        t0 = time.monotonic()
        res = c.infer(["Puma Men Grey T-shirt", "AHC face cream"])
        elapsed = time.monotonic() - t0
    assert srv.calls == 3  # two UNAVAILABLE, then the answer
    assert res.tags == [TAGS, TAGS] and res.model_uris == [URI, URI]
    assert _delays(caplog) == [0.05, 0.10]  # backoff * 2**k before retry k+1
    assert elapsed >= 0.15


def test_unavailable_every_time_gives_up_after_retries_plus_one_attempts(caplog):
    caplog.set_level(logging.WARNING, logger="serving.client")
    with (
        FakeTriton(failures=99) as srv,
        TaggerClient(f"127.0.0.1:{srv.port}", retries=2, backoff=0.01) as c,
        pytest.raises(ServingError) as err,
    ):
        c.tag(["Puma Men Grey T-shirt"])
    assert srv.calls == 3
    assert _delays(caplog) == [0.01, 0.02]
    msg = str(err.value)
    assert msg.startswith(f"tagging 1 texts with product_tagger at 127.0.0.1:{srv.port} failed: ")
    assert "fake failure 3" in msg  # the last attempt's error
    assert msg.endswith("; is the Triton server running (`tagger serve`)?")
    assert "UNAVAILABLE" in str(err.value.__cause__.status())


def test_other_errors_are_not_retried():
    with (
        FakeTriton(failures=99, code=grpc.StatusCode.INVALID_ARGUMENT) as srv,
        TaggerClient(f"127.0.0.1:{srv.port}", retries=3, backoff=0.01) as c,
        pytest.raises(ServingError) as err,
    ):
        c.tag(["x"])
    assert srv.calls == 1
    assert "fake failure 1" in str(err.value) and "is the Triton server running" not in str(err.value)


def test_retries_zero_tries_once():
    with (
        FakeTriton(failures=1) as srv,
        TaggerClient(f"127.0.0.1:{srv.port}", retries=0, backoff=0.01) as c,
        pytest.raises(ServingError, match="is the Triton server running"),
    ):
        c.tag(["x"])
    assert srv.calls == 1


def test_async_path_retries_the_same_way(caplog):
    caplog.set_level(logging.WARNING, logger="serving.client")

    async def go(url: str):
        c = TaggerClient(url, retries=2, backoff=0.02)
        try:
            return await c.atag(["Puma Men Grey T-shirt"])
        finally:
            await c.aclose()

    with FakeTriton(failures=2) as srv:
        assert asyncio.run(go(f"127.0.0.1:{srv.port}")) == [TAGS]
    assert srv.calls == 3
    assert _delays(caplog) == [0.02, 0.04]

    with FakeTriton(failures=99) as srv, pytest.raises(ServingError, match="is the Triton server running"):
        asyncio.run(go(f"127.0.0.1:{srv.port}"))
    assert srv.calls == 3
