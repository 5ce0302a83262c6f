"""Parallel sizes from the [parallel] config: resolution against the world size and up-front checks.

The size type itself is herd.config.MeshSizes (shared with the recipe and the planner). The mesh follows the paper's order [TP, CP, PP, DP] from innermost (fastest links, adjacent ranks) to
outermost; data parallelism is split into replicate (HSDP's outer groups) and shard (FSDP) groups:

    mesh dims, outermost first: dp_replicate, dp_shard, pp, cp, tp

so with 8 GPUs per node and tp = 8, a tensor-parallel group never leaves a node.
"""

from __future__ import annotations

from herd.config import MESH_DIMS, ConfigError, MeshSizes, ParallelSection
from herd.model import ModelConfig

__all__ = ["MESH_DIMS", "MeshSizes", "PP_SCHEDULES", "layout_problems", "resolve_sizes", "stage_layer_counts"]

PP_SCHEDULES = ("GPipe", "1F1B", "Interleaved1F1B")


def resolve_sizes(section: ParallelSection, world_size: int) -> MeshSizes:
    """Fill dp_shard = -1 from the world size; the product must equal the world size (MeshSizes.resolve)."""
    return section.mesh_sizes(world_size)


def stage_layer_counts(n_layers: int, n_stages: int, explicit: list[int] | None = None) -> list[int]:
    """Layers per pipeline stage: the first and last stages get one layer fewer when possible.

    The embedding and the output head cost about one Transformer layer each, so the paper takes one
    layer from the first and the last stage (405B: 126 layers over 16 stages -> 7, 8 x 14, 7). Counted
    as n_layers + 2 "layers" spread evenly, then the extra units removed from the ends.
    """
    if explicit:
        if len(explicit) != n_stages or sum(explicit) != n_layers or min(explicit) < 1:
            raise ConfigError(
                f"parallel.pp_layers {explicit} must give {n_stages} stages of >= 1 layer summing to {n_layers}"
            )
        return list(explicit)
    if n_layers < n_stages:
        raise ConfigError(f"{n_layers} layers cannot fill {n_stages} pipeline stages (pp x pp_stages_per_rank)")
    if n_stages == 1:
        return [n_layers]
    units = n_layers + 2 if n_layers >= n_stages + 2 else n_layers
    base, extra = divmod(units, n_stages)
    middle_first = sorted(range(n_stages), key=lambda i: abs(i - (n_stages - 1) / 2))
    counts = [base + (1 if i in middle_first[:extra] else 0) for i in range(n_stages)]
    if units != n_layers:
        counts[0] -= 1
        counts[-1] -= 1
        if min(counts) < 1:  # too few layers to discount the ends
            base, extra = divmod(n_layers, n_stages)
            counts = [base + (1 if i < extra else 0) for i in range(n_stages)]
    return counts


def layout_problems(
    sizes: MeshSizes, section: ParallelSection, model: ModelConfig, stages: list[tuple[int, int, int]]
) -> list[str]:
    """Everything about this layout that cannot work, for the model and each (seq_len, batch, micro) stage."""
    from herd.train.parallel.planner import layout_size_problems

    problems: list[str] = []
    for seq_len in sorted({seq for seq, _, _ in stages}):
        for problem in layout_size_problems(sizes, model, sizes.world_size, seq_len, max(1, section.pp_stages_per_rank)):
            if problem not in problems:
                problems.append(problem)
    if section.pp_schedule not in PP_SCHEDULES:
        problems.append(f"parallel.pp_schedule = {section.pp_schedule!r}; choose one of {', '.join(PP_SCHEDULES)}")
    if section.pp_stages_per_rank < 1:
        problems.append("parallel.pp_stages_per_rank must be >= 1")
    elif section.pp_schedule == "Interleaved1F1B" and sizes.pp > 1 and section.pp_stages_per_rank < 2:
        problems.append("parallel.pp_schedule = 'Interleaved1F1B' needs parallel.pp_stages_per_rank >= 2")
    elif section.pp_schedule != "Interleaved1F1B" and section.pp_stages_per_rank > 1:
        problems.append(f"parallel.pp_stages_per_rank > 1 needs pp_schedule 'Interleaved1F1B', not {section.pp_schedule!r}")
    n_stages = sizes.pp * max(1, section.pp_stages_per_rank)
    if sizes.pp > 1:
        if model.tie_embeddings:
            problems.append("a model with tied embeddings cannot be split into pipeline stages (embedding and output live on different ranks)")
        if section.pp_layers:
            try:
                stage_layer_counts(model.n_layers, n_stages, section.pp_layers)
            except ConfigError as exc:
                problems.append(str(exc))
    microbatches = section.pp_microbatches or n_stages
    if section.pp_microbatches < 0:
        problems.append("parallel.pp_microbatches must be >= 0")
    if section.reshard_after_forward not in ("auto", "always", "never"):
        problems.append(f"parallel.reshard_after_forward = {section.reshard_after_forward!r}; choose auto, always or never")
    if section.backend not in ("auto", "gloo", "nccl"):
        problems.append(f"parallel.backend = {section.backend!r}; choose auto, gloo or nccl")
    if section.timeout_s <= 0:
        problems.append("parallel.timeout_s must be positive")
    for seq_len, batch, micro in stages:
        where = f"(seq_len {seq_len}, batch {batch}, micro_batch {micro})"
        if micro % sizes.dp:
            problems.append(f"micro-batch of {micro} sequences is not divisible by the {sizes.dp} data-parallel ranks {where}")
        elif sizes.pp > 1 and (micro // sizes.dp) % microbatches:
            problems.append(
                f"each rank's micro-batch of {micro // sizes.dp} sequences is not divisible by the "
                f"{microbatches} pipeline micro-batches (parallel.pp_microbatches) {where}"
            )
    return problems
