"""Training the stitches with herd's one training loop (`herd.train.Trainer`).

The stitched model goes through the Trainer as any model does: built on the meta device by
`stitched_model_factory`, materialised and loaded by `StitchInit` (the hub's and each expert's
weights, then the stitches' seed-equivalent initialisation), trained by the language-model objective
on the recipe's data mix (the paper: 15% per expert domain + 55% general). Only the stitches require
gradients, so the optimizer holds only them; checkpoints hold the whole model (hub, experts, stitches),
so a resumed run is exact and a finished one loads with `load_model_weights`. Single-process runs only
for now (the sharded plans initialise parameters by name from one model's layout).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from herd.experts.stitch import StitchedModel
from herd.model import ModelConfig, Transformer
from herd.train.config import TrainConfig
from herd.train.trainer import Trainer, TrainResult


def stitched_model_factory(n_experts: int, n_stitches: int, dropout: float = 0.1) -> Callable[[ModelConfig], nn.Module]:
    """A Trainer `model_factory`: a hub and `n_experts` experts of the run's model shape, stitched."""
    def build(config: ModelConfig) -> nn.Module:
        return StitchedModel(Transformer(config), [Transformer(config) for _ in range(n_experts)], n_stitches, dropout)
    return build


@dataclass(frozen=True)
class StitchInit:
    """A Trainer `model_init`: the hub's and experts' weights from their checkpoints (any format
    `load_model_weights` reads), then the stitches' initialisation."""

    hub_from: str
    experts_from: tuple[str, ...]

    def apply(self, model: nn.Module) -> None:
        from herd.checkpoint import load_state_dict_checked
        from herd.train.checkpointing import load_model_weights

        if not isinstance(model, StitchedModel):
            raise TypeError(f"StitchInit initialises a StitchedModel, got {type(model).__name__}")
        if len(self.experts_from) != len(model.experts):
            raise ValueError(f"{len(self.experts_from)} expert checkpoints for {len(model.experts)} experts")
        for path, part in zip((self.hub_from, *self.experts_from), (model.hub, *model.experts)):
            load_state_dict_checked(part, load_model_weights(path), path)
        for stitch in model.stitches:
            stitch.reset_parameters()


def stitch_trainer(
    config: TrainConfig, hub_from: str | Path, experts_from: Sequence[str | Path], n_stitches: int,
    dropout: float = 0.1, *, resume: str | Path | None = None, **trainer_options: object,
) -> Trainer:
    """A Trainer that trains only the stitches joining the hub checkpoint to the expert checkpoints
    (the recipe's model section must describe their shape)."""
    if not experts_from:
        raise ValueError("stitch training needs at least one expert checkpoint")
    if config.run.init_from:
        raise ValueError("stitch training loads the hub and experts itself; leave run.init_from empty")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("stitch training runs in one process for now (the sharded plans initialise one model's "
                         "layout); launch it without torchrun")
    paths = [Path(p) for p in (hub_from, *experts_from)]
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such checkpoint")
    return Trainer(
        config, resume=resume, model_factory=stitched_model_factory(len(experts_from), n_stitches, dropout),
        model_init=StitchInit(str(paths[0]), tuple(str(p) for p in paths[1:])), **trainer_options,  # type: ignore[arg-type]
    )


def train_stitches(
    config: TrainConfig, hub_from: str | Path, experts_from: Sequence[str | Path], n_stitches: int,
    dropout: float = 0.1, *, resume: str | Path | None = None,
) -> TrainResult:
    """Train the stitches as `config` says (schedule, data mix, checkpoints, resume); see `stitch_trainer`."""
    return stitch_trainer(config, hub_from, experts_from, n_stitches, dropout, resume=resume).run()
