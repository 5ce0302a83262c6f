"""The Llama 3 / 3.1 instruct chat format, token for token the same as llama-models' `ChatFormat`.

    <|begin_of_text|><|start_header_id|>system<|end_header_id|>\\n\\n{system}<|eot_id|>
    <|start_header_id|>user<|end_header_id|>\\n\\n{user}<|eot_id|>
    <|start_header_id|>assistant<|end_header_id|>\\n\\n{reply}<|eot_id|>   (or <|eom_id|>: waiting on a tool)
    <|start_header_id|>ipython<|end_header_id|>\\n\\n{tool result}<|eot_id|>

The pieces are encoded separately (role, "\\n\\n", content, each tool call), exactly as the
reference does, because BPE merges across piece boundaries would otherwise change the ids.
Also builds the Llama 3.1 tool system prompt and custom-tool instructions of `prompt_format.md`.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence

from herd.tokenizer.base import Tokenizer
from herd.tokenizer.chat import ChatFormat, Message, Segment, ToolCall, ToolDefinition
from herd.tokenizer.tool_calls import (
    BUILTIN_TOOLS,
    encode_llama3_call,
    new_call_id,
    normalize_builtin,
    parse_builtin_calls,
    parse_custom_calls,
)

KNOWLEDGE_CUTOFF = "December 2023"  # Llama 3.1's training-data cutoff, as the system prompt states it


class Llama3ChatFormat(ChatFormat):
    """Dialogs for Llama 3 instruct models (tiktoken tokenizer with `<|start_header_id|>`)."""

    name = "llama3"

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        sid = tokenizer.special_id
        self.bos_id = sid("<|begin_of_text|>")
        self.start_header_id = sid("<|start_header_id|>")
        self.end_header_id = sid("<|end_header_id|>")
        self.eot_id = sid("<|eot_id|>")
        self.eom_id = sid("<|eom_id|>")
        self.python_tag_id = sid("<|python_tag|>")
        self.stop_ids = frozenset({self.eot_id, self.eom_id}) | frozenset(tokenizer.stop_ids)
        self._header_cache: dict[str, list[int]] = {}

    def header(self, role: str) -> list[int]:
        """`<|start_header_id|>{role}<|end_header_id|>\\n\\n` (role and newlines encoded apart)."""
        if role not in self._header_cache:
            self._header_cache[role] = [
                self.start_header_id,
                *self.tokenizer.encode(role),
                self.end_header_id,
                *self.tokenizer.encode("\n\n"),
            ]
        return list(self._header_cache[role])

    def message_segments(self, message: Message, tool_format: str = "json") -> list[Segment]:
        assistant = message.role == "assistant"
        body: list[int] = []
        # The reference tags only code_interpreter calls with <|python_tag|> (prompt_format.md shows
        # it before brave_search/wolfram_alpha calls too); we match the reference's ids.
        if assistant and message.tool_calls and message.tool_calls[0].name == "code_interpreter":
            body.append(self.python_tag_id)
        body.extend(self.tokenizer.encode(message.content))
        if assistant:
            for call in message.tool_calls:
                body.extend(self.tokenizer.encode(encode_llama3_call(call, tool_format)))
        end = self.eom_id if assistant and message.end_of_message else self.eot_id
        return [
            Segment(self.header(message.role), format=True),
            Segment(body, target=assistant and message.train),
            Segment([end], target=assistant and message.train, format=True),
        ]

    def dialog_prefix(self, messages: Sequence[Message]) -> list[Segment]:
        return [Segment([self.bos_id], format=True)]

    def generation_prompt(self) -> list[Segment]:
        return [Segment(self.header("assistant"), format=True)]

    def parse_assistant(self, text: str, *, end_of_message: bool = False) -> Message:
        """Mirror of the reference's `decode_assistant_message_from_content`.

        Order of attempts: custom calls (`<function=...>`, bare JSON, Python list), then builtin
        `NAME.call(query="...")`, then, after `<|python_tag|>`, the whole body as code_interpreter
        code. Anything else, malformed JSON included, is plain content. Extensions over the
        reference: several calls per reply, nested braces in function tags, JSON calls without
        "parameters", and no exceptions on any input.
        """
        content = text.strip(" ")
        header = "<|start_header_id|>assistant<|end_header_id|>\n\n"
        if content.startswith(header):
            content = content[len(header) :]
        ipython = content.startswith("<|python_tag|>")
        if ipython:
            content = content[len("<|python_tag|>") :]
        if content.endswith("<|eot_id|>"):
            content, end_of_message = content[: -len("<|eot_id|>")], False
        elif content.endswith("<|eom_id|>"):
            content, end_of_message = content[: -len("<|eom_id|>")], True

        calls = parse_custom_calls(content)
        if calls:
            calls = [normalize_builtin(c) for c in calls]
        else:
            calls = parse_builtin_calls(content)
            if calls is None and ipython:
                calls = [ToolCall(name="code_interpreter", arguments={"code": content}, call_id=new_call_id())]
        if calls:
            content = ""
        return Message(role="assistant", content=content, tool_calls=calls or [], end_of_message=end_of_message)


def format_date(date: str | _dt.date) -> str:
    """`21 September 2024`, the form prompt_format.md uses."""
    if isinstance(date, _dt.date):
        return f"{date.day:02d} {date.strftime('%B %Y')}"
    return date


def system_prompt_with_tools(
    builtin_tools: Sequence[str] = (),
    custom_tools: Sequence[ToolDefinition] | None = None,
    date: str | _dt.date | None = None,
    instructions: str | None = None,
) -> str:
    """The Llama 3.1 system prompt that switches tools on, as in `prompt_format.md`.

    `Environment: ipython` enables code_interpreter (and is required for custom tools, so the model
    may end a tool-calling turn with eom); `Tools:` names the other builtins. `date` adds the
    `Cutting Knowledge Date`/`Today Date` lines, `instructions` the usual system text. The custom
    tool definitions themselves go in a user message: see `custom_tools_prompt`.

    Whitespace follows the doc's examples: a blank line after `Environment: ipython` when no
    `Tools:` line follows but the dates do (a quirk of the llama-stack template that produced them),
    a blank line before the instructions, and a trailing newline after them.
    """
    unknown = [t for t in builtin_tools if t not in BUILTIN_TOOLS]
    if unknown:
        raise ValueError(f"unknown builtin tools {unknown}; Llama 3.1 knows {list(BUILTIN_TOOLS)}")
    named = [t for t in builtin_tools if t != "code_interpreter"]
    parts: list[str] = []
    if builtin_tools or custom_tools:
        parts.append("Environment: ipython")
        if named:
            parts.append("\nTools: " + ", ".join(named) + "\n")
    if date is not None:
        if parts and not named:
            parts.append("\n\n")
        parts.append(f"Cutting Knowledge Date: {KNOWLEDGE_CUTOFF}\nToday Date: {format_date(date)}\n")
    if instructions:
        if parts:
            parts.append("\n" if parts[-1].endswith("\n") else "\n\n")
        parts.append(instructions + "\n")
    return "".join(parts)


JSON_TOOLS_HEADER = (
    "Answer the user's question by making use of the following functions if needed.\n"
    "If none of the function can be used, please say so.\n"
    "Here is a list of functions in JSON format:\n"
)
JSON_TOOLS_FOOTER = "\nReturn function calls in JSON format."
FUNCTION_TAG_FOOTER = (
    "Think very carefully before calling functions.\n"
    "If you choose to call a function ONLY reply in the following format with no prefix or suffix:\n"
    "\n"
    '<function=example_function_name>{"example_name": "example_value"}</function>\n'
    "\n"
    "Reminder:\n"
    "- If looking for real time information use relevant functions before falling back to brave_search\n"
    "- Function calls MUST follow the specified format, start with <function= and end with </function>\n"
    "- Required parameters MUST be specified\n"
    "- Only call one function at a time\n"
    "- Put the entire function call reply on one line"
)


def custom_tools_prompt(tools: Sequence[ToolDefinition], tool_format: str = "json") -> str:
    """The user-message instructions that offer custom tools (prompt_format.md, zero-shot calling).

    The doc's JSON example renders parameters with the old llama-models `ToolParamDefinition`
    template; here `parameters` is a JSON schema and is included as is.
    """
    if tool_format == "json":
        blocks = [
            json.dumps(
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                },
                indent=4,
            )
            + "\n"
            for t in tools
        ]
        return JSON_TOOLS_HEADER + "".join(blocks) + JSON_TOOLS_FOOTER
    if tool_format == "function_tag":
        blocks = [
            f"Use the function '{t.name}' to '{t.description}':\n"
            + json.dumps({"name": t.name, "description": t.description, "parameters": t.parameters})
            + "\n\n"
            for t in tools
        ]
        return "You have access to the following functions:\n\n" + "".join(blocks) + FUNCTION_TAG_FOOTER
    raise ValueError(f"custom tool instructions exist for 'json' and 'function_tag', not {tool_format!r}")
