"""Post-training losses with the paper's numbers (Llama 3, section 4.1.2-4.1.4).

Every loss returns a *sum* over its units (preference pairs, tokens) with the count that a batch-level
mean divides by, so that gradient accumulation over micro-batches divides once by the whole batch's
count and equals one big batch exactly (the same convention as pretraining's `loss_sum`).

- DPO (Rafailov et al.): -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))), beta 0.1 in the paper,
  plus an NLL term on the chosen response with coefficient 0.2 (Llama 3's regularizer; TRL's "sft"
  loss / `rpo_alpha`). Optional label smoothing (conservative DPO) and the IPO loss.
- Reward model: Llama 2's binary ranking loss -log sigmoid(r_better - r_worse) over every ordered pair
  of a prompt's 2-3 ranked responses, **without** Llama 2's margin term (Llama 3 drops it), with
  optional reward centering (Eisenstein et al.; TRL's `center_rewards_coefficient`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

DPO_LOSS_TYPES = ("sigmoid", "ipo")


@dataclass(frozen=True)
class DPOTerms:
    """Per-pair pieces of the DPO objective (all [P] tensors) and the pair-summed loss."""

    loss_sum: torch.Tensor  # scalar: sum over pairs of the preference loss (no NLL)
    chosen_rewards: torch.Tensor  # beta * (pi_c - ref_c), detached
    rejected_rewards: torch.Tensor  # beta * (pi_r - ref_r), detached


def dpo_loss_sum(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor, reference_rejected: torch.Tensor,
    beta: float = 0.1, label_smoothing: float = 0.0, loss_type: str = "sigmoid",
) -> DPOTerms:
    """The DPO preference loss summed over pairs; inputs are sequence log-probs [P] over the masked tokens."""
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"dpo loss_type must be one of {DPO_LOSS_TYPES}, got {loss_type!r}")
    if beta <= 0:
        raise ValueError(f"dpo beta must be positive, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"dpo label_smoothing must be in [0, 0.5), got {label_smoothing}")
    margin = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)
    if loss_type == "ipo":
        # IPO (Azar et al.) regresses the log-ratio margin to 1 / (2 beta) instead of pushing it to infinity
        losses = (margin - 1.0 / (2.0 * beta)) ** 2
    else:
        logits = beta * margin
        losses = -F.logsigmoid(logits) * (1.0 - label_smoothing) - F.logsigmoid(-logits) * label_smoothing
    return DPOTerms(
        loss_sum=losses.sum(),
        chosen_rewards=(beta * (policy_chosen - reference_chosen)).detach(),
        rejected_rewards=(beta * (policy_rejected - reference_rejected)).detach(),
    )


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
             reference_rejected: torch.Tensor, beta: float = 0.1, *, chosen_nll_sum: torch.Tensor | None = None,
             chosen_tokens: int | torch.Tensor = 1, nll_weight: float = 0.0, label_smoothing: float = 0.0,
             loss_type: str = "sigmoid") -> torch.Tensor:
    """Mean DPO loss over the pairs plus `nll_weight` x the chosen responses' token-mean NLL.

    The convenience form of `dpo_loss_sum` for one batch (tests, notebooks); training uses the sums.
    """
    terms = dpo_loss_sum(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta,
                         label_smoothing, loss_type)
    loss = terms.loss_sum / policy_chosen.numel()
    if nll_weight:
        if chosen_nll_sum is None:
            raise ValueError("nll_weight > 0 needs chosen_nll_sum (the chosen responses' summed NLL)")
        loss = loss + nll_weight * chosen_nll_sum / chosen_tokens
    return loss


def ranking_pairs(count: int) -> list[tuple[int, int]]:
    """Every (better, worse) index pair of `count` responses ranked best first."""
    return [(i, j) for i in range(count) for j in range(i + 1, count)]


def reward_ranking_loss_sum(rewards: torch.Tensor, margin: torch.Tensor | float = 0.0,
                            center_coefficient: float = 0.0) -> tuple[torch.Tensor, int]:
    """Summed ranking loss over every ordered pair of one prompt's responses (rewards [K], best first).

    Returns (sum, number of pairs). `margin` is Llama 2's term (Llama 3 uses none: leave it 0);
    `center_coefficient` adds c * mean(r^2) per pair, pulling rewards toward zero mean.
    """
    if rewards.dim() != 1 or rewards.numel() < 2:
        raise ValueError(f"a ranking needs a 1-D tensor of at least 2 rewards, got shape {tuple(rewards.shape)}")
    pairs = ranking_pairs(rewards.numel())
    better = rewards[[i for i, _ in pairs]]
    worse = rewards[[j for _, j in pairs]]
    losses = -F.logsigmoid(better - worse - margin)
    if center_coefficient:
        losses = losses + center_coefficient * (better ** 2 + worse ** 2) / 2
    return losses.sum(), len(pairs)


def sequence_logprobs(token_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of per-token log-probs over `mask` (bool, same shape), per row of the last dimension."""
    return (token_logprobs * mask.to(token_logprobs.dtype)).sum(-1)
