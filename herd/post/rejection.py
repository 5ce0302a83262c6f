"""Rejection sampling (paper section 4.2.2): K samples per prompt, verifiers, the reward model picks.

For each prompt the engine draws K responses in one request (`SamplingParams(n=K)`: the K samples
share the prompt's KV blocks, the paper's > 2x), with the capability's system prompt. Verifiers that
apply to the record judge each sample (a math answer, format constraints, code run against tests in
the sandbox). The reward model scores all K with the prompt computed once (one row). The best sample
-- verified first, then by reward -- becomes SFT data; best versus worst becomes a preference pair.
Everything is a pure function of (model, prompts, seed): sample i of prompt j uses seed
`seed * 1_000_003 + j * K + i` in the engine's per-sequence random stream.

Prompt records (JSONL, one per line): `{"prompt": "text" | [messages], "capability": "math",
"answer": "42", "constraints": {"max_words": 50, "min_words": 5, "must_include": ["..."], "must_not_include": [...],
"ends_with": "...", "lowercase": true, "json": true},
"tests": "assert f(1) == 2", "language": "en", "id": "..."}`; only `prompt` is required.

The language verifier (paper 4.3.2: a response in the prompt's language) uses the curation stage's
fastText lid.176 identifier: the expected language is the record's `language`, else the language of
the last user turn when the identifier is confident (>= 0.65, FineWeb's threshold); responses of
fewer than three words carry no language signal and are not judged.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from herd.tokenizer.chat import Message, as_message

CODE_BLOCK = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)


@dataclass
class PromptRecord:
    messages: list[Message]
    capability: str = "general"
    answer: str | None = None
    constraints: dict[str, Any] = field(default_factory=dict)
    tests: str | None = None
    id: str = ""
    language: str | None = None


def parse_prompt(record: Mapping[str, Any], index: int) -> PromptRecord:
    prompt = record.get("prompt", record.get("messages"))
    if isinstance(prompt, str) and prompt.strip():
        messages = [Message("user", prompt)]
    elif isinstance(prompt, list) and prompt:
        messages = [as_message(m) for m in prompt]
        while messages and messages[-1].role == "assistant":
            messages.pop()  # a dialog given whole: sample the last assistant turn again
        if not messages:
            raise ValueError("the prompt has no user message")
    else:
        raise ValueError("no 'prompt' (a string or a list of messages)")
    constraints = record.get("constraints") or {}
    if not isinstance(constraints, dict):
        raise TypeError("'constraints' must be an object")
    answer = record.get("answer")
    language = record.get("language")
    return PromptRecord(messages, str(record.get("capability") or "general"),
                        None if answer is None else str(answer), constraints, record.get("tests"),
                        str(record.get("id", index)), None if language is None else str(language))


def read_prompts(paths: Sequence[str | Path], limit: int | None = None) -> tuple[list[PromptRecord], Counter[str]]:
    """Prompt records from JSONL files; malformed lines are counted by reason and skipped."""
    records: list[PromptRecord] = []
    skipped: Counter[str] = Counter()
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")  # noqa: TRY004
                records.append(parse_prompt(data, len(records)))
            except json.JSONDecodeError:
                skipped["not JSON"] += 1
            except (ValueError, TypeError, KeyError) as exc:
                skipped[str(exc)] += 1
            if limit and len(records) >= limit:
                return records, skipped
    return records, skipped


# -- verifiers: each returns None (does not apply), True or False ----------------------------------
def verify_math(record: PromptRecord, text: str) -> bool | None:
    if record.answer is None:
        return None
    from herd.eval.answers import extract, matches

    return matches(extract(text, "last_number"), record.answer, "last_number")


def verify_format(record: PromptRecord, text: str) -> bool | None:
    c = record.constraints
    if not c:
        return None
    words = len(text.split())
    ok = True
    if "max_words" in c:
        ok &= words <= int(c["max_words"])
    if "min_words" in c:
        ok &= words >= int(c["min_words"])
    for needle in c.get("must_include", []):
        ok &= needle.lower() in text.lower()
    for needle in c.get("must_not_include", []):
        ok &= needle.lower() not in text.lower()
    if "ends_with" in c:
        ok &= text.strip().rstrip(".!").lower().endswith(str(c["ends_with"]).strip().rstrip(".!").lower())
    if c.get("lowercase"):
        ok &= text == text.lower() and any(ch.isalpha() for ch in text)
    if c.get("json"):
        try:
            json.loads(text.strip())
        except json.JSONDecodeError:
            ok = False
    return bool(ok)


def verify_code(record: PromptRecord, text: str, sandbox: Any) -> bool | None:
    if not record.tests:
        return None
    blocks = CODE_BLOCK.findall(text)
    program = (blocks[-1] if blocks else text) + "\n\n" + record.tests + "\n"
    result = sandbox.run_python(program)
    return result.status == "ok" and result.returncode == 0


LANGUAGE_MIN_SCORE = 0.65  # the identifier's confidence needed to call a prompt's language (FineWeb's 0.65)
LANGUAGE_MIN_WORDS = 3


def expected_language(record: PromptRecord, identifier: Any) -> str | None:
    """The language a response must be in: the record's `language`, else the confidently identified
    language of the last user turn, else None (the verifier does not apply)."""
    if record.language:
        return record.language
    user = [m.content for m in record.messages if m.role == "user"]
    if not user:
        return None
    lang, score = identifier.predict(user[-1])
    return lang if score >= LANGUAGE_MIN_SCORE else None


def verify_language(record: PromptRecord, text: str, identifier: Any, expected: str | None = None) -> bool | None:
    """Whether the response is in the expected language (None: no expected language, or too short to tell)."""
    expected = expected if expected is not None else expected_language(record, identifier)
    if expected is None or sum(any(ch.isalpha() for ch in w) for w in text.split()) < LANGUAGE_MIN_WORDS:
        return None
    return identifier.predict(text)[0] == expected


VERIFIERS = ("math", "format", "code", "language")


@dataclass
class Sample:
    text: str
    tokens: int
    finish_reason: str | None
    verdicts: dict[str, bool]
    reward: float | None = None

    @property
    def verified(self) -> bool:
        return all(self.verdicts.values())


def choose(samples: Sequence[Sample]) -> tuple[int, int]:
    """(best, worst): verified before unverified, then by reward (samples without a reward keep their order)."""
    def key(i: int) -> tuple[bool, float, int]:
        s = samples[i]
        return (s.verified, s.reward if s.reward is not None else 0.0, -i)

    order = sorted(range(len(samples)), key=key, reverse=True)
    return order[0], order[-1]


@dataclass
class RejectionSamplingConfig:
    """`herd rs` flags and the `[rs]` table of a `herd posttrain` recipe."""

    k: int = 8
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 256
    seed: int = 0
    limit: int = 0  # use the first N prompts; 0 = all
    system_prompts: dict[str, str] = field(default_factory=dict)  # capability -> system prompt
    verifiers: list[str] = field(default_factory=lambda: list(VERIFIERS))

    def __post_init__(self) -> None:
        self.verifiers = list(self.verifiers)
        if self.k < 2:
            raise ValueError(f"rejection sampling needs k >= 2 samples per prompt, got {self.k}")
        unknown = set(self.verifiers) - set(VERIFIERS)
        if unknown:
            raise ValueError(f"unknown verifiers {sorted(unknown)}; known: {', '.join(VERIFIERS)}")


def sample_prompts(engine: Any, chat_format: Any, prompts: Sequence[PromptRecord], config: RejectionSamplingConfig,
                   progress: bool = False) -> list[list[Sample]]:
    """K samples per prompt through the engine (one request of n=K each), judged by the verifiers."""
    from herd.infer.sampling import SamplingParams

    encoded, params = [], []
    for j, record in enumerate(prompts):
        messages = list(record.messages)
        system = config.system_prompts.get(record.capability)
        if system and messages[0].role != "system":
            messages.insert(0, Message("system", system))
        encoded.append(chat_format.encode_dialog(messages, add_generation_prompt=True).tokens)
        params.append(SamplingParams(n=config.k, temperature=config.temperature, top_p=config.top_p,
                                     max_tokens=config.max_tokens, seed=config.seed * 1_000_003 + j * config.k))
    outputs = engine.generate(encoded, params, progress=progress)
    sandbox = identifier = None
    if "code" in config.verifiers and any(r.tests for r in prompts):
        from herd.sandbox import Sandbox

        sandbox = Sandbox(timeout_s=10)
    if "language" in config.verifiers:
        from herd.data.curation.langid import LanguageIdentifier, LanguageIDError

        try:
            identifier = LanguageIdentifier()
        except LanguageIDError as exc:
            raise LanguageIDError(f"{exc}; or leave 'language' out of the verifiers") from None
    result: list[list[Sample]] = []
    for record, output in zip(prompts, outputs):
        samples = []
        language = expected_language(record, identifier) if identifier is not None else None
        for completion in sorted(output.outputs, key=lambda c: c.index):
            text = completion.text
            verdicts: dict[str, bool] = {}
            for name in config.verifiers:
                if name == "math":
                    verdict = verify_math(record, text)
                elif name == "format":
                    verdict = verify_format(record, text)
                elif name == "code":
                    verdict = verify_code(record, text, sandbox)
                else:
                    verdict = verify_language(record, text, identifier, language) if language else None
                if verdict is not None:
                    verdicts[name] = verdict
            samples.append(Sample(text, len(completion.token_ids), completion.finish_reason, verdicts))
        result.append(samples)
    return result


def score_samples(reward_model: Any, chat_format: Any, prompts: Sequence[PromptRecord],
                  samples: Sequence[list[Sample]], batch_size: int = 4) -> None:
    """Fill each sample's reward: the reward model sees each prompt once with its K responses (one row)."""
    import torch

    from herd.post.encoding import encode_preference
    from herd.post.reward_model import preference_rewards

    encoded = [encode_preference(chat_format, record.messages, [[Message("assistant", s.text)] for s in group],
                                 "completion") for record, group in zip(prompts, samples)]
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            rewards = preference_rewards(reward_model, encoded[start:start + batch_size])
            for group, values in zip(samples[start:start + batch_size], rewards):
                for sample, value in zip(group, values):
                    sample.reward = float(value)


def write_outputs(out: Path, prompts: Sequence[PromptRecord], samples: Sequence[list[Sample]], seed: int
                  ) -> dict[str, Any]:
    """samples.jsonl, sft.jsonl (best), preferences.jsonl (best vs worst) and summary.json; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    sft, prefs, rows = [], [], []
    verifiable = best_ok = random_ok = oracle_ok = rm_ok = 0
    has_rewards = all(s.reward is not None for group in samples for s in group)
    for record, group in zip(prompts, samples):
        best, worst = choose(group)
        prompt_json = [{"role": m.role, "content": m.content} for m in record.messages]
        rows.append({"id": record.id, "capability": record.capability, "best": best, "worst": worst,
                     "samples": [{"text": s.text, "tokens": s.tokens, "finish_reason": s.finish_reason,
                                  "verdicts": s.verdicts, "reward": s.reward} for s in group]})
        if any(s.verdicts for s in group):
            verifiable += 1
            best_ok += group[best].verified
            random_ok += group[rng.randrange(len(group))].verified
            oracle_ok += any(s.verified for s in group)
            if has_rewards:  # the reward model alone, without the verifiers' help
                rm_ok += group[max(range(len(group)), key=lambda i: (group[i].reward, -i))].verified
        if not group[best].verified:
            continue  # nothing correct to learn from
        sft.append({"messages": prompt_json + [{"role": "assistant", "content": group[best].text}],
                    "id": record.id})
        if worst != best and group[worst].text != group[best].text:
            prefs.append({"prompt": prompt_json, "responses": [[{"role": "assistant", "content": group[best].text}],
                                                                [{"role": "assistant", "content": group[worst].text}]],
                          "id": record.id})
    for name, lines in (("samples.jsonl", rows), ("sft.jsonl", sft), ("preferences.jsonl", prefs)):
        (out / name).write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    n = max(1, verifiable)
    summary = {"prompts": len(prompts), "samples_per_prompt": len(samples[0]) if samples else 0,
               "sft_examples": len(sft), "preference_pairs": len(prefs), "verifiable_prompts": verifiable,
               "pass_rate": {"selected": best_ok / n, "random_sample": random_ok / n, "oracle": oracle_ok / n,
                             "reward_model_best": rm_ok / n if has_rewards else None}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def run_rejection_sampling(policy: str, prompt_files: Sequence[str | Path], config: RejectionSamplingConfig,
                           out: Path, reward_model_dir: str | None = None, log: Any = None) -> dict[str, Any]:
    """The whole stage (`herd rs` and each `herd posttrain` round): read prompts, sample K each with
    the policy, verify, score with the reward model when given, write the outputs; returns the summary."""
    import sys

    from herd.infer.engine import LLMEngine
    from herd.loading import load_model

    log = log if log is not None else sys.stderr
    prompts, skipped = read_prompts(prompt_files, config.limit or None)
    print(f"rejection sampling: {len(prompts)} prompts" + (f", skipped {sum(skipped.values())}: {dict(skipped)}"
                                                           if skipped else ""), file=log)
    if not prompts:
        raise ValueError(f"no usable prompts in {list(map(str, prompt_files))}")
    loaded = load_model(policy)
    reward_model = None
    if reward_model_dir:  # loaded (and checked) before sampling, so a bad path fails in seconds
        from herd.post.reward_model import load_reward_model

        reward_model, _ = load_reward_model(reward_model_dir)
        if reward_model.config.vocab_size != loaded.config.vocab_size:
            raise ValueError(f"the reward model {reward_model_dir} has a vocabulary of "
                             f"{reward_model.config.vocab_size}, the policy {loaded.config.vocab_size}: they must "
                             "share a tokenizer")
    samples = sample_prompts(LLMEngine(loaded), loaded.chat_format, prompts, config, progress=True)
    if reward_model is not None:
        score_samples(reward_model, loaded.chat_format, prompts, samples)
    return write_outputs(out, prompts, samples, config.seed)
