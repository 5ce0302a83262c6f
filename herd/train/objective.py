"""What one optimizer step minimises: the one hook by which post-training reuses the training loop.

The `Trainer` owns everything around a step (schedule, optimizer, clipping, logging, validation cadence,
checkpoints, exact resume, signals). An `Objective` owns the step's forward and backward: it takes the
loader's batch, runs the model over it in micro-batches, calls `backward` on each micro-batch's share of
the batch loss, and returns the batch loss and any metrics to log. Pretraining and SFT use
`LanguageModelObjective` (next-token cross-entropy over the trained targets); DPO and the reward model
bring their own (herd.post.objectives).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from herd.train.schedule import StepShape
    from herd.train.trainer import Trainer


class Objective(Protocol):
    def forward_backward(self, trainer: Trainer, batch: Any, shape: StepShape) -> dict[str, Any]:
        """Gradients of the batch loss accumulated into the model; returns {"loss": float, "tokens": int
        (tokens computed, for tokens/s; default: the stage's tokens), **metrics}."""
        ...

    def validate(self, trainer: Trainer, loader: Any) -> float | None:
        """The held-out loss over `trainer.config.eval.batches` batches of `loader` (already rewound)."""
        ...


class LanguageModelObjective:
    """Summed next-token cross-entropy over targets != -100, divided once by the batch's target count
    (so micro-batches, data/context/pipeline ranks all give the gradient of one big batch)."""

    def __init__(self, name: str = "pretrain") -> None:
        self.name = name  # what the run's log lines call it (pretrain, sft)

    def forward_backward(self, trainer: Trainer, batch: Any, shape: StepShape) -> dict[str, Any]:
        inputs = batch[0]
        if tuple(inputs.shape) != (shape.batch_size, shape.seq_len):
            from herd.train.trainer import TrainingError

            raise TrainingError(
                f"the loader returned a batch of shape {tuple(inputs.shape)}, expected "
                f"{(shape.batch_size, shape.seq_len)}"
            )
        trainer._check_tokens(inputs)
        plan = trainer.plan
        local = trainer._local_batch(batch)
        n_targets = plan.all_reduce_sum((local.targets != -100).sum()).clamp(min=1)
        micro_rows = max(1, shape.micro_batch_size * local.inputs.shape[0] // shape.batch_size)
        total = plan.forward_backward(trainer.forward_model, local, micro_rows, n_targets, trainer.device,
                                      trainer.autocast_dtype)
        return {"loss": float(plan.all_reduce_sum(total) / n_targets)}

    def validate(self, trainer: Trainer, loader: Any) -> float | None:
        shape = trainer.schedule.shape_at(trainer.tokens)
        batch_size = trainer.config.eval.batch_size or shape.micro_batch_size
        seq_len = trainer.config.eval.seq_len or shape.seq_len
        total = torch.zeros((), device=trainer.device)
        count = torch.zeros((), device=trainer.device, dtype=torch.long)
        for _ in range(trainer.config.eval.batches):
            batch = loader.next_batch(batch_size, seq_len)
            trainer._check_tokens(batch[0])
            local = trainer._local_batch(batch)
            total += trainer.plan.eval_loss_sum(trainer.forward_model, local, trainer.device, trainer.autocast_dtype)
            count += (local.targets != -100).sum()
        return float(trainer.plan.all_reduce_sum(total) / trainer.plan.all_reduce_sum(count).clamp(min=1))
