"""Exact resume across processes: `herd pretrain` killed with SIGKILL mid-run and resumed gives the
same per-step losses, float for float, as a run that was never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from train_helpers import tiny_overrides, write_byte_shards

from herd.train import checkpointing as ck
from herd.train.metrics import read_records

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "pretrain" / "tiny.toml"
STEPS = 30


def _command(sources, out_dir: Path, *extra: str) -> list[str]:
    sets = tiny_overrides(sources, out_dir) + [f"run.max_steps={STEPS}", "checkpoint.interval=3", "eval.interval=0"]
    return [sys.executable, "-m", "herd.cli", "pretrain", str(TINY), *(a for s in sets for a in ("--set", s)), *extra]


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
    proc = subprocess.Popen(_command(sources, run), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:  # wait for >= 7 logged steps and a checkpoint on disk
            if len(_losses(run)) >= 7 and ck.latest_checkpoint(run / "checkpoints") is not None:
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    steps_before_kill = len(_losses(run))
    assert 7 <= steps_before_kill < STEPS  # really killed mid-run
    resumed_from = ck.latest_checkpoint(run / "checkpoints")
    assert resumed_from is not None

    resumed = subprocess.run(_command(sources, run, "--resume", "auto"), env=_env(), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {resumed_from}" in resumed.stderr
    assert _losses(run) == expected  # identical floats, step for step
