"""herd.train.checkpointing: atomic saves, keep-last-N, newest complete checkpoint, clear errors."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from herd.checkpoint.errors import CheckpointError
from herd.train import checkpointing as ck


def _save(directory, step, keep_last=2, value=0.0):
    model = {"w": torch.full((4, 4), float(value))}
    optim = {"state": {0: {"exp_avg": torch.full((4, 4), value + 1)}}, "param_groups": []}
    return ck.save_checkpoint(directory, step, model, optim, {"tokens": step * 10}, keep_last)


def test_save_load_prune_and_latest_pointer(tmp_path):
    for step in (10, 20, 30):
        _save(tmp_path, step, value=step)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["step_00000020", "step_00000030"]
    assert (tmp_path / "latest").read_text().strip() == "step_00000030"
    state = ck.load_checkpoint(ck.latest_checkpoint(tmp_path))
    assert state.meta["step"] == 30 and state.meta["tokens"] == 300
    assert torch.equal(state.model["w"], torch.full((4, 4), 30.0))
    assert json.loads((tmp_path / "step_00000030" / "state.json").read_text())["format_version"] == 1
    _save(tmp_path, 30, value=31)  # re-saving the same step replaces it atomically
    assert torch.equal(ck.load_checkpoint(tmp_path / "step_00000030").model["w"], torch.full((4, 4), 31.0))


def test_save_interrupted_midway_leaves_previous_checkpoint(tmp_path, monkeypatch):
    good = _save(tmp_path, 10, value=1)
    real_write = ck.write_torch

    def crash_after_half(path, obj):
        real_write(path, obj)
        if path.name == "optim.pt":  # die in the middle of the save: half a file on disk, then an error
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
            raise OSError("disk full (simulated)")

    monkeypatch.setattr(ck, "write_torch", crash_after_half)
    with pytest.raises(OSError, match="simulated"):
        _save(tmp_path, 20, value=2)
    monkeypatch.undo()
    assert (tmp_path / "step_00000020.tmp").is_dir()  # the partial save is there ...
    assert not (tmp_path / "step_00000020").exists()
    assert ck.latest_checkpoint(tmp_path) == good  # ... but never taken for a checkpoint
    assert ck.resolve_resume("auto", tmp_path) == good
    assert (tmp_path / "latest").read_text().strip() == good.name
    assert torch.equal(ck.load_checkpoint(good).model["w"], torch.full((4, 4), 1.0))
    with pytest.raises(CheckpointError, match="not a complete training checkpoint"):
        ck.resolve_resume(tmp_path / "step_00000020.tmp", tmp_path)
    _save(tmp_path, 30, value=3)  # the next successful save cleans the leftover up
    assert not (tmp_path / "step_00000020.tmp").exists()


def test_resolve_resume_errors(tmp_path):
    assert ck.resolve_resume(None, tmp_path) is None
    assert ck.resolve_resume("auto", tmp_path / "nothing-yet") is None  # auto on a fresh run: start fresh
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        ck.resolve_resume(tmp_path / "missing", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="missing model.pt, optim.pt, state.json"):
        ck.resolve_resume(tmp_path / "empty", tmp_path)
    path = _save(tmp_path / "ckpts", 5)
    assert ck.resolve_resume(tmp_path / "ckpts", tmp_path) == path  # a directory of checkpoints: newest


def test_damaged_checkpoint_is_a_clear_error(tmp_path):
    path = _save(tmp_path, 1)
    (path / "model.pt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="damaged checkpoint file"):
        ck.load_checkpoint(path)
    (path / "state.json").write_text("{")
    with pytest.raises(CheckpointError, match="cannot read state.json"):
        ck.load_checkpoint(path)


def test_rng_state_round_trips_through_json():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = json.loads(json.dumps(ck.rng_state()))
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    ck.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
