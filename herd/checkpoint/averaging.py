"""Weight averaging of checkpoints: Polyak averaging of annealing checkpoints (pretraining) and
model averaging across runs (post-training) both reduce to this.

`average_state_dicts` streams: it holds one running float32 accumulator and one incoming state dict
at a time, so averaging K checkpoints costs ~2x one model in memory, not Kx. Floating-point tensors
are averaged in float32 and cast back to their own dtype; integer/bool tensors (step counters,
masks) must be identical across inputs and are copied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch

from herd.checkpoint.errors import CheckpointError

MODES = ("uniform", "ema")


def average_state_dicts(
    state_dicts: Iterable[Mapping[str, torch.Tensor]],
    *,
    mode: str = "uniform",
    ema_decay: float = 0.9,
    weights: Sequence[float] | None = None,
) -> dict[str, torch.Tensor]:
    """Average state dicts in order.

    - uniform: the mean (or the `weights`-weighted mean, weights normalised) of all inputs.
    - ema: avg <- decay * avg + (1 - decay) * next, starting from the first input; later
      checkpoints weigh more (the Polyak/EMA variant).
    Mismatched keys or shapes raise CheckpointError naming the key and the input index.
    """
    if mode not in MODES:
        raise ValueError(f"averaging mode must be one of {MODES}, got {mode!r}")
    if mode == "ema" and not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
    if weights is not None and mode != "uniform":
        raise ValueError("weights apply to uniform averaging only")
    acc: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    total = 0.0
    count = 0
    for index, sd in enumerate(state_dicts):
        if weights is not None and index >= len(weights):
            raise ValueError(f"more state dicts than weights ({len(weights)})")
        w = 1.0 if weights is None else float(weights[index])
        if index == 0:
            for key, value in sd.items():
                dtypes[key] = value.dtype
                acc[key] = value.detach().to(torch.float32) * w if value.is_floating_point() else value.detach().clone()
            total, count = w, 1
            continue
        if set(sd) != set(acc):
            missing, extra = sorted(set(acc) - set(sd)), sorted(set(sd) - set(acc))
            raise CheckpointError(f"state dict {index} differs from the first: missing {missing[:5]}, extra {extra[:5]}")
        for key, value in sd.items():
            if value.shape != acc[key].shape:
                raise CheckpointError(
                    f"state dict {index}: {key} has shape {tuple(value.shape)}, the first has {tuple(acc[key].shape)}"
                )
            if not value.is_floating_point():
                if not torch.equal(value, acc[key]):
                    raise CheckpointError(f"state dict {index}: non-float tensor {key} differs between checkpoints")
                continue
            v = value.detach().to(torch.float32)
            if mode == "ema":
                acc[key].mul_(ema_decay).add_(v, alpha=1.0 - ema_decay)
            else:
                acc[key].add_(v, alpha=w)
        total += w
        count += 1
    if count == 0:
        raise ValueError("nothing to average: no state dicts given")
    if mode == "uniform" and total <= 0:
        raise ValueError(f"averaging weights must sum to > 0, got {total}")
    out = {}
    for key, value in acc.items():
        if value.is_floating_point() and dtypes[key].is_floating_point:
            if mode == "uniform":
                value = value / total
            out[key] = value.to(dtypes[key])
        else:
            out[key] = value
    return out
