"""The 4D-parallelism planner: Table 4 of the paper, memory monotonicity, conservation, validation, CLI."""

from __future__ import annotations

import argparse
import dataclasses
import itertools

import pytest

from herd.config import MeshSizes

from herd.model import flops_per_token, get_config, param_counts
from herd.train.parallel.planner import (
    Hardware,
    Layout,
    PlanError,
    activation_bytes_per_token,
    bubble_fraction,
    estimate,
    gpu_param_bytes,
    in_flight_microbatches,
    layout_size_problems,
    validate_layout,
)
from herd.train.parallel.planner_table import PAPER_TABLE4, TOLERANCE, paper_table, search
from herd.train.plan_cli import register

H100 = Hardware.h100()
L405 = get_config("llama3-405b")
L70 = get_config("llama3-70b")
L8 = get_config("llama3-8b")


def test_paper_table4_rows_fit_in_80gb_and_predict_the_measured_throughput() -> None:
    checks = paper_table()
    assert [c.row for c in checks] == list(PAPER_TABLE4)
    for c in checks:
        e, row = c.estimate, c.row
        assert e.layout.world_size == row.gpus and e.layout.tp == row.tp and e.layout.pp == row.pp
        assert e.tokens_per_s * e.step_time_s == pytest.approx(16 * 2**20)  # every row: 16M tokens per step
        assert e.fits, (row, e.memory_bytes / 1e9)
        assert 40e9 < e.memory_bytes <= 80e9  # a 405B stage is not tiny either
        assert TOLERANCE[0] <= c.ratio <= TOLERANCE[1], (row, e.tflops_per_gpu)
        assert TOLERANCE[0] * row.mfu <= e.mfu <= TOLERANCE[1] * row.mfu
        assert c.ok


def test_the_paper_layout_without_interleaving_fits_but_pays_the_bubble() -> None:
    layout = Layout(dp_shard=64, pp=16, tp=8, n_microbatches=32)
    e = estimate(L405, layout, 8192, 64 * 32, H100)
    assert e.fits
    assert e.bubble_fraction == pytest.approx(15 / 32)
    assert e.time["pipeline bubble"] == pytest.approx(15 / 32 * (e.step_time_s - e.time["pipeline bubble"]
                                                                   - e.time["FSDP comm (exposed)"]))
    assert e.mfu < paper_table()[0].estimate.mfu


def test_pure_data_parallel_405b_without_sharding_does_not_fit() -> None:
    e = estimate(L405, Layout(dp_replicate=8192), 8192, 8192, H100)
    assert not e.fits
    # 18 bytes per parameter (bf16 weights, fp32 master, fp32 gradients, two fp32 moments) on every GPU
    assert e.memory_bytes > 18 * param_counts(L405)["total"]
    # eager autograd (no fused kernels) does not fit the paper's layout either
    assert not estimate(L405, Layout(dp_shard=64, pp=16, tp=8, n_microbatches=32), 8192, 2048, H100, "eager").fits


def _memory(config, **sizes) -> float:  # type: ignore[no-untyped-def]
    layout = Layout(n_microbatches=16, reshard_after_forward=sizes.pop("reshard", False), **sizes)
    return estimate(config, layout, 8192, layout.dp * 16, H100).memory_bytes


@pytest.mark.parametrize("reshard", [False, True])
def test_memory_decreases_when_tp_pp_or_dp_shard_grow(reshard: bool) -> None:
    for config in (L8, L70):
        by_tp = [_memory(config, tp=t, dp_shard=4, pp=2, reshard=reshard) for t in (1, 2, 4, 8)]
        by_pp = [_memory(config, pp=p, dp_shard=4, tp=2, reshard=reshard) for p in (1, 2, 4, 8, 16)]
        by_dp = [_memory(config, dp_shard=d, pp=2, tp=2, reshard=reshard) for d in (1, 2, 4, 8, 64, 512)]
        for series in (by_tp, by_pp, by_dp):
            assert all(a > b for a, b in itertools.pairwise(series)), series


def test_context_parallel_divides_activations() -> None:
    base = Layout(dp_shard=8, tp=8, pp=16, n_microbatches=16)
    full = estimate(L405, base, 131072, 128, H100)
    split = estimate(L405, dataclasses.replace(base, dp_shard=1, cp=8), 131072, 16, H100)
    assert split.memory["activations"] == pytest.approx(full.memory["activations"] / 8)


def test_parameter_memory_is_conserved_across_gpus() -> None:
    layouts = [
        (L405, Layout(dp_shard=64, pp=16, tp=8, pp_stages_per_rank=7, n_microbatches=32)),
        (L405, Layout(dp_shard=8, cp=16, pp=16, tp=8)),
        (L70, Layout(dp_replicate=3, dp_shard=4, pp=5, tp=4, pp_stages_per_rank=2)),
        (L8, Layout(dp_shard=8)),
        (get_config("llama3.2-1b"), Layout(dp_shard=2, tp=8)),  # tied embeddings: counted once
    ]
    for config, layout in layouts:
        expected = 4 * param_counts(config)["total"] * layout.dp_replicate
        assert gpu_param_bytes(config, layout) == pytest.approx(expected, rel=1e-12)


def test_pipeline_bubble_and_in_flight_micro_batches() -> None:
    assert bubble_fraction(16, 32) == pytest.approx(15 / 32)
    assert bubble_fraction(4, 8, 2) == pytest.approx(3 / 16)
    assert bubble_fraction(1, 7) == 0
    assert in_flight_microbatches(16, 0, 1, 32) == 16  # 1F1B: the first stage holds pp micro-batches
    assert in_flight_microbatches(16, 15, 1, 32) == 1
    assert in_flight_microbatches(8, 0, 1, 4) == 4  # fewer micro-batches than stages
    assert in_flight_microbatches(4, 0, 2, 8) == pytest.approx((4 + 2 * 3 + 1) / 2)  # interleaved warm-up
    assert in_flight_microbatches(1, 0, 1, 64) == 1  # gradient accumulation keeps one at a time


def test_single_gpu_time_is_flops_over_achievable_rate() -> None:
    config = get_config("llama3-small")
    e = estimate(config, Layout(n_microbatches=4), 2048, 4, H100)
    flops = 4 * 2048 * flops_per_token(config, 2048)
    assert e.step_time_s == pytest.approx(flops / (H100.peak_flops * H100.achievable_fraction), rel=1e-4)
    assert e.mfu == pytest.approx(H100.achievable_fraction, rel=1e-4)
    assert sum(e.time.values()) == pytest.approx(e.step_time_s)
    checkpointed = estimate(config, Layout(n_microbatches=4, activation_checkpointing=True), 2048, 4, H100)
    assert checkpointed.memory["activations"] < e.memory["activations"] / 2  # 4 inputs + one layer of 4
    assert checkpointed.step_time_s > e.step_time_s


def test_activation_formula_counts_the_saved_tensors() -> None:
    h, kv, f = L8.dim, L8.n_kv_heads * L8.head_dim, L8.ffn_dim
    fp32_stats = 4 * L8.n_heads + 8
    assert activation_bytes_per_token(L8) == 2 * (4 * h + 2 * kv + 2 * f) + fp32_stats
    assert activation_bytes_per_token(L8, "eager") == 2 * (10 * h + 2 * kv + 4 * f) + fp32_stats


def test_eager_activation_bytes_match_what_autograd_saves_in_herds_block() -> None:
    """Count the tensors a bf16 herd TransformerBlock really saves for backward (distinct storages,
    weights and RoPE tables excluded) and compare with the planner's "eager" formula."""
    import torch

    from herd.model import Causal, Transformer, llama_config
    from herd.model.rope import rope_cos_sin, rope_table

    config = llama_config(256, 1, 8, 2, None, 64, vocab_size=512)
    model = Transformer(config).to(torch.bfloat16)
    tokens = 96
    x = torch.randn(2, tokens, config.dim, dtype=torch.bfloat16, requires_grad=True)
    cos, sin = rope_cos_sin(torch.arange(tokens), model.inv_freq)
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.layers[0](x, cos, sin, Causal()).float().sum().backward()
    fixed = {p.untyped_storage().data_ptr() for p in model.parameters()}
    fixed |= {t.untyped_storage().data_ptr() for t in (cos, sin, rope_table(cos, sin), x)}  # the RoPE tables
    saved = sum(n for ptr, n in storages.items() if ptr not in fixed)
    assert saved == 2 * tokens * activation_bytes_per_token(config, "eager")
    assert saved > 2 * tokens * activation_bytes_per_token(config, "compiled")
    with pytest.raises(PlanError, match="activation mode"):
        activation_bytes_per_token(L8, "lazy")


@pytest.mark.parametrize(
    ("changes", "world", "seq", "message"),
    [
        ({"dp_shard": 7}, 8, 8192, "world size is 8"),
        ({"tp": 3, "dp_shard": 1}, 3, 8192, "must divide the heads"),
        ({"tp": 16, "dp_shard": 1}, 16, 8192, "KV heads"),
        ({"pp": 64, "dp_shard": 1}, 64, 8192, "cannot fill"),
        ({"pp": 8, "pp_stages_per_rank": 8, "dp_shard": 1}, 8, 8192, "cannot fill"),
        ({"cp": 4, "dp_shard": 1}, 4, 8196, "2*cp"),
        ({"tp": 8, "dp_shard": 1}, 8, 8196, "not divisible by tp"),
        ({"dp_shard": 0}, 0, 8192, ">= 1"),
        ({"pp_stages_per_rank": 2, "dp_shard": 1}, 1, 8192, "needs pp > 1"),
    ],
)
def test_validate_layout_names_each_problem(changes: dict, world: int, seq: int, message: str) -> None:
    problems = validate_layout(L8, Layout(**changes), world, seq)
    assert any(message in p for p in problems), problems
    if world == Layout(**changes).world_size:  # estimate() takes the world size from the layout itself
        with pytest.raises(PlanError, match="cannot run"):
            estimate(L8, Layout(**changes), seq, max(1, Layout(**changes).dp), H100)


def test_validate_layout_accepts_good_layouts_and_checks_the_batch() -> None:
    assert validate_layout(L405, Layout(dp_shard=64, pp=16, tp=8, n_microbatches=32), 8192, 8192, 2048) == []
    assert layout_size_problems(MeshSizes(dp_shard=8, cp=16, pp=16, tp=8), L405, 16384, 131072) == []
    wrong_batch = validate_layout(L405, Layout(dp_shard=64, pp=16, tp=8, n_microbatches=32), 8192, 8192, 1024)
    assert any("global batch of 1024" in p for p in wrong_batch)
    tied = validate_layout(get_config("llama3.2-1b"), Layout(pp=2), 2, 4096)
    assert any("tied embeddings" in p for p in tied)


def test_hardware_presets() -> None:
    cpu = Hardware.cpu(peak_flops=50e9, bandwidth_bytes_s=5e9, memory_bytes=16e9)
    assert cpu.achievable_fraction == 1 and cpu.intra_bandwidth == cpu.inter_bandwidth == 5e9
    e = estimate(get_config("llama3-tiny"), Layout(dp_shard=2, tp=2), 256, 2, cpu)
    assert e.fits and e.step_time_s > 0
    with pytest.raises(PlanError, match="positive"):
        Hardware.cpu(peak_flops=0, bandwidth_bytes_s=1, memory_bytes=1)


def test_search_returns_fitting_layouts_fastest_first() -> None:
    results = search(L8, 8, 8192, 64, H100)
    assert results and all(e.fits and e.layout.world_size == 8 for e in results)
    times = [e.step_time_s for e in results]
    assert times == sorted(times)
    assert not search(L405, 8, 8192, 64, H100)  # 405B does not fit on one node


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_layout_table_and_search(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["plan", "--model", "llama3-405b", "--gpus", "8192", "--tp", "8", "--pp", "16", "--seq-len", "8192",
                 "--batch-tokens", "16777216"]) == 0
    out = capsys.readouterr().out
    assert "fits" in out and "MFU" in out and "activations" in out and "dp_shard=64" in out
    assert _run(["plan", "--paper-table"]) == 0
    assert "all rows fit and match" in capsys.readouterr().out
    assert _run(["plan", "--model", "llama3-8b", "--gpus", "8", "--search", "--top", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    steps = [float(line.split()[-3].rstrip("s")) for line in lines if line.strip()[:1].isdigit()]
    assert len(steps) == 5 and steps == sorted(steps)
    assert _run(["plan", "--model", "llama3-405b", "--gpus", "8192", "--dp-replicate", "8192", "--dp-shard", "1",
                 "--batch-seqs", "8192"]) == 1  # does not fit
    assert "does NOT fit" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "llama3-9000b", "--gpus", "8"], "unknown model size"),
        (["--model", "llama3-8b", "--gpus", "9", "--tp", "2"], "not divisible"),
        (["--model", "llama3-8b", "--gpus", "24", "--tp", "3"], "must divide the heads"),
        (["--model", "llama3-8b", "--gpus", "8", "--batch-tokens", "1000"], "multiple of --seq-len"),
        (["--hardware", "cpu", "--model", "llama3-8b", "--gpus", "2"], "--peak-tflops"),
    ],
)
def test_cli_bad_input_is_a_clear_error(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    from herd.cli import COMMAND_MODULES, main

    assert "herd.train.plan_cli" in COMMAND_MODULES
    assert main(["plan", *argv]) == 2
    err = capsys.readouterr().err
    assert "herd plan: error:" in err and message in err and "Traceback" not in err
