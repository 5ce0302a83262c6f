"""Zero-shot function calling (paper 4.3.5): a Python function becomes a tool the model can call.

`@tool` reads the function's signature, type hints and docstring (Google style: a summary, then an
`Args:` section with `name: description` lines) into the JSON schema that the chat format offers to
the model (`herd.tokenizer.chat.ToolDefinition`). When the model calls it, `Tool.call` validates the
arguments against that schema first: a missing, unknown or mistyped argument comes back as an error
message for the model to read and retry, never as an exception in the agent loop. A tool that raises
is reported the same way (its exception type and message).
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from herd.tokenizer.chat import ToolDefinition

_JSON_TYPES: dict[type, str] = {str: "string", int: "integer", float: "number", bool: "boolean",
                                list: "array", dict: "object", tuple: "array"}


class ToolSchemaError(TypeError):
    """A function whose signature cannot be described as a JSON schema (a tool definition bug)."""


def json_schema(annotation: Any, where: str) -> dict[str, Any]:
    """The JSON schema of one type hint: str/int/float/bool, list[X], dict[str, X], Literal[...],
    X | None (the None side makes the parameter optional, not the type)."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return {}
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        kinds = {type(a) for a in args}
        schema: dict[str, Any] = {"enum": list(args)}
        if len(kinds) == 1 and next(iter(kinds)) in _JSON_TYPES:
            schema["type"] = _JSON_TYPES[next(iter(kinds))]
        return schema
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return json_schema(options[0], where)
        return {"anyOf": [json_schema(a, where) for a in options]}
    if origin in (list, tuple, set) or annotation in (list, tuple):
        schema = {"type": "array"}
        if args and args[0] is not Ellipsis:
            schema["items"] = json_schema(args[0], where)
        return schema
    if origin is dict or annotation is dict:
        schema = {"type": "object"}
        if len(args) == 2:
            schema["additionalProperties"] = json_schema(args[1], where)
        return schema
    if annotation in _JSON_TYPES:
        return {"type": _JSON_TYPES[annotation]}
    raise ToolSchemaError(f"{where}: type {annotation!r} has no JSON schema (use str, int, float, bool, "
                          "list[...], dict[str, ...], Literal[...] or Optional of those)")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(description, {parameter: description}) from a Google-style docstring."""
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    params: dict[str, str] = {}
    section = None
    current = None
    for line in lines:
        stripped = line.strip()
        if re.fullmatch(r"(Args|Arguments|Parameters|Returns|Raises|Example|Examples):", stripped):
            section = stripped[:-1]
            current = None
            continue
        if section in ("Args", "Arguments", "Parameters"):
            match = re.match(r"^\s*(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$", line)
            if match and not line.startswith(" " * 8):
                current = match.group(1).lstrip("*")
                params[current] = match.group(2).strip()
            elif current and stripped:
                params[current] = (params[current] + " " + stripped).strip()
        elif section is None:
            summary.append(stripped)
    return " ".join(s for s in summary if s).strip(), params


@dataclass
class Tool:
    """A callable the model may call: its name, description, JSON schema of arguments, and the function."""

    name: str
    description: str
    parameters: dict[str, Any]
    function: Callable[..., Any] = field(repr=False)

    @property
    def definition(self) -> ToolDefinition:
        return ToolDefinition(self.name, self.description, self.parameters)

    def call(self, arguments: Mapping[str, Any] | str) -> str:
        """Run the tool; the text the model reads back (its result, or an error message)."""
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                return f"Error: the arguments of {self.name} are not valid JSON ({exc.msg})"
        if not isinstance(arguments, Mapping):
            return f"Error: the arguments of {self.name} must be a JSON object"
        problems = validate_arguments(self.parameters, arguments)
        if problems:
            return f"Error calling {self.name}: " + "; ".join(problems)
        try:
            result = self.function(**arguments)
        except Exception as exc:  # noqa: BLE001 - the tool's own failure is a result the model reads
            return f"Error: {self.name} raised {type(exc).__name__}: {exc}"
        if isinstance(result, str):
            return result
        try:
            return json.dumps(result, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            return str(result)


def tool(function: Callable[..., Any] | None = None, *, name: str | None = None,
         description: str | None = None) -> Any:
    """Decorator: `@tool` or `@tool(name=..., description=...)` turns a function into a `Tool`."""
    def build(fn: Callable[..., Any]) -> Tool:
        summary, docs = parse_docstring(fn.__doc__)
        hints = typing.get_type_hints(fn)
        properties: dict[str, Any] = {}
        required: list[str] = []
        for param in inspect.signature(fn).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ToolSchemaError(f"{fn.__name__}: *args/**kwargs cannot be described to the model")
            schema = json_schema(hints.get(param.name, param.annotation), f"{fn.__name__}({param.name})")
            if param.name in docs:
                schema["description"] = docs[param.name]
            if param.default is not inspect.Parameter.empty:
                if param.default is not None:
                    schema["default"] = param.default
            else:
                required.append(param.name)
            properties[param.name] = schema
        parameters: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
        return Tool(name or fn.__name__, description if description is not None else summary, parameters, fn)

    return build(function) if function is not None else build


_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),  # an int is a number
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def _check_value(schema: Mapping[str, Any], value: Any, where: str) -> list[str]:
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where} must be one of {schema['enum']}, got {value!r}"]
    if "anyOf" in schema:
        if any(not _check_value(option, value, where) for option in schema["anyOf"]):
            return []
        return [f"{where} has the wrong type ({type(value).__name__})"]
    kind = schema.get("type")
    if kind and kind in _CHECKS and value is not None and not _CHECKS[kind](value):
        return [f"{where} must be {'an' if kind[0] in 'aeiou' else 'a'} {kind}, got {type(value).__name__} {value!r}"]
    problems: list[str] = []
    if kind == "array" and isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            problems += _check_value(schema["items"], item, f"{where}[{i}]")
    if kind == "object" and isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for k, item in value.items():
            problems += _check_value(schema["additionalProperties"], item, f"{where}.{k}")
    return problems


def validate_arguments(schema: Mapping[str, Any], arguments: Mapping[str, Any]) -> list[str]:
    """Problems of `arguments` against an object schema: missing required, unknown, wrong type or value."""
    properties = schema.get("properties", {})
    problems = [f"missing required argument {name!r}" for name in schema.get("required", []) if name not in arguments]
    for key, value in arguments.items():
        if key not in properties:
            problems.append(f"unknown argument {key!r} (expected {', '.join(properties) or 'none'})")
        else:
            problems += _check_value(properties[key], value, f"argument {key!r}")
    return problems
