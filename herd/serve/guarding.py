"""Guarded serving (`herd serve --guard DIR`): the input and output guard and the code shield around chat.

- The input guard judges the request's conversation before anything is submitted: a flagged request
  never reaches the engine; it is answered with the canned refusal and `finish_reason:
  "content_filter"` (counted in `herd_guard_blocked_total{stage="input"}`).
- The output guard judges the answer: a non-streamed answer as a whole; a streamed one in windows of
  `window_chars` characters, each window held back until the guard passed the text so far, so flagged
  text is cut before it is sent (the choice then ends with the canned refusal and `content_filter`).
- The code shield (`--code-shield`) scans the fenced code in answers; a block is handled as a flag.
- `/v1/moderations` (OpenAI's shape) answers with the guard's verdict and P(unsafe) per input.
- The prompt-attack classifier (`--prompt-guard DIR`) checks the request before the input guard, as
  Prompt Guard is used: the last user turn for jailbreaks, tool results in it for injections and
  jailbreaks; a flagged request is blocked like a guard-flagged one. (Tool results the server produces
  itself are scanned by the toolbox: herd.tools.agent.Toolbox.)

The guard is anything with `judge(conversations, excluded) -> [(GuardVerdict, P(unsafe))]` (verdicts as
herd.safety.guard_prompt reads them): herd.safety.probe_guard.ProbeGuard, or a test's stand-in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from herd.safety.guard_prompt import GuardVerdict

# Llama Guard codes -> OpenAI moderation categories (as llama-stack maps them, inverted)
OPENAI_CATEGORIES = {
    "S1": ("violence",), "S2": ("illicit",), "S3": ("sexual",), "S4": ("sexual/minors",), "S5": ("harassment",),
    "S6": (), "S7": (), "S8": (), "S9": ("illicit/violent",), "S10": ("hate",), "S11": ("self-harm",),
    "S12": ("sexual",), "S13": (), "S14": ("illicit",),
}
MODERATION_KEYS = sorted({c for cats in OPENAI_CATEGORIES.values() for c in cats})


@dataclass
class ServeGuard:
    guard: Any = None
    excluded: tuple[str, ...] = ()
    code_shield: Any = None  # a herd.safety.code_shield.Policy for answers
    window_chars: int = 200
    prompt_attack: Any = None  # a herd.safety.prompt_attack.PromptAttackClassifier
    blocked: dict[str, int] = field(default_factory=lambda: {"input": 0, "output": 0})

    def __post_init__(self) -> None:
        if self.guard is None and self.code_shield is None and self.prompt_attack is None:
            raise ValueError("guarded serving needs a guard (--guard), the prompt-attack classifier "
                             "(--prompt-guard) or the code shield (--code-shield)")
        if self.window_chars < 1:
            raise ValueError(f"the output guard's window must be >= 1 character, got {self.window_chars}")

    def _judge(self, conversation: Sequence[dict[str, str]], answer: str | None) -> GuardVerdict:
        if answer is not None and self.code_shield is not None:
            from herd.safety.code_shield import decide, scan_output

            if decide(scan_output(answer), self.code_shield).blocked:
                return GuardVerdict(False, ("S14",))
        if self.guard is None:
            return GuardVerdict(True)
        dialog = list(conversation) + ([{"role": "assistant", "content": answer}] if answer is not None else [])
        return self.guard.judge([dialog], self.excluded)[0][0]

    def attack_in(self, conversation: Sequence[dict[str, str]]) -> bool:
        """True when the prompt-attack classifier flags the last user turn (jailbreak) or a tool result
        after it (injection or jailbreak)."""
        if self.prompt_attack is None:
            return False
        last_user = max((i for i, m in enumerate(conversation) if m["role"] == "user"), default=-1)
        user = [conversation[last_user]["content"]] if last_user >= 0 else []
        tools = [m["content"] for m in conversation[last_user + 1:] if m["role"] in ("tool", "ipython")]
        verdicts = self.prompt_attack.judge(user, "user") + self.prompt_attack.judge(tools, "third_party")
        return any(v.flagged for v in verdicts)

    async def check_input(self, conversation: Sequence[dict[str, str]]) -> GuardVerdict:
        if await asyncio.to_thread(self.attack_in, conversation):
            self.blocked["input"] += 1
            return GuardVerdict(False)
        if self.guard is None:
            return GuardVerdict(True)
        verdict = await asyncio.to_thread(self._judge, conversation, None)
        if not verdict.safe:
            self.blocked["input"] += 1
        return verdict

    async def check_output(self, conversation: Sequence[dict[str, str]], answer: str) -> GuardVerdict:
        verdict = await asyncio.to_thread(self._judge, conversation, answer)
        if not verdict.safe:
            self.blocked["output"] += 1
        return verdict

    async def moderate(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """OpenAI moderation results, one per input text (judged as a user message)."""
        if self.guard is None:
            raise ValueError("/v1/moderations needs a guard model (--guard)")
        judged = await asyncio.to_thread(self.guard.judge, list(texts), self.excluded)
        results = []
        for verdict, score in judged:
            flagged_keys = {c for code in verdict.categories for c in OPENAI_CATEGORIES.get(code, ())} \
                if not verdict.safe else set()
            results.append({
                "flagged": not verdict.safe,
                "categories": {k: k in flagged_keys for k in MODERATION_KEYS},
                "category_scores": {k: (score if k in flagged_keys else 0.0) for k in MODERATION_KEYS},
                "llama_guard": {"answer": verdict.label, "unsafe_score": score},
            })
        return results


def conversation_of(messages: Sequence[Any]) -> list[dict[str, str]]:
    """The request's user/assistant/tool turns as the guard reads them (system prompts are not judged)."""
    out = []
    for m in messages:
        role = "user" if m.role == "developer" else m.role
        if role in ("user", "assistant", "tool", "ipython"):
            out.append({"role": role, "content": m.text()})
    return out or [{"role": "user", "content": ""}]

