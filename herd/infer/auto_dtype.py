"""`--dtype auto` for inference: the fastest dtype whose greedy tokens equal float32's on this host.

Half precision is a trap on most CPUs (no native bfloat16/float16 arithmetic: 20-50x slower than
float32) and a win on GPUs and on CPUs with AVX512-BF16 or AMX; and even where it is fast, a small
model's greedy output can change. So `auto` asks two questions, cheapest first:
1. is the dtype faster here? (CPU: herd.config.host_speed's measured matmul slowdown; CUDA: yes for
   bfloat16 where the GPU supports it, and float16);
2. does it keep the model's greedy tokens? (the reference prompts below, a few tokens each, compared
   with float32's through the engine).
The first dtype that passes both wins; otherwise float32, with the reason.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from herd.loading import LoadedModel

REFERENCE_PROMPTS = (
    "The capital of France is",
    "def fibonacci(n):\n",
    "Water boils at a temperature of",
    "Once upon a time, in a small village,",
)
REFERENCE_TOKENS = 16


@dataclass(frozen=True)
class DtypeChoice:
    dtype: str
    reason: str


def faster_candidates(device: str) -> list[tuple[str, str]]:
    """(dtype, why it may be faster) for the dtypes that run faster than float32 here, fastest first."""
    if device.startswith("cuda"):
        out = []
        if torch.cuda.is_bf16_supported():
            out.append(("bfloat16", "native bfloat16 on this GPU"))
        out.append(("float16", "native float16 on this GPU"))
        return out
    from herd.config.host_speed import cpu_matmul_slowdown

    timed = [(cpu_matmul_slowdown(name), name) for name in ("bfloat16", "float16")]
    return [(name, f"matmul {1 / ratio:.2f}x float32's speed on this CPU") for ratio, name in sorted(timed)
            if ratio < 1.0]


def greedy_tokens(loaded: LoadedModel, prompts: tuple[str, ...] = REFERENCE_PROMPTS,
                  tokens: int = REFERENCE_TOKENS) -> list[list[int]]:
    from herd.infer.engine import EngineConfig, LLMEngine
    from herd.infer.sampling import SamplingParams

    engine = LLMEngine(loaded, EngineConfig(kv_cache_bytes=64 << 20))
    params = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)
    return [o.outputs[0].token_ids for o in engine.generate(list(prompts), params)]


def with_dtype(loaded: LoadedModel, dtype: str) -> LoadedModel:
    """A copy of `loaded` whose model runs in `dtype` (the caller's stays as it is)."""
    from herd.loading import LoadedModel as _Loaded

    model = copy.deepcopy(loaded.model).to(getattr(torch, dtype))
    return _Loaded(model, loaded.tokenizer, loaded.chat_format, loaded.config, loaded.source)


def choose_inference_dtype(loaded: LoadedModel, device: str) -> DtypeChoice:
    """The fastest dtype for `loaded` (a float32 model on `device`) that keeps its greedy tokens."""
    candidates = faster_candidates(device)
    if not candidates:
        return DtypeChoice("float32", "no faster dtype on this CPU (no native bfloat16/float16 matmul)")
    reference = greedy_tokens(loaded)
    rejected = []
    for dtype, why in candidates:
        if greedy_tokens(with_dtype(loaded, dtype)) == reference:
            return DtypeChoice(dtype, f"{why}; greedy tokens equal float32's on {len(REFERENCE_PROMPTS)} "
                                      f"reference prompts")
        rejected.append(dtype)
    return DtypeChoice("float32", f"{' and '.join(rejected)} would be faster but change the greedy tokens "
                                  "on the reference prompts")


def load_for_inference(spec: str, dtype: str, device: str) -> tuple[LoadedModel, DtypeChoice | None]:
    """`herd.load_model` for the inference commands: `dtype` may be "auto" (then the choice is returned)."""
    import sys

    from herd.loading import load_model

    if dtype != "auto":
        return load_model(spec, dtype=getattr(torch, dtype), device=device), None
    loaded = load_model(spec, dtype=torch.float32, device=device)
    choice = choose_inference_dtype(loaded, device)
    print(f"herd: --dtype auto -> {choice.dtype} ({choice.reason})", file=sys.stderr, flush=True)
    if choice.dtype != "float32":
        loaded.model.to(getattr(torch, choice.dtype))   # in place: no second copy of the weights
    return loaded, choice
