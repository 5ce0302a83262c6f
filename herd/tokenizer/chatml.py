"""The ChatML chat format (SmolLM2, Qwen, Hermes...), equal to rendering the model's jinja template.

    <|im_start|>{role}\\n{content}<|im_end|>\\n   ...   <|im_start|>assistant\\n   (generation prompt)

Text between two special tokens is encoded as one piece (as a tokenizer does with the rendered
template), so `role\\n` and the content are tokenized together; the masks are then split at the byte
where the content starts. Tool calls use the Hermes/Qwen `<tool_call>` JSON blocks; tool results go
in a `tool` role message. A default system prompt the template injects when the dialog has none
(SmolLM2: "You are a helpful AI assistant named SmolLM, trained by Hugging Face") is found by
rendering the template once, not hard-coded, so other ChatML checkpoints get their own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from herd.tokenizer.base import Tokenizer
from herd.tokenizer.chat import ChatFormat, Message, Segment
from herd.tokenizer.tool_calls import encode_hermes_call, parse_hermes_calls

ROLE_NAMES = {"ipython": "tool"}  # ChatML templates call tool results "tool"
PROBE = "\x00herd-probe\x00"
LITERAL_SYSTEM = re.compile(r"<\|im_start\|>system(?:\n|\\n)((?:[^'\"\\{}]|\\.)*?)<\|im_end\|>")


def render_chat_template(
    chat_template: str, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = False, **extra: Any
) -> str:
    """Render a HF chat template the way transformers does (sandboxed jinja, trim_blocks/lstrip_blocks)."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(chat_template).render(
        messages=list(messages), add_generation_prompt=add_generation_prompt, **extra
    )


def default_system_prompt(chat_template: str | None) -> str | None:
    """The system prompt `chat_template` inserts when a dialog does not start with one, else None.

    Found by rendering a one-message dialog; if the template cannot be rendered here, a literal
    `<|im_start|>system\\n...<|im_end|>` string in it is used instead.
    """
    if not chat_template:
        return None
    try:
        text = render_chat_template(chat_template, [{"role": "user", "content": PROBE}])
    except Exception:  # noqa: BLE001 - any template failure means: fall back to reading the text
        match = LITERAL_SYSTEM.search(chat_template)
        return match.group(1).replace("\\n", "\n") if match else None
    prefix = text[: max(text.find("<|im_start|>user"), 0)]
    match = re.fullmatch(r"<\|im_start\|>system\n(.*)<\|im_end\|>\n", prefix, re.DOTALL)
    return match.group(1) if match else None


class ChatMLFormat(ChatFormat):
    """Dialogs for ChatML checkpoints; `chat_template` (the GGUF/HF template) supplies the default
    system prompt."""

    name = "chatml"

    def __init__(self, tokenizer: Tokenizer, chat_template: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.im_start_id = tokenizer.special_id("<|im_start|>")
        self.im_end_id = tokenizer.special_id("<|im_end|>")
        self.stop_ids = frozenset({self.im_end_id}) | frozenset(tokenizer.stop_ids)
        self.default_system = default_system_prompt(chat_template)
        self._newline = tokenizer.encode("\n")

    def _turn(self, role: str, body: str, target: bool) -> list[Segment]:
        """`<|im_start|>role\\nbody<|im_end|>\\n`, with `role\\nbody` encoded as one piece."""
        head = f"{ROLE_NAMES.get(role, role)}\n"
        ids = self.tokenizer.encode(head + body)
        split = self._split_at_byte(ids, len(head.encode("utf-8")))
        return [
            Segment([self.im_start_id, *ids[:split]], format=True),
            Segment(ids[split:], target=target),
            Segment([self.im_end_id], target=target, format=True),
            Segment(list(self._newline), format=True),
        ]

    def _split_at_byte(self, ids: list[int], n_bytes: int) -> int:
        """Number of leading tokens lying wholly within the first `n_bytes` bytes. A token that
        straddles the header/content boundary (a merged "\\n\\n" when content starts with a newline)
        counts as content: it carries content the model must produce."""
        seen = 0
        for i, tok in enumerate(ids):
            seen += len(self.tokenizer.token_bytes(tok))
            if seen > n_bytes:
                return i
        return len(ids)

    def message_segments(self, message: Message, tool_format: str = "json") -> list[Segment]:
        """`tool_format` is ignored: ChatML checkpoints know only Hermes `<tool_call>` blocks."""
        body = message.content
        for call in message.tool_calls:
            body += ("\n" if body else "") + encode_hermes_call(call)
        return self._turn(message.role, body, target=message.role == "assistant" and message.train)

    def dialog_prefix(self, messages: Sequence[Message]) -> list[Segment]:
        if self.default_system is None or not messages or messages[0].role == "system":
            return []
        return self._turn("system", self.default_system, target=False)

    def generation_prompt(self) -> list[Segment]:
        return [Segment([self.im_start_id, *self.tokenizer.encode("assistant\n")], format=True)]

    def parse_assistant(self, text: str, *, end_of_message: bool = False) -> Message:
        """Content plus any `<tool_call>` blocks whose JSON parses; malformed blocks stay text."""
        content = text
        if content.startswith("<|im_start|>assistant\n"):
            content = content[len("<|im_start|>assistant\n") :]
        for end in ("<|im_end|>\n", "<|im_end|>", "<|endoftext|>"):
            if content.endswith(end):
                content = content[: -len(end)]
                break
        content, calls = parse_hermes_calls(content)
        return Message(role="assistant", content=content, tool_calls=calls, end_of_message=end_of_message)
