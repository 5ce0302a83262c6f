"""Baselines that combine the same experts without stitch layers.

- Model soup: the uniform weight average of the experts (herd.checkpoint.averaging does the work).
- Task arithmetic: theta0 + lambda * sum_i (theta_i - theta0), each expert's "task vector" added to the
  seed (lambda tuned on validation data by the caller; lambda 0 is the seed).
- BTM ensemble (Branch-Train-Merge): the experts' next-token distributions averaged at every position,
  p(x) = sum_i w_i p_i(x), uniform weights by default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from herd.checkpoint.averaging import average_state_dicts


def model_soup(state_dicts: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The uniform average of the experts' weights (float tensors in float32, cast back)."""
    return average_state_dicts(state_dicts)


def task_arithmetic(
    seed: Mapping[str, torch.Tensor], experts: Sequence[Mapping[str, torch.Tensor]], scale: float,
) -> dict[str, torch.Tensor]:
    """theta0 + scale * sum_i (theta_i - theta0), in float32, cast to the seed's dtypes.

    That is the weighted average of (seed, experts...) with weights (1 - scale * n, scale, ..., scale),
    which sum to 1, so `average_state_dicts` computes it and checks keys, shapes and non-float tensors
    (those must equal the seed's and are copied).
    """
    if not experts:
        raise ValueError("task arithmetic needs at least one expert")
    weights = [1.0 - scale * len(experts)] + [scale] * len(experts)
    return average_state_dicts([seed, *experts], weights=weights)


class BTMEnsemble(nn.Module):
    """Next-token log-probabilities of a weighted mixture of models: log sum_i w_i softmax(logits_i).

    Its output works wherever logits do (a softmax of it is the mixture's distribution, and its
    log-softmax is itself), so losses and samplers take it unchanged.
    """

    def __init__(self, models: Sequence[nn.Module], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        w = torch.full((len(models),), 1.0 / len(models)) if weights is None else torch.tensor(weights, dtype=torch.float32)
        if w.shape != (len(models),) or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError(f"ensemble weights must be {len(models)} non-negative numbers with a positive sum")
        self.models = nn.ModuleList(models)
        self.register_buffer("log_weights", (w / w.sum()).log(), persistent=False)

    def forward(self, tokens: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        """Mixture log-probabilities [B, T, vocab] (float32) for `tokens`; extra arguments go to every model."""
        per_model = torch.stack([model(tokens, *args, **kwargs).float().log_softmax(-1) for model in self.models])
        return torch.logsumexp(per_model + self.log_weights.view(-1, *([1] * (per_model.dim() - 1))), dim=0)
