"""Distributed checkpoints with torch.distributed.checkpoint (DCP): save under one layout, load under any.

Model and optimizer state are keyed by the full model's parameter names (FQNs) whatever the layout:
FSDP/TP shards are DTensors that DCP writes as pieces of one logical tensor, pipeline stages keep the
original layer names, and optimizer state is flattened to `state.<fqn>.<name>` keys. So a checkpoint
written by 2 ranks with FSDP can be read by 4 ranks with TP x PP, or consolidated in one process
into the plain state dicts of herd.checkpoint (Hugging Face / Meta / GGUF export).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor, distribute_tensor

from herd.checkpoint.errors import CheckpointError

_FLAT = StateDictOptions(flatten_optimizer_state_dict=True)


def sharded_state(parts: list[nn.Module], optimizers: list[torch.optim.Optimizer]) -> dict[str, dict[str, Any]]:
    """This rank's view of {"model": {fqn: tensor}, "optim": {"state.<fqn>.<k>": ...}} over its parts."""
    model: dict[str, Any] = {}
    optim: dict[str, Any] = {}
    for part, opt in zip(parts, optimizers):
        model.update(get_model_state_dict(part))
        optim.update(get_optimizer_state_dict(part, opt, options=_FLAT))
    return {"model": model, "optim": optim}


def save_sharded(directory: Path, parts: list[nn.Module], optimizers: list[torch.optim.Optimizer]) -> None:
    """Collective: every rank writes its shards into `directory` (one .distcp file per rank + .metadata)."""
    dcp.save(sharded_state(parts, optimizers), checkpoint_id=str(directory))


def load_sharded(directory: Path, parts: list[nn.Module], optimizers: list[torch.optim.Optimizer]) -> None:
    """Collective: read the pieces of `directory` this rank's layout needs, in place."""
    state = sharded_state(parts, optimizers)
    try:
        dcp.load(state, checkpoint_id=str(directory))
    except Exception as exc:  # noqa: BLE001 - DCP raises CheckpointException wrapping per-rank errors
        raise CheckpointError(f"{directory}: cannot load the distributed checkpoint: {exc}") from None
    for part, opt in zip(parts, optimizers):
        names = list(get_model_state_dict(part))
        set_model_state_dict(part, {k: state["model"][k] for k in names})
        own = get_optimizer_state_dict(part, opt, options=_FLAT)
        set_optimizer_state_dict(part, opt, {k: state["optim"][k] for k in own}, options=_FLAT)


def _like(full: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """`full` laid out as `reference`: this rank's shard of it when `reference` is a DTensor.

    Every rank holds the same full tensor, so each slices its own piece locally (src_data_rank=None:
    no communication), which also works for FSDP x TP's strided shards.
    """
    full = full.detach().to(device=reference.device, dtype=reference.dtype)
    if isinstance(reference, DTensor):
        return distribute_tensor(full, reference.device_mesh, reference.placements, src_data_rank=None)
    return full


@torch.no_grad()
def copy_full(tensor: torch.Tensor, full: torch.Tensor) -> None:
    """Copy this rank's piece of `full` (identical on every rank) into `tensor` (a DTensor or not)."""
    local = _like(full, tensor)
    if isinstance(tensor, DTensor):
        tensor.to_local().copy_(local.to_local())
    else:
        tensor.copy_(local)


@torch.no_grad()
def load_full(parts: list[nn.Module], optimizers: list[torch.optim.Optimizer] | None,
              model_state: dict[str, torch.Tensor], optim_state: dict[str, Any] | None) -> None:
    """Copy full (unsharded) state dicts, identical on every rank, into this rank's parts.

    `optim_state` is flattened (`state.<fqn>.<key>`, see `flatten_optimizer_state`).
    """
    for i, part in enumerate(parts):
        own = part.state_dict()
        missing = sorted(set(own) - set(model_state))
        if missing:
            raise CheckpointError(f"the weights lack {len(missing)} parameters of this model, e.g. {missing[:3]}")
        for name, tensor in own.items():
            copy_full(tensor, model_state[name])
        if optimizers is None or optim_state is None:
            continue
        opt = optimizers[i]
        for name, param in part.named_parameters():
            prefix = f"state.{name}."
            entries = {k[len(prefix):]: v for k, v in optim_state.items() if k.startswith(prefix)}
            if entries:
                opt.state[param] = {
                    k: (v.clone() if k == "step" else _like(v, param)) if isinstance(v, torch.Tensor) else v
                    for k, v in entries.items()
                }


def flatten_optimizer_state(model: nn.Module, optim_state: dict[str, Any], weight_decay: float) -> dict[str, Any]:
    """A single-process AdamW state dict (integer parameter ids) -> flattened FQN keys.

    The ids follow herd.train.optim.param_groups(model) order, so the full model (meta device is
    enough) recovers the names; this lets a multi-process run resume a single-process checkpoint.
    """
    from herd.train.optim import param_groups

    names = {id(p): n for n, p in model.named_parameters()}
    ordered = [names[id(p)] for group in param_groups(model, weight_decay) for p in group["params"]]
    flat: dict[str, Any] = {}
    for index, state in optim_state["state"].items():
        for key, value in state.items():
            flat[f"state.{ordered[int(index)]}.{key}"] = value
    for group in optim_state["param_groups"]:
        for index in group["params"]:
            for key, value in group.items():
                if key != "params":
                    flat[f"param_groups.{ordered[int(index)]}.{key}"] = value
    return flat


def indexed_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, flat: dict[str, Any]) -> dict[str, Any]:
    """Flattened FQN-keyed optimizer state -> `optimizer.load_state_dict` format (the inverse of
    `flatten_optimizer_state`), so one process can resume a distributed run's checkpoint."""
    names = {id(p): n for n, p in model.named_parameters()}
    current = optimizer.state_dict()
    ordered = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict[str, Any]] = {}
    for index, name in enumerate(ordered):
        prefix = f"state.{name}."
        entries = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
        if entries:
            state[index] = entries
    return {"state": state, "param_groups": current["param_groups"]}
