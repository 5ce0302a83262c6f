"""Post-training quantization of the FFN matmuls: FP8 (the Llama 3 inference recipe) and int8.

`quantize_model(model, "fp8")` follows the Llama 3 paper (section 6.2, "FP8 quantization"):

- Only the feed-forward matmuls are quantized (w1, w3 and w2 of each SwiGLU block); attention
  projections, norms, embeddings and the output head stay in the model's dtype (BF16 in the paper).
- The first and the last Transformer layers are not quantized (`skip_first_last`).
- Row-wise scales: one scale per output channel of each weight (static, computed once here) and one
  dynamic scale per token (row) of each activation, computed on the fly from that row's amax.
- The dynamic activation scale is bounded with the paper's 1200 (`FP8_SCALE_UB`).

Which quantity the 1200 bounds, exactly. The paper: "High-perplexity tokens such as dates can lead
to large activation values. In turn, these can lead to high dynamic scaling factors in FP8 and a
non-negligible number of underflows, leading to errors in decoding. To address this issue, we upper
bound the dynamic scaling factors to 1200." Meta's implementation (llama-models
`fp8_activation_scale_ub=1200.0`, passed to FBGEMM's `quantize_fp8_per_row(x, scale_ub=...)`)
bounds the per-row amax that the scale is computed from:

    amax_r   = min(max_k |x[r, k]|, 1200)          # the bounded quantity
    scale_r  = amax_r / 448                        # dequantization scale, <= 1200 / 448 ~= 2.68
    x_fp8    = saturate(x / scale_r) as float8_e4m3fn

A token row with one huge outlier would otherwise get a huge scale_r; e4m3 spans only about
448 / 2**-9 ~= 2.3e5 between its largest value and its smallest subnormal, so every ordinary entry of
that row would underflow to zero (the failure the paper saw on high-perplexity tokens). With the
bound, the outlier saturates to +-1200 (it is clipped) and the rest of the row keeps its precision.
The bound does NOT limit the quantization multiplier 448/amax of small rows: a row of tiny values is
quantized with its own (large) multiplier and keeps full relative precision, exactly as FBGEMM does
(its only lower clamp is amax >= 1e-12, which keeps an all-zero row finite). Weights are static and
need no bound.

On CUDA with compute capability >= 8.9 (Ada, Hopper, Blackwell) `Fp8Linear` runs
`torch._scaled_mm(x_fp8, w_fp8.t(), scale_a=[M, 1], scale_b=[1, N], out_dtype=bfloat16)` (row-wise
scaling, the CUTLASS f8f8bf16_rowwise kernel; x row-major, w column-major, K and N multiples of 16).
Everywhere else it emulates that kernel: the same quantization of x, then the fp8 products summed in
float32 and scaled in the epilogue, so CPU tests check the GPU numerics (up to accumulation order).
The GPU kernel writes bfloat16; the emulation casts straight to the input dtype (equal for BF16 models).

`quantize_model(model, "int8")` is weight-only: symmetric per-output-channel int8 weights, activations
untouched. On CPU it uses `aten._weight_int8pack_mm` for small row counts (decode) and a dequantize +
matmul otherwise (and always on CUDA); see `Int8Linear` for the measurements behind the choice.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from herd.infer.fusion import FusedFeedForward
from herd.model.transformer import FeedForward

MODES = ("int8", "fp8")

FP8_DTYPE: torch.dtype | None = getattr(torch, "float8_e4m3fn", None)
FP8_MAX = 448.0  # largest finite float8_e4m3fn
FP8_SCALE_UB = 1200.0  # the Llama 3 bound on the dynamic (per-token) activation amax
_AMAX_EPS = 1e-12  # FBGEMM's lower clamp: an all-zero row gets a finite scale

INT8_MAX = 127
# Rows (tokens) up to which the CPU int8 path uses aten._weight_int8pack_mm; above it dequantize +
# matmul wins (measured on a 2-core AVX-512 EPYC, see Int8Linear and benchmarks/quant_cpu.py).
INT8_PACK_MAX_ROWS = 16

_QUANT_ATTR = "_herd_quantization"


class QuantizationError(RuntimeError):
    """Quantization cannot be applied (already quantized, no float8 support in this torch, ...)."""


def fp8_supported() -> bool:
    """Whether this torch has the float8_e4m3fn dtype (the emulation path needs nothing more)."""
    return FP8_DTYPE is not None


_CAPABILITY: dict[int, tuple[int, int]] = {}


def fp8_kernel_available(device: torch.device | str | None = None) -> bool:
    """Whether `torch._scaled_mm` row-wise FP8 can run on `device` (CUDA, compute capability >= 8.9)."""
    if not fp8_supported() or not torch.cuda.is_available():
        return False
    device = torch.device("cuda" if device is None else device)
    if device.type != "cuda":
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _CAPABILITY:
        _CAPABILITY[index] = torch.cuda.get_device_capability(index)
    return _CAPABILITY[index] >= (8, 9) and hasattr(torch, "_scaled_mm")


# --------------------------------------------------------------------------------------------- FP8


def quantize_fp8_rowwise(
    x: torch.Tensor, scale_ub: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise float8_e4m3fn quantization of a 2-D tensor.

    Returns `(x_fp8 [R, C], scale [R, 1] float32)` with `x ~= x_fp8.float() * scale`. `scale_ub`
    bounds the row amax the scale is computed from (see the module docstring); entries beyond it
    saturate to +-448 in fp8. Computed in float32 the same way on every device.
    """
    if FP8_DTYPE is None:
        raise QuantizationError(f"torch {torch.__version__} has no float8_e4m3fn dtype; fp8 needs torch >= 2.1")
    xf = x.float()
    amax = xf.abs().amax(dim=-1, keepdim=True)
    if scale_ub is not None:
        amax = amax.clamp(max=scale_ub)
    amax = amax.clamp(min=_AMAX_EPS)
    multiplier = FP8_MAX / amax
    x_fp8 = (xf * multiplier).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return x_fp8, multiplier.reciprocal()


def fp8_scaled_mm_emulated(
    x_fp8: torch.Tensor, x_scale: torch.Tensor, w_fp8: torch.Tensor, w_scale: torch.Tensor
) -> torch.Tensor:
    """float32 `(x_fp8 @ w_fp8.T) * x_scale * w_scale`: what the row-wise `_scaled_mm` kernel computes.

    Products of two e4m3 values are exact in float32; the scales are applied after the reduction,
    as the kernel's epilogue does (accumulate, times x_scale, times w_scale).
    """
    acc = x_fp8.float() @ w_fp8.float().t()
    return acc * x_scale * w_scale.view(1, -1)


def silu_mul_quantize_fp8(a: torch.Tensor, b: torch.Tensor, scale_ub: float | None):
    """Row-wise FP8 quantization of the SwiGLU hidden `silu(a) * b`, computed in float32 (one fused
    kernel on CUDA: the bf16 product is never written out)."""
    return quantize_fp8_rowwise(F.silu(a.float()) * b.float(), scale_ub)


# On CUDA the activation quantization (amax, scale, cast: several passes over a [tokens, 14336]
# tensor in eager mode) is compiled into fused kernels once; set HERD_FP8_COMPILE=0 to stay eager.
# Triton's float32 division is not correctly rounded, so a compiled per-row multiplier 448/amax can
# differ from the eager one in the last bit and flip the rounding of an occasional element; the
# emulation is otherwise bit-identical in the quantization step.
COMPILE_CUDA_QUANT = os.environ.get("HERD_FP8_COMPILE", "1") != "0"
_compiled: dict[str, Callable | bool] = {}  # name -> compiled function, or False if compiling failed


def _cuda_compiled(fn: Callable, *args):  # type: ignore[no-untyped-def]
    """`fn(*args)`, through torch.compile when the inputs are on CUDA (eager elsewhere or on failure)."""
    name = fn.__name__
    if args[0].is_cuda and COMPILE_CUDA_QUANT and _compiled.get(name) is not False:
        try:
            if name not in _compiled:
                _compiled[name] = torch.compile(fn, dynamic=True, fullgraph=True)
            return _compiled[name](*args)  # type: ignore[operator]
        except Exception as err:  # no Triton, an inductor bug, ...: the eager path computes the same
            _compiled[name] = False
            warnings.warn(f"torch.compile of {name} failed ({err}); staying eager", stacklevel=3)
    return fn(*args)


def _quantize_activations(x: torch.Tensor, scale_ub: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    return _cuda_compiled(quantize_fp8_rowwise, x, scale_ub)


class _KeepDtypes(nn.Module):
    """Buffers keep their dtype through `model.to(dtype)` / `.half()` (device moves still apply).

    `Module.to(torch.bfloat16)` converts every floating-point buffer, float8 included; a quantized
    weight must stay float8 / int8 and its scales float32.
    """

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True):  # type: ignore[no-untyped-def]
        def keep(t: torch.Tensor) -> torch.Tensor:
            moved = fn(t)
            # a dtype cast is undone from the original (a float32 scale must not round-trip via bf16)
            return moved if moved.dtype == t.dtype else t.to(device=moved.device)

        return super()._apply(keep, recurse)


def _check_linear(linear: nn.Linear) -> None:
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"expected an nn.Linear, got {type(linear).__name__}")
    if linear.weight.device.type == "meta":
        raise QuantizationError("cannot quantize a linear on the meta device; load its weights first")


class Fp8Linear(_KeepDtypes):
    """`y = x W^T` with W in float8_e4m3fn (row-wise scales) and x quantized per token on the fly."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = False,
        scale_ub: float | None = FP8_SCALE_UB,
        use_fast_accum: bool = True,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if FP8_DTYPE is None:
            raise QuantizationError(f"torch {torch.__version__} has no float8_e4m3fn dtype; fp8 needs torch >= 2.1")
        self.in_features = in_features
        self.out_features = out_features
        self.scale_ub = scale_ub
        # Meta's FP8 inference uses fast accumulation too (f8f8bf16_rowwise(..., use_fast_accum=True)).
        self.use_fast_accum = use_fast_accum
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=FP8_DTYPE, device=device))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32, device=device))
        self.register_buffer("bias", torch.zeros(out_features, device=device) if bias else None)
        self.source_bytes = 0  # bytes of the weight this module replaced (for memory_report)
        self._kernel_broken = False

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, *, scale_ub: float | None = FP8_SCALE_UB, use_fast_accum: bool = True
    ) -> Fp8Linear:
        _check_linear(linear)
        w = linear.weight.detach()
        module = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            scale_ub=scale_ub,
            use_fast_accum=use_fast_accum,
            device=w.device,
        )
        w_fp8, w_scale = quantize_fp8_rowwise(w, scale_ub=None)  # static weights: no bound
        module.weight.copy_(w_fp8)
        module.weight_scale.copy_(w_scale.view(-1))
        if linear.bias is not None:
            module.bias = linear.bias.detach().float().clone()
        module.source_bytes = w.numel() * w.element_size()
        return module

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"scale_ub={self.scale_ub}, bias={self.bias is not None}"
        )

    def _use_kernel(self, x2: torch.Tensor) -> bool:
        return (
            not self._kernel_broken
            and x2.is_cuda
            and self.in_features % 16 == 0
            and self.out_features % 16 == 0
            and fp8_kernel_available(x2.device)
        )

    def matmul_fp8(self, x_fp8: torch.Tensor, x_scale: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
        """`(x_fp8 * x_scale) @ (W_fp8 * w_scale)^T (+ bias)` for already quantized rows x_fp8 [M, K]."""
        y = None
        if self._use_kernel(x_fp8):
            try:
                y = torch._scaled_mm(
                    x_fp8,  # [M, K] row-major
                    self.weight.t(),  # [K, N] column-major view of the row-major [N, K] weight
                    scale_a=x_scale,  # [M, 1] float32, contiguous
                    scale_b=self.weight_scale.view(1, -1),  # [1, N] float32, contiguous
                    out_dtype=torch.bfloat16,  # row-wise scaling supports only bf16 output
                    use_fast_accum=self.use_fast_accum,
                )
            except RuntimeError as err:  # e.g. a torch built without the row-wise CUTLASS kernel
                self._kernel_broken = True
                warnings.warn(f"torch._scaled_mm row-wise FP8 failed ({err}); using the float emulation", stacklevel=2)
        if y is None:
            y = fp8_scaled_mm_emulated(x_fp8, x_scale, self.weight, self.weight_scale)
        if self.bias is not None:
            y = y + self.bias
        return y.to(out_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if x2.shape[0] == 0:
            return x.new_zeros(*lead, self.out_features)
        x_fp8, x_scale = _quantize_activations(x2, self.scale_ub)
        return self.matmul_fp8(x_fp8, x_scale, x.dtype).reshape(*lead, self.out_features)


def _concat_rows(first: nn.Module, second: nn.Module) -> nn.Module:
    """One quantized linear computing [first(x), second(x)]: per-output-channel scales make the
    concatenation of two quantized weights exactly the quantization of the concatenated weight."""
    if type(first) is not type(second) or first.in_features != second.in_features:
        raise TypeError(f"cannot fuse {first} and {second}")
    if first.bias is not None or second.bias is not None:
        raise TypeError("fusing quantized linears with a bias is not supported")
    out_features = first.out_features + second.out_features
    fused: Fp8Linear | Int8Linear
    if isinstance(first, Fp8Linear):
        fused = Fp8Linear(first.in_features, out_features, scale_ub=first.scale_ub,
                          use_fast_accum=first.use_fast_accum, device="meta")
    else:
        fused = Int8Linear(first.in_features, out_features, device="meta")
        fused.pack_max_rows = first.pack_max_rows
    fused.weight = torch.cat([first.weight, second.weight])
    fused.weight_scale = torch.cat([first.weight_scale, second.weight_scale])
    fused.source_bytes = first.source_bytes + second.source_bytes
    return fused


class _QuantizedFeedForward(FeedForward):
    """A herd FeedForward whose w1/w3/w2 (or fused w13/w2) are quantized linears."""

    def __init__(self, w2: nn.Module, w1: nn.Module | None = None, w3: nn.Module | None = None,
                 w13: nn.Module | None = None) -> None:
        nn.Module.__init__(self)
        if (w13 is None) == (w1 is None or w3 is None):
            raise ValueError("give either w1 and w3, or the fused w13")
        self.w13 = w13
        if w13 is None:
            self.w1, self.w3 = w1, w3
        self.w2 = w2

    def fused(self) -> _QuantizedFeedForward:
        """The same layer with one matmul for w1 and w3 (herd.infer.fusion), on the quantized weights."""
        if self.w13 is not None:
            return self
        return type(self)(self.w2, w13=_concat_rows(self.w1, self.w3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.w13 is not None:
            gate, up = self.w13(x).chunk(2, dim=-1)
            return self.w2(F.silu(gate) * up)
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Int8FeedForward(_QuantizedFeedForward):
    """SwiGLU with `Int8Linear` projections (fusing keeps them int8)."""


class Fp8FeedForward(_QuantizedFeedForward):
    """SwiGLU `w2(silu(w1 x) * w3 x)` with FP8 w1, w3, w2 (`Fp8Linear`s, or a fused w13 and w2).

    Same math as calling the modules one by one, with two fusions: x is quantized once for w1 and
    w3 (or w13: one GEMM), and `silu(a) * b` is computed in float32 and quantized in one step for w2
    (on CUDA one compiled kernel; the bf16 hidden is never written). For a float32 model this is
    bit-identical to the module-by-module composition; for bf16 the hidden skips one bf16 rounding.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w1 = self.w13 if self.w13 is not None else self.w1
        lead = x.shape[:-1]
        x2 = x.reshape(-1, w1.in_features)
        if x2.shape[0] == 0:
            return x.new_zeros(*lead, self.w2.out_features)
        x_fp8, x_scale = _quantize_activations(x2, w1.scale_ub)
        if self.w13 is not None:
            a, b = self.w13.matmul_fp8(x_fp8, x_scale, x.dtype).chunk(2, dim=-1)
        else:
            a = self.w1.matmul_fp8(x_fp8, x_scale, x.dtype)
            b = self.w3.matmul_fp8(x_fp8, x_scale, x.dtype)
        h_fp8, h_scale = _cuda_compiled(silu_mul_quantize_fp8, a, b, self.w2.scale_ub)
        return self.w2.matmul_fp8(h_fp8, h_scale, x.dtype).reshape(*lead, self.w2.out_features)


# -------------------------------------------------------------------------------------------- int8


def quantize_int8_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: `(q [N, K] int8, scale [N] float32)`, w ~= q * scale[:, None]."""
    wf = w.detach().float()
    scale = wf.abs().amax(dim=1).clamp(min=_AMAX_EPS) / INT8_MAX
    q = torch.round(wf / scale[:, None]).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


class Int8Linear(_KeepDtypes):
    """Weight-only int8 linear: `y = (x @ q^T) * scale`, q int8 [N, K], scale float32 per output channel.

    Kernel choice (measured on this project's 2-core AVX-512 EPYC CPU, torch 2.13, SmolLM2 FFN shapes
    576x1536 and 1536x576, median of 100 runs; see benchmarks/quant_cpu.py):

    - `aten._weight_int8pack_mm(x_bf16, q, scale_bf16)` is the fastest at decode sizes: 1 row 30 us
      versus 71 us for the float32 dense matmul and 110-145 us for dequantize + matmul. Its cost grows
      about linearly with rows (about 12 us per row here), while dequantize + matmul in bf16 stays near
      150-250 us, so the packed kernel is used up to `INT8_PACK_MAX_ROWS` (16) rows.
    - With float16 or float32 activations the packed kernel is 5-15x slower (no fast path), so a
      float32 model's activations are cast to bfloat16 for it (relative error ~2e-3 per matmul,
      below the int8 weight error) and the result cast back.
    - The op silently returns NaN/garbage (or crashes) when K is not a multiple of 16; such shapes and
      larger row counts use dequantize + matmul in the input dtype (float32 for float32 models).

    On CUDA (measured on an H100, torch 2.11, 4096x14336 bf16) the packed op is slower than
    dequantize + matmul at every row count (1 row: 0.30 vs 0.21 ms; 16 rows: 2.1 vs 0.21 ms; 256 rows:
    33 vs 0.23 ms), so CUDA always dequantizes. Both are slower than the bf16 matmul (0.045 ms): on a
    GPU int8 weight-only saves memory, not time (a fused int8 GEMV kernel would be needed for that).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32, device=device))
        self.register_buffer("bias", torch.zeros(out_features, device=device) if bias else None)
        self.source_bytes = 0
        self.pack_max_rows = INT8_PACK_MAX_ROWS
        self._scale_cache: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}
        self._pack_broken: set[str] = set()

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        _check_linear(linear)
        w = linear.weight.detach()
        module = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device=w.device)
        q, scale = quantize_int8_per_channel(w)
        module.weight.copy_(q)
        module.weight_scale.copy_(scale)
        if linear.bias is not None:
            module.bias = linear.bias.detach().float().clone()
        module.source_bytes = w.numel() * w.element_size()
        return module

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"

    def _scale_as(self, dtype: torch.dtype) -> torch.Tensor:
        key = (dtype, self.weight_scale.device)
        cached = self._scale_cache.get(key)
        if cached is None:
            cached = self.weight_scale.to(dtype)
            self._scale_cache[key] = cached
        return cached

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        self._scale_cache = {}
        return super()._apply(fn, recurse)

    def _pack_ok(self, x2: torch.Tensor) -> bool:
        return (
            x2.shape[0] <= self.pack_max_rows
            and self.in_features % 16 == 0  # the op returns garbage for other K (seen on CPU)
            and x2.device.type == "cpu"  # on CUDA the op is slower than dequantize + matmul
            and x2.device.type not in self._pack_broken
            and x2.dtype in (torch.float32, torch.bfloat16)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        y = None
        if self._pack_ok(x2):
            xb = x2.to(torch.bfloat16).contiguous()
            try:
                y = torch.ops.aten._weight_int8pack_mm(xb, self.weight, self._scale_as(torch.bfloat16))
            except (RuntimeError, NotImplementedError) as err:
                self._pack_broken.add(x2.device.type)
                warnings.warn(
                    f"aten._weight_int8pack_mm failed on {x2.device.type} ({err}); using dequantize + matmul",
                    stacklevel=2,
                )
        if y is None:
            compute = x2.dtype if x2.dtype.is_floating_point else torch.float32
            y = F.linear(x2.to(compute), self.weight.to(compute)) * self._scale_as(compute)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.to(x.dtype).reshape(*lead, self.out_features)


# ---------------------------------------------------------------------------------- model surgery


QUANTIZED_LINEARS = (Fp8Linear, Int8Linear)


def _select_layers(n_layers: int, mode: str, skip_first_last: bool | None, layers: Iterable[int] | None) -> list[int]:
    if layers is not None:
        chosen = sorted(set(int(i) for i in layers))
        bad = [i for i in chosen if not 0 <= i < n_layers]
        if bad:
            raise ValueError(f"layer indices {bad} out of range for a model with {n_layers} layers")
        return chosen
    if skip_first_last is None:
        skip_first_last = mode == "fp8"  # ENGINE.md: fp8 skips first/last; int8 does all layers
    if skip_first_last:
        return list(range(1, n_layers - 1))
    return list(range(n_layers))


def quantize_model(
    model: nn.Module,
    mode: str,
    *,
    skip_first_last: bool | None = None,
    layers: Iterable[int] | None = None,
    scale_ub: float | None = FP8_SCALE_UB,
) -> nn.Module:
    """Replace the FFN linears (w1, w3, w2) of the chosen Transformer layers in place; return the model
    (`herd.infer.prepare_for_inference` applies it to a copy and leaves the caller's model alone).

    - `mode`: "fp8" (dynamic row-wise activations, row-wise weights, bound `scale_ub` on the activation
      row amax; Llama 3 paper) or "int8" (weight-only, per-output-channel).
    - `skip_first_last`: leave the first and last Transformer layers unquantized. Default (None): True
      for fp8 (the paper), False for int8 (all layers), as herd/infer/ENGINE.md states.
    - `layers`: explicit layer indices to quantize (overrides `skip_first_last`).
    Attention, norms, embeddings and the output head are never touched.
    """
    if mode not in MODES:
        raise ValueError(f"unknown quantization mode {mode!r}; modes: {', '.join(MODES)}")
    if mode == "fp8" and not fp8_supported():
        raise QuantizationError(
            f"fp8 quantization needs torch.float8_e4m3fn, which torch {torch.__version__} lacks (torch >= 2.1)"
        )
    already = getattr(model, _QUANT_ATTR, None)
    if already is not None or any(isinstance(m, QUANTIZED_LINEARS) for m in model.modules()):
        raise QuantizationError(
            f"model is already quantized ({already or 'quantized modules present'}); "
            "quantize a fresh model instead of quantizing twice"
        )
    blocks = getattr(model, "layers", None)
    if blocks is None:
        raise TypeError(f"{type(model).__name__} has no `layers`; expected a herd Transformer")
    chosen = _select_layers(len(blocks), mode, skip_first_last, layers)
    if not chosen:
        warnings.warn(
            f"{mode}: nothing to quantize in a {len(blocks)}-layer model (first and last layers are skipped)",
            stacklevel=2,
        )
    with torch.no_grad():
        for i in chosen:
            ffn = blocks[i].feed_forward
            if type(ffn) not in (FeedForward, FusedFeedForward):
                raise TypeError(f"layer {i}: expected a herd FeedForward, got {type(ffn).__name__}")
            # Fused projections (herd.infer.fusion) are quantized as they are: row-wise
            # scales make quantize(cat(w1, w3)) == cat(quantize(w1), quantize(w3)).
            names = ("w13", "w2") if getattr(ffn, "w13", None) is not None else ("w1", "w2", "w3")
            if mode == "fp8":
                linears = {n: Fp8Linear.from_linear(getattr(ffn, n), scale_ub=scale_ub) for n in names}
                blocks[i].feed_forward = Fp8FeedForward(**linears)
            else:
                linears = {n: Int8Linear.from_linear(getattr(ffn, n)) for n in names}
                blocks[i].feed_forward = Int8FeedForward(**linears)
    setattr(model, _QUANT_ATTR, f"{mode}, layers {chosen}")
    return model


def quantization_of(model: nn.Module) -> str | None:
    """What `quantize_model` did to this model ("fp8, layers [1, 2]"), or None."""
    return getattr(model, _QUANT_ATTR, None)


@dataclass
class MemoryReport:
    modules: int  # quantized linears
    original_bytes: int  # their weights before quantization
    quantized_bytes: int  # their quantized weights + scales (+ bias)
    model_bytes: int  # every parameter and buffer of the model now (shared tensors counted once)

    @property
    def saved_bytes(self) -> int:
        return self.original_bytes - self.quantized_bytes

    def __str__(self) -> str:
        mib = 1 << 20
        return (
            f"{self.modules} quantized linears: {self.original_bytes / mib:.1f} MiB -> "
            f"{self.quantized_bytes / mib:.1f} MiB (saved {self.saved_bytes / mib:.1f} MiB); "
            f"model now {self.model_bytes / mib:.1f} MiB"
        )


def memory_report(model: nn.Module) -> MemoryReport:
    """Bytes the quantized linears replaced, what they hold now, and the model's total."""
    n = original = quantized = 0
    for module in model.modules():
        if isinstance(module, QUANTIZED_LINEARS):
            n += 1
            original += module.source_bytes
            quantized += sum(b.numel() * b.element_size() for b in module.buffers(recurse=False))
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return MemoryReport(n, original, quantized, total)
