"""Output projection and cross-entropy in one pass over chunks of tokens, never holding all logits.

With Llama 3's 128,256-token vocabulary the logits of a batch are by far its largest tensor (a 2,048
token batch: 1 GiB in float32), and the plain path (`logits = head(h)`, `cross_entropy(logits)`, then
autograd) writes and re-reads it about eight times: logits, log-softmax, its gradient's zero fill and
scatter, the softmax backward. On a CPU, where memory bandwidth is the limit, that is as slow as the
matmuls themselves. Here each chunk's logits are computed, turned into the loss *and* into the
softmax gradient in place, and multiplied back into the gradients of the hidden states and of the
output weight at once (the approach of Liger-Kernel's fused linear cross-entropy): the same three
matmuls, one chunk-sized buffer, about three passes over it. The gradients are computed in the
forward pass, so backward only scales them by the incoming gradient (the loss is a sum: a scalar).

Rows whose target is -100 are dropped before the first matmul: a batch whose documents carry a loss
mask (answer-only synthetic data, herd.data.shards) pays the head only for the tokens it trains on,
so a 128K-vocabulary model reads a long masked document for the price of its body.

It computes exactly the float32 sum of the per-token cross-entropy over targets != -100 (the same
numbers as `cross_entropy_sum`, up to summation order) and is used for float32 training of an
unsharded model; bf16 autocast, vocabulary-sharded heads and compiled models keep the plain path.
"""

from __future__ import annotations

from typing import Any

import torch

IGNORE_INDEX = -100
DEFAULT_CHUNK_TOKENS = 256
# A chunk holds at most this many logits: 256 tokens of Llama 3's 128,256-token vocabulary (~131 MB in
# float32). Small vocabularies (scaling-law models) get longer chunks, so a step is not a Python loop of
# tiny matmuls: with 1,024 tokens a whole 8 x 128 batch is one chunk.
CHUNK_LOGITS = DEFAULT_CHUNK_TOKENS * 128_256


def chunk_tokens(vocab_size: int) -> int:
    """Tokens per chunk for a head of `vocab_size` rows (at least DEFAULT_CHUNK_TOKENS)."""
    return max(DEFAULT_CHUNK_TOKENS, CHUNK_LOGITS // max(vocab_size, 1))


def _chunk_logits(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """exp(logits - max) in place, with the per-row log-sum-exp, the target logits and the valid mask."""
    logits = (h @ weight.t()).float()
    valid = targets != IGNORE_INDEX
    safe = torch.where(valid, targets, 0)
    target_logit = logits.gather(1, safe[:, None]).squeeze(1)
    row_max = logits.amax(dim=1, keepdim=True)
    logits.sub_(row_max).exp_()
    row_sum = logits.sum(dim=1, keepdim=True)
    lse = (row_sum.log() + row_max).squeeze(1)
    return logits, row_sum, lse - target_logit, valid


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,  # type: ignore[override]
                chunk: int) -> torch.Tensor:
        grad_h = torch.zeros_like(h) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for start in range(0, h.shape[0], chunk):
            hc, tc = h[start:start + chunk], targets[start:start + chunk]
            probs, row_sum, nll, valid = _chunk_logits(hc, weight, tc)
            total += nll[valid].sum()
            if grad_h is None and grad_w is None:
                continue
            # d(sum nll)/d logits = softmax - one_hot(target) on valid rows, 0 on ignored ones
            probs.div_(row_sum)
            rows = valid.nonzero().squeeze(1)
            probs[rows, tc[rows]] -= 1.0
            probs[~valid] = 0.0
            probs = probs.to(h.dtype)
            if grad_h is not None:
                grad_h[start:start + chunk] = probs @ weight
            if grad_w is not None:
                grad_w.addmm_(probs.t(), hc)
        ctx.save_for_backward(*(g for g in (grad_h, grad_w) if g is not None))
        ctx.has = (grad_h is not None, grad_w is not None)
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        saved = list(ctx.saved_tensors)
        grad_h = saved.pop(0) * grad_out if ctx.has[0] else None
        grad_w = saved.pop(0) * grad_out if ctx.has[1] else None
        return grad_h, grad_w, None, None


def fused_linear_cross_entropy_sum(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                                   chunk: int | None = None) -> torch.Tensor:
    """Float32 sum of cross-entropy(h @ weight.T, targets) over targets != -100, chunk tokens at a time
    (default: `chunk_tokens` of the head's vocabulary).

    `h` is [..., dim] (the normed final hidden states), `targets` the matching [...] token ids.
    Differentiable in `h` and `weight`.
    """
    if chunk is None:
        chunk = chunk_tokens(weight.shape[0])
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    flat_h = h.reshape(-1, h.shape[-1])
    flat_t = targets.reshape(-1)
    if flat_h.shape[0] != flat_t.shape[0]:
        raise ValueError(f"{flat_h.shape[0]} hidden states for {flat_t.shape[0]} targets")
    trained = flat_t != IGNORE_INDEX
    if not bool(trained.all()):
        # masked rows cost nothing in the head; their hidden states get a zero gradient through the gather
        rows = trained.nonzero().squeeze(1)
        flat_h, flat_t = flat_h.index_select(0, rows), flat_t.index_select(0, rows)
    if torch.is_grad_enabled() and (flat_h.requires_grad or weight.requires_grad):
        return _FusedLinearCrossEntropy.apply(flat_h, weight, flat_t, chunk)
    total = torch.zeros((), dtype=torch.float32, device=h.device)
    with torch.no_grad():
        for start in range(0, flat_h.shape[0], chunk):
            _, _, nll, valid = _chunk_logits(flat_h[start:start + chunk], weight, flat_t[start:start + chunk])
            total += nll[valid].sum()
    return total
