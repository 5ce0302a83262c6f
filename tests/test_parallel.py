"""4D parallelism on CPU with gloo: every layout trains exactly like one process.

Three torchrun launches (2, 4 and 8 processes) train the tiny byte-level model under each layout, and
the per-step losses, gradient norms and validation losses must equal the single-process trainer's
(float32; tolerance 1e-5, the order of reductions differs). The 4-process launch also resumes
checkpoints across layouts: FSDP (2 ranks) -> TP x PP (4 ranks), and single-process -> FSDP x TP.
The 2-process launch also trains the paper's batch ramp (the sequence length and micro-batch size
change mid-run) under FSDP, TP and both pipeline schedule kinds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from herd.train import load_config, train
from herd.train.config import ConfigError, ParallelSection
from herd.train.parallel.context import load_balanced_indices
from herd.train.parallel.layout import MeshSizes, layout_problems, resolve_sizes, stage_layer_counts
from tests.train_helpers import tiny_overrides, write_byte_shards

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs/pretrain/tiny.toml"
TOLERANCE = 1e-5

TWO = {
    "fsdp": ["dp_shard=2"],
    "ddp": ["dp_shard=1", "dp_replicate=2"],
    "tp": ["dp_shard=1", "tp=2"],
    "cp": ["dp_shard=1", "cp=2"],
    "pp_1f1b": ["dp_shard=1", "pp=2"],
    "pp_interleaved": ["dp_shard=1", "pp=2", "pp_schedule=Interleaved1F1B", "pp_stages_per_rank=2"],
    "pp_gpipe": ["dp_shard=1", "pp=2", "pp_schedule=GPipe", "pp_microbatches=4"],
}
FOUR = {
    "fsdp_tp": ["dp_shard=2", "tp=2"],
    "fsdp_pp": ["dp_shard=2", "pp=2"],
    "fsdp_cp": ["dp_shard=2", "cp=2"],
    "hsdp": ["dp_replicate=2", "dp_shard=2"],
    "tp_pp": ["dp_shard=1", "tp=2", "pp=2"],
    "tp_cp": ["dp_shard=1", "tp=2", "cp=2"],
    "pp_cp": ["dp_shard=1", "pp=2", "cp=2"],
}
# The batch ramp: step 1 at 8 x 64 in micro-batches of 4, then 4 x 128 in micro-batches of 2, so every
# layout's micro-batch shape changes mid-run. The switch falls between two training steps with no
# validation between them: torch's pipeline schedules re-infer stage shapes on a train/eval switch,
# which would hide stale shapes.
RAMP = ("schedule.stages=[{after_tokens = 0, batch_size = 8, seq_len = 64, micro_batch_size = 4}, "
        "{after_tokens = 512, batch_size = 4, seq_len = 128, micro_batch_size = 2}]")
RAMPED = {
    "ramp_fsdp": TWO["fsdp"],
    "ramp_tp": TWO["tp"],
    "ramp_pp_1f1b": TWO["pp_1f1b"],
    "ramp_pp_interleaved": [*TWO["pp_interleaved"], "pp_microbatches=2"],
}
EIGHT = {  # 3D: 8 processes on the 2 CI cores, ~40 s
    "fsdp_tp_pp": ["dp_shard=2", "tp=2", "pp=2"],
    "cp_tp_pp": ["dp_shard=1", "cp=2", "tp=2", "pp=2"],
}


def _common(sources: dict[str, str], root: Path) -> list[str]:
    return tiny_overrides(sources, root / "unused") + [
        "model.n_layers=4", "run.dtype=float32", "run.max_steps=4", "schedule.warmup_steps=1",
        "schedule.decay_steps=4", "eval.interval=2", "eval.batches=1", "checkpoint.interval=2",
        "schedule.stages=[{after_tokens = 0, batch_size = 8, seq_len = 64, micro_batch_size = 4}]",
    ]


def _torchrun(nproc: int, spec: dict, root: Path, name: str) -> None:
    path = root / f"{name}.json"
    path.write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
           str(ROOT / "tests/parallel_worker.py"), str(path)]
    proc = subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"torchrun {name} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"


def _records(out_dir: Path, kind: str) -> list[dict]:
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == kind]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("parallel")
    sources = write_byte_shards(root / "data")
    common = _common(sources, root)
    train(load_config(TINY, common + [f"run.out_dir={root / 'single'}"]))
    train(load_config(TINY, common + [f"run.out_dir={root / 'single_bf16'}", "run.dtype=bfloat16"]))
    init_from = f"run.init_from={root / 'single/checkpoints/step_00000002'}"
    train(load_config(TINY, common + [f"run.out_dir={root / 'single_init'}", init_from]))
    train(load_config(TINY, common + [f"run.out_dir={root / 'single_ramp'}", RAMP]))

    def run(name: str, sets: list[str], resume: str | None = None, extra: tuple[str, ...] = ()) -> dict:
        return {"name": name, "sets": [f"run.out_dir={root / name}", *extra] + [f"parallel.{s}" for s in sets],
                "resume": resume}

    bf16 = run("fsdp_bf16", TWO["fsdp"], extra=("run.dtype=bfloat16",))
    tp_init = run("tp_init_from", TWO["tp"], extra=(init_from,))
    compiled = run("fsdp_compiled", TWO["fsdp"], extra=("run.compile=true",))  # per-block torch.compile
    checkpointed = run("fsdp_activation_checkpointing", TWO["fsdp"], extra=("run.activation_checkpointing=true",))
    ramps = [run(name, sets, extra=(RAMP,)) for name, sets in RAMPED.items()]
    extra_runs = [bf16, tp_init, compiled, checkpointed, *ramps]
    _torchrun(2, {"overrides": common, "runs": [run(n, s) for n, s in TWO.items()] + extra_runs}, root, "two")
    resumes = [
        run("resume_fsdp_as_tp_pp", FOUR["tp_pp"], str(root / "fsdp/checkpoints/step_00000002")),
        run("resume_single_as_fsdp_tp", FOUR["fsdp_tp"], str(root / "single/checkpoints/step_00000002")),
    ]
    _torchrun(4, {"overrides": common, "runs": [run(n, s) for n, s in FOUR.items()] + resumes}, root, "four")
    _torchrun(8, {"overrides": common, "runs": [run(n, s) for n, s in EIGHT.items()]}, root, "eight")
    return root


def _assert_same_run(got_dir: Path, want_dir: Path, first_step: int = 1, tolerance: float = TOLERANCE) -> None:
    want = {r["step"]: r for r in _records(want_dir, "train")}
    got = _records(got_dir, "train")
    assert [r["step"] for r in got] == [s for s in sorted(want) if s >= first_step]
    for r in got:
        assert abs(r["loss"] - want[r["step"]]["loss"]) < tolerance, (got_dir.name, r["step"], r["loss"])
        assert abs(r["grad_norm"] - want[r["step"]]["grad_norm"]) < tolerance * 10, (got_dir.name, r["step"])
    want_val = {r["step"]: r["val_loss"] for r in _records(want_dir, "val")}
    got_val = _records(got_dir, "val")
    assert want_val, f"{want_dir.name} logged no validation"
    assert [r["step"] for r in got_val] == [s for s in sorted(want_val) if s >= first_step], got_dir.name
    for r in got_val:
        assert abs(r["val_loss"] - want_val[r["step"]]) < tolerance, (got_dir.name, "validation", r["step"])


@pytest.mark.parametrize("layout", list(TWO))
def test_each_parallelism_alone_matches_one_process(runs: Path, layout: str) -> None:
    _assert_same_run(runs / layout, runs / "single")
    assert len(_records(runs / layout, "val")) == 2


def test_compiled_and_checkpointed_fsdp_blocks_train_like_one_process(runs: Path) -> None:
    _assert_same_run(runs / "fsdp_compiled", runs / "single", tolerance=1e-4)
    _assert_same_run(runs / "fsdp_activation_checkpointing", runs / "single")


def test_run_init_from_weights_is_sharded_like_one_process(runs: Path) -> None:
    _assert_same_run(runs / "tp_init_from", runs / "single_init")


def test_fsdp_mixed_precision_stays_close_to_autocast(runs: Path) -> None:
    # FSDP computes with bf16 weights (float32 master + reduction), one process with bf16 autocast
    # over float32 weights: the same recipe with differently placed roundings, ~1e-3 apart here
    _assert_same_run(runs / "fsdp_bf16", runs / "single_bf16", tolerance=1e-2)


@pytest.mark.parametrize("layout", list(RAMPED))
def test_the_batch_ramp_trains_like_one_process_under_each_parallelism(runs: Path, layout: str) -> None:
    shapes = [(r["seq_len"], r["batch_size"]) for r in _records(runs / layout, "train")]
    assert shapes == [(64, 8), (128, 4), (128, 4), (128, 4)]  # the ramp really switched mid-run
    _assert_same_run(runs / layout, runs / "single_ramp")


@pytest.mark.parametrize("layout", list(FOUR))
def test_2d_layouts_on_four_processes_match_one_process(runs: Path, layout: str) -> None:
    _assert_same_run(runs / layout, runs / "single")


@pytest.mark.parametrize("layout", list(EIGHT))
def test_3d_layouts_on_eight_processes_match_one_process(runs: Path, layout: str) -> None:
    _assert_same_run(runs / layout, runs / "single")


def test_checkpoint_resumes_under_another_layout(runs: Path) -> None:
    saved = runs / "fsdp/checkpoints/step_00000002"
    assert (saved / "dcp/.metadata").is_file() and not (saved / "model.pt").exists()
    assert json.loads((saved / "state.json").read_text())["layout"]["dp_shard"] == 2
    _assert_same_run(runs / "resume_fsdp_as_tp_pp", runs / "single", first_step=3)
    _assert_same_run(runs / "resume_single_as_fsdp_tp", runs / "single", first_step=3)


def test_one_process_resumes_a_distributed_checkpoint_and_exports_it(runs: Path, tmp_path: Path) -> None:
    common = _common(write_byte_shards(runs / "data"), runs)
    out = tmp_path / "single_resumed"
    train(load_config(TINY, common + [f"run.out_dir={out}"]), resume=str(runs / "fsdp/checkpoints/step_00000002"))
    _assert_same_run(out, runs / "single", first_step=3)

    from transformers import LlamaForCausalLM

    from herd.model import Transformer
    from herd.train import load_model_weights
    from herd.train.export import export_checkpoint

    source, hf_dir = export_checkpoint(runs / "tp_pp/checkpoints", tmp_path / "hf", "hf")
    assert source.name == "step_00000004"
    config = load_config(TINY, common).model_config()
    ours = Transformer(config)
    ours.load_state_dict(load_model_weights(source))
    theirs = LlamaForCausalLM.from_pretrained(hf_dir)
    tokens = torch.randint(0, config.vocab_size, (2, 48))
    with torch.no_grad():
        assert (theirs(tokens).logits - ours(tokens)).abs().max() < 1e-4


# ---------------------------------------------------------------------------------------- fail fast


def _rank_pid(parent: int, rank: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


def _launch_and_break_rank(tmp_path: Path, sig: signal.Signals, timeout_s: int, exit_within_s: int) -> tuple[int, str]:
    """Start 2-rank training, send `sig` to rank 1 once a step is logged, return (exit code, output).

    Event-driven: waits for the metrics record, then for the job to exit; `exit_within_s` is only an
    upper bound that turns a hang into a failure.
    """
    sources = write_byte_shards(tmp_path / "data")
    sets = tiny_overrides(sources, tmp_path / "run") + [
        "run.max_steps=100000", "schedule.decay_steps=100000", "checkpoint.interval=0", "eval.interval=0",
        f"parallel.timeout_s={timeout_s}", "schedule.stages=[{after_tokens = 0, batch_size = 4, seq_len = 64}]",
    ]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "herd", "pretrain", str(TINY)]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and '"kind": "train"' in metrics.read_text()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no training step was logged; torchrun output:\n{proc.communicate()[0][-4000:]}")
        time.sleep(0.2)
    pid = _rank_pid(proc.pid, 1)
    if pid is None:
        proc.kill()
        pytest.fail(f"rank 1 not found; torchrun output:\n{proc.communicate()[0][-4000:]}")
    os.kill(pid, sig)
    try:
        output, _ = proc.communicate(timeout=exit_within_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the job was still running {exit_within_s} s after rank 1 got {sig.name}")
    return proc.returncode, output


def test_a_killed_rank_fails_the_job_fast_with_a_clear_message(tmp_path: Path) -> None:
    # the collective timeout (600 s) is far above the bound on the exit (300 s): an exit at all proves
    # the dead rank was noticed (closed connection, torchrun's monitor) rather than waited out
    code, output = _launch_and_break_rank(tmp_path, signal.SIGKILL, timeout_s=600, exit_within_s=300)
    assert code != 0
    assert "another rank died" in output and "--resume auto" in output
    assert "SIGKILL" in output  # torchrun names the rank that died and how
    assert "Timed out waiting" not in output


def test_sigterm_on_one_rank_stops_every_rank_at_the_same_step_with_a_checkpoint(tmp_path: Path) -> None:
    from herd.train import latest_checkpoint

    code, output = _launch_and_break_rank(tmp_path, signal.SIGTERM, timeout_s=60, exit_within_s=300)
    assert code == 0, output[-3000:]
    assert "received a stop signal on another rank: saved" in output
    saved = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert saved is not None and (saved / "dcp/.metadata").is_file()


def test_a_hung_rank_fails_the_job_after_the_timeout(tmp_path: Path) -> None:
    # ~45 s: the 10 s collective timeout, then torchrun's grace period before it SIGKILLs the stopped rank
    code, output = _launch_and_break_rank(tmp_path, signal.SIGSTOP, timeout_s=10, exit_within_s=300)
    assert code != 0
    assert "stopped responding for more than 10 s" in output
    assert "Timed out waiting 10000ms" in output  # gloo's own word that the 10 s timeout, not a crash, ended it


# ---------------------------------------------------------------------------------------- units


def test_stage_balancing_gives_the_ends_one_layer_fewer() -> None:
    assert stage_layer_counts(126, 16) == [7] + [8] * 14 + [7]  # the paper's 405B pipeline
    assert stage_layer_counts(8, 4) == [1, 3, 3, 1]
    assert stage_layer_counts(4, 4) == [1, 1, 1, 1]
    assert stage_layer_counts(5, 2, [4, 1]) == [4, 1]
    with pytest.raises(ConfigError, match="summing to 5"):
        stage_layer_counts(5, 2, [2, 2])


def test_context_parallel_chunks_are_load_balanced() -> None:
    parts = [load_balanced_indices(16, 2, r) for r in range(2)]
    assert parts[0].tolist() == [0, 1, 2, 3, 12, 13, 14, 15]
    assert parts[1].tolist() == [4, 5, 6, 7, 8, 9, 10, 11]
    # causal work (keys visible) is the same on both ranks
    assert sum(int(i) + 1 for i in parts[0]) == sum(int(i) + 1 for i in parts[1])
    assert sorted(torch.cat(parts).tolist()) == list(range(16))


def test_sizes_resolve_against_the_world_size() -> None:
    assert resolve_sizes(ParallelSection(tp=2), 8) == MeshSizes(dp_shard=4, tp=2)
    with pytest.raises(ConfigError, match="not divisible"):
        resolve_sizes(ParallelSection(tp=3), 8)
    with pytest.raises(ConfigError, match="must equal the world size"):
        resolve_sizes(ParallelSection(dp_shard=2, pp=2), 8)


def test_bad_layouts_are_reported_before_compute() -> None:
    config = load_config(TINY, ["data.sources.general=/nonexistent"])
    model = config.model_config()  # llama3-tiny: 4 heads, 2 KV heads, 2 layers
    problems = " | ".join(layout_problems(
        MeshSizes(tp=4, pp=4, cp=3), ParallelSection(pp_schedule="Zigzag"), model, [(100, 6, 6)]
    ))
    pipeline = ("each rank's micro-batch of 6 sequences is not divisible by the 4 pipeline micro-batches "
                "(parallel.pp_microbatches) (seq_len 100, batch 6, micro_batch 6)")
    for expected in ("KV heads", "cannot fill", "2*cp", "Zigzag", pipeline):
        assert expected in problems, problems
    assert layout_problems(MeshSizes(dp_shard=2), ParallelSection(), model, [(64, 8, 3)]) == [
        "micro-batch of 3 sequences is not divisible by the 2 data-parallel ranks (seq_len 64, batch 8, micro_batch 3)"
    ]


def test_parallel_sizes_without_torchrun_say_how_to_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    from herd.train.parallel.distributed import make_plan

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    config = load_config(TINY, ["data.sources.general=/x", "parallel.tp=2", "parallel.dp_shard=2"])
    with pytest.raises(ConfigError, match="torchrun --nproc-per-node 4"):
        make_plan(config)
