"""SFT and DPO through the one training loop: exactness, accumulation, step-0 values, resume, export."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from herd.model import Transformer
from herd.model.attention import DocumentMask
from herd.model.config import get_config
from herd.post.config import post_config_from_dict
from herd.post.data import PreferenceLoader, SFTLoader
from herd.post.encoding import encode_preference, encode_sft
from herd.post.logprobs import preference_token_logprobs
from herd.post.objectives import DPOObjective, ReferenceCacheError
from herd.post.run import PreparedData, build_trainer, export_model
from herd.tokenizer import Llama3Tokenizer
from herd.tokenizer.chat import Message
from herd.tokenizer.llama3_chat import Llama3ChatFormat
from herd.train.init import ModelInit
from herd.train.schedule import StepShape


@pytest.fixture(scope="module")
def fmt() -> Llama3ChatFormat:
    return Llama3ChatFormat(Llama3Tokenizer())


def preferences(fmt: Llama3ChatFormat, n: int = 8, three: bool = False) -> list:
    out = []
    for i in range(n):
        responses = [[Message("assistant", f"It is {2 * i}.")], [Message("assistant", f"Maybe {2 * i + 1}, not sure.")]]
        if three:
            responses.insert(0, [Message("assistant", f"{i} + {i} = {2 * i}.")])
        out.append(encode_preference(fmt, [Message("user", f"What is {i}+{i}?")], responses, "paper"))
    return out


def dialogs(fmt: Llama3ChatFormat, n: int = 10) -> list:
    return [encode_sft(fmt, [Message("user", f"Say {i} twice."), Message("assistant", f"{i} {i}" + " ok" * (i % 4))])
            for i in range(n)]


def tiny_model(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(get_config("llama3-tiny", n_layers=2)).float()


def test_one_row_logprobs_equal_separate_rows_and_a_hand_sum(fmt: Llama3ChatFormat) -> None:
    model = tiny_model().eval()
    prefs = preferences(fmt, 3, three=True)
    with torch.no_grad():
        shared = preference_token_logprobs(model, prefs, prefix_sharing=True)
        separate = preference_token_logprobs(model, prefs, prefix_sharing=False)
        for pref, a, b in zip(prefs, shared, separate):
            for r, (x, y) in enumerate(zip(a, b)):
                torch.testing.assert_close(x, y, atol=1e-5, rtol=0)
                ids = pref.prompt + pref.responses[r]
                logp = torch.log_softmax(model(torch.tensor([ids])).float()[0], -1)
                p = len(pref.prompt)
                hand = sum(float(logp[p + t - 1, tok]) for t, (tok, keep) in
                           enumerate(zip(pref.responses[r], pref.branch_masks[r])) if keep)
                assert float(x.sum()) == pytest.approx(hand, abs=1e-4)
                assert x.numel() == sum(pref.branch_masks[r])  # the closing token is not scored


def fake_trainer(model: Transformer) -> SimpleNamespace:
    return SimpleNamespace(device=torch.device("cpu"), autocast_dtype=None, forward_model=model, model=model,
                           logger=SimpleNamespace(message=lambda m: None))


def dpo_objective(fmt: Llama3ChatFormat, prefs: list, tmp: Path | None = None, **kw) -> DPOObjective:
    return DPOObjective(prefs, [], model_config=get_config("llama3-tiny", n_layers=2), init=ModelInit(0),
                        cache_dir=tmp, **kw)


def test_dpo_step_zero_is_ln2_plus_nll_and_accumulation_is_exact(fmt: Llama3ChatFormat) -> None:
    prefs = preferences(fmt, 8, three=True)
    model = Transformer(get_config("llama3-tiny", n_layers=2))
    ModelInit(0).apply(model)  # the policy starts as the reference
    objective = dpo_objective(fmt, prefs)
    batch = list(enumerate(prefs))
    grads = []
    for micro in (8, 2, 1):
        model.zero_grad()
        stats = objective.forward_backward(fake_trainer(model), batch, StepShape(0, 8, 64, micro))
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
        assert stats["dpo_loss"] == pytest.approx(math.log(2), abs=1e-6)
        assert stats["rewards/chosen"] == 0 and stats["rewards/margins"] == 0
        assert stats["loss"] == pytest.approx(math.log(2) + 0.2 * stats["nll_loss"], abs=1e-5)
    for other in grads[1:]:
        for a, b in zip(grads[0], other):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_reference_cache_is_reused_and_a_stale_one_refused(fmt: Llama3ChatFormat, tmp_path: Path) -> None:
    prefs = preferences(fmt, 4)
    model = tiny_model()
    first = dpo_objective(fmt, prefs, tmp_path)
    first.prepare(fake_trainer(model))
    assert (tmp_path / "reference_logps.pt").is_file()
    again = dpo_objective(fmt, prefs, tmp_path)
    again.prepare(fake_trainer(model))
    assert again._reference_logps == first._reference_logps
    stale = dpo_objective(fmt, prefs[:3], tmp_path)
    with pytest.raises(ReferenceCacheError, match="other data"):
        stale.prepare(fake_trainer(model))


def test_sft_packed_equals_unpacked(fmt: Llama3ChatFormat) -> None:
    examples = dialogs(fmt, 6)
    model = tiny_model().eval()

    total_len = sum(len(e.tokens) for e in examples)

    def loss_and_count(pack: bool) -> tuple[float, int]:
        loader = SFTLoader(examples, pack=pack, shuffle=False)
        # packed: every dialog in one row of exactly their total length; unpacked: one padded row each
        inputs, targets, doc_ids = loader.next_batch(1 if pack else len(examples), total_len)
        assert loader.order.epoch == 1 and loader.order.cursor == 0
        state = DocumentMask(doc_ids)
        with torch.no_grad():
            logits = model(inputs, state.positions, state)
        total = float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum"))
        return total, int((targets != -100).sum())

    packed, unpacked = loss_and_count(True), loss_and_count(False)
    assert packed[1] == unpacked[1] == sum(e.trained_tokens for e in examples)  # every trained token, once
    assert packed[0] == pytest.approx(unpacked[0], rel=1e-5)


def test_loader_state_round_trip_and_mismatch() -> None:
    loader = PreferenceLoader(list(range(5)), seed=3)  # type: ignore[arg-type]
    loader.next_batch(3, 0)
    state = loader.state_dict()
    expected = loader.next_batch(4, 0)
    fresh = PreferenceLoader(list(range(5)), seed=3)  # type: ignore[arg-type]
    fresh.load_state_dict(state)
    assert fresh.next_batch(4, 0) == expected
    with pytest.raises(ValueError, match="data or seed changed"):
        PreferenceLoader(list(range(6)), seed=3).load_state_dict(state)  # type: ignore[arg-type]


def post_config(tmp: Path, steps: int, **extra) -> object:
    data = {"post": {"model": "random:llama3-tiny", "train_files": ["unused.jsonl"]},
            "run": {"out_dir": str(tmp), "max_steps": steps, "device": "cpu"},
            "schedule": {"stages": [{"after_tokens": 0, "batch_size": 4, "seq_len": 96, "micro_batch_size": 2}]},
            "optim": {"lr": 1e-3}, "log": {"progress": False, "plot": False}, "checkpoint": {"interval": 2}}
    for key, value in extra.items():
        data.setdefault(key, {}).update(value)
    return post_config_from_dict(data)


@pytest.mark.parametrize("method", ["sft"])  # DPO: tests/test_post_kill_resume.py (kill -9, then resume)
def test_resume_gives_identical_losses_and_the_model_is_exported(fmt: Llama3ChatFormat, tmp_path: Path,
                                                                 method: str) -> None:
    train = preferences(fmt, 8) if method == "dpo" else dialogs(fmt, 12)

    def run(out: Path, steps: int, resume: str | None = None) -> list[float]:
        cfg = post_config(out, steps)
        trainer, _ = build_trainer(cfg, method, resume=resume, data=PreparedData(list(train), []))
        trainer.run()
        if steps == 4:
            exported = export_model(trainer, cfg)
            assert (exported / "config.json").is_file() and (exported / "tokenizer.json").exists() or \
                any(exported.glob("tokenizer*"))
        lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in lines if r.get("kind") == "train"]

    straight = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    resumed = run(tmp_path / "b", 4, resume="auto")
    assert len(straight) == 4
    assert resumed[-2:] == straight[-2:]


def test_post_config_defaults_and_errors(tmp_path: Path) -> None:
    cfg = post_config_from_dict({"post": {"model": "random:llama3-tiny", "train_files": ["x.jsonl"]}})
    assert cfg.optim.lr == 1e-5 and cfg.dpo.beta == 0.1 and cfg.dpo.nll_weight == 0.2 and cfg.dpo.mask == "paper"
    assert cfg.run.dtype == "float32"
    from herd.config import ConfigError

    with pytest.raises(ConfigError, match="post.train_files"):
        post_config_from_dict({"post": {"model": "random:llama3-tiny"}})
    with pytest.raises(ConfigError, match="dpo.reference"):
        post_config_from_dict({"post": {"model": "random:llama3-tiny", "train_files": ["x"]},
                               "dpo": {"reference": "sometimes"}})


def test_paper_mask_leaves_out_the_termination_token(fmt: Llama3ChatFormat) -> None:
    """Changing the closing token's logit moves the "completion" log-prob but not the "paper" one."""
    model = tiny_model().eval()
    prompt = [Message("user", "Hi")]
    responses = [[Message("assistant", "Hello there.")], [Message("assistant", "Go away.")]]
    paper = encode_preference(fmt, prompt, responses, "paper")
    completion = encode_preference(fmt, prompt, responses, "completion")
    ids = paper.prompt + paper.responses[0]
    p = len(paper.prompt)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).float()[0]
    assert paper.responses[0][-1] == fmt.eot_id
    changed = logits.clone()
    changed[len(ids) - 2, fmt.eot_id] += 5.0  # the position that predicts the closing token

    def sequence(all_logits: torch.Tensor, mask: list[bool]) -> float:
        logp = torch.log_softmax(all_logits, -1)
        return sum(float(logp[p + t - 1, tok]) for t, (tok, keep) in enumerate(zip(paper.responses[0], mask)) if keep)

    assert sequence(changed, paper.branch_masks[0]) == sequence(logits, paper.branch_masks[0])
    assert sequence(changed, completion.branch_masks[0]) != pytest.approx(sequence(logits, completion.branch_masks[0]))
    with torch.no_grad():
        ours = preference_token_logprobs(model, [paper])[0][0]
    assert float(ours.sum()) == pytest.approx(sequence(logits, paper.branch_masks[0]), abs=1e-4)
