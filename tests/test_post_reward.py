"""The reward model: one-row scoring exact vs separate rows, Hugging Face export parity, training, filters."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from herd.model.config import get_config
from herd.post.encoding import encode_preference
from herd.post.reward_model import (
    RewardInit,
    RewardModel,
    export_reward_model,
    load_reward_model,
    preference_rewards,
)
from herd.post.run import PreparedData, build_trainer, export_model, strong_enough
from herd.tokenizer import Llama3Tokenizer
from herd.tokenizer.chat import Message
from herd.tokenizer.llama3_chat import Llama3ChatFormat


@pytest.fixture(scope="module")
def fmt() -> Llama3ChatFormat:
    return Llama3ChatFormat(Llama3Tokenizer())


def prefs(fmt: Llama3ChatFormat, n: int = 4) -> list:
    return [encode_preference(fmt, [Message("user", f"Name a number above {i}.")],
                              [[Message("assistant", f"{i + 5}")], [Message("assistant", "No.")],
                               [Message("assistant", f"Perhaps {i - 1}?")]], "completion") for i in range(n)]


def reward_model() -> RewardModel:
    model = RewardModel(get_config("llama3-tiny", n_layers=2))
    RewardInit(seed=0).apply(model)
    return model.eval()


def test_one_row_rewards_equal_separate_rows(fmt: Llama3ChatFormat) -> None:
    model = reward_model()
    data = prefs(fmt)
    with torch.no_grad():
        one_row = preference_rewards(model, data, one_row=True)
        separate = preference_rewards(model, data, one_row=False)
    for a, b in zip(one_row, separate):
        assert a.shape == (3,)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert "output.weight" not in model.state_dict() and model.score.weight.shape == (1, model.config.dim)


def test_export_loads_in_transformers_with_the_same_rewards(fmt: Llama3ChatFormat, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")  # a [test] dependency: never skipped in CI
    model = reward_model()
    out = export_reward_model(model, fmt.tokenizer, tmp_path / "rm")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(out, torch_dtype=torch.float32).eval()
    assert type(hf).__name__ == "LlamaForSequenceClassification"
    pref = prefs(fmt, 1)[0]
    with torch.no_grad():
        ours = preference_rewards(model, [pref])[0]
        for k, response in enumerate(pref.responses):
            ids = torch.tensor([pref.prompt + response])
            theirs = hf(input_ids=ids).logits[0, 0]
            assert float(theirs) == pytest.approx(float(ours[k]), abs=1e-4)
    again, _tokenizer = load_reward_model(out)
    with torch.no_grad():
        torch.testing.assert_close(preference_rewards(again, [pref])[0], ours, atol=1e-6, rtol=0)


def test_reward_training_learns_the_ranking_and_exports(fmt: Llama3ChatFormat, tmp_path: Path) -> None:
    from herd.post.config import post_config_from_dict

    cfg = post_config_from_dict({
        "post": {"model": "random:llama3-tiny", "train_files": ["unused.jsonl"]},
        "run": {"out_dir": str(tmp_path), "max_steps": 12, "device": "cpu"},
        "schedule": {"stages": [{"after_tokens": 0, "batch_size": 4, "seq_len": 128, "micro_batch_size": 2}]},
        "optim": {"lr": 3e-3}, "log": {"progress": False, "plot": False}, "checkpoint": {"interval": 0}})
    data = prefs(fmt, 8)
    trainer, _ = build_trainer(cfg, "rm", data=PreparedData(data, []))
    result = trainer.run()
    assert result.steps == 12
    model = trainer.model.eval()
    with torch.no_grad():
        rewards = preference_rewards(model, data)
    correct = sum(float(r[i]) > float(r[j]) for r in rewards for i, j in ((0, 1), (0, 2), (1, 2)))
    assert correct >= 20  # of 24 ordered pairs, after a few steps on the training set itself
    exported = export_model(trainer, cfg)
    assert (exported / "config.json").is_file()
    assert load_reward_model(exported)[0].score.weight.shape[0] == 1
    # `herd convert` of the run's training checkpoint writes the same reward model
    from herd.cli import main

    assert main(["convert", str(tmp_path / "checkpoints"), str(tmp_path / "converted"), "--to", "hf"]) == 0
    converted, _ = load_reward_model(tmp_path / "converted")
    with torch.no_grad():
        torch.testing.assert_close(preference_rewards(converted, data[:2]), preference_rewards(model, data[:2]))


def test_min_strength_filter() -> None:
    assert strong_enough("significantly_better", "better") and strong_enough("better", "better")
    assert not strong_enough("slightly_better", "better") and strong_enough(None, "better")
    assert strong_enough("marginally_better", "marginally_better")
