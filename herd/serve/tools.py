"""Chat prompts with tools, and turning generated text back into OpenAI content and `tool_calls`.

Where the tool definitions go depends on the chat format, as each model family was fine-tuned:

  llama3  The Llama 3.1 prompt format (`herd.tokenizer.llama3_chat`): the system prompt starts with
          `Environment: ipython` and the date lines (`system_prompt_with_tools`), the client's system
          text follows; the JSON tool definitions (`custom_tools_prompt`) are a user message right
          after it. Calls are JSON `{"type": "function", "name": ..., "parameters": {...}}`
          (also accepted: `<function=NAME>{...}</function>`, Python lists, builtin tool calls).
  chatml  Hermes/Qwen style: a `# Tools` section with one JSON definition per line inside
          `<tools></tools>` is appended to the system prompt (the format's default system prompt
          when the client sent none); calls are `<tool_call>\\n{"name", "arguments"}\\n</tool_call>`;
          tool results are wrapped in `<tool_response>` inside a `tool` turn.

`tool_choice`:
  none      tools are left out of the prompt and nothing is parsed as a call.
  auto      tools in the prompt; text is streamed as content until it may be a call (a
            `<tool_call>` tag, a `<function=` tag, `<|python_tag|>`, or for Llama 3 a reply that
            starts with `{`/`[`); that part is held back and parsed at the end with
            `chat_format.parse_assistant`; if it is no call it is sent as content after all.
  required  / a named function: the assistant turn is prefilled with the start of a call
            (`<tool_call>\\n{"name": "NAME", "arguments": ` for ChatML, `{"type": "function",
            "name": "NAME", "parameters": ` for Llama 3; without a name the prefill stops after
            `"name": "`). When the function's JSON schema has required properties the prefill
            goes on into the arguments with the first of them (`{"city": "` for a string), which
            keeps small models from echoing the schema instead of filling it. Generation ends as
            soon as the JSON value closes. With one tool, "required" is the same as naming it. A
            named call's `arguments` are the generated JSON text as is (like OpenAI, valid JSON is
            likely but not guaranteed: there is no constrained decoding here).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from herd.serve.protocol import (
    ChatMessageIn,
    NamedToolChoice,
    OpenAIError,
    ToolDefinitionIn,
    new_tool_call_id,
)
from herd.tokenizer.chat import ChatFormat, Message, ToolCall, ToolDefinition
from herd.tokenizer.tool_calls import arguments_dict
from herd.tokenizer.tool_prompt import (  # noqa: F401 - re-exported: serve's tool prompts live there
    DEFAULT_SYSTEM,
    HERMES_TOOLS_HEAD,
    HERMES_TOOLS_TAIL,
    call_prefill,
    hermes_system_prompt,
    with_tools,
)

# Text that may begin a call in auto mode, per format: held back from the content stream.
CALL_MARKERS = {"chatml": ("<tool_call>",), "llama3": ("<function=", "<|python_tag|>")}
# Formats where a reply that *starts* with JSON or a list is a call (Llama 3.1 zero-shot calling).
CALL_AT_START = {"llama3": "{["}


# ------------------------------------------------------------------------------------ prompt


@dataclass
class ChatPlan:
    """What to feed the engine for one chat request and how to read its output."""

    prompt_ids: list[int]
    mode: str  # "plain" | "auto" | "forced"
    prefill: str = ""  # text after the assistant header that the model continues
    forced_name: str | None = None
    json_seed: str = ""  # the part of the prefill that is an open JSON value (the call or its arguments)
    args_prefill: str = ""  # the part of the prefill inside a named call's arguments
    messages: list[Message] = field(default_factory=list)


def tool_definitions(tools: Sequence[ToolDefinitionIn] | None) -> list[ToolDefinition]:
    return [
        ToolDefinition(
            name=t.function.name,
            description=t.function.description or "",
            parameters=t.function.parameters or {"type": "object", "properties": {}},
        )
        for t in tools or []
    ]


def resolve_tool_choice(
    tools: list[ToolDefinition], tool_choice: str | NamedToolChoice | None
) -> tuple[str, str | None]:
    """(mode, forced function name) for a request; OpenAIError for a choice that cannot be met."""
    if isinstance(tool_choice, NamedToolChoice):
        name = tool_choice.function.name
        if name not in {t.name for t in tools}:
            raise OpenAIError(
                f"tool_choice names function {name!r}, which is not among the request's tools",
                param="tool_choice",
            )
        return "forced", name
    if not tools:
        if tool_choice == "required":
            raise OpenAIError("tool_choice 'required' needs at least one tool in 'tools'", param="tool_choice")
        return "plain", None
    if tool_choice == "none":
        return "plain", None
    if tool_choice == "required":
        return "forced", tools[0].name if len(tools) == 1 else None
    return "auto", None


def _message(m: ChatMessageIn, index: int, fmt: str) -> Message:
    role = "system" if m.role == "developer" else m.role
    content = m.text()
    calls = []
    if m.tool_calls:
        if role != "assistant":
            raise OpenAIError(f"only assistant messages carry tool_calls, not {role!r}", param=f"messages.{index}")
        calls = [ToolCall(c.function.name, arguments_dict(c.function.arguments), c.id) for c in m.tool_calls]
    if role in ("tool", "ipython") and fmt == "chatml":
        content = f"<tool_response>\n{content}\n</tool_response>"
    try:
        return Message(role=role, content=content, tool_calls=calls)
    except (TypeError, ValueError) as exc:
        raise OpenAIError(str(exc), param=f"messages.{index}") from None


def arguments_prefill(tool: ToolDefinition | None) -> str:
    """The start of a valid arguments object: `{"FIRST_REQUIRED": ` (plus `"` for a string)."""
    params = tool.parameters if tool is not None and isinstance(tool.parameters, dict) else {}
    required = params.get("required")
    if not isinstance(required, list) or not required or not isinstance(required[0], str):
        return ""
    key = required[0]
    props = params.get("properties")
    schema = props.get(key) if isinstance(props, dict) else None
    quote = '"' if isinstance(schema, dict) and schema.get("type") == "string" and "enum" not in schema else ""
    return "{" + json.dumps(key, ensure_ascii=False) + ": " + quote


def build_chat_prompt(
    chat_format: ChatFormat,
    messages: Sequence[ChatMessageIn],
    tools: Sequence[ToolDefinitionIn] | None,
    tool_choice: str | NamedToolChoice | None,
    builtin: Sequence[str] = (),
    extra: Sequence[Message] = (),
) -> ChatPlan:
    """The prompt for a chat request. `builtin` names the built-in tools the server runs itself
    (`--execute-builtin-tools`; offered only in auto mode), `extra` the messages of the server's own
    tool rounds so far (the model's calls and their results), which follow the client's messages."""
    fmt = chat_format.name
    defs = tool_definitions(tools)
    mode, forced_name = resolve_tool_choice(defs, tool_choice)
    if builtin and mode == "plain" and tool_choice in (None, "auto"):
        mode = "auto"
    builtin = builtin if mode == "auto" else ()
    msgs = [_message(m, i, fmt) for i, m in enumerate(messages)] + list(extra)
    if mode != "plain":
        msgs = with_tools(chat_format, msgs, defs, builtin=builtin)
    ids = chat_format.encode_dialog(msgs, add_generation_prompt=True, tool_format="json").tokens
    prefill = seed = args = ""
    if mode == "forced":
        if forced_name is not None:
            args = arguments_prefill(next((t for t in defs if t.name == forced_name), None))
        prefill, seed = call_prefill(fmt, forced_name, args)
        ids = ids + chat_format.tokenizer.encode(prefill)
    return ChatPlan(ids, mode, prefill, forced_name, seed, args, msgs)


# ------------------------------------------------------------------------------------ output


class JsonEnd:
    """Finds where one JSON value ends in text that arrives in pieces (strings and escapes respected)."""

    def __init__(self, seed: str = "") -> None:
        self.depth = 0
        self.in_string = False
        self.escape = False
        self.started = False
        self.scalar = False
        if seed:
            self.feed(seed)

    def feed(self, text: str) -> int | None:
        """Index just past the value's end within `text`, or None while it is still open."""
        for i, ch in enumerate(text):
            if self.in_string:
                if self.escape:
                    self.escape = False
                elif ch == "\\":
                    self.escape = True
                elif ch == '"':
                    self.in_string = False
                    if self.depth == 0:
                        return i + 1
                continue
            if not self.started:
                if ch.isspace():
                    continue
                self.started = True
                if ch == '"':
                    self.in_string = True
                elif ch in "{[":
                    self.depth = 1
                else:
                    self.scalar = True
                continue
            if self.scalar:
                if ch.isspace() or ch in ",}]<":
                    return i
                continue
            if ch == '"':
                self.in_string = True
            elif ch in "{[":
                self.depth += 1
            elif ch in "}]":
                self.depth -= 1
                if self.depth == 0:
                    return i + 1
        return None


@dataclass
class CallDelta:
    """A piece of tool call `index`: the first piece has id and name, later ones only arguments."""

    index: int
    arguments: str
    id: str | None = None
    name: str | None = None

    def to_json(self) -> dict[str, Any]:
        if self.id is None:
            return {"index": self.index, "function": {"arguments": self.arguments}}
        return {
            "index": self.index,
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


Event = str | CallDelta  # a str is content


def _arguments_text(arguments: dict[str, Any] | str) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


def _partial_suffix(text: str, markers: Sequence[str]) -> int:
    """Length of the longest end of `text` that could be the start of a marker."""
    best = 0
    for marker in markers:
        for k in range(min(len(marker) - 1, len(text)), best, -1):
            if text.endswith(marker[:k]):
                best = k
                break
    return best


_REQUIRED_FALLBACK = re.compile(r'^(?P<name>[^"]+)"\s*,\s*"(?:arguments|parameters)"\s*:\s*(?P<args>.*)$', re.DOTALL)


class ChoiceParser:
    """Generated text of one choice -> content and tool-call events, the same whether streamed or not.

    `feed(delta)` returns the events that can be sent now; `finish(reason)` the rest and the final
    finish_reason. `done` turns true when a forced call is complete: the caller stops generating.
    """

    def __init__(self, chat_format: ChatFormat, plan: ChatPlan) -> None:
        self.chat_format = chat_format
        self.fmt = chat_format.name
        self.mode = plan.mode
        self.prefill = plan.prefill
        self.forced_name = plan.forced_name
        self.full = ""  # all generated text fed so far
        self.done = False
        self.num_calls = 0
        self.tool_calls: list[ToolCall] = []  # the calls parsed in auto mode (the server may run built-ins)
        # auto mode
        self._pending = ""  # text not yet sent (a possible marker start, trailing whitespace)
        self._hold_from: int | None = None  # offset in `full` from which everything is held
        self._decided_start = self.fmt not in CALL_AT_START
        # forced mode
        self._scanner = JsonEnd(plan.json_seed)
        self._kept = ""  # generated text up to the end of the call's JSON
        self._call_id = new_tool_call_id()
        self._started = False
        self._args_prefill = plan.args_prefill
        self._args_begun = bool(plan.args_prefill)

    # --- feeding
    def feed(self, delta: str) -> list[Event]:
        if self.done or not delta:
            return []
        if self.mode == "plain":
            self.full += delta
            return [delta]
        if self.mode == "forced":
            return self._feed_forced(delta)
        return self._feed_auto(delta)

    def _feed_auto(self, delta: str) -> list[Event]:
        self.full += delta
        if self._hold_from is not None:
            return []
        self._pending += delta
        base = len(self.full) - len(self._pending)
        if not self._decided_start:
            stripped = self._pending.lstrip()
            if not stripped:
                return []
            self._decided_start = True
            if stripped[0] in CALL_AT_START[self.fmt]:
                self._hold_from, self._pending = base, ""
                return []
        markers = CALL_MARKERS.get(self.fmt, ())
        found = [i for i in (self._pending.find(m) for m in markers) if i >= 0]
        if found:
            idx = min(found)
            emit = self._pending[:idx].rstrip()
            self._hold_from, self._pending = base + len(emit), ""
            return [emit] if emit else []
        cut = len(self._pending) - _partial_suffix(self._pending, markers)
        emit = self._pending[:cut].rstrip()
        self._pending = self._pending[len(emit) :]
        return [emit] if emit else []

    def _feed_forced(self, delta: str) -> list[Event]:
        end = self._scanner.feed(delta)
        take = delta if end is None else delta[:end]
        self.done = end is not None
        self.full += take
        self._kept += take
        if self.forced_name is None:
            return []
        frag = take
        if not self._args_begun:
            frag = frag.lstrip()
            self._args_begun = bool(frag)
        return self._named_piece(frag)

    def _named_piece(self, frag: str) -> list[Event]:
        if not self._started:
            self._started = True
            self.num_calls = 1
            return [CallDelta(0, self._args_prefill + frag, self._call_id, self.forced_name)]
        return [CallDelta(0, frag)] if frag else []

    # --- finishing
    def finish(self, reason: str | None) -> tuple[list[Event], str]:
        """Remaining events and the finish_reason; `reason` is the engine's (None: stopped by us)."""
        reason = reason or "stop"
        if self.mode == "plain":
            return [], reason
        if self.mode == "forced":
            return self._finish_forced(reason)
        return self._finish_auto(reason)

    def _calls(self, calls: Sequence[ToolCall]) -> list[Event]:
        events: list[Event] = []
        self.tool_calls.extend(calls)
        for call in calls:
            events.append(CallDelta(self.num_calls, _arguments_text(call.arguments), new_tool_call_id(), call.name))
            self.num_calls += 1
        return events

    def _finish_auto(self, reason: str) -> tuple[list[Event], str]:
        events: list[Event] = []
        if self._hold_from is None:
            if self._pending:
                events.append(self._pending)
                self._pending = ""
            if self.fmt in CALL_AT_START:  # Llama 3 builtin calls can sit anywhere in the text
                calls = self.chat_format.parse_assistant(self.full).tool_calls
                if calls:
                    events.extend(self._calls(calls))
                    return events, "tool_calls"
            return events, reason
        held = self.full[self._hold_from :]
        message = self.chat_format.parse_assistant(held)
        if not message.tool_calls:
            return [held], reason
        if message.content.strip():
            events.append(message.content)
        events.extend(self._calls(message.tool_calls))
        return events, "tool_calls"

    def _finish_forced(self, reason: str) -> tuple[list[Event], str]:
        final = "tool_calls" if self.done or reason != "length" else "length"
        if self.forced_name is not None:
            return (self._named_piece("") if not self._started else []), final
        message = self.chat_format.parse_assistant(self.prefill + self._kept)
        if message.tool_calls:
            return self._calls(message.tool_calls), final
        match = _REQUIRED_FALLBACK.match(self._kept)
        if match is None:  # not even a name: give the text back as it is
            return ([self._kept] if self._kept else []), reason
        args = match.group("args").rstrip()
        if self.done and args.endswith("}"):
            args = args[:-1].rstrip()  # the call object's own closing brace
        events: list[Event] = [CallDelta(0, args, new_tool_call_id(), match.group("name"))]
        self.num_calls = 1
        return events, final


@dataclass
class ChoiceResult:
    """Events of one choice gathered into a non-streamed message."""

    content: list[str] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)

    def add(self, events: Sequence[Event]) -> None:
        for ev in events:
            if isinstance(ev, str):
                self.content.append(ev)
            elif ev.id is not None:
                self.calls.append({"id": ev.id, "type": "function", "function": {"name": ev.name, "arguments": ev.arguments}})
            else:
                self.calls[ev.index]["function"]["arguments"] += ev.arguments

    def message(self) -> dict[str, Any]:
        text = "".join(self.content)
        msg: dict[str, Any] = {"role": "assistant", "content": text if text or not self.calls else None}
        if self.calls:
            msg["tool_calls"] = self.calls
        return msg
