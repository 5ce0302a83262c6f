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
) -> list[Message]:
    """The dialog with the tool definitions placed where the chat format expects them.

    `date` is the Llama 3.1 `Today Date` line (default: today); an evaluation passes a fixed one so its
    prompts, and the results keyed on them, do not change from one day to the next.
    """
    if not tools:
        return messages
    system = messages[0].content if messages and messages[0].role == "system" else None
    rest = messages[1:] if system is not None else messages
    if chat_format.name == "llama3":
        from herd.tokenizer.llama3_chat import custom_tools_prompt, system_prompt_with_tools

        sys_text = system_prompt_with_tools(custom_tools=tools, date=date or _dt.date.today(),
                                            instructions=system or None)
        return [
            Message(role="system", content=sys_text),
            Message(role="user", content=custom_tools_prompt(tools, "json")),
            *rest,
        ]
    if system is None:
        system = getattr(chat_format, "default_system", None) or DEFAULT_SYSTEM
    return [Message(role="system", content=hermes_system_prompt(system, tools)), *rest]
