"""Checkpoint averaging (Polyak uniform and EMA) against direct arithmetic."""

from __future__ import annotations

import pytest
import torch

from herd.checkpoint.averaging import average_state_dicts
from herd.checkpoint.errors import CheckpointError


def sds(k: int = 3):
    g = torch.Generator().manual_seed(0)
    return [{"w": torch.randn(4, 5, generator=g).to(torch.bfloat16), "b": torch.randn(5, generator=g),
             "step": torch.tensor(7)} for _ in range(k)]


def test_uniform_mean_and_dtypes() -> None:
    inputs = sds()
    out = average_state_dicts(iter(inputs))
    assert out["w"].dtype == torch.bfloat16 and out["b"].dtype == torch.float32
    expect = torch.stack([s["w"].float() for s in inputs]).mean(0).to(torch.bfloat16)
    assert torch.equal(out["w"], expect)
    assert torch.allclose(out["b"], torch.stack([s["b"] for s in inputs]).mean(0), atol=1e-6)
    assert int(out["step"]) == 7


def test_weighted_and_ema() -> None:
    a, b, c = sds()
    out = average_state_dicts([a, b], weights=[3, 1])
    assert torch.allclose(out["b"], 0.75 * a["b"] + 0.25 * b["b"], atol=1e-6)
    ema = average_state_dicts([a, b, c], mode="ema", ema_decay=0.5)
    assert torch.allclose(ema["b"], 0.25 * a["b"] + 0.25 * b["b"] + 0.5 * c["b"], atol=1e-6)


def test_mismatches_are_named() -> None:
    a, b, _ = sds()
    with pytest.raises(CheckpointError, match="w has shape"):
        average_state_dicts([a, {**b, "w": torch.zeros(2, 2)}])
    with pytest.raises(CheckpointError, match="missing"):
        average_state_dicts([a, {"w": b["w"]}])
    with pytest.raises(CheckpointError, match="step differs"):
        average_state_dicts([a, {**b, "step": torch.tensor(8)}])
    with pytest.raises(ValueError, match="nothing"):
        average_state_dicts([])
    with pytest.raises(ValueError, match="mode"):
        average_state_dicts([a], mode="median")
