"""Learning-rate schedule, batch-size ramp and the annealing phase, as pure functions of progress.

Everything here depends only on (step, tokens consumed) and the config, so resuming needs no extra
schedule state beyond those two counters, and the numbers at stage boundaries can be checked directly.

- LR: linear warmup over `warmup_steps` (step s gets peak * (s+1)/warmup, so the last warmup step
  runs at the peak), then cosine from the peak to the floor `min_lr`, reached at `decay_steps` and
  held after (the paper: 8,000 warmup steps, cosine to peak/100 over 1.2M steps).
- Batch ramp: a list of stages `{after_tokens, batch_size|batch_tokens, seq_len}`; the stage in force
  for a step is the last one whose `after_tokens` is <= the tokens consumed before that step
  (the paper: 4M tokens x 4,096 -> 8M x 8,192 after 252M tokens -> 16M after 2.87T tokens).
- Annealing: once `anneal_start` tokens are consumed, LR falls linearly from the value the schedule
  had at that moment (or `anneal.from_lr`) to 0 after `anneal.tokens` more, on the annealing data mix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from herd.train.config import StageConfig, TrainConfig


@dataclass(frozen=True)
class StepShape:
    """The batch of one optimizer step."""

    stage: int  # index into schedule.stages
    batch_size: int  # sequences per optimizer step
    seq_len: int
    micro_batch_size: int  # sequences per forward/backward

    @property
    def tokens(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def accumulation_steps(self) -> int:
        return self.batch_size // self.micro_batch_size


class Schedule:
    """LR and batch shape for each step of a run described by a TrainConfig."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.peak = config.optim.lr
        self.floor = config.min_lr
        self.warmup = config.schedule.warmup_steps
        self.decay = config.schedule.decay_steps
        self.stages: list[StageConfig] = list(config.schedule.stages)
        self.anneal_start = config.anneal_start  # -1: none
        self.anneal_tokens = config.anneal.tokens

    # ---- batch ramp
    def shape_at(self, tokens: int) -> StepShape:
        index = 0
        for i, stage in enumerate(self.stages):
            if stage.after_tokens <= tokens:
                index = i
        stage = self.stages[index]
        return StepShape(index, stage.sequences, stage.seq_len, stage.micro)

    # ---- learning rate
    def base_lr(self, step: int) -> float:
        """Warmup + cosine LR of optimizer step `step` (0-based), ignoring annealing."""
        if step < self.warmup:
            return self.peak * (step + 1) / self.warmup
        if step >= self.decay:
            return self.floor
        progress = (step - self.warmup) / max(1, self.decay - self.warmup)
        return self.floor + (self.peak - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def in_anneal(self, tokens: int) -> bool:
        return self.anneal_start >= 0 and tokens >= self.anneal_start

    def anneal_start_step(self) -> int:
        """The first step that begins with at least `anneal_start` tokens consumed (walks the ramp)."""
        step, tokens = 0, 0
        for i, stage in enumerate(self.stages):
            end = self.stages[i + 1].after_tokens if i + 1 < len(self.stages) else None
            target = self.anneal_start if end is None else min(end, self.anneal_start)
            if tokens < target:
                n = -(-(target - tokens) // stage.step_tokens)  # ceil
                step, tokens = step + n, tokens + n * stage.step_tokens
            if tokens >= self.anneal_start:
                break
        return step

    def lr(self, step: int, tokens: int) -> float:
        """The LR for optimizer step `step`, which starts after `tokens` tokens were consumed."""
        if not self.in_anneal(tokens):
            return self.base_lr(step)
        start_lr = self.config.anneal.from_lr or self.base_lr(self.anneal_start_step())
        remaining = 1.0 - (tokens - self.anneal_start) / self.anneal_tokens
        return start_lr * max(0.0, remaining)

    # ---- the end of the run
    def done(self, step: int, tokens: int) -> bool:
        run = self.config.run
        if run.max_steps and step >= run.max_steps:
            return True
        if run.max_tokens and tokens >= run.max_tokens:
            return True
        return self.anneal_start >= 0 and tokens >= self.anneal_start + self.anneal_tokens
