"""`prepare_for_inference`: the model the engine runs, built from the caller's without touching it.

Quantization and projection fusion replace modules. Done in place they would change a model the
caller still uses (a training run evaluating NIAH, a test comparing against the float model, a
second engine over one loaded model), so they are applied to a structural copy: new module objects
that share every parameter and buffer tensor the rewrite does not replace, so preparing costs only
the memory of the new (quantized or fused) weights.
"""

from __future__ import annotations

import copy

from torch import nn

from herd.infer.fusion import fuse_projections

QUANTIZATIONS = (None, "int8", "fp8", "int4")


def structural_copy(module: nn.Module) -> nn.Module:
    """A copy of the module tree whose parameters and buffers are the original tensors (not copies).

    Replacing a submodule of the copy (or assigning a new parameter to one of its modules) leaves
    the original untouched; tied weights stay tied because the same tensor objects are shared.
    """
    clone = copy.copy(module)
    clone._parameters = dict(module._parameters)
    clone._buffers = dict(module._buffers)
    clone._non_persistent_buffers_set = set(module._non_persistent_buffers_set)
    clone._modules = {name: None if child is None else structural_copy(child)
                      for name, child in module._modules.items()}
    return clone


def prepare_for_inference(
    model: nn.Module, *, quantization: str | None = None, fuse: bool | None = None,
    int4_backend: str | None = None,
) -> nn.Module:
    """The model to run for inference: `model` itself when nothing changes, else a rewritten copy.

    - `quantization`: None, "int8" / "fp8" (the FFN matmuls, herd.infer.quant) or "int4" (every
      projection and the head, herd.infer.quant_int4; `int4_backend` picks its kernel).
    - `fuse`: one matmul for wq/wk/wv and for w1/w3 (herd.infer.fusion). Default (None): only with
      int4, where it changes no quantized value and saves kernel calls at CPU decode.
    The caller's model is never modified.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be None, 'int8', 'fp8' or 'int4', got {quantization!r}")
    if fuse is None:
        fuse = quantization == "int4"
    if quantization is None and not fuse:
        return model
    prepared = structural_copy(model)
    if quantization == "int4":
        from herd.infer.quant_int4 import quantize_int4

        quantize_int4(prepared, backend=int4_backend)  # fuses first
    elif quantization is not None:
        from herd.infer.quant import quantize_model

        quantize_model(prepared, quantization)
    if fuse:
        fuse_projections(prepared)
    return prepared
