"""Check a state dict against a model config, failing with a message that names every wrong tensor."""

from __future__ import annotations

import torch

from herd.checkpoint.errors import CheckpointError
from herd.model import ModelConfig, Transformer


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape for `config` (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        model = Transformer(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if config.tie_embeddings:
        shapes.pop("output.weight")
    return shapes


def check_state_dict(config: ModelConfig, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError listing missing, unexpected and misshapen tensors.

    A tied model's own state dict lists the shared matrix twice (torch names every parameter), so a
    training checkpoint of it carries `output.weight` equal to `tok_embeddings.weight`: that copy is
    accepted (loading it writes the same values into the shared matrix); a different one is not."""
    expected = expected_shapes(config)
    head, embedding = state.get("output.weight"), state.get("tok_embeddings.weight")
    if config.tie_embeddings and head is not None and embedding is not None and head.shape == embedding.shape \
            and torch.equal(head, embedding):
        state = {k: v for k, v in state.items() if k != "output.weight"}
    problems = []
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        problems.append(f"missing tensors: {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {_short(unexpected)}")
    for key in sorted(set(expected) & set(state)):
        if tuple(state[key].shape) != expected[key]:
            problems.append(
                f"tensor {key} has shape {tuple(state[key].shape)}, the model config expects {expected[key]}"
            )
    if problems:
        raise CheckpointError(f"{source} does not match its model config: " + "; ".join(problems))


def load_state_dict_checked(model: Transformer, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy `state` into `model` after `check_state_dict`; tied output weights stay tied."""
    check_state_dict(model.config, state, source)
    model.load_state_dict(state, strict=False)


def _short(keys: list[str], limit: int = 6) -> str:
    head = ", ".join(keys[:limit])
    return head + (f" (and {len(keys) - limit} more)" if len(keys) > limit else "")
