"""Pipeline parallelism with torch.distributed.pipelining: stage modules, schedules, the loss.

A stage is the full Transformer with the parts of other stages removed (no `tok_embeddings` after the
first stage, no `norm`/`output` before the last, `layers` a ModuleDict keyed by the original layer
index), so parameter names, and therefore distributed checkpoints, are identical for every layout.
With `pp_stages_per_rank = v` each rank holds v stages (looped placement: rank r holds stages r,
r + pp, ...) for the interleaved 1F1B schedule; `pp_microbatches` sets how many micro-batches flow
through the pipeline per step (the paper's tunable N). A stage learns the shapes of the activations it
sends and receives on its first step and keeps them, so `SchedulesByShape` holds one schedule per
micro-batch shape: the batch ramp (longer sequences, other micro-batch sizes) and evaluation batches
get their own.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.pipelining import PipelineStage
from torch.distributed.pipelining.schedules import (
    PipelineScheduleMulti,
    PipelineScheduleSingle,
    Schedule1F1B,
    ScheduleGPipe,
    ScheduleInterleaved1F1B,
)

from herd.model import AttentionState, Transformer

Schedule = PipelineScheduleSingle | PipelineScheduleMulti

SCHEDULES: dict[str, type] = {
    "GPipe": ScheduleGPipe,
    "1F1B": Schedule1F1B,
    "Interleaved1F1B": ScheduleInterleaved1F1B,
}


def stage_ids(pp_rank: int, pp: int, stages_per_rank: int) -> list[int]:
    """Looped placement: rank r runs stages r, r + pp, r + 2*pp, ..."""
    return [pp_rank + i * pp for i in range(stages_per_rank)]


class StageModel(Transformer):
    """A Transformer holding one stage's parts; its forward takes the batch's tensors.

    The schedule splits positional inputs and tensor kwargs into micro-batches by rows, so a stage
    receives `doc_ids` / `positions` / `kv_mask` tensors and builds its attention state from them
    with `attention_inputs` (the plan's). A stage without `tok_embeddings` takes hidden states,
    one without `output` returns them.
    """

    attention_inputs: Callable[[Mapping[str, torch.Tensor]], tuple[torch.Tensor | None, AttentionState | None]]

    def forward(self, x: torch.Tensor, **tensors: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        positions, attention = self.attention_inputs(tensors)
        if positions is None:
            positions = torch.arange(x.shape[1], device=x.device)
        h = self.embed(x) if self.tok_embeddings is not None else x
        h = self.run_layers(h, positions, attention)
        return self.head(h) if self.output is not None else h


def split_model(
    model: Transformer, layer_counts: list[int], stage_id: int,
    attention_inputs: Callable[[Mapping[str, torch.Tensor]], tuple[torch.Tensor | None, AttentionState | None]],
) -> StageModel:
    """A deep copy of (meta-device) `model` keeping only stage `stage_id`'s parts."""
    first = sum(layer_counts[:stage_id])
    keep = range(first, first + layer_counts[stage_id])
    stage = copy.deepcopy(model)
    stage.__class__ = StageModel  # same attributes, so the same parameter names as the full model
    stage.attention_inputs = attention_inputs
    stage.layers = nn.ModuleDict({str(i): model_layer for i, model_layer in enumerate(stage.layers) if i in keep})
    if stage_id != 0:
        stage.tok_embeddings = None
    if stage_id != len(layer_counts) - 1:
        stage.norm = None
        stage.output = None
    return stage


def build_schedule(
    name: str,
    modules: list[nn.Module],
    ids: list[int],
    n_stages: int,
    group: dist.ProcessGroup,
    device: torch.device,
    n_microbatches: int,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Schedule:
    """The schedule object that runs forward/backward of this rank's stages for one batch.

    `scale_grads=False`: the loss function already divides by the global number of trained targets
    (herd.train.loss), so gradients must not be divided again by the number of micro-batches.
    """
    stages = [PipelineStage(m, stage_index=i, num_stages=n_stages, device=device, group=group)
              for m, i in zip(modules, ids)]
    cls = SCHEDULES[name]
    if issubclass(cls, PipelineScheduleMulti):
        return cls(stages, n_microbatches=n_microbatches, loss_fn=loss_fn, scale_grads=False)
    return cls(stages[0], n_microbatches=n_microbatches, loss_fn=loss_fn, scale_grads=False)


class SchedulesByShape:
    """One schedule (with its own stages) per micro-batch shape, built on first use.

    Why: torch's PipelineStage infers the shapes of its received and sent activations on its first
    step (again only on a train/eval switch) and reuses those buffers on every later step, so a stage
    built for (2, 64) fails on (1, 128) when the batch ramp switches stage. Every pipeline rank sees the same global batch, so all ranks
    build (and shape-infer) the same schedule at the same step. Stages only wrap the rank's modules:
    parameters, gradients and optimizer state are shared by all schedules.
    """

    def __init__(self, build: Callable[[], Schedule]) -> None:
        self._build = build
        self._by_shape: dict[tuple[int, ...], Schedule] = {}

    def for_inputs(self, inputs: torch.Tensor) -> Schedule:
        """The schedule for a batch of `inputs` (token ids: rows x sequence length on this rank)."""
        key = tuple(inputs.shape)
        if key not in self._by_shape:
            self._by_shape[key] = self._build()
        return self._by_shape[key]
