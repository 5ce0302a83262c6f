"""prepare_for_inference: a rewritten copy, never the caller's model, shared while the model is unchanged."""

from __future__ import annotations

import torch

from herd.infer import prepare_for_inference
from herd.model import Transformer, get_config, init_weights


def tiny() -> Transformer:
    cfg = get_config("llama3-tiny", n_layers=2, dim=64, ffn_dim=128, n_heads=4, n_kv_heads=2, vocab_size=256)
    model = Transformer(cfg)
    init_weights(model, generator=torch.Generator().manual_seed(0))
    return model.eval()


def test_copy_leaves_the_model_alone_and_is_shared_while_unchanged():
    model = tiny()
    before = {name: t.clone() for name, t in model.state_dict().items()}
    a = prepare_for_inference(model, quantization="int4", int4_backend="dequantize")
    assert a is not model
    assert type(model.layers[0].attention).__name__ == "Attention"  # the caller's modules are not replaced
    assert all(torch.equal(before[name], t) for name, t in model.state_dict().items())
    # a second engine over the same model gets the same copy: no second quantization, one compiled graph
    assert prepare_for_inference(model, quantization="int4", int4_backend="dequantize") is a
    assert prepare_for_inference(model, fuse=True) is not a  # other options: another copy
    assert prepare_for_inference(model) is model


def test_a_changed_model_is_prepared_again():
    model = tiny()
    tokens = torch.randint(0, 256, (1, 8))
    a = prepare_for_inference(model, fuse=True)
    with torch.no_grad():
        model.layers[1].attention.wk.weight.mul_(2.0)  # in place, like an optimizer step
    b = prepare_for_inference(model, fuse=True)
    assert b is not a
    with torch.no_grad():
        assert torch.allclose(b(tokens), model(tokens), atol=1e-5)
        assert not torch.allclose(a(tokens), model(tokens), atol=1e-5)  # the stale copy differs
    model.layers[0].ffn_norm.weight = torch.nn.Parameter(torch.full((64,), 0.5))  # a replaced tensor
    assert prepare_for_inference(model, fuse=True) is not b
