"""Device and precision choice of the fit loop: the bf16 probe, explicit precisions, batch padding per device."""

from __future__ import annotations

import pytest
import torch

from pipeline import train
from pipeline.train import TrainOptions, pad_multiple, pick_device


@pytest.mark.unit
def test_explicit_precisions_are_obeyed_on_the_cpu():
    assert pick_device(TrainOptions(device="cpu", precision="fp32")) == (torch.device("cpu"), False)
    assert pick_device(TrainOptions(device="cpu", precision="bf16")) == (torch.device("cpu"), True)


@pytest.mark.unit
def test_auto_precision_on_the_cpu_follows_the_matmul_probe(monkeypatch):
    train._cpu_bf16.cache_clear()
    try:
        measured = train._cpu_bf16()
        assert isinstance(measured, bool)
        assert pick_device(TrainOptions(device="cpu", precision="auto"))[1] is measured
        train._cpu_bf16.cache_clear()
        monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
        assert train._cpu_bf16() is False  # no oneDNN: never bf16 on the CPU
        assert pick_device(TrainOptions(device="cpu", precision="auto"))[1] is False
    finally:
        train._cpu_bf16.cache_clear()


@pytest.mark.unit
def test_batches_are_padded_to_their_longest_row_on_the_cpu_and_to_8_on_cuda():
    assert pad_multiple(torch.device("cpu")) == 1
    assert pad_multiple(torch.device("cuda")) == 8
