"""`prepare_for_inference`: the model the engine runs, built from the caller's without touching it.

Quantization and projection fusion replace modules. Done in place they would change a model the
caller still uses (a training run evaluating NIAH, a test comparing against the float model, a
second engine over one loaded model), so they are applied to a structural copy: new module objects
that share every parameter and buffer tensor the rewrite does not replace, so preparing costs only
the memory of the new (quantized or fused) weights.

The prepared copy is remembered per (model, options) while the model's tensors are unchanged, so
engines over one loaded model share it, as they shared the model when quantization was in place:
a second int4 engine neither quantizes again (seconds, and another copy of the int4 weights) nor
traces and compiles its decode step again (herd.infer.compiled_decode keys its graphs by the model
object it is given; a fresh copy per engine measured 10-15 s per engine on SmolLM2-135M).
"""

from __future__ import annotations

import copy
import itertools
import weakref

import torch
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


# One weak reference to the tensor, its version counter (bumped by every in-place update: optimizer
# steps, load_state_dict) and its data pointer (changed by `.to()`, which swaps a parameter's data).
_Fingerprint = tuple[tuple["weakref.ref[torch.Tensor]", int, int], ...]


def _version(t: torch.Tensor) -> int:
    # an inference-mode tensor has no version counter (-1: only identity and storage are compared)
    return -1 if t.is_inference() else t._version

# source model -> {(quantization, fuse, int4_backend): (fingerprint of the source, prepared copy)}
_PREPARED: weakref.WeakKeyDictionary[nn.Module, dict[tuple[object, ...], tuple[_Fingerprint, nn.Module]]] = (
    weakref.WeakKeyDictionary()
)


def _fingerprint(model: nn.Module) -> _Fingerprint:
    return tuple((weakref.ref(t), _version(t), t.data_ptr())
                 for t in itertools.chain(model.parameters(), model.buffers()))


def _unchanged(model: nn.Module, fingerprint: _Fingerprint) -> bool:
    tensors = list(itertools.chain(model.parameters(), model.buffers()))
    return len(tensors) == len(fingerprint) and all(
        ref() is t and version == _version(t) and ptr == t.data_ptr()
        for t, (ref, version, ptr) in zip(tensors, fingerprint, strict=True))


def prepare_for_inference(
    model: nn.Module, *, quantization: str | None = None, fuse: bool | None = None,
    int4_backend: str | None = None,
) -> nn.Module:
    """The model to run for inference: `model` itself when nothing changes, else a rewritten copy.

    - `quantization`: None, "int8" / "fp8" (the FFN matmuls, herd.infer.quant) or "int4" (every
      projection and the head, herd.infer.quant_int4; `int4_backend` picks its kernel).
    - `fuse`: one matmul for wq/wk/wv and for w1/w3 (herd.infer.fusion). Default (None): only with
      int4, where it changes no quantized value and saves kernel calls at CPU decode.
    The caller's model is never modified. Asked again with the same options while the model's
    parameters and buffers are the same, unchanged tensors, it returns the same prepared copy (see
    the module docstring); a change made through `.data`, which has its own version counter, is
    not seen.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be None, 'int8', 'fp8' or 'int4', got {quantization!r}")
    if fuse is None:
        fuse = quantization == "int4"
    if quantization is None and not fuse:
        return model
    options = (quantization, fuse, int4_backend)
    known = _PREPARED.get(model, {}).get(options)
    if known is not None and _unchanged(model, known[0]):
        return known[1]
    prepared = structural_copy(model)
    if quantization == "int4":
        from herd.infer.quant_int4 import quantize_int4

        quantize_int4(prepared, backend=int4_backend)  # fuses first
    elif quantization is not None:
        from herd.infer.quant import quantize_model

        quantize_model(prepared, quantization)
    if fuse:
        fuse_projections(prepared)
    # a strong reference to the copy, dropped with the model (the copy does not refer to the model)
    _PREPARED.setdefault(model, {})[options] = (_fingerprint(model), prepared)
    return prepared
