"""AdamW for pretraining: betas (0.9, 0.95), decoupled weight decay on matrices only.

Weight decay applies to parameters with two or more dimensions (the attention/FFN projections, the
embedding and the output head) and not to the RMSNorm gains. Decaying a norm gain pulls it towards 0,
i.e. towards switching the layer off, which is not the regularisation we want; this is the choice of
GPT-2/nanoGPT/torchtitan-style recipes. The embedding is a matrix and is decayed, as in torchtitan.

The implementation is picked for speed: `fused=True` (one kernel for all parameters; CUDA and, in
recent torch, CPU), else `foreach=True` (multi-tensor), else the per-parameter loop.
"""

from __future__ import annotations

import torch
from torch import nn

from herd.train.config import OptimSection


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices (decayed) and vectors (not decayed). Tied weights appear once."""
    decay, no_decay = [], []
    for _, param in model.named_parameters():  # named_parameters() deduplicates shared tensors
        if not param.requires_grad:
            continue
        (decay if param.dim() >= 2 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _fused_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return True
    if device.type == "cpu":
        try:  # CPU fused AdamW exists in torch >= 2.4; probe rather than parse versions
            p = nn.Parameter(torch.zeros(2))
            p.grad = torch.zeros(2)
            torch.optim.AdamW([p], fused=True).step()
            return True
        except (RuntimeError, TypeError):
            return False
    return False


def build_optimizer(model: nn.Module, cfg: OptimSection, device: torch.device) -> tuple[torch.optim.AdamW, str]:
    """The AdamW optimizer and the implementation chosen ("fused", "foreach" or "loop")."""
    impl = cfg.impl
    if impl == "auto":
        impl = "fused" if _fused_supported(device) else "foreach"
    kwargs: dict = {"lr": cfg.lr, "betas": tuple(cfg.betas), "eps": cfg.eps}
    if impl == "fused":
        kwargs["fused"] = True
    elif impl == "foreach":
        kwargs["foreach"] = True
    else:
        kwargs["foreach"] = False
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), **kwargs), impl
