"""`herd dpo` killed with SIGKILL mid-run and resumed gives the same per-step losses as an uninterrupted run
(the loader's epoch/cursor, the RNG, the optimizer and the cached reference log-probs all come back)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from train_helpers import pausing_herd_command

from herd.train.metrics import read_records

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "post" / "dpo-smoke.toml"
STEPS, KILL_AFTER = 6, 4  # checkpoints every 2 steps: step 4's is the last before the kill


def _sets(out_dir: Path) -> list[str]:
    sets = ["post.model=random:llama3-tiny", f"run.out_dir={out_dir}", f"run.max_steps={STEPS}", "run.device=cpu",
            "checkpoint.interval=2", "optim.lr=1e-3", "log.plot=false", "log.progress=false",
            "schedule.stages=[{after_tokens = 0, batch_size = 4, seq_len = 256, micro_batch_size = 2}]"]
    return ["dpo", str(RECIPE), *(a for s in sets for a in ("--set", s))]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _losses(out_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_records(out_dir / "metrics.jsonl") if r["kind"] == "train"]


def test_dpo_kill_dash_nine_then_resume_gives_identical_losses(tmp_path: Path) -> None:
    reference = subprocess.run([sys.executable, "-m", "herd.cli", *_sets(tmp_path / "ref")], env=_env(),
                               capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)
    assert reference.returncode == 0, reference.stderr
    expected = _losses(tmp_path / "ref")
    assert [s for s, _ in expected] == list(range(1, STEPS + 1))

    run, paused = tmp_path / "run", tmp_path / "paused"
    proc = subprocess.Popen(pausing_herd_command(KILL_AFTER, paused, _sets(run)), env=_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600  # an upper bound only: the wait ends when the run halts
        while not paused.exists():
            assert proc.poll() is None, f"the run ended before it halted: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "the run did not reach the kill point in 600 s"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.returncode is None and not paused.exists():
            proc.kill()
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert _losses(run) == expected[:KILL_AFTER]
    assert (run / "reference_logps.pt").is_file()

    resumed = subprocess.run([sys.executable, "-m", "herd.cli", *_sets(run), "--resume", "auto"], env=_env(),
                             capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    assert _losses(run) == expected  # identical floats, step for step
    assert (run / "model" / "model.safetensors").is_file()
