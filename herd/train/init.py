"""How a training run's weights start: seeded random init (herd.model.init_plan) or run.init_from.

`apply` initialises a full model in place (one process). `stream` yields one full parameter at a
time, in the order the random numbers are drawn, so a sharded model can keep only its own slice of
each and never hold the whole model: every parallel layout then starts from the same weights as one
process, with the memory of the largest single parameter.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from herd.model import ModelConfig, init_weights
from herd.model.transformer import init_plan


@dataclass(frozen=True)
class ModelInit:
    seed: int
    std: float = 0.02
    init_from: str = ""  # weights file/dir (training checkpoint, Meta, HF, GGUF); "" = random init

    def _weights(self) -> dict[str, torch.Tensor] | None:
        if not self.init_from:
            return None
        from herd.train.checkpointing import load_model_weights

        return load_model_weights(self.init_from)

    def apply(self, model: nn.Module) -> None:
        """Initialise a full (unsharded) model in place: the `init_from` weights (every parameter, checked),
        else the seeded random init (never both: a 135M model's random init costs ~10 s on a small CPU)."""
        state = self._weights()
        if state is not None:
            from herd.checkpoint import load_state_dict_checked

            load_state_dict_checked(model, state, self.init_from)
            return
        generator = torch.Generator(device=next(model.parameters()).device).manual_seed(self.seed)
        init_weights(model, std=self.std, generator=generator)

    def stream(self, config: ModelConfig, shapes: dict[str, torch.Size], device: torch.device,
               ) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, full float32 tensor) for every parameter, one at a time."""
        state = self._weights()
        if state is not None:
            from herd.checkpoint import check_state_dict

            check_state_dict(config, state, self.init_from)
            yield from ((name, state[name]) for name in shapes)
            return
        generator = torch.Generator(device=device).manual_seed(self.seed)
        with torch.no_grad():
            for name, init in init_plan(config, self.std):
                tensor = torch.empty(shapes[name], device=device)
                init(tensor, generator)
                yield name, tensor
