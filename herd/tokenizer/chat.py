"""Chat dialogs as token ids: the message types, the `ChatFormat` interface, and picking a format.

A chat format turns a list of messages into the exact token ids the model was fine-tuned on, and
turns generated assistant text back into a message (content or tool calls). Training needs more
than the ids, so `encode_dialog` also returns two masks:

  target_mask  the tokens the model is trained to produce: every assistant message's body (content
               and tool calls) and the token that closes it (eot/eom, `<|im_end|>`). SFT takes the
               loss on exactly these.
  format_mask  template tokens that are identical in every dialog: begin_of_text, each header
               (start/end header ids, the role, the "\\n\\n" after it), and the closing tokens.
               DPO compares chosen/rejected log-probs on `target_mask & ~format_mask`, so that
               tokens both answers share by construction do not dilute the margin.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from herd.tokenizer.base import Tokenizer, TokenizerError

ROLES = ("system", "user", "assistant", "ipython")
ROLE_ALIASES = {"tool": "ipython"}  # OpenAI/HF call the tool-result role "tool"; Llama 3.1 calls it "ipython"
TOOL_FORMATS = ("json", "function_tag", "python_list")


@dataclass
class ToolCall:
    """One call the assistant asks the executor to make.

    `arguments` is a dict for structured calls; a str is accepted because models (and the
    llama-models API) sometimes carry raw argument text that did not parse.
    """

    name: str
    arguments: dict[str, Any] | str
    call_id: str | None = None


@dataclass
class Message:
    """One dialog turn. `end_of_message` marks an assistant turn that stops for a tool result
    (Llama 3.1 closes it with `<|eom_id|>` instead of `<|eot_id|>`). `train=False` keeps an assistant
    turn out of the SFT targets (a message-level mask: the wrong call a trajectory recovers from is
    context, not a lesson); in JSON it is OpenAI fine-tuning's `"weight": 0`."""

    role: str
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    end_of_message: bool = False
    train: bool = True

    def __post_init__(self) -> None:
        role = ROLE_ALIASES.get(self.role, self.role)
        if role not in ROLES:
            raise ValueError(f"unknown message role {self.role!r}; expected one of {ROLES} (or 'tool')")
        self.role = role
        if not isinstance(self.content, str):
            raise TypeError(f"message content must be str, got {type(self.content).__name__}")
        if self.tool_calls and role != "assistant":
            raise ValueError(f"only assistant messages carry tool calls, not {role!r}")


@dataclass
class ToolDefinition:
    """A custom tool offered to the model; `parameters` is a JSON schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class EncodedDialog:
    """Token ids of a dialog with per-token masks (see the module docstring for their use)."""

    tokens: list[int]
    target_mask: list[bool]
    format_mask: list[bool]

    def __post_init__(self) -> None:
        if not len(self.tokens) == len(self.target_mask) == len(self.format_mask):
            raise ValueError("tokens, target_mask and format_mask must have equal lengths")

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass
class Segment:
    """A run of tokens sharing the same mask values (what formats build dialogs from)."""

    tokens: list[int]
    target: bool = False
    format: bool = False


def as_message(message: Message | dict[str, Any]) -> Message:
    """Accept OpenAI/HF-style dicts too, since dialogs often arrive as JSON."""
    if isinstance(message, Message):
        return message
    if not isinstance(message, dict):
        raise TypeError(f"a message must be a Message or a dict, got {type(message).__name__}")
    calls = []
    for call in message.get("tool_calls") or []:
        if isinstance(call, ToolCall):
            calls.append(call)
            continue
        fn = call.get("function", call)
        calls.append(ToolCall(name=fn["name"], arguments=fn.get("arguments", {}), call_id=call.get("id")))
    weight = message.get("weight", 1)
    if weight not in (0, 1):
        raise ValueError(f"a message's weight must be 0 or 1, got {weight!r}")
    return Message(
        role=message["role"],
        content=message.get("content") or "",
        tool_calls=calls,
        end_of_message=bool(message.get("end_of_message", False)),
        train=bool(weight),
    )


def check_tool_format(tool_format: str) -> str:
    value = getattr(tool_format, "value", tool_format)  # accept llama-models' ToolPromptFormat enum
    if value not in TOOL_FORMATS:
        raise ValueError(f"unknown tool_format {tool_format!r}; expected one of {TOOL_FORMATS}")
    return value


class ChatFormat(ABC):
    """Dialog <-> tokens for one chat template family."""

    name: str
    tokenizer: Tokenizer
    stop_ids: frozenset[int]

    @abstractmethod
    def message_segments(self, message: Message, tool_format: str = "json") -> list[Segment]:
        """One message as masked segments (header, body, closing token)."""

    @abstractmethod
    def dialog_prefix(self, messages: Sequence[Message]) -> list[Segment]:
        """Segments before the first message (begin_of_text, an injected default system prompt)."""

    @abstractmethod
    def generation_prompt(self) -> list[Segment]:
        """The open assistant header the model continues from."""

    @abstractmethod
    def parse_assistant(self, text: str, *, end_of_message: bool = False) -> Message:
        """Generated assistant text back to a message with content or tool calls.

        `end_of_message` is used when `text` does not itself end in a closing token (generation
        usually strips the stop token); never raises on malformed model output.
        """

    def encode_message(self, message: Message | dict[str, Any], tool_format: str = "json") -> list[int]:
        """Token ids of one message, header and closing token included."""
        segments = self.message_segments(as_message(message), check_tool_format(tool_format))
        return [t for s in segments for t in s.tokens]

    def encode_dialog(
        self,
        messages: Sequence[Message | dict[str, Any]],
        add_generation_prompt: bool = True,
        tool_format: str = "json",
    ) -> EncodedDialog:
        """The whole dialog as the model sees it, with target/format masks.

        With `add_generation_prompt` the ids end in an open assistant header (for inference);
        without it they end after the last message (for training on a complete dialog).
        """
        tool_format = check_tool_format(tool_format)
        msgs = [as_message(m) for m in messages]
        segments = list(self.dialog_prefix(msgs))
        for message in msgs:
            segments.extend(self.message_segments(message, tool_format))
        if add_generation_prompt:
            segments.extend(self.generation_prompt())
        tokens: list[int] = []
        target: list[bool] = []
        fmt: list[bool] = []
        for seg in segments:
            tokens.extend(seg.tokens)
            target.extend([seg.target] * len(seg.tokens))
            fmt.extend([seg.format] * len(seg.tokens))
        return EncodedDialog(tokens=tokens, target_mask=target, format_mask=fmt)


def template_uses_chatml(chat_template: str | None) -> bool:
    return chat_template is not None and "<|im_start|>" in chat_template


def chat_format_for(tokenizer: Tokenizer, chat_template: str | None = None) -> ChatFormat:
    """The chat format a tokenizer (and its checkpoint's chat template) was fine-tuned with.

    ChatML is recognised by `<|im_start|>` in the template or the tokenizer's special tokens;
    Llama 3 by `<|start_header_id|>`. Anything else raises, because guessing a template produces
    a model that silently answers badly.
    """
    if chat_template is None:
        chat_template = getattr(tokenizer, "chat_template", None)
    specials = getattr(tokenizer, "special_tokens", {}) or {}
    if template_uses_chatml(chat_template) or "<|im_start|>" in specials:
        from herd.tokenizer.chatml import ChatMLFormat

        return ChatMLFormat(tokenizer, chat_template)
    if "<|start_header_id|>" in specials:
        from herd.tokenizer.llama3_chat import Llama3ChatFormat

        return Llama3ChatFormat(tokenizer)
    name = getattr(tokenizer, "name", type(tokenizer).__name__)
    raise TokenizerError(
        f"no known chat format for tokenizer {name!r}: herd knows Llama 3 (<|start_header_id|>...) and "
        "ChatML (<|im_start|>...); the tokenizer has neither special token"
        + ("" if chat_template is None else " and its chat template uses neither")
    )
