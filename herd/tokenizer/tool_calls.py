"""Tool-call text: rendering calls into the text a model is trained on, and parsing model output back.

Rendering mirrors llama-models' `ToolUtils.encode_tool_call` character for character (the prompts
must be identical to what the model was fine-tuned on). Parsing is deliberately lenient and never
raises: model output is untrusted, and a reply that does not parse as a call is simply text.

Formats:
  builtin       `brave_search.call(query="...")` (code_interpreter: the code itself)
  json          `{"type": "function", "name": NAME, "parameters": {...}}`
  function_tag  `<function=NAME>{...}</function>`
  python_list   `[NAME(a=1, b="x")]`
  hermes        `<tool_call>\\n{"name": NAME, "arguments": {...}}\\n</tool_call>` (ChatML models)
"""

from __future__ import annotations

import ast
import json
import re
import uuid
from typing import Any

from herd.tokenizer.chat import ToolCall

BUILTIN_TOOLS = ("brave_search", "wolfram_alpha", "photogen", "code_interpreter")
QUERY_TOOLS = ("brave_search", "wolfram_alpha", "photogen")  # builtins called as NAME.call(query="...")

BUILTIN_CALL = re.compile(r'\b(?P<name>\w+)\.call\(query="(?P<query>[^"]*)"\)')  # same as the reference
FUNCTION_TAG_OPEN = re.compile(r"<function=(?P<name>[^>\s]+)>")
FUNCTION_TAG_CLOSE = "</function>"
HERMES_CALL = re.compile(r"<tool_call>\s*(?P<body>.*?)\s*(?:</tool_call>|\Z)", re.DOTALL)
CALL_SEPARATORS = " \t\r\n;"

_decoder = json.JSONDecoder()


def new_call_id() -> str:
    """A fresh id so an executor can pair tool results with calls (the reference uses uuid4 too)."""
    return str(uuid.uuid4())


def arguments_dict(arguments: dict[str, Any] | str) -> dict[str, Any] | str:
    """Arguments as a dict when a string holds a JSON object (OpenAI-style calls carry JSON text)."""
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except (ValueError, RecursionError):
            return arguments
        return parsed if isinstance(parsed, dict) else arguments
    return arguments


# ---------------------------------------------------------------------------------------- render


def encode_builtin_call(call: ToolCall) -> str:
    """`NAME.call(query="...")`, or the bare code for code_interpreter (as the reference)."""
    args = arguments_dict(call.arguments)
    key = "code" if call.name == "code_interpreter" else "query"
    if isinstance(args, dict) and key not in args:
        raise ValueError(f"a {call.name} call needs a {key!r} argument, got {sorted(args)}")
    value = args if isinstance(args, str) else args[key]
    return str(value) if key == "code" else f'{call.name}.call(query="{value}")'


def _python_value(value: Any) -> str:
    """The reference's `format_value` (strings are quoted without escaping, exactly as it does)."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (int, float, bool)) or value is None:
        return str(value)
    if isinstance(value, list):
        return f"[{', '.join(_python_value(v) for v in value)}]"
    if isinstance(value, dict):
        return f"{{{', '.join(f'{k}={_python_value(v)}' for k, v in value.items())}}}"
    raise ValueError(f"unsupported tool argument type {type(value).__name__}")


def encode_custom_call(call: ToolCall, tool_format: str = "json", *, ensure_ascii: bool = True) -> str:
    """A custom (non-builtin) call in the llama-models rendering for `tool_format`."""
    args = arguments_dict(call.arguments)
    if tool_format == "json":
        return json.dumps({"type": "function", "name": call.name, "parameters": args}, ensure_ascii=ensure_ascii)
    if tool_format == "function_tag":
        return f"<function={call.name}>{json.dumps(args, ensure_ascii=ensure_ascii)}</function>"
    if tool_format == "python_list":
        if not isinstance(args, dict):
            raise ValueError(f"python_list tool calls need dict arguments, got {args!r}")
        return f"[{call.name}({', '.join(f'{k}={_python_value(v)}' for k, v in args.items())})]"
    raise ValueError(f"unknown tool_format {tool_format!r}")


def encode_llama3_call(call: ToolCall, tool_format: str = "json") -> str:
    """Builtin tools in their fixed syntax, everything else in `tool_format` (as the reference)."""
    if call.name in BUILTIN_TOOLS:
        return encode_builtin_call(call)
    return encode_custom_call(call, tool_format)


def encode_hermes_call(call: ToolCall) -> str:
    """Hermes/Qwen ChatML tool-call block (JSON as HF's `tojson`: non-ASCII kept as is)."""
    body = json.dumps({"name": call.name, "arguments": arguments_dict(call.arguments)}, ensure_ascii=False)
    return f"<tool_call>\n{body}\n</tool_call>"


# ----------------------------------------------------------------------------------------- parse


def _call_from_object(obj: Any) -> ToolCall | None:
    """A call from a decoded JSON object in any of the shapes models emit, else None."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict) and "name" in obj["function"]:  # OpenAI {"function": {...}}
        obj = obj["function"]
    elif obj.get("type") == "function" and "name" not in obj:
        return None
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return None
    for key in ("parameters", "arguments"):
        if key in obj:
            args = arguments_dict(obj[key])
            break
    else:
        if obj.get("type") != "function":  # plain JSON data that happens to have a "name" is not a call
            return None
        args = {}
    if not isinstance(args, (dict, str)):
        return None
    return ToolCall(name=name, arguments=args, call_id=new_call_id())


def _skip(text: str, pos: int, chars: str = CALL_SEPARATORS) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _loads_lenient(text: str) -> Any:
    """JSON, or the reference's fallback of single quotes read as double quotes; None if neither."""
    for candidate in (text, text.replace("'", '"')):
        try:
            return json.loads(candidate)
        except (ValueError, RecursionError):
            continue
    return None


def parse_json_calls(text: str) -> list[ToolCall] | None:
    """Calls when `text` is nothing but JSON call objects (separated by whitespace, `;` or nothing)."""
    calls: list[ToolCall] = []
    pos = _skip(text, 0)
    while pos < len(text):
        try:
            obj, pos = _decoder.raw_decode(text, pos)
        except (ValueError, RecursionError):
            return None
        call = _call_from_object(obj)
        if call is None:
            return None
        calls.append(call)
        pos = _skip(text, pos)
    return calls or None


def parse_function_tags(text: str) -> list[ToolCall] | None:
    """Every `<function=NAME>{json}</function>` in `text` (like the reference, text around them is
    dropped); handles nested braces, which the reference's `{.*?}` pattern cuts short."""
    calls: list[ToolCall] = []
    for match in FUNCTION_TAG_OPEN.finditer(text):
        start = _skip(text, match.end(), " \t\r\n")
        try:
            args, _ = _decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            end = text.find(FUNCTION_TAG_CLOSE, start)
            args = _loads_lenient(text[start : end if end >= 0 else len(text)])
        if isinstance(args, dict):
            calls.append(ToolCall(name=match.group("name"), arguments=args, call_id=new_call_id()))
    return calls or None


def _bracketed_pieces(text: str) -> list[str] | None:
    """`[..][..]; [..]` -> its top-level `[...]` pieces (quotes respected), None if anything else."""
    pieces: list[str] = []
    depth, start, quote, escaped = 0, -1, "", False
    for i, ch in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote, escaped = ch, False
        elif ch in "[(":
            if depth == 0:
                if ch == "(":
                    return None
                start = i
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth < 0:
                return None
            if depth == 0:
                pieces.append(text[start : i + 1])
        elif depth == 0 and ch not in CALL_SEPARATORS:
            return None
    return pieces if depth == 0 and not quote and pieces else None


def _python_list_calls(text: str) -> list[ToolCall] | None:
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if not isinstance(tree.body, ast.List) or not tree.body.elts:
        return None
    calls = []
    for node in tree.body.elts:
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)) or node.args:
            return None
        try:
            args = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg is not None}
        except (ValueError, SyntaxError, TypeError, RecursionError):
            return None
        calls.append(ToolCall(name=node.func.id, arguments=args, call_id=new_call_id()))
    return calls


def parse_python_list(text: str) -> list[ToolCall] | None:
    """`[f(a=1), g(b="x")]`, or several such lists back to back (how the reference renders several
    calls): Python lists of keyword-only calls, read with `ast` (never evaluated)."""
    pieces = _bracketed_pieces(text)
    if pieces is None:
        return None
    calls: list[ToolCall] = []
    for piece in pieces:
        got = _python_list_calls(piece)
        if got is None:
            return None
        calls.extend(got)
    return calls


def parse_custom_calls(text: str) -> list[ToolCall] | None:
    """Function tags, then bare JSON, then a Python list: the reference's order of attempts."""
    return parse_function_tags(text) or parse_json_calls(text) or parse_python_list(text)


def parse_builtin_calls(text: str) -> list[ToolCall] | None:
    """Every `NAME.call(query="...")` in `text` (the reference takes only the first)."""
    calls = [
        ToolCall(name=m.group("name"), arguments={"query": m.group("query")}, call_id=new_call_id())
        for m in BUILTIN_CALL.finditer(text)
    ]
    return calls or None


def normalize_builtin(call: ToolCall) -> ToolCall:
    """A builtin tool called in custom syntax gets the builtin's argument name, as the reference
    does (it maps the first argument to `query`; code_interpreter gets `code` here)."""
    if call.name not in BUILTIN_TOOLS or not isinstance(call.arguments, dict):
        return call
    if set(call.arguments) in ({"query"}, {"code"}) or not call.arguments:
        return call
    key = "code" if call.name == "code_interpreter" else "query"
    return ToolCall(name=call.name, arguments={key: next(iter(call.arguments.values()))}, call_id=call.call_id)


def parse_hermes_calls(text: str) -> tuple[str, list[ToolCall]]:
    """Split ChatML output into (content, calls). A `<tool_call>` block whose JSON does not parse
    stays in the content as text; an unclosed final block (generation cut off) is accepted when its
    JSON is complete."""
    calls: list[ToolCall] = []
    kept: list[str] = []
    pos = 0
    for match in HERMES_CALL.finditer(text):
        call = _call_from_object(_loads_lenient(match.group("body")))
        if call is None:
            continue
        kept.append(text[pos : match.start()])
        calls.append(call)
        pos = match.end()
    kept.append(text[pos:])
    if not calls:
        return text, []
    return "".join(kept).strip(), calls
