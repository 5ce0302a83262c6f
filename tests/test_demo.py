"""`herd demo` end to end at a tiny scale: every stage runs (curation included), a stop request stops the
whole command, and `--resume` finishes it with a loadable model and a report."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import herd
from herd.cli import main

ARGS = ["--scale", "0.04", "--max-docs", "40"]
WAIT_S = 900  # generous: an upper bound on a loaded 2-core box, never a synchronisation


def _wait_for(predicate, proc: subprocess.Popen, what: str) -> None:  # type: ignore[no-untyped-def]
    """Poll until `predicate()` holds; fails if the process exits first or WAIT_S passes."""
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"herd demo exited ({proc.returncode}) before {what}:\n{proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no {what} within {WAIT_S} s")
        time.sleep(0.05)


def _first_record(path: Path) -> bool:
    return path.is_file() and any(line.strip() for line in path.read_text().splitlines())


def test_sigterm_stops_the_whole_demo_and_resume_finishes_it(tmp_path) -> None:
    out = tmp_path / "demo"
    env = {**os.environ, "PYTHONPATH": str(Path(herd.__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "herd", "demo", "--out", str(out), *ARGS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    metrics = out / "pretrain" / "metrics.jsonl"
    _wait_for(lambda: _first_record(metrics), proc, "a pretraining metrics record")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=WAIT_S)

    # the whole command stopped, non-zero, saying how to continue
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and f"herd demo --out {out} --resume" in err
    state = json.loads((out / "state.json").read_text())
    assert state["interrupted"] == "pretrain"
    assert set(state["stages"]) == {"corpus", "curate"}  # curation ran before pretraining
    assert not (out / "long_context").exists()  # the next stage never started with a half-trained model
    saved = sorted((out / "pretrain" / "checkpoints").glob("step_*"))
    assert saved, "the trainer saved a checkpoint on SIGTERM"
    planned = json.loads(metrics.read_text().splitlines()[0])

    resumed = subprocess.run([sys.executable, "-m", "herd", "demo", "--out", str(out), "--resume"],
                             capture_output=True, text=True, env=env, timeout=WAIT_S)
    assert resumed.returncode == 0, resumed.stderr
    assert "stage 1/7 corpus  finished earlier" in resumed.stderr  # finished stages are skipped
    log = (out / "demo.log").read_text()
    assert f"resumed from {saved[-1]}" in log  # pretraining continued from its checkpoint, not from scratch
    state = json.loads((out / "state.json").read_text())
    assert list(state["stages"]) == ["corpus", "curate", "pretrain", "long context", "anneal", "average", "report"]
    assert state["stages"]["pretrain"]["tokens"] > planned["tokens"]

    result = json.loads((out / "result.json").read_text())
    losses = result["losses"]
    assert set(losses) == {"pretrained", "long context", "annealed (last)", "averaged (final)"}
    assert all(math.isfinite(v) for v in losses.values())
    # training beats a uniform guess over the 128,256-token vocabulary (the initial model is worse: ~12.1 nats)
    assert losses["averaged (final)"] < math.log(128_256)
    assert result["smoke"] is True
    report = (out / "report.md").read_text()
    for section in ("## Stages", "## Data", "## Held-out loss", "## Long-context stage", "## Needle in a haystack",
                    "## Annealing and averaging", "## Samples", "## Report card"):
        assert section in report
    assert "Smoke scale" in report
    for stage in ("1. corpus", "2. curate", "3. pretrain", "4. long context", "5. anneal", "6. average"):
        assert f"| {stage} |" in report
    assert (out / "loss.png").stat().st_size > 1000 and (out / "niah.png").stat().st_size > 1000
    gate = json.loads((out / "long_context" / "stage-1024" / "gate.json").read_text())
    assert gate and all({"short_loss", "niah_accuracy", "passed"} <= set(check) for check in gate)
    final = herd.load_model(str(out / "final"))
    assert final.config.vocab_size == 128_256 and final.tokenizer.vocab_size == 128_256
    # the report card: the final model through herd eval, per-item records beside the report
    card = result["report_card"]
    assert {"hellaswag", "truthfulqa_mc1", "synthetic_math", "pydoc_lm"} <= set(card)
    assert card["hellaswag"]["n"] == 20 and 0.0 <= card["hellaswag"]["metrics"]["acc"]["value"] <= 1.0
    assert (out / "eval" / "samples.jsonl").is_file()


def test_resume_needs_a_run_and_the_same_settings(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--resume"]) == 2
    assert "no demo run to continue" in capsys.readouterr().err
    out.mkdir()
    (out / "state.json").write_text(json.dumps({"settings": {"scale": 0.04, "max_docs": 40, "seed": 0},
                                                "stages": {}}))
    assert main(["demo", "--out", str(out), "--resume", "--scale", "0.5"]) == 2
    assert "was started with --scale 0.04 --max-docs 40" in capsys.readouterr().err
