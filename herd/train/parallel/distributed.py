"""The multi-process plan: FSDP2, tensor, pipeline and context parallelism on one DeviceMesh.

Launched by `torchrun` (one process per GPU, or per CPU slot with gloo); every rank reads the same
config and the same global batch from the deterministic loader, then keeps its share:
rows by data-parallel rank, sequence chunks by context-parallel rank. Tensor-parallel ranks see the
same tokens; pipeline ranks run the stages of one model. See herd/train/parallel/layout.py for the
mesh order and the checks made before any compute.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

from herd.model.attention import AttentionState
from herd.train import checkpointing
from herd.train.config import ConfigError, OptimSection, TrainConfig
from herd.train.init import ModelInit
from herd.train.loss import autocast, cross_entropy_sum, loss_sum
from herd.train.optim import build_optimizer
from herd.train.parallel import dcp as dcp_io
from herd.train.parallel.context import ContextParallel
from herd.train.parallel.fsdp import apply_fsdp
from herd.train.parallel.layout import MESH_DIMS, MeshSizes, layout_problems, resolve_sizes, stage_layer_counts
from herd.train.parallel.single import LocalBatch, activation_checkpointing, attention_inputs
from herd.train.parallel.tensor import apply_tensor_parallel


class OptimizerGroup:
    """One AdamW per model part (pipeline stage) behind the single-optimizer interface the loop uses."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for opt in self.optimizers for group in opt.param_groups]

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)


def _local(value: torch.Tensor) -> torch.Tensor:
    return value.full_tensor() if isinstance(value, DTensor) else value


def init_distributed(backend: str, timeout_s: float) -> tuple[int, int, torch.device]:
    """Join the torchrun job (rank, world size, this rank's device); idempotent."""
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise ConfigError(f"a multi-process run needs torchrun's environment ({var} is not set): "
                              "launch with `torchrun --nproc-per-node N -m herd pretrain CONFIG`")
    use_cuda = torch.cuda.is_available() and backend != "gloo"
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        chosen = backend if backend != "auto" else ("nccl" if use_cuda else "gloo")
        dist.init_process_group(chosen, timeout=timedelta(seconds=timeout_s),
                                device_id=device if use_cuda else None)
    return dist.get_rank(), dist.get_world_size(), device


class DistributedPlan:
    """4D-parallel training on torch.distributed (see the module docstring)."""

    def __init__(self, config: TrainConfig) -> None:
        section = config.parallel
        self.config = config
        self.rank, self.world_size, self.device = init_distributed(section.backend, section.timeout_s)
        self.sizes: MeshSizes = resolve_sizes(section, self.world_size)
        stages = [(s.seq_len, s.sequences, s.micro) for s in config.schedule.stages]
        if config.eval.interval:
            seq = config.eval.seq_len or config.schedule.stages[0].seq_len
            stages.append((seq, config.eval.batch_size or stages[0][2], config.eval.batch_size or stages[0][2]))
        problems = layout_problems(self.sizes, section, config.model_config(), stages)
        if problems:
            raise ConfigError("invalid parallel layout: " + "; ".join(problems))
        self.mesh = init_device_mesh(self.device.type, self.sizes.shape, mesh_dim_names=MESH_DIMS)
        self.dp_cp_mesh = self.mesh["dp_replicate", "dp_shard", "cp"]._flatten("dp_cp")
        self.dp_mesh = self.mesh["dp_replicate", "dp_shard"]._flatten("dp")
        shard_cp = self.mesh["dp_shard", "cp"]._flatten("dp_shard_cp")
        self.fsdp_mesh = self.mesh["dp_replicate", "dp_shard_cp"] if self.sizes.dp_replicate > 1 else shard_cp
        self.pp_rank = self.mesh["pp"].get_local_rank()
        self.cp = (ContextParallel(self.mesh["cp"].get_group(), self.sizes.cp, self.mesh["cp"].get_local_rank())
                   if self.sizes.cp > 1 else None)
        self.use_fsdp = self.sizes.dp * self.sizes.cp > 1
        self.loss_parallel = self.sizes.tp > 1 and section.loss_parallel
        self.parts: list[nn.Module] = []
        self.schedule: Any = None
        self._n_targets = torch.ones(())

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def description(self) -> str:
        return f"{self.world_size} processes: {self.sizes.describe()}"

    # ------------------------------------------------------------------ model
    def build_model(
        self, meta_model: nn.Module, init: ModelInit, device: torch.device,
        *, checkpoint_activations: bool = False,
    ) -> nn.Module:
        """Split, parallelize and shard the meta model, then initialise it as one process would.

        Each full parameter is generated (same seed, same order of random draws as one process) or
        read from run.init_from one at a time, and every rank copies its own shard of it: all
        layouts start from identical weights, holding at most one full parameter at a time.
        """
        self._meta_model = meta_model
        shapes = {name: p.shape for name, p in meta_model.named_parameters()}

        section = self.config.parallel
        if self.sizes.pp > 1:
            from herd.train.parallel.pipeline import split_model, stage_ids

            n_stages = self.sizes.pp * section.pp_stages_per_rank
            counts = stage_layer_counts(meta_model.config.n_layers, n_stages, section.pp_layers)
            self.stage_ids = stage_ids(self.pp_rank, self.sizes.pp, section.pp_stages_per_rank)
            self.n_stages = n_stages
            parts = [split_model(meta_model, counts, sid, self.attention_inputs) for sid in self.stage_ids]
        else:
            parts = [meta_model]
        param_dtype = torch.bfloat16 if self.config.run.dtype == "bfloat16" else None
        reshard = {"always": True, "never": False}.get(section.reshard_after_forward, self.sizes.pp == 1)
        for part in parts:
            if self.sizes.tp > 1:
                apply_tensor_parallel(part, self.mesh["tp"], self.loss_parallel)
            if checkpoint_activations:
                activation_checkpointing(part.layers.values() if isinstance(part.layers, nn.ModuleDict) else part.layers)
            if self.use_fsdp:
                apply_fsdp(part, self.fsdp_mesh, param_dtype, reshard)
            part.to_empty(device=device)
        owned = [dict(part.named_parameters()) for part in parts]
        with torch.no_grad():
            for name, full in init.stream(meta_model.config, shapes, device):
                for params in owned:
                    if name in params:
                        dcp_io.copy_full(params[name], full)
        for part in parts:  # non-persistent buffers (RoPE frequencies) are rebuilt, not initialised
            part.init_rope_buffer()
        self.parts = parts
        if self.sizes.pp > 1:
            from herd.train.parallel.pipeline import SchedulesByShape, build_schedule

            microbatches = section.pp_microbatches or n_stages
            self.schedule = SchedulesByShape(functools.partial(
                build_schedule, section.pp_schedule, parts, self.stage_ids, n_stages, self.mesh["pp"].get_group(),
                device, microbatches, self._pipeline_loss,
            ))
        return parts[0] if len(parts) == 1 else nn.ModuleList(parts)

    def compile(self, model: nn.Module) -> nn.Module:
        """Compile each Transformer block in place (FSDP's per-block hooks and pipeline stage
        boundaries sit between blocks, so whole-model compilation would break the graph there).

        Not with tensor parallelism: compiled TP blocks fail in DTensor's redistribute backward
        (torch 2.13, CPU/gloo: "'Tensor' object has no attribute '_local_tensor'"), so TP runs eager.
        """
        if self.sizes.tp > 1:
            if self.is_main:
                import warnings

                warnings.warn("run.compile is ignored with parallel.tp > 1 (compiled tensor-parallel blocks "
                              "fail in torch 2.13's DTensor backward); training eagerly", stacklevel=2)
            return model
        for part in self.parts:
            for block in (part.layers.values() if isinstance(part.layers, nn.ModuleDict) else part.layers):
                block.compile()
        return model

    def build_optimizer(self, model: nn.Module, cfg: OptimSection, device: torch.device) -> tuple[Any, str]:
        impl = cfg.impl if cfg.impl != "auto" else ("fused" if device.type == "cuda" else "foreach")
        chosen = [build_optimizer(part, OptimSection(**{**cfg.__dict__, "impl": impl}), device) for part in self.parts]
        self.optimizers = [opt for opt, _ in chosen]
        return OptimizerGroup(self.optimizers), impl

    # ------------------------------------------------------------------ batches
    def shard_batch(self, inputs: torch.Tensor, targets: torch.Tensor, doc_ids: torch.Tensor | None,
                    device: torch.device) -> LocalBatch:
        dp, dp_rank = self.sizes.dp, self.dp_mesh.get_local_rank()
        if inputs.shape[0] % dp:
            raise ConfigError(f"a batch of {inputs.shape[0]} sequences cannot be split over {dp} data-parallel ranks")
        rows = slice(dp_rank * inputs.shape[0] // dp, (dp_rank + 1) * inputs.shape[0] // dp)
        inputs, targets = inputs[rows].to(device), targets[rows].to(device)
        doc_ids = doc_ids[rows].to(device) if doc_ids is not None else None
        if self.cp is None:
            if doc_ids is not None:
                return LocalBatch(inputs, targets, {"doc_ids": doc_ids})
            # later pipeline stages get sequence-sharded hidden states: tell them the full length
            positions = torch.arange(inputs.shape[1], device=device).expand(inputs.shape[0], -1)
            return LocalBatch(inputs, targets, {"positions": positions} if self.sizes.pp > 1 else {})
        tensors = self.cp.batch_tensors(doc_ids, inputs.shape[0], inputs.shape[1], device)
        return LocalBatch(self.cp.shard(inputs), self.cp.shard(targets), tensors)

    def attention_inputs(
        self, tensors: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor | None, AttentionState | None]:
        """(positions, attention state) for a micro-batch's tensors: context parallelism gathers keys."""
        if self.cp is not None:
            return tensors["positions"], self.cp.attention(tensors["kv_mask"])
        return attention_inputs(tensors)

    # ------------------------------------------------------------------ compute
    @contextlib.contextmanager
    def _loss_context(self) -> Iterator[None]:
        if self.loss_parallel:
            from torch.distributed.tensor.parallel import loss_parallel

            with loss_parallel():
                yield
        else:
            yield

    def _pipeline_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return cross_entropy_sum(logits, targets) / self._n_targets

    def forward_backward(
        self, model: nn.Module, batch: LocalBatch, micro_batch_rows: int, n_targets: torch.Tensor,
        device: torch.device, autocast_dtype: torch.dtype | None,
    ) -> torch.Tensor:
        total = torch.zeros((), device=device)
        for i in range(0, batch.inputs.shape[0], micro_batch_rows):
            part = batch.rows(slice(i, i + micro_batch_rows))
            if self.schedule is not None:
                total += self._pipeline_step(part, n_targets, autocast_dtype, train=True)
                continue
            with self._loss_context():
                loss = loss_sum(model, part.inputs, part.targets, self.attention_inputs(part.model_kwargs), device,
                                autocast_dtype)
                (loss / n_targets).backward()
            total += _local(loss.detach())
        return total

    def _pipeline_step(self, batch: LocalBatch, n_targets: torch.Tensor, autocast_dtype: torch.dtype | None,
                       train: bool) -> torch.Tensor:
        """One pass of the pipeline schedule; returns the summed loss (on every pipeline rank)."""
        self._n_targets = n_targets
        first, last = self.pp_rank == 0, self.pp_rank == self.sizes.pp - 1
        args = (batch.inputs,) if first else ()
        target = batch.targets if last else None
        losses: list[torch.Tensor] = []  # one per pipeline micro-batch, filled on the last stage
        schedule = self.schedule.for_inputs(batch.inputs)  # the ramp changes shapes: one schedule per shape
        with autocast(self.device, autocast_dtype), self._loss_context():
            if train:
                schedule.step(*args, target=target, losses=losses, return_outputs=False, **batch.model_kwargs)
            else:
                schedule.eval(*args, target=target, losses=losses, **batch.model_kwargs)
        total = (torch.stack([_local(x.detach()) for x in losses]).sum() * n_targets if losses
                 else torch.zeros((), device=self.device))
        dist.all_reduce(total, group=self.mesh["pp"].get_group())  # only the last stage has the loss
        return total

    def eval_loss_sum(self, model: nn.Module, batch: LocalBatch, device: torch.device,
                      autocast_dtype: torch.dtype | None) -> torch.Tensor:
        if self.schedule is not None:
            return self._pipeline_step(batch, torch.ones((), device=device), autocast_dtype, train=False)
        with torch.no_grad(), self._loss_context():
            forward_inputs = self.attention_inputs(batch.model_kwargs)
            return _local(loss_sum(model, batch.inputs, batch.targets, forward_inputs, device, autocast_dtype))

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        value = value.detach().clone()
        dist.all_reduce(value, group=self.dp_cp_mesh.get_group())
        return value

    def any_rank(self, flag: bool) -> bool:
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> torch.Tensor:
        params = [p for part in self.parts for p in part.parameters() if p.grad is not None]
        norm = _local(torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True))
        if self.sizes.pp > 1:
            squared = norm.pow(2)
            dist.all_reduce(squared, group=self.mesh["pp"].get_group())
            norm = squared.sqrt()
        if max_norm > 0:
            torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm, foreach=True)
        return norm

    # ------------------------------------------------------------------ checkpoints
    def save(self, directory: Path, step: int, model: nn.Module, optimizer: Any,
             meta: dict[str, Any], keep_last: int) -> Path:
        """Collective: all ranks write their shards, then rank 0 commits the directory atomically."""
        directory = Path(directory)
        tmp = directory / (checkpointing.checkpoint_name(step) + ".tmp")
        if self.is_main:
            checkpointing.begin_checkpoint(directory, step)
        self.barrier()
        dcp_io.save_sharded(tmp / checkpointing.DCP_DIR, self.parts, self.optimizers)
        self.barrier()
        if self.is_main:
            checkpointing.commit_checkpoint(tmp, step, {**meta, "layout": self.sizes.__dict__}, keep_last)
        self.barrier()
        return directory / checkpointing.checkpoint_name(step)

    def load(self, path: Path, model: nn.Module, optimizer: Any) -> dict[str, Any]:
        """Any layout's distributed checkpoint, or a single-process one (distributed from full state)."""
        path = Path(path)
        meta = checkpointing.read_meta(path)
        if checkpointing.is_distributed(path):
            dcp_io.load_sharded(path / checkpointing.DCP_DIR, self.parts, self.optimizers)
        else:
            state = checkpointing.load_checkpoint(path)
            flat = dcp_io.flatten_optimizer_state(self._meta_model, state.optim, self.config.optim.weight_decay)
            dcp_io.load_full(self.parts, self.optimizers, state.model, flat)
        return meta

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def make_plan(config: TrainConfig) -> Any:
    """The plan for how this process was launched: torchrun -> DistributedPlan, else one process."""
    from herd.train.parallel.single import SingleProcessPlan

    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        return DistributedPlan(config)
    section = config.parallel
    sizes = {k: getattr(section, k) for k in ("dp_replicate", "dp_shard", "cp", "pp", "tp")}
    if any(v > 1 for v in sizes.values()):
        wanted = max(1, section.dp_replicate) * max(1, section.dp_shard) * section.cp * section.pp * section.tp
        raise ConfigError(
            f"[parallel] asks for {wanted} processes ({sizes}) but this is a single process: launch with "
            f"`torchrun --nproc-per-node {wanted} -m herd pretrain CONFIG ...`"
        )
    return SingleProcessPlan()
