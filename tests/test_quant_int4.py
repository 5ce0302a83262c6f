"""int4 weight-only quantization (CPU decode): the packed kernel equals the dequantized weights."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import herd
from herd.infer import EngineConfig, LLMEngine, SamplingParams
from herd.infer.quant_int4 import Int4Linear, quantize_groups, quantize_int4


def test_groups_round_trip_within_half_a_step() -> None:
    w = torch.randn(48, 96, generator=torch.Generator().manual_seed(0))
    q, scale, low = quantize_groups(w)
    assert q.dtype == torch.uint8 and int(q.max()) <= 15
    deq = (q.view(48, 3, 32).float() * scale[..., None] + low[..., None]).view(48, 96)
    step = scale.repeat_interleave(32, dim=1)
    assert ((deq - w).abs() <= step / 2 + 1e-6).all()


def test_packed_cpu_kernel_equals_the_dequantized_matmul() -> None:
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(160, 96, generator=gen)
    x = torch.randn(2, 5, 96, generator=gen)
    layer = Int4Linear(w)
    q, scale, low = quantize_groups(w)
    deq = (q.view(160, 3, 32).float() * scale[..., None] + low[..., None]).view(160, 96)
    want = x @ deq.t()
    got = layer(x)
    assert got.shape == (2, 5, 160) and got.dtype == x.dtype
    assert (got - want).abs().max() / want.abs().max() < 1e-2  # bf16 activations in the kernel
    with pytest.raises(ValueError, match="multiple of the group size"):
        Int4Linear(torch.randn(8, 40))


def test_engine_with_int4_generates_close_to_the_float_model() -> None:
    loaded = herd.load_model("random:llama3-tiny")
    prompt = list(range(1, 20))
    with torch.no_grad():
        before = loaded.model(torch.tensor([prompt]))[0, -1]
    weights = {name: tensor.clone() for name, tensor in loaded.model.state_dict().items()}
    engine = LLMEngine(loaded, EngineConfig(quantization="int4", num_blocks=64))
    # the caller's model is untouched; the engine's copy is fused first: wqkv, wo, w13, w2 per layer, and the head
    assert not any(isinstance(m, Int4Linear) for m in loaded.model.modules())
    assert loaded.model.state_dict().keys() == weights.keys()
    assert all(torch.equal(t, weights[name]) for name, t in loaded.model.state_dict().items())
    assert sum(isinstance(m, Int4Linear) for m in engine.model.modules()) == 4 * loaded.model.config.n_layers + 1
    with torch.no_grad():
        after = engine.model(torch.tensor([prompt]))[0, -1]
    assert torch.corrcoef(torch.stack([before, after]))[0, 1] > 0.95
    out = engine.generate([prompt], SamplingParams(max_tokens=8, ignore_eos=True))[0]
    assert len(out.outputs[0].token_ids) == 8 and engine.stats().kv_blocks_used == 0
    with pytest.raises(ValueError, match="int4"):
        EngineConfig(quantization="int3")


def test_quantize_int4_twice_is_a_no_op() -> None:
    model = herd.load_model("random:llama3-tiny").model
    quantize_int4(model)
    head = model.output
    quantize_int4(model)
    assert model.output is head and sum(isinstance(m, Int4Linear) for m in model.modules()) == 4 * 2 + 1


def _nll(model: torch.nn.Module, ids: torch.Tensor) -> float:
    """Mean next-token negative log-likelihood (nats) of `ids` (1 x T) under `model`."""
    with torch.no_grad():
        logits = model(ids[:, :-1])[0]
    return F.cross_entropy(logits.float(), ids[0, 1:]).item()


def test_smollm2_int4_keeps_its_perplexity_through_the_engine_and_on_aten() -> None:
    """Real weights on real text (random weights hide what int4 costs a trained model): the engine's
    int4 (projections fused first, then quantized, the head too; herd's kernel where it builds) and
    ATen's int4 backend (the fallback where no C++ compiler exists) each stay within a few percent of
    the float model's perplexity."""
    loaded = herd.load_model("smollm2-135m-instruct", dtype=torch.float32)
    readme = (Path(herd.__file__).resolve().parents[1] / "README.md").read_text()
    ids = torch.tensor([loaded.tokenizer.encode(readme)[:513]])
    reference = _nll(loaded.model, ids)
    aten = quantize_int4(copy.deepcopy(loaded.model), backend="aten")
    engine = LLMEngine(loaded, EngineConfig(quantization="int4", num_blocks=64))
    assert any(isinstance(m, Int4Linear) for m in engine.model.modules())
    nll = {"float": reference, "engine": _nll(engine.model, ids), "aten": _nll(aten, ids)}
    assert 1.0 < nll["float"] < 6.0, nll  # trained (measured 4.23 on this README); random weights give ~ln(49152) = 10.8
    assert nll["engine"] - nll["float"] < 0.12, nll  # perplexity within ~13% (measured +0.07 nats)
    assert nll["aten"] - nll["float"] < 0.12, nll  # measured +0.06 nats
    assert abs(nll["engine"] - nll["aten"]) < 0.05, nll  # the same weights, int8 vs bf16 activations
