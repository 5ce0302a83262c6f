"""Load a state dict into a model, failing with a message that names every wrong tensor."""

from __future__ import annotations

import torch
from torch import nn

from herd.checkpoint.errors import CheckpointError


def load_state_dict_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy `state` into `model`, raising CheckpointError for missing, unexpected or misshapen tensors."""
    expected = {k: v for k, v in model.state_dict().items()}
    if getattr(getattr(model, "config", None), "tie_embeddings", False):
        expected.pop("output.weight", None)
    problems = []
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        problems.append(f"missing tensors: {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {_short(unexpected)}")
    for key in sorted(set(expected) & set(state)):
        if tuple(state[key].shape) != tuple(expected[key].shape):
            problems.append(
                f"tensor {key} has shape {tuple(state[key].shape)}, the model config expects "
                f"{tuple(expected[key].shape)}"
            )
    if problems:
        raise CheckpointError(f"{source} does not match its model config: " + "; ".join(problems))
    model.load_state_dict(state, strict=False)


def _short(keys: list[str], limit: int = 6) -> str:
    head = ", ".join(keys[:limit])
    return head + (f" (and {len(keys) - limit} more)" if len(keys) > limit else "")
