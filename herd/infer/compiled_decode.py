"""The engine's decode step through torch.compile: no per-op Python overhead at batch-1 decode.

A decode step (every scheduled sequence adds one token) of a small model is hundreds of tiny ops
per token; in eager mode each costs a few microseconds of Python and dispatch, which on a CPU is as
much time as the weight-reading matmuls themselves. Compiled, the step becomes one call: Inductor
fuses the norms, RoPE, residual adds and SwiGLU into a few C++ (CPU) or Triton (CUDA) kernels around
the matmuls, and the paged-cache writes stay in place.

What is compiled is the model's own forward with the engine's own attention state
(`PagedAttentionState` over `StepMetadata`), so there is no second model implementation: only the
step's tensors become graph inputs. The context length (and the batch, after its first change) is
a dynamic dimension, so one graph serves every length; a new graph is built only when the step's
structure changes (one sequence or several; with or without a shared prefix, which uses cascade
attention). Prefill steps and mixed steps stay eager: their cost is in large matmuls already.

Guards on the model's parameters are skipped (`skip_guard_on_all_nn_modules_unsafe`): the engine
never swaps the model's weights under a compiled step, and checking ~300 tensors each call would
cost about a millisecond per token.
"""

from __future__ import annotations

import functools
import types
import warnings
import weakref
from collections.abc import Callable
from typing import NamedTuple

import torch

from herd.infer.paged_attention import PagedAttentionState, PagedKVCache, StepMetadata
from herd.model import Transformer


def inductor_settings(device: torch.device) -> dict[str, object]:
    """Inductor config for compiling the decode step on `device`.

    On CPU the graph's wrapper is generated as C++ (`cpp_wrapper`) and input size asserts are off:
    the Python wrapper of a 30-layer graph is ~300 calls and ~600 size checks per step, about 1 ms of
    a 7 ms token (measured on SmolLM2-135M int4, 2-core EPYC: 115-120 -> 136-154 tok/s). On CUDA the
    defaults are kept (Triton kernels, Python wrapper): that path has not been measured on a GPU yet.
    These are applied with `config.patch` around each call rather than as torch.compile `options`,
    because the FX graph cache (torch 2.13) returned a Python-wrapper artifact for `options`
    asking for the C++ one.
    """
    if device.type == "cpu":
        return {"cpp_wrapper": True, "size_asserts": False}
    return {}


class _CacheTensors(NamedTuple):
    """What `PagedAttentionState` reads of a `PagedKVCache`, passed into the graph as plain inputs."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]


def _decode_forward(
    model: Transformer,
    gqa: bool,
    keys: list[torch.Tensor],
    values: list[torch.Tensor],
    tokens: torch.Tensor,
    positions: torch.Tensor,
    slot_mapping: torch.Tensor,
    decode_slots: torch.Tensor,
    decode_mask: torch.Tensor | None,
    shared_slots: torch.Tensor | None,
) -> torch.Tensor:
    """The traced function: the model's forward over the engine's paged attention state."""
    meta = StepMetadata(slot_mapping, tokens.shape[1], decode_slots, decode_mask, [], shared_slots)
    state = PagedAttentionState(_CacheTensors(keys, values), meta, gqa)  # type: ignore[arg-type]
    return model(tokens, positions, state)[0]


# model -> {module-structure signature: compiled forward}. Engines over the same model share graphs
# (a benchmark or a test makes several engines; each would otherwise compile again).
_COMPILED: weakref.WeakKeyDictionary[Transformer, dict[tuple[str, ...], Callable[..., torch.Tensor]]] = (
    weakref.WeakKeyDictionary()
)


def _compiled_forward(model: Transformer) -> Callable[..., torch.Tensor]:
    """The compiled decode forward for `model` as it is now built.

    Dynamo keeps graphs per code object and, with the module guards skipped, cannot tell two models,
    or a model and its prepared (quantized, fused) copy that shares its parameters, apart. So each (model, module
    structure) gets a private copy of the code object; identical graphs still come from the on-disk
    FX graph cache.
    """
    structure = tuple(type(module).__name__ for module in model.modules())
    per_model = _COMPILED.setdefault(model, {})
    if structure not in per_model:
        forward = types.FunctionType(_decode_forward.__code__.replace(), _decode_forward.__globals__)
        per_model[structure] = torch.compile(
            functools.partial(forward, model), fullgraph=True,
            options={"guard_filter_fn": torch.compiler.skip_guard_on_all_nn_modules_unsafe},
        )
    return per_model[structure]


class CompiledDecodeStep:
    """Logits [B, vocab] for a pure-decode step, computed by a compiled forward of `model`."""

    def __init__(self, model: Transformer, cache: PagedKVCache, gqa: bool) -> None:
        self.model = model
        self.cache = cache
        self.gqa = gqa
        self.steps = 0  # decode steps run through the compiled graph (tests and stats read it)
        self.disabled = False  # set when torch.compile gave up: decode steps then run the same code eagerly
        device = next(model.parameters()).device
        self._settings = inductor_settings(device)
        # The cache size varies per engine (`herd generate` sizes it to the request): a symbolic slot
        # count lets one compiled graph (and the on-disk FX graph cache) serve every size.
        for tensor in (*cache.keys, *cache.values):
            torch._dynamo.maybe_mark_dynamic(tensor, 0)
        self._compiled = _compiled_forward(model)

    @staticmethod
    def applies(meta: StepMetadata) -> bool:
        """True when every token of the step is a decode (no prefill chunk)."""
        return not meta.prefills and meta.decode_slots is not None

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, meta: StepMetadata) -> torch.Tensor:
        """tokens/positions [1, B] of a decode-only step (see `applies`) -> logits [B, vocab]."""
        if not self.applies(meta):
            raise ValueError("CompiledDecodeStep runs decode-only steps")
        slots = meta.decode_slots
        assert slots is not None
        batch = tokens.shape[1]
        mask = meta.decode_mask
        if batch > 1 and mask is None:  # equal lengths: an all-true mask keeps one graph for every batch
            # made like the engine's own masks (outside inference mode): an inference tensor has other
            # dispatch keys, and Dynamo recompiled the whole graph (seconds) on that difference alone
            with torch.inference_mode(False):
                mask = torch.ones(batch, 1, 1, slots.shape[1], dtype=torch.bool, device=slots.device)
        # The batch and the context change from step to step: symbolic sizes from the first call, so
        # one graph covers them all (maybe_: a dimension of size 1 is specialised instead of failing,
        # which makes batch 1 its own graph).
        for tensor, dims in ((tokens, (1,)), (positions, (1,)), (meta.slot_mapping, (0,)), (slots, (0, 1)),
                             (mask, (0, 3)), (meta.shared_slots, (0,))):
            if tensor is not None:
                for dim in dims:
                    torch._dynamo.maybe_mark_dynamic(tensor, dim)
        args = (self.gqa, self.cache.keys, self.cache.values, tokens, positions, meta.slot_mapping, slots, mask,
                meta.shared_slots)
        if not self.disabled:
            try:
                with torch._inductor.config.patch(self._settings), torch._dynamo.config.patch(recompile_limit=16):
                    logits = self._compiled(*args)
                self.steps += 1
                return logits
            except torch._dynamo.exc.FailOnRecompileLimitHit:
                # Never expected (a handful of graphs cover every step); if it happens, stay correct.
                warnings.warn("compiled decode: too many graph variants; running decode steps eagerly", stacklevel=2)
                self.disabled = True
        return _decode_forward(self.model, *args)  # the same function, uncompiled
