"""Exact resume across processes: `herd pretrain` killed with SIGKILL mid-run and resumed gives the
same per-step losses, float for float, as a run that was never interrupted.

The kill lands at a known point, not a race with a fast host: the run halts itself before step 9
(steps 1-8 logged, the step-6 checkpoint committed) and waits there for the SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from train_helpers import pausing_herd_command, tiny_overrides, write_byte_shards

from herd.train import checkpointing as ck
from herd.train.metrics import read_records

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "pretrain" / "tiny.toml"
STEPS = 30
KILL_AFTER = 8  # steps done when the SIGKILL lands; checkpoints every 3 steps, so step 6 is the last


def _sets(sources, out_dir: Path) -> list[str]:
    sets = tiny_overrides(sources, out_dir) + [f"run.max_steps={STEPS}", "checkpoint.interval=3", "eval.interval=0"]
    return ["pretrain", str(TINY), *(a for s in sets for a in ("--set", s))]


def _command(sources, out_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "herd.cli", *_sets(sources, out_dir), *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _losses(out_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_records(out_dir / "metrics.jsonl") if r["kind"] == "train"]


def test_kill_dash_nine_then_resume_gives_identical_losses(tmp_path):
    sources = write_byte_shards(tmp_path / "data")
    reference = subprocess.run(_command(sources, tmp_path / "ref"), env=_env(), capture_output=True, text=True,
                               timeout=300)
    assert reference.returncode == 0, reference.stderr
    expected = _losses(tmp_path / "ref")
    assert [s for s, _ in expected] == list(range(1, STEPS + 1))

    run = tmp_path / "run"
    paused = tmp_path / "paused"
    proc = subprocess.Popen(pausing_herd_command(KILL_AFTER, paused, _sets(sources, run)), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300  # an upper bound only: the wait ends when the run halts
        while not paused.exists():
            assert proc.poll() is None, f"the run ended before it halted at step {KILL_AFTER}: {proc.stderr.read()}"
            assert time.monotonic() < deadline, f"the run did not reach step {KILL_AFTER} in 300 s"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.returncode is None and not paused.exists():
            proc.kill()  # a failed wait above: do not leave the run behind
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert _losses(run) == expected[:KILL_AFTER]  # killed mid-run, at the known point
    resumed_from = ck.latest_checkpoint(run / "checkpoints")
    assert resumed_from is not None and resumed_from.name == ck.checkpoint_name(6)

    resumed = subprocess.run(_command(sources, run, "--resume", "auto"), env=_env(), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {resumed_from}" in resumed.stderr
    assert _losses(run) == expected  # identical floats, step for step
