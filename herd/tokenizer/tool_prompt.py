"""Where a chat format expects the tool definitions: the dialog with tools placed in it.

Shared by `herd serve` (OpenAI `tools` in a chat request) and `herd eval` (BFCL's function docs), so a
model is offered tools the same way whether it is served or scored:

  llama3  The Llama 3.1 prompt format (`herd.tokenizer.llama3_chat`): the system prompt starts with
          `Environment: ipython` and the date lines (`system_prompt_with_tools`), the client's system
          text follows; the JSON tool definitions (`custom_tools_prompt`) are a user message right
          after it.
  chatml  Hermes/Qwen style: a `# Tools` section with one JSON definition per line inside
          `<tools></tools>` is appended to the system prompt (the format's default system prompt
          when the dialog has none).

Built-in tools (`code_interpreter`, `brave_search`, `wolfram_alpha`) are named in the Llama 3.1 system
prompt (`Environment: ipython`, `Tools: ...`) and called with `<|python_tag|>`; other formats get them
as ordinary function definitions (`BUILTIN_DEFINITIONS`).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence

from herd.tokenizer.chat import ChatFormat, Message, ToolDefinition

DEFAULT_SYSTEM = "You are a helpful assistant."

HERMES_TOOLS_HEAD = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
HERMES_TOOLS_TAIL = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call>"
)


# The built-in tools as JSON-schema functions, for formats that have no built-in call syntax.
BUILTIN_DEFINITIONS = {
    "code_interpreter": ToolDefinition("code_interpreter", "Run Python code in a sandbox and return its output.",
                                       {"type": "object", "properties": {"code": {"type": "string"}},
                                        "required": ["code"]}),
    "brave_search": ToolDefinition("brave_search", "Search local documents; returns titles, URLs and descriptions.",
                                   {"type": "object", "properties": {"query": {"type": "string"}},
                                    "required": ["query"]}),
    "wolfram_alpha": ToolDefinition("wolfram_alpha", "Compute a math query (integrals, equations, arithmetic).",
                                    {"type": "object", "properties": {"query": {"type": "string"}},
                                     "required": ["query"]}),
}


def tool_result_message(chat_format: ChatFormat, text: str) -> Message:
    """A tool's result as the dialog message the format expects (ChatML wraps it in `<tool_response>`)."""
    if chat_format.name == "chatml":
        text = f"<tool_response>\n{text}\n</tool_response>"
    return Message(role="ipython", content=text)


def hermes_system_prompt(system: str, tools: Sequence[ToolDefinition]) -> str:
    lines = [
        json.dumps(
            {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}},
            ensure_ascii=False,
        )
        for t in tools
    ]
    return system + HERMES_TOOLS_HEAD + "".join("\n" + line for line in lines) + HERMES_TOOLS_TAIL


def with_tools(
    chat_format: ChatFormat,
    messages: list[Message],
    tools: Sequence[ToolDefinition],
    date: str | _dt.date | None = None,
    builtin: Sequence[str] = (),
) -> list[Message]:
    """The dialog with the tool definitions (custom `tools` and the `builtin` names) placed where the
    chat format expects them.

    `date` is the Llama 3.1 `Today Date` line (default: today); an evaluation passes a fixed one so its
    prompts, and the results keyed on them, do not change from one day to the next.
    """
    unknown = [b for b in builtin if b not in BUILTIN_DEFINITIONS]
    if unknown:
        raise ValueError(f"unknown built-in tools {unknown}; known: {', '.join(BUILTIN_DEFINITIONS)}")
    if not tools and not builtin:
        return messages
    system = messages[0].content if messages and messages[0].role == "system" else None
    rest = messages[1:] if system is not None else messages
    if chat_format.name == "llama3":
        from herd.tokenizer.llama3_chat import custom_tools_prompt, system_prompt_with_tools

        sys_text = system_prompt_with_tools(builtin, custom_tools=list(tools) or None,
                                            date=date or _dt.date.today(), instructions=system or None)
        head = [Message(role="system", content=sys_text)]
        if tools:
            head.append(Message(role="user", content=custom_tools_prompt(tools, "json")))
        return [*head, *rest]
    tools = [*(BUILTIN_DEFINITIONS[b] for b in builtin), *tools]
    if system is None:
        system = getattr(chat_format, "default_system", None) or DEFAULT_SYSTEM
    return [Message(role="system", content=hermes_system_prompt(system, tools)), *rest]


def call_prefill(fmt: str, name: str | None, args_prefill: str = "") -> tuple[str, str]:
    """(prefill text, its open-JSON part) that starts a call of `name` (any function when None)."""
    if fmt == "llama3":
        marker, key, head = "", "parameters", '{"type": "function", "name": '
    else:
        marker, key, head = "<tool_call>\n", "arguments", '{"name": '
    if name is None:
        return marker + head + '"', head + '"'
    return marker + head + json.dumps(name, ensure_ascii=False) + f', "{key}": ' + args_prefill, args_prefill
