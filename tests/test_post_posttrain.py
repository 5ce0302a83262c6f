"""`herd posttrain`: one round of RM -> RS -> SFT -> DPO (two variants) -> average, recorded and resumable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from herd.config import ConfigError, recipe_from_dict
from herd.post.posttrain import Manifest, PosttrainConfig, run_posttrain, stage_config

DATA = Path(__file__).resolve().parents[1] / "configs" / "post" / "data"
TINY_STAGE = {"run": {"max_steps": 2, "device": "cpu"}, "log": {"progress": False, "plot": False},
              "checkpoint": {"interval": 0}, "optim": {"lr": 1e-3},
              "schedule": {"stages": [{"after_tokens": 0, "batch_size": 2, "seq_len": 256}]}}


def recipe(out: Path, **extra) -> PosttrainConfig:
    data = {"posttrain": {"model": "random:llama3-tiny", "out_dir": str(out), "rounds": 1,
                          "prompts": [str(DATA / "math_prompts.jsonl")],
                          "preference_files": [str(DATA / "math_preferences.jsonl")],
                          "sft_files": [str(DATA / "math_dialogs.jsonl")]},
            "rs": {"k": 2, "max_tokens": 4, "limit": 2},
            "rm": TINY_STAGE, "sft": TINY_STAGE, "dpo": TINY_STAGE,
            "average": {"variants": [{"dpo": {"beta": 0.1}}, {"dpo": {"beta": 0.2}}]}}
    data.update(extra)
    return recipe_from_dict(PosttrainConfig, data)


def test_a_round_runs_every_stage_records_it_and_a_rerun_skips_them(tmp_path: Path) -> None:
    out = tmp_path / "pt"
    manifest = run_posttrain(recipe(out))
    stages = manifest["stages"]
    for key in ("round_1/rm", "round_1/rs", "round_1/sft", "round_1/dpo_0", "round_1/dpo_1", "round_1/average"):
        assert key in stages, key
    assert Path(manifest["final_model"]) == out / "round_1" / "average"
    average = json.loads((out / "round_1" / "average" / "average.json").read_text())
    assert len(average["inputs"]) == 2
    # the DPO variants really differ (beta) and started from this round's SFT model
    dpo0 = json.loads((out / "round_1" / "dpo_0" / "data.json").read_text())
    assert dpo0["train_examples"] >= 24
    assert stages["round_1/dpo_0"]["sha256"] != stages["round_1/dpo_1"]["sha256"]
    # rerun: every stage is found done by its checksum; a changed output is redone
    log = tmp_path / "log.txt"
    with log.open("w") as f:
        run_posttrain(recipe(out), log=f)
    assert log.read_text().count("already done") == 6
    (out / "round_1" / "dpo_1" / "model" / "model.safetensors").write_bytes(b"corrupt")
    assert Manifest(out).done("round_1/dpo_1") is None and Manifest(out).done("round_1/dpo_0") is not None


def test_recipe_errors_name_the_stage(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="prompts is empty"):
        recipe(tmp_path, posttrain={"model": "random:llama3-tiny", "preference_files": ["x"]}).validate()
    with pytest.raises(ConfigError, match=r"\[average.variants\[1\]\].*dpo.reference"):
        recipe(tmp_path, average={"variants": [{}, {"dpo": {"reference": "sometimes"}}]}).validate()
    cfg = recipe(tmp_path)
    sft = stage_config(cfg, "sft", "random:llama3-tiny", ["a.jsonl"], tmp_path / "s")
    assert sft.post.train_files == ["a.jsonl"] and sft.run.max_steps == 2 and sft.run.out_dir == str(tmp_path / "s")
