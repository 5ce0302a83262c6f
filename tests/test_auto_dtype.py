"""`--dtype auto` for inference: never a dtype whose greedy tokens differ from float32's, never a slow one."""

from __future__ import annotations

import copy

import pytest
import torch

import herd
from herd.cli import main
from herd.infer import auto_dtype
from herd.infer.auto_dtype import choose_inference_dtype, greedy_tokens, with_dtype
from herd.loading import LoadedModel


@pytest.fixture(scope="module")
def tiny():
    return herd.load_model("random:llama3-tiny", seed=5)


def _fast(monkeypatch, **ratios: float) -> None:
    """Pretend this CPU runs the given dtypes' matmuls at `ratio` x float32's time."""
    import herd.config.host_speed as host_speed

    monkeypatch.setattr(host_speed, "cpu_matmul_slowdown", lambda name: ratios.get(name, 30.0))


def test_a_slow_dtype_is_never_tried(tiny, monkeypatch):
    _fast(monkeypatch)   # both 30x slower, as on an AVX2 CPU
    monkeypatch.setattr(auto_dtype, "greedy_tokens", lambda *a, **k: pytest.fail("no token check needed"))
    choice = choose_inference_dtype(tiny, "cpu")
    assert choice.dtype == "float32" and "no faster dtype" in choice.reason


def test_the_choice_keeps_float32_greedy_tokens(tiny, monkeypatch):
    _fast(monkeypatch, bfloat16=0.5, float16=0.7)
    choice = choose_inference_dtype(tiny, "cpu")
    reference = greedy_tokens(tiny)
    assert greedy_tokens(with_dtype(tiny, choice.dtype)) == reference
    if choice.dtype == "float32":    # a random model's flat logits flip in half precision: both rejected
        assert "change the greedy tokens" in choice.reason


def test_a_dtype_that_keeps_the_tokens_is_taken(tiny, monkeypatch):
    """A model with a decisive next token (one token's logit far above the rest) keeps its greedy tokens
    in bfloat16, so a faster bfloat16 wins; the caller's model is not converted."""
    model = copy.deepcopy(tiny.model)
    with torch.no_grad():
        model.output.weight.zero_()
        model.output.weight[42] = 1.0
    loaded = LoadedModel(model, tiny.tokenizer, tiny.chat_format, tiny.config, "decisive")
    _fast(monkeypatch, bfloat16=0.5, float16=0.9)
    choice = choose_inference_dtype(loaded, "cpu")
    assert choice.dtype == "bfloat16" and "greedy tokens equal" in choice.reason
    assert loaded.model.output.weight.dtype == torch.float32


def test_auto_is_an_inference_choice_only(capsys):
    from herd.cli import build_parser

    for command in (["generate", "--prompt", "x"], ["serve"], ["eval", "run", "--task", "hellaswag", "--out", "o"]):
        assert build_parser().parse_args([*command, "--dtype", "auto"]).dtype == "auto"
    with pytest.raises(SystemExit) as exc:   # a conversion has no tokens to compare: an explicit dtype
        main(["convert", "random:llama3-tiny", "/tmp/x", "--to", "hf", "--dtype", "auto"])
    assert exc.value.code == 2 and "invalid dtype 'auto'" in capsys.readouterr().err
