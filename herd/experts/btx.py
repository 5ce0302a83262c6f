"""Branch-Train-MiX (BTX), the mixture-of-experts baseline: the experts' feed-forward blocks become the
experts of a per-layer mixture behind a learned router, every other weight (embeddings, attention, norms,
head) is the experts' average, and then all parameters train.

Routing is top-k over the router's softmax with the k chosen probabilities renormalised (BTX uses
top-2); k = n is soft routing over every expert. The load-balancing loss is Switch Transformer's,
n * sum_i f_i P_i (f_i: the share of routing slots expert i received, P_i: its mean router
probability), 1.0 when routing is uniform; `load_balancing_loss` sums it over the layers of the last
forward pass for the caller to add with a small coefficient.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from herd.experts.merging import model_soup
from herd.model import Transformer


class MixtureFeedForward(nn.Module):
    """One layer's experts' FFNs behind a top-k router (see the module docstring)."""

    def __init__(self, ffns: Sequence[nn.Module], dim: int, top_k: int = 2, router_std: float = 0.02) -> None:
        super().__init__()
        if not 1 <= top_k <= len(ffns):
            raise ValueError(f"top_k must be between 1 and the {len(ffns)} experts, got {top_k}")
        self.experts = nn.ModuleList(ffns)
        self.top_k = top_k
        self.router = nn.Linear(dim, len(ffns), bias=False)
        nn.init.normal_(self.router.weight, std=router_std)
        self.aux_loss: torch.Tensor | None = None

    def routing(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(router probabilities, routing weights), both [tokens, n] float32; each token's weights are
        its top-k probabilities renormalised to sum to 1, zero elsewhere."""
        probs = self.router(x).float().softmax(dim=-1)
        if self.top_k == probs.shape[-1]:
            return probs, probs
        top = probs.topk(self.top_k, dim=-1)
        weights = torch.zeros_like(probs).scatter(-1, top.indices, top.values / top.values.sum(-1, keepdim=True))
        return probs, weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        probs, weights = self.routing(flat)
        out = torch.zeros_like(flat)
        for i, ffn in enumerate(self.experts):
            rows = (weights[:, i] > 0).nonzero().squeeze(-1)
            if rows.numel():
                out = out.index_add(0, rows, ffn(flat[rows]) * weights[rows, i, None].to(flat.dtype))
        n = len(self.experts)
        share = (weights > 0).float().mean(dim=0) / self.top_k
        self.aux_loss = n * (share * probs.mean(dim=0)).sum()
        return out.view_as(x)


def build_btx(experts: Sequence[Transformer], top_k: int = 2) -> Transformer:
    """A BTX model from experts branched from one seed: their average everywhere but the FFNs, which
    become each layer's `MixtureFeedForward` (copies; the experts are left as they are)."""
    if not experts:
        raise ValueError("BTX needs at least one expert")
    model = copy.deepcopy(experts[0])
    model.load_state_dict(model_soup([expert.state_dict() for expert in experts]))
    for index, block in enumerate(model.blocks()):
        ffns = [copy.deepcopy(expert.blocks()[index].feed_forward) for expert in experts]
        block.feed_forward = MixtureFeedForward(ffns, model.config.dim, top_k).to(next(model.parameters()).device)
    model.requires_grad_(True)
    return model


def load_balancing_loss(model: nn.Module) -> torch.Tensor:
    """The sum of every mixture layer's load-balancing loss from the model's last forward pass."""
    losses = [m.aux_loss for m in model.modules() if isinstance(m, MixtureFeedForward) and m.aux_loss is not None]
    if not losses:
        raise ValueError("no mixture layer has run a forward pass yet")
    return torch.stack(losses).sum()
