"""Layout search and the check against the Llama 3 paper's Table 4 (405B on 8K-16K H100s).

`search` enumerates layouts for a GPU count and keeps those that pass `validate_layout` and fit in
memory, fastest predicted step first. `paper_table` runs the planner on the paper's three 405B
configurations. The paper gives every size but the pipeline's virtual stages per rank (its
interleaved schedule); each row gets the value `search` would pick: the fastest that fits, among
1..min(8, n_layers // pp), with the micro-batches a multiple of pp when interleaving. Nothing else is
chosen per row: one micro-batch = one sequence, no activation checkpointing, no reshard after
forward (all as the paper says), and the same `Hardware.h100()` for all three.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

from herd.model import ModelConfig, get_config
from herd.train.parallel.planner import Estimate, Hardware, Layout, PlanError, estimate, validate_layout

TOLERANCE = (0.7, 1.3)  # predicted / paper TFLOP/s per GPU that we call a match
MAX_STAGES_PER_RANK = 8  # interleaving deeper than this is not considered (search and table alike)


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's Table 4 (405B, H100 80GB, BF16)."""

    gpus: int
    tp: int
    cp: int
    pp: int
    dp: int
    seq_len: int
    batch_per_dp: int  # sequences per data-parallel group per step
    tflops_per_gpu: float
    mfu: float


PAPER_TABLE4 = (
    PaperRow(8192, 8, 1, 16, 64, 8192, 32, 430, 0.43),
    PaperRow(16384, 8, 1, 16, 128, 8192, 16, 400, 0.41),
    PaperRow(16384, 8, 16, 16, 8, 131072, 16, 380, 0.38),
)


@dataclass
class TableCheck:
    row: PaperRow
    estimate: Estimate

    @property
    def ratio(self) -> float:
        return self.estimate.tflops_per_gpu / self.row.tflops_per_gpu

    @property
    def ok(self) -> bool:
        return self.estimate.fits and TOLERANCE[0] <= self.ratio <= TOLERANCE[1]


def _divisors(n: int, limit: int) -> list[int]:
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


def best_fitting(candidates: list[Estimate]) -> Estimate | None:
    """The fastest estimate that fits, or None."""
    fitting = [e for e in candidates if e.fits]
    return min(fitting, key=lambda e: e.step_time_s) if fitting else None


def _stage_options(config: ModelConfig, pp: int, n_microbatches: int, limit: int) -> list[int]:
    if pp == 1:
        return [1]
    return [v for v in range(1, min(config.n_layers // pp, limit) + 1) if v == 1 or n_microbatches % pp == 0]


def paper_table(hardware: Hardware | None = None, model: str = "llama3-405b") -> list[TableCheck]:
    """The planner's prediction for each row of Table 4 (module docstring for the one free choice)."""
    hw = hardware or Hardware.h100()
    config = get_config(model)
    checks = []
    for row in PAPER_TABLE4:
        candidates = []
        for v in _stage_options(config, row.pp, row.batch_per_dp, MAX_STAGES_PER_RANK):
            layout = Layout(dp_shard=row.dp, cp=row.cp, pp=row.pp, tp=row.tp, pp_stages_per_rank=v,
                            n_microbatches=row.batch_per_dp, reshard_after_forward=False)
            candidates.append(estimate(config, layout, row.seq_len, row.dp * row.batch_per_dp, hw))
        chosen = best_fitting(candidates) or min(candidates, key=lambda e: e.memory_bytes)
        checks.append(TableCheck(row, chosen))
    return checks


def format_paper_table(checks: list[TableCheck]) -> str:
    head = (f"{'GPUs':>6} {'TP':>3} {'CP':>3} {'PP':>3} {'v':>2} {'DP':>4} {'seq':>7} {'mem/GPU':>9} {'fits':>5} "
            f"{'TFLOP/s':>8} {'paper':>6} {'ratio':>6} {'MFU':>6} {'paper':>6}")
    lines = ["Llama 3 405B, Table 4 of the paper vs the planner (H100 80GB; 'v' = virtual stages per rank)", head]
    for c in checks:
        r, e = c.row, c.estimate
        lines.append(
            f"{r.gpus:>6} {r.tp:>3} {r.cp:>3} {r.pp:>3} {e.layout.pp_stages_per_rank:>2} {r.dp:>4} {r.seq_len:>7} "
            f"{e.memory_bytes / 1e9:>7.1f}GB {'yes' if e.fits else 'NO':>5} {e.tflops_per_gpu:>8.0f} "
            f"{r.tflops_per_gpu:>6.0f} {c.ratio:>6.2f} {e.mfu:>6.1%} {r.mfu:>6.0%}")
    lo, hi = TOLERANCE
    verdict = "all rows fit and match" if all(c.ok for c in checks) else "MISMATCH"
    lines.append(f"{verdict} (match: fits in memory and predicted/paper TFLOP/s within {lo}x-{hi}x)")
    return "\n".join(lines)


def search(config: ModelConfig, gpus: int, seq_len: int, global_batch_sequences: int, hardware: Hardware,
           microbatch_sequences: tuple[int, ...] = (1, 2, 4), max_stages_per_rank: int = MAX_STAGES_PER_RANK,
           activations: str = "compiled") -> list[Estimate]:
    """Every valid layout of `gpus` GPUs (dp_replicate = 1; tp within a node) that fits, fastest first."""
    if gpus < 1 or global_batch_sequences < 1:
        raise PlanError(f"need >= 1 GPU and >= 1 sequence per batch, got {gpus} GPUs, "
                        f"{global_batch_sequences} sequences")
    results = []
    tps = [t for t in _divisors(gpus, hardware.gpus_per_node) if config.n_heads % t == 0 and config.n_kv_heads % t == 0]
    for tp, cp in product(tps, _divisors(gpus, 64)):
        for pp in _divisors(gpus // (tp * cp) if gpus % (tp * cp) == 0 else 0, config.n_layers):
            dp = gpus // (tp * cp * pp)
            for mb in microbatch_sequences:
                if global_batch_sequences % (dp * mb):
                    continue
                m = global_batch_sequences // (dp * mb)
                for v, ac, reshard in product(_stage_options(config, pp, m, max_stages_per_rank), (False, True),
                                              (False, True) if pp == 1 else (False,)):
                    layout = Layout(dp_shard=dp, cp=cp, pp=pp, tp=tp, pp_stages_per_rank=v, microbatch_sequences=mb,
                                    n_microbatches=m, activation_checkpointing=ac, reshard_after_forward=reshard)
                    if validate_layout(config, layout, gpus, seq_len, global_batch_sequences):
                        continue
                    e = estimate(config, layout, seq_len, global_batch_sequences, hardware, activations)
                    if e.fits:
                        results.append(e)
    return sorted(results, key=lambda e: (e.step_time_s, e.memory_bytes))


def format_search(results: list[Estimate], top: int) -> str:
    head = f"{'#':>3}  {'layout':<52} {'mem/GPU':>9} {'step':>9} {'tokens/s':>12} {'MFU':>6}"
    lines = [head]
    for i, e in enumerate(results[:top], 1):
        lines.append(f"{i:>3}  {e.layout.describe():<52} {e.memory_bytes / 1e9:>7.1f}GB {e.step_time_s:>8.3f}s "
                     f"{e.tokens_per_s:>12,.0f} {e.mfu:>6.1%}")
    if len(results) > top:
        lines.append(f"... {len(results) - top} more layouts fit (--top N shows more)")
    return "\n".join(lines)
