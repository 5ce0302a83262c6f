"""Turning task items into token ids, the way lm-evaluation-harness does (so scores compare).

Context/continuation pairs (lm-eval's `_encode_pair`): trailing whitespace of the context moves to the
front of the continuation, then `continuation_ids = encode(context + continuation)[len(encode(context)):]`.
So " Paris" after "The capital is" is scored as the tokens the model would really see, not as a
separately tokenized string glued on.

BOS: `bos=True` puts the tokenizer's BOS first (Llama 3 models are trained with it); lm-eval's HF backend
adds none by default, so a comparison with it uses `bos=False` on both sides. A context is never empty:
with no BOS and an empty context the first token is scored after the end-of-text token, as lm-eval does.

Few-shot examples come from the task's other items (never the item itself), drawn by a seed and the
item's id, so an item sees the same examples in every run and in any order of evaluation. With
`fixed_fewshot` every item gets the same examples (an item that is one of them gets the next draw
instead), so the contexts share one long prefix that the engine computes once for the whole task.

With `chat=True` the context is the model's chat format: an optional system turn, each few-shot
example as a user turn and an assistant turn (few-shot as multi-turn), the item as the last user turn,
and an open assistant header; the continuation is the answer without its leading space.

Tool-call items are always chat prompts: the item's functions are offered as tools where the chat
format expects them (herd.tokenizer.tool_prompt, the same placement `herd serve` uses), with a fixed
Llama 3.1 `Today Date` so a prompt, and the results keyed on it, never change with the day.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from herd.eval.tasks.base import CodeItem, GenerateItem, Item, MCItem, Task, ToolCallItem

if TYPE_CHECKING:
    from herd.tokenizer.base import Tokenizer
    from herd.tokenizer.chat import ChatFormat

TOOL_PROMPT_DATE = _dt.date(2024, 7, 23)   # Llama 3.1's release: a fixed date line for tool prompts


@dataclass(frozen=True)
class PromptSettings:
    shots: int = 0
    seed: int = 1234
    bos: bool = True
    chat: bool = False
    system: str | None = None
    fixed_fewshot: bool = False
    tool_choice: str = "auto"  # tool_call tasks: "required" prefills the start of a call

    def __post_init__(self) -> None:
        if self.tool_choice not in ("auto", "required"):
            raise ValueError(f"tool_choice must be 'auto' or 'required', got {self.tool_choice!r}")

    def as_dict(self) -> dict[str, object]:
        return {"shots": self.shots, "seed": self.seed, "bos": self.bos, "chat": self.chat, "system": self.system,
                "fixed_fewshot": self.fixed_fewshot, "tool_choice": self.tool_choice}


def fewshot_examples(item: Item, pool: list[Item], shots: int, seed: int, fixed: bool = False) -> list[Item]:
    """`shots` items of `pool` other than `item`, the same ones every time for this item and seed
    (and with `fixed`, the same ones for every item)."""
    if shots <= 0:
        return []
    others = [p for p in pool if p.id != item.id]
    if shots > len(others):
        raise ValueError(f"{shots} few-shot examples asked for but the task has only {len(others)} other items")
    if fixed:
        digest = hashlib.sha256(f"{seed}:fixed".encode()).digest()
        draw = random.Random(int.from_bytes(digest[:8], "little")).sample(pool, min(shots + 1, len(pool)))
        return [p for p in draw if p.id != item.id][:shots]
    digest = hashlib.sha256(f"{seed}:{item.id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little")).sample(others, shots)


def _question(item: Item) -> str:
    if isinstance(item, MCItem):
        return item.query
    if isinstance(item, (GenerateItem, CodeItem)):
        return item.prompt
    raise ValueError(f"item {item.id} has no question")


def _answer(item: Item) -> str:
    if isinstance(item, MCItem):
        return item.choices[item.gold]
    if isinstance(item, GenerateItem):
        return item.demonstration if item.demonstration is not None else " " + item.answer
    raise ValueError(f"item {item.id} has no answer")


class PromptBuilder:
    """Token ids for one task's items under one set of prompt settings."""

    def __init__(self, task: Task, pool: list[Item], tokenizer: Tokenizer, chat_format: ChatFormat | None,
                 settings: PromptSettings) -> None:
        if settings.chat and chat_format is None:
            raise ValueError("--chat needs a model with a chat format")
        if settings.system is not None and not settings.chat and task.kind != "tool_call":
            raise ValueError("a system prompt needs --chat")
        self.task, self.pool, self.tok, self.chat_format, self.settings = task, pool, tokenizer, chat_format, settings

    def _encode(self, text: str, bos: bool) -> list[int]:
        return self.tok.encode(text, bos=bos and self.tok.bos_id is not None)

    def context_text(self, item: Item) -> str:
        examples = fewshot_examples(item, self.pool, self.settings.shots, self.settings.seed, self.settings.fixed_fewshot)
        parts = [_question(e) + _answer(e) for e in examples] + [_question(item)]
        return self.task.fewshot_separator.join(parts)

    def _chat_context(self, item: Item) -> list[int]:
        from herd.tokenizer.chat import Message

        assert self.chat_format is not None
        messages = [Message(role="system", content=self.settings.system)] if self.settings.system else []
        for e in fewshot_examples(item, self.pool, self.settings.shots, self.settings.seed, self.settings.fixed_fewshot):
            messages += [Message(role="user", content=_question(e)),
                         Message(role="assistant", content=_answer(e).strip())]
        messages.append(Message(role="user", content=_question(item)))
        return self.chat_format.encode_dialog(messages, add_generation_prompt=True).tokens

    def pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-eval's context/continuation split (see the module docstring)."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            continuation = context[-spaces:] + continuation
            context = context[:-spaces]
        bos = self.settings.bos
        whole = self._encode(context + continuation, bos)
        ctx = self._encode(context, bos)
        if not ctx:
            ctx = [self.tok.eos_id]
            whole = ctx + whole
        # as lm-eval: the continuation is whatever `whole` holds past the context's length, even when the
        # tokenizer merged a token across the boundary
        cont = whole[len(ctx):]
        if not cont:
            raise ValueError(f"continuation {continuation!r} encodes to no tokens")
        return ctx, cont

    def choices(self, item: MCItem) -> tuple[list[int], list[list[int]]]:
        """(context ids, one continuation per choice) of a multiple-choice item."""
        if self.settings.chat:
            ctx = self._chat_context(item)
            return ctx, [self._encode(c.lstrip(), False) for c in item.choices]
        text = self.context_text(item)
        pairs = [self.pair(text, c) for c in item.choices]
        ctx = pairs[0][0]
        if any(p[0] != ctx for p in pairs):
            raise AssertionError(f"item {item.id}: the context tokenizes differently per choice")
        return ctx, [p[1] for p in pairs]

    def prompt(self, item: GenerateItem | CodeItem) -> list[int]:
        """The ids a generation item is sampled from.

        A code prompt loses its trailing whitespace (as bigcode-evaluation-harness does): it ends in a
        docstring's closing quotes and a newline, and a BPE model writes the newline and the body's
        indentation as one token, which it cannot do when the newline is already in the prompt.
        """
        if self.settings.chat:
            return self._chat_context(item)
        text = self.context_text(item)
        return self._encode(text.rstrip() if isinstance(item, CodeItem) else text, self.settings.bos)

    def tool_prompt(self, item: ToolCallItem) -> list[int]:
        """The ids a tool-call item is answered from: its dialog with its functions offered as tools."""
        from herd.eval.tasks.bfcl import tool_schema
        from herd.tokenizer.chat import Message, ToolDefinition
        from herd.tokenizer.tool_prompt import with_tools

        if self.chat_format is None:
            raise ValueError(f"task {self.task.name} offers tools through the chat format; this model has none")
        if self.settings.shots:
            raise ValueError(f"task {self.task.name} is zero-shot (the functions differ per item): drop --shots")
        messages = [Message(role="system", content=self.settings.system)] if self.settings.system else []
        messages += [Message(role=m["role"], content=m["content"]) for m in item.messages]
        tools = [ToolDefinition(**tool_schema(f, item.language)) for f in item.functions]
        dialog = with_tools(self.chat_format, messages, tools, date=TOOL_PROMPT_DATE)
        ids = self.chat_format.encode_dialog(dialog, add_generation_prompt=True, tool_format="json").tokens
        prefill = self.tool_prefill()
        return ids + self.tok.encode(prefill) if prefill else ids

    def tool_prefill(self) -> str:
        """The text an answer starts with before the model writes (tool_choice "required": the format's
        call prefix up to the function name, which the model chooses); prepended before parsing."""
        if self.settings.tool_choice != "required" or self.chat_format is None:
            return ""
        from herd.tokenizer.tool_prompt import call_prefill

        return call_prefill(self.chat_format.name, None)[0]

    def text(self, text: str, prefix: str = "") -> tuple[list[int], list[int]]:
        """(context, scored ids) of an lm item: the text after `prefix`, after BOS (or end-of-text)."""
        if prefix:
            return self.pair(prefix, text[len(prefix):] if text.startswith(prefix) else text)
        ids = self._encode(text, False)
        bos = self.tok.bos_id if self.settings.bos and self.tok.bos_id is not None else self.tok.eos_id
        return [bos], ids
