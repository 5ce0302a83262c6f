"""int4 weight-only quantization for CPU decode: every projection and the output head, group size 32.

Batch-1 decode on a CPU reads every weight once per token, so its speed is set by weight bytes. This
is the same format class as llama.cpp's Q4_1 (asymmetric: a scale and a minimum per group of 32
weights, 5 bits per weight with the fp16 scales): w ~= q * scale + min, q in 0..15.

On CPU the matmul runs in one of two kernels, chosen when the layer is built:
- herd's own int4 x int8 kernel (`herd.infer.cpu_kernels`, compiled once per machine): activations
  quantized to int8 per group of 32 and integer dot products (AVX512-VNNI where the CPU has it), like
  llama.cpp. On this project's 2-core EPYC a whole SmolLM2-135M token's matmuls take 1.8 ms against
  4.4 ms in ATen's kernel.
- `aten._weight_int4pack_mm_for_cpu` (bf16 activations) when ours cannot be built (no compiler).
Elsewhere (CUDA) the weight is dequantized for the matmul: correct, but not faster.

Unlike `quantize_model` (FFN only, int8/fp8 as the paper), this touches attention and the output
head too: it exists to make single-stream CPU decode memory-light, and is opt-in
(`EngineConfig(quantization="int4")`, `herd serve --quantization int4`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from herd.infer import cpu_kernels
from herd.infer.fusion import fuse_projections

GROUP = 32
_PROJECTIONS = ("wq", "wk", "wv", "wo", "wqkv")
_FFN = ("w1", "w2", "w3", "w13")


def quantize_groups(w: torch.Tensor, group: int = GROUP) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q [N, K] uint8 in 0..15, scale [N, K/group], minimum [N, K/group]) with w ~= q * scale + min."""
    n, k = w.shape
    wg = w.detach().float().view(n, k // group, group)
    low = wg.amin(-1, keepdim=True)
    scale = (wg.amax(-1, keepdim=True) - low).clamp(min=1e-8) / 15
    q = torch.clamp(torch.round((wg - low) / scale), 0, 15).to(torch.uint8)
    return q.view(n, k), scale.squeeze(-1), low.squeeze(-1)


class Int4Linear(nn.Module):
    """y = x @ dequant(q)^T with group-wise asymmetric 4-bit weights (see the module docstring).

    `backend` says which kernel runs: "herd" (our int4 x int8 kernel), "aten" (ATen's CPU int4
    matmul) or "dequantize" (any device). Each keeps only its own layout of the weights.
    """

    def __init__(self, weight: torch.Tensor, group: int = GROUP, backend: str | None = None) -> None:
        super().__init__()
        n, k = weight.shape
        if k % group:
            raise ValueError(f"int4: in_features {k} is not a multiple of the group size {group}")
        self.in_features, self.out_features, self.group = k, n, group
        q, scale, low = quantize_groups(weight, group)
        self.source_bytes = weight.numel() * weight.element_size()
        if backend is None:
            backend = "dequantize" if weight.device.type != "cpu" else (
                "herd" if group == cpu_kernels.GROUP and cpu_kernels.available() else "aten")
        if backend not in ("herd", "aten", "dequantize"):
            raise ValueError(f"int4: backend must be 'herd', 'aten' or 'dequantize', got {backend!r}")
        if backend == "herd" and not cpu_kernels.available():
            raise RuntimeError("int4: herd's CPU kernel could not be built here (see the warning); use backend='aten'")
        self.backend = backend
        if backend == "herd":
            packed, scales = cpu_kernels.pack(q.cpu(), scale.cpu(), low.cpu())
            self.register_buffer("packed", packed)
            self.register_buffer("scales", scales)
        elif backend == "aten":
            # the kernel's convention: w = (q - 8) * scale + zero, scales_and_zeros [K/group, N, 2] bf16
            zero = low + 8 * scale
            self.register_buffer("scales_zeros", torch.stack([scale, zero], -1).transpose(0, 1).contiguous().bfloat16())
            self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1))
        else:
            self.register_buffer("q", q)
            self.register_buffer("scale", scale)
            self.register_buffer("minimum", low)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group={self.group}, backend={self.backend}"

    def _dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        if self.backend != "dequantize":
            raise RuntimeError("int4 weights were packed for a CPU kernel; quantize on the device you run on")
        n, k = self.q.shape
        w = self.q.view(n, k // self.group, self.group).float() * self.scale[..., None] + self.minimum[..., None]
        return w.view(n, k).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if self.backend == "herd":
            y = cpu_kernels.int4_linear(x2, self.packed, self.scales, self.out_features)
        elif self.backend == "aten":
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(
                x2.to(torch.bfloat16).contiguous(), self.packed, self.group, self.scales_zeros
            )
        else:
            y = F.linear(x2, self._dequantized(x2.dtype))
        return y.to(x.dtype).reshape(*lead, self.out_features)


def quantize_int4(model: nn.Module, backend: str | None = None) -> nn.Module:
    """Replace every attention/FFN projection and the output head by `Int4Linear`, in place
    (`herd.infer.prepare_for_inference(model, quantization="int4")` applies it to a copy).

    The projections are fused first (wq/wk/wv -> wqkv, w1/w3 -> w13; herd.infer.fusion):
    groups run along the input dimension, so fusing does not change any quantized value, and
    batch-1 decode makes 4 instead of 7 kernel calls per layer. `backend` is `Int4Linear`'s (None: the
    fastest this machine has).
    """
    with torch.no_grad():
        fuse_projections(model)
        for block in model.layers:
            for owner, names in ((block.attention, _PROJECTIONS), (block.feed_forward, _FFN)):
                for name in names:
                    linear = getattr(owner, name, None)
                    if isinstance(linear, nn.Linear):
                        setattr(owner, name, Int4Linear(linear.weight, backend=backend))
        # a tied head gets its own 4-bit copy; the embedding lookup keeps the full-precision table
        if not isinstance(model.output, Int4Linear):  # idempotent: engines may share one loaded model
            model.output = Int4Linear(model.output.weight, backend=backend)
    return model
