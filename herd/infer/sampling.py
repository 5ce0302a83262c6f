"""Choosing the next token from logits: greedy, temperature, top-k, top-p, min-p, penalties, logprobs.

Two entry points:
- `sample(logits, params, generator)`: one parameter set for every row, torch's own RNG (simple
  callers and the distribution tests).
- `sample_batch(logits, rows, ...)`: the engine's sampler, one call per step for the whole batch
  with per-row parameters, penalties over each row's history, logprobs, and a counter-based random
  stream: the uniform that picks output token `t` of a sequence with seed `s` is a pure function of
  `(s, t)` (`stream_uniform`). So a seeded sequence draws the same tokens whatever else shares its
  batch, after preemption and recompute, and whether or not its prompt blocks are shared with
  sibling samples. Sample `i` of a request with seed `s` uses seed `s + i`, so the n samples of one
  request equal n single-sample requests with seeds s, s+1, ...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. `temperature == 0` means greedy (argmax); top_k 0 and top_p 1 disable those cuts.

    - min_p: drop tokens whose probability is below min_p times the most likely token's.
    - repetition_penalty: logits of tokens seen in the prompt or output are divided (if positive) or
      multiplied (if negative) by it (HF/vLLM semantics; 1 disables).
    - frequency_penalty / presence_penalty: subtract count * f + (count > 0) * p from the logits of
      tokens generated so far (OpenAI semantics; output tokens only).
    - stop: strings that end the text (the text is cut before them); stop_token_ids: extra ids that
      end generation; ignore_eos: do not stop at the tokenizer's end-of-text/turn ids.
    - n: independent samples of one prompt (their prompt's KV cache is computed once and shared).
    - logprobs: report each generated token's log-probability; top_logprobs: also the k best.
    - prompt_logprobs: report the log-probability of each prompt token given the tokens before it,
      with this many best alternatives (0: the token's own only; None: off). Logits are projected only
      at the positions asked for (see `LLMEngine.add_request(prompt_logprobs_from=...)`).
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 256
    seed: int | None = None
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0
    prompt_logprobs: int | None = None

    def __post_init__(self) -> None:
        # Lists are accepted for the tuple fields (JSON callers); store tuples so params stay hashable.
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {self.max_tokens}")
        if not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if not -2 <= self.frequency_penalty <= 2:
            raise ValueError(f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}")
        if not -2 <= self.presence_penalty <= 2:
            raise ValueError(f"presence_penalty must be in [-2, 2], got {self.presence_penalty}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop must be non-empty strings, got {self.stop!r}")
        if any(t < 0 for t in self.stop_token_ids):
            raise ValueError(f"stop_token_ids must be >= 0, got {self.stop_token_ids}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.top_logprobs < 0:
            raise ValueError(f"top_logprobs must be >= 0, got {self.top_logprobs}")
        if self.prompt_logprobs is not None and (isinstance(self.prompt_logprobs, bool) or self.prompt_logprobs < 0):
            raise ValueError(f"prompt_logprobs must be None or an int >= 0, got {self.prompt_logprobs!r}")
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs=True")
        if self.seed is not None and not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int or None, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def has_penalties(self) -> bool:
        return self.repetition_penalty != 1.0 or self.frequency_penalty != 0.0 or self.presence_penalty != 0.0


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token ids [B] from logits [B, vocab] (one parameter set for all rows; no penalties)."""
    if params.greedy:
        return logits.argmax(dim=-1)
    logits = logits.float() / params.temperature
    if params.top_k > 0:
        kth = torch.topk(logits, min(params.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token is always kept).
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs >= params.top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    if params.min_p > 0:
        probs = probs.masked_fill(probs < params.min_p * probs.amax(dim=-1, keepdim=True), 0.0)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


# ---------------------------------------------------------------------------------------------
# The engine's batched sampler


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def stream_uniform(seed: int, counter: int) -> float:
    """A uniform in [0, 1) that depends only on (seed, counter): the engine's per-sequence random stream."""
    return (_splitmix64(_splitmix64(seed & _MASK64) ^ (counter & _MASK64)) >> 11) * (1.0 / (1 << 53))


@dataclass
class SamplerRow:
    """One row of a batched sampling call: its parameters and what the penalties need."""

    params: SamplingParams
    seed: int                     # the row's stream seed (request seed + sample index, or a random one)
    counter: int                  # position in the stream: the number of tokens this sequence generated
    prompt_ids: Sequence[int] = ()   # for repetition_penalty
    output_ids: Sequence[int] = ()   # for all penalties


@dataclass
class BatchSample:
    tokens: list[int]
    logprobs: list[float] | None              # per row (None when no row asked)
    top: list[list[tuple[int, float]]] | None  # per row, best first (empty lists for rows that did not ask)


def _padded(rows: list[Sequence[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, L] ids (padded with 0) and a [B, L] validity mask."""
    width = max(1, max(len(r) for r in rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    valid = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        if len(r):
            ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
            valid[i, : len(r)] = True
    return ids.to(device, non_blocking=True), valid.to(device, non_blocking=True)


def apply_penalties(logits: torch.Tensor, rows: Sequence[SamplerRow]) -> torch.Tensor:
    """Repetition (prompt + output), frequency and presence (output) penalties, batched. logits float32 [B, V]."""
    device, vocab = logits.device, logits.shape[-1]
    rep = torch.tensor([r.params.repetition_penalty for r in rows], device=device)
    freq = torch.tensor([r.params.frequency_penalty for r in rows], device=device)
    pres = torch.tensor([r.params.presence_penalty for r in rows], device=device)
    out_ids, out_valid = _padded([r.output_ids for r in rows], device)
    counts = torch.zeros(len(rows), vocab, device=device)
    counts.scatter_add_(1, out_ids, out_valid.float())
    if any(r.params.repetition_penalty != 1.0 for r in rows):
        prompt_ids, prompt_valid = _padded([r.prompt_ids for r in rows], device)
        seen = torch.zeros(len(rows), vocab, device=device)
        seen.scatter_add_(1, prompt_ids, prompt_valid.float())
        seen = (seen + counts) > 0
        penalty = torch.where(logits > 0, 1.0 / rep[:, None], rep[:, None])
        logits = torch.where(seen, logits * penalty, logits)
    logits = logits - counts * freq[:, None] - (counts > 0).float() * pres[:, None]
    return logits


# Top-k/top-p work on the CANDIDATES most likely tokens (a partial sort) when that provably holds every
# token the cut keeps; sorting a whole 49K-128K vocabulary took 28 ms for 16 rows on the 2-core dev box,
# topk(1024) 4 ms.
CANDIDATES = 1024


def _nucleus(
    scaled: torch.Tensor, top_ks: list[int], top_ps: list[float], width: int = CANDIDATES
) -> tuple[torch.Tensor, torch.Tensor]:
    """(probs [B, C] in descending order after the top-k and top-p cuts, order [B, C] token ids).

    Exact: probabilities are normalized over the whole vocabulary (or the row's top k), and the
    `width` best candidates are used only when every row's kept tokens lie inside them (k <= C, or
    the first C tokens already hold top_p of the mass); otherwise the whole vocabulary is sorted.
    """
    device = scaled.device
    vocab = scaled.shape[-1]
    width = min(width, vocab)
    k = torch.tensor([k if 0 < k < vocab else vocab for k in top_ks], device=device)
    p = torch.tensor(top_ps, device=device)
    sorted_logits, order = scaled.topk(width, dim=-1) if width < vocab else scaled.sort(dim=-1, descending=True)
    rank = torch.arange(width, device=device)
    # the normalizer: over the row's top k (all inside the candidates when k <= width), else everything
    within_k = sorted_logits.masked_fill(rank[None, :] >= k[:, None], float("-inf"))
    normalizer = torch.where(k <= width, torch.logsumexp(within_k, dim=-1), torch.logsumexp(scaled, dim=-1))
    probs = torch.exp(within_k - normalizer[:, None])
    if width < vocab and not bool(((k <= width) | (probs.sum(dim=-1) >= p)).all()):
        return _nucleus(scaled, top_ks, top_ps, width=vocab)
    outside = probs.cumsum(dim=-1) - probs >= p[:, None]
    return probs.masked_fill(outside, 0.0), order


def sample_batch(logits: torch.Tensor, rows: Sequence[SamplerRow]) -> BatchSample:
    """Sample one token per row of `logits` [B, V] with per-row parameters, in a few batched ops.

    Greedy rows take the argmax of the penalized logits. Other rows: temperature, top-k, top-p,
    min-p, then inverse-CDF sampling with the row's stream uniform (exact sampling from the
    filtered distribution, one random number per row).
    """
    batch = len(rows)
    device = logits.device
    logits = logits.float()
    if any(r.params.has_penalties for r in rows):
        logits = apply_penalties(logits, rows)
    want_logprobs = any(r.params.logprobs for r in rows)
    greedy = [r.params.greedy for r in rows]
    tokens: torch.Tensor
    if all(greedy):
        tokens = logits.argmax(dim=-1)
    else:
        temps = torch.tensor([r.params.temperature if r.params.temperature > 0 else 1.0 for r in rows], device=device)
        scaled = logits / temps[:, None]
        top_ks = [r.params.top_k for r in rows]
        top_ps = [r.params.top_p for r in rows]
        vocab = logits.shape[-1]
        uniforms = torch.tensor(
            [stream_uniform(r.seed, r.counter) for r in rows], dtype=torch.float64, device=device
        )
        if any(p < 1.0 for p in top_ps) or any(top_ks):
            probs, order = _nucleus(scaled, top_ks, top_ps)
            vocab = probs.shape[-1]
        else:
            order = None
            probs = torch.softmax(scaled, dim=-1)
        min_ps = [r.params.min_p for r in rows]
        if any(min_ps):
            mp = torch.tensor(min_ps, device=device)
            probs = probs.masked_fill(probs < mp[:, None] * probs.amax(dim=-1, keepdim=True), 0.0)
        cdf = probs.double().cumsum(dim=-1)
        target = uniforms[:, None] * cdf[:, -1:]
        picked = torch.searchsorted(cdf, target, right=True).clamp_(max=vocab - 1).squeeze(-1)
        if order is not None:
            picked = order.gather(1, picked[:, None]).squeeze(-1)
        if any(greedy):
            picked = torch.where(torch.tensor(greedy, device=device), logits.argmax(dim=-1), picked)
        tokens = picked
    if not want_logprobs:
        return BatchSample(tokens.tolist(), None, None)
    logp = torch.log_softmax(logits, dim=-1)
    chosen = logp.gather(1, tokens[:, None]).squeeze(-1)
    k_max = max(r.params.top_logprobs for r in rows)
    if k_max:
        top_vals, top_ids = logp.topk(min(k_max, logp.shape[-1]), dim=-1)
        token_list, chosen_list, vals, ids = (
            tokens.tolist(), chosen.tolist(), top_vals.tolist(), top_ids.tolist()
        )
        top = [
            list(zip(ids[i][: r.params.top_logprobs], vals[i][: r.params.top_logprobs])) for i, r in enumerate(rows)
        ]
    else:
        token_list, chosen_list = tokens.tolist(), chosen.tolist()
        top = [[] for _ in range(batch)]
    return BatchSample(token_list, chosen_list, top)
