"""Parallelism for the trainer: one process, or 4D (FSDP, tensor, pipeline, context) on torch.distributed.

Public API:
    SingleProcessPlan                  the identity plan (one process, one device)
    ParallelSection (herd.train.config) sizes dp_replicate, dp_shard, cp, pp, tp and their options
"""

from herd.train.parallel.single import SingleProcessPlan

__all__ = ["SingleProcessPlan"]
