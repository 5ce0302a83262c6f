"""Meta's reference format: `params.json` + `consolidated.NN.pth`, one file per model-parallel rank.

Model-parallel shards split column-parallel weights (wq/wk/wv/w1/w3, the vocab-parallel embedding
and the output head) along dim 0 and row-parallel weights (wo, w2) along dim 1; norms are
replicated. With more ranks than KV heads each rank holds a copy of its KV head, so merging keeps
one copy per head (as llama-models' `reshard_mp` expects).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from herd.checkpoint.errors import CheckpointError
from herd.model.config import ModelConfig

PARAMS_FILE = "params.json"
_SHARD_NAME = re.compile(r"^consolidated\.(\d+)\.pth$")
_ROW_PARALLEL = re.compile(r"(attention\.wo|feed_forward\.w2)\.weight$")
_COLUMN_PARALLEL = re.compile(r"(attention\.w[qkv]|feed_forward\.w[13])\.weight$|^(output|tok_embeddings)\.weight$")
_KV = re.compile(r"attention\.w[kv]\.weight$")
_IGNORED = {"rope.freqs"}  # a precomputed RoPE table some Meta exports carry; derived from params


def shard_paths(directory: Path) -> list[Path]:
    shards = sorted(
        (int(m.group(1)), p) for p in directory.iterdir() if (m := _SHARD_NAME.match(p.name))
    )
    if not shards:
        raise CheckpointError(f"{directory} has no consolidated.NN.pth weight files")
    indices = [i for i, _ in shards]
    if indices != list(range(len(shards))):
        raise CheckpointError(f"{directory} has model-parallel shards {indices}; expected 0..{len(shards) - 1}")
    return [p for _, p in shards]


def read_meta(directory: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Config and merged state dict from a Meta checkpoint directory (any number of MP shards)."""
    directory = Path(directory)
    params_path = directory / PARAMS_FILE
    if not params_path.is_file():
        raise CheckpointError(f"{directory} has no {PARAMS_FILE} (not a Meta checkpoint directory)")
    try:
        config = ModelConfig.from_meta_params(json.loads(params_path.read_text()))
    except (json.JSONDecodeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{params_path} is invalid: {exc}") from exc
    paths = shard_paths(directory)
    shards = []
    for path in paths:
        try:
            shards.append(torch.load(path, map_location="cpu", mmap=True, weights_only=True))
        except Exception as exc:
            raise CheckpointError(f"cannot read {path}: {exc}") from exc
    keys = set(shards[0])
    for path, shard in zip(paths[1:], shards[1:]):
        if set(shard) != keys:
            raise CheckpointError(f"{path} holds different tensors than {paths[0]}")
    state = {key: _merge(key, [s[key] for s in shards], config) for key in sorted(keys - _IGNORED)}
    if config.tie_embeddings:
        state.pop("output.weight", None)
    return config, state


def _merge(key: str, parts: list[torch.Tensor], config: ModelConfig) -> torch.Tensor:
    if len(parts) == 1:
        return parts[0]
    if _ROW_PARALLEL.search(key):
        return torch.cat(parts, dim=-1)
    if _COLUMN_PARALLEL.search(key):
        if _KV.search(key):
            kv_rows = config.n_kv_heads * config.head_dim
            total = sum(p.shape[0] for p in parts)
            if total > kv_rows and total % kv_rows == 0:
                parts = parts[:: total // kv_rows]  # consecutive ranks hold copies of one KV head
        return torch.cat(parts, dim=0)
    return parts[0]  # replicated (norms)


def _split(key: str, tensor: torch.Tensor, num_shards: int, config: ModelConfig) -> list[torch.Tensor]:
    if _ROW_PARALLEL.search(key):
        return [t.clone() for t in tensor.chunk(num_shards, dim=-1)]
    if _COLUMN_PARALLEL.search(key):
        if _KV.search(key) and num_shards > config.n_kv_heads:
            copies = num_shards // config.n_kv_heads
            heads = tensor.chunk(config.n_kv_heads, dim=0)
            return [heads[i // copies].clone() for i in range(num_shards)]
        return [t.clone() for t in tensor.chunk(num_shards, dim=0)]
    return [tensor.clone() for _ in range(num_shards)]


def check_shardable(config: ModelConfig, num_shards: int) -> None:
    """Every split dimension must divide evenly, as fairscale's model-parallel layers require."""
    problems = []
    kv_ok = config.n_kv_heads % num_shards == 0 or num_shards % config.n_kv_heads == 0
    for name, size in (("n_heads", config.n_heads), ("ffn_dim", config.ffn_dim), ("vocab_size", config.vocab_size)):
        if size % num_shards:
            problems.append(f"{name}={size}")
    if not kv_ok:
        problems.append(f"n_kv_heads={config.n_kv_heads}")
    if problems:
        raise CheckpointError(f"cannot split into {num_shards} model-parallel shards: {', '.join(problems)} "
                              "not divisible")


def write_meta(
    directory: str | Path, config: ModelConfig, state: dict[str, torch.Tensor], num_shards: int = 1
) -> None:
    """Write params.json and `num_shards` consolidated.NN.pth files."""
    check_shardable(config, num_shards)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("consolidated.*.pth"):
        stale.unlink()
    (directory / PARAMS_FILE).write_text(json.dumps(config.to_meta_params(), indent=2) + "\n")
    shards: list[dict[str, torch.Tensor]] = [{} for _ in range(num_shards)]
    for key, tensor in state.items():
        if key == "output.weight" and config.tie_embeddings:
            continue
        for shard, piece in zip(shards, _split(key, tensor, num_shards, config)):
            shard[key] = piece.contiguous()
    for rank, shard in enumerate(shards):
        tmp = directory / f"consolidated.{rank:02d}.pth.tmp"
        torch.save(shard, tmp)
        tmp.replace(directory / f"consolidated.{rank:02d}.pth")
