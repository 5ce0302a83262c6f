"""Java and JavaScript argument values, read as BFCL reads them before its AST match.

In BFCL's `simple_java` and `simple_javascript` categories every parameter is offered to the model as a
string ("This is Java long type parameter in string representation"), and the model writes the value
as source text: `"42L"`, `"new ArrayList<>(Arrays.asList(1, 2))"`, `"{'key': 'value'}"`. The checker
first turns that text into a Python value by the parameter's declared type, then matches it like a
Python one. These are herd's own readers, following the rules of bfcl-eval's
`type_convertor/java_type_converter.py` and `js_type_converter.py` so that a verdict equals the
leaderboard's, quirks included: text that does not have the type's form stays a string (and then
only matches a possible answer that is that string, BFCL's "variable"); a Java `char` is kept as
written (BFCL's pattern for it never matches); JavaScript dicts are read up to their first `}`.

`JAVA_TYPES` / `JS_TYPES` map the declared types to the Python types the match expects.
"""

from __future__ import annotations

import re
from typing import Any

JAVA_TYPES: dict[str, type] = {
    "byte": int, "short": int, "integer": int, "long": int, "float": float, "double": float, "boolean": bool,
    "char": str, "Array": list, "ArrayList": list, "Set": set, "HashMap": dict, "Hashtable": dict,
    "Queue": list, "Stack": list, "String": str, "any": str,
}
JS_TYPES: dict[str, type] = {
    "String": str, "integer": int, "float": float, "Bigint": int, "Boolean": bool, "dict": dict,
    "array": list, "any": str,
}
COLLECTIONS = ("Array", "ArrayList", "array")  # types whose declared item type is used when reading items

_INT = re.compile(r"-?\d+")
_JAVA_FLOAT = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?[fF]")
_JAVA_DOUBLE = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?")
_JAVA_LONG = re.compile(r"-?\d+[lL]")
_JS_FLOAT = re.compile(r"-?\d+(\.\d+)?")
_JS_BIGINT = re.compile(r"-?\d+n")


class UnsupportedType(ValueError):
    """A declared type BFCL has no reader for (Java Set, Hashtable, Queue, Stack)."""


def _number_or_text(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def java_literal(text: str) -> Any:
    """A Java literal of unknown type: true/false, "string", 12L, 1.5f, else a number or the text."""
    if text in ("true", "false"):
        return text == "true"
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    if _JAVA_LONG.fullmatch(text):
        return int(text[:-1])
    if _JAVA_FLOAT.fullmatch(text):
        return float(text[:-1])
    return _number_or_text(text)


def _java_item(text: str, item_type: str | None) -> Any:
    if item_type in ("char", "String"):
        return text[1:-1]  # the quotes go, whatever they were
    return java_value(text, item_type) if item_type else java_literal(text)


def java_value(text: str, type_name: str, item_type: str | None = None) -> Any:
    """`text` (a Java source value) as the Python value of declared type `type_name`."""
    if type_name not in JAVA_TYPES:
        raise UnsupportedType(f"unknown Java type {type_name!r}")
    if type_name in ("byte", "short", "integer"):
        return int(text) if _INT.fullmatch(text) else text
    if type_name == "float":
        return float(text[:-1]) if _JAVA_FLOAT.fullmatch(text) else text
    if type_name == "double":
        return float(text) if _JAVA_DOUBLE.fullmatch(text) else text
    if type_name == "long":
        return int(text[:-1]) if _JAVA_LONG.fullmatch(text) else text
    if type_name == "boolean":
        return text == "true" if text in ("true", "false") else text
    if type_name == "Array":
        found = re.search(r"new\s+\w+\[\]\s*\{(.*?)\}", text)
        if not found:
            return text
        parts = [p.strip() for p in found.group(1).split(",") if p.strip()]
        return [java_value(p, item_type) if item_type else java_literal(p) for p in parts]
    if type_name == "ArrayList":
        return _java_arraylist(text, item_type)
    if type_name == "HashMap":
        return _java_hashmap(text)
    if type_name in ("Set", "Hashtable", "Queue", "Stack"):
        raise UnsupportedType(f"BFCL does not read Java {type_name} values")
    return text  # String, any, char


def _java_arraylist(text: str, item_type: str | None) -> Any:
    as_list = re.search(r"new\s+ArrayList<\w*>\(Arrays\.asList\((.+?)\)\)", text)
    if as_list:
        return [_java_item(p.strip(), item_type) for p in as_list.group(1).split(",")]
    adds = re.search(r"new\s+ArrayList<\w*>\(\)\s*\{\{\s*(.+?)\s*\}\}", text, re.DOTALL)
    if adds:
        return [_java_item(p.strip(), item_type) for p in re.findall(r"add\((.+?)\)", adds.group(1))]
    if re.search(r"new\s+ArrayList<\w*>\(\)", text):
        return []
    return text


def _java_hashmap(text: str) -> Any:
    body = re.search(r"new\s+HashMap<.*?>\s*\(\)\s*\{\s*\{?\s*(.*?)\s*\}?\s*\}", text, re.DOTALL)
    if body:
        return {key: java_literal(value.strip()) for key, value in re.findall(r"put\(\"(.*?)\",\s*(.*?)\)", body.group(1))}
    if re.search(r"new\s+HashMap<.*?>\s*\(\)", text):
        return {}
    return text


def js_literal(text: str) -> Any:
    """A JavaScript literal of unknown type: true/false, a quoted string, else a number or the text."""
    text = text.strip()
    if text in ("true", "false"):
        return text == "true"
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return _number_or_text(text)


def js_value(text: str, type_name: str, item_type: str | None = None) -> Any:
    """`text` (a JavaScript source value) as the Python value of declared type `type_name`."""
    if type_name not in JS_TYPES:
        raise UnsupportedType(f"unknown JavaScript type {type_name!r}")
    if type_name == "String":
        quoted = len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""
        return text[1:-1] if quoted else text
    if type_name == "integer":
        return int(text) if _INT.fullmatch(text) else text
    if type_name == "float":
        return float(text) if _JS_FLOAT.fullmatch(text) else text
    if type_name == "Bigint":
        return int(text[:-1]) if _JS_BIGINT.fullmatch(text) else text
    if type_name == "Boolean":
        return text == "true" if text in ("true", "false") else text
    if type_name == "dict":
        return _js_dict(text.strip())
    if type_name == "array":
        return _js_array(text.strip(), item_type)
    return text  # any


def _js_array(code: str, item_type: str | None) -> Any:
    two_d = re.match(r"\[\s*\[.*?\]\s*(,\s*\[.*?\]\s*)*\]|\bnew\s+Array\(\s*\[.*?\]\s*(,\s*\[.*?\]\s*)*\)", code)
    try:
        if two_d:
            rows = []
            for k, inner in enumerate(re.findall(r"\[(.*?)\]", two_d.group(0))):
                inner = inner.strip()
                if k == 0 and inner.startswith("["):
                    inner = inner[1:]
                rows.append([js_literal(e) for e in inner.split(",")])
            return rows
        flat = re.match(r"\[(.*?)\]|\bnew\s+Array\((.*?)\)", code)
        if not flat:
            return code
        inside = (flat.group(1) if flat.group(1) is not None else flat.group(2) or "").strip()
        parts = inside.split(",") if inside else []
        if item_type:
            return [js_value(p.strip(), item_type) for p in parts]
        return [js_literal(p) for p in parts]
    except (ValueError, IndexError):
        return code


def _js_dict(code: str) -> Any:
    if code == "{}":
        return {}
    found = re.match(r"\{(.*?)\}", code)
    if not found:
        return code
    out: dict[str, Any] = {}
    for key, value in re.findall(r"([^:]+):\s*(.*?)(?:,\s*(?=[^,]+:)|$)", found.group(1)):
        key, value = key.strip().strip("'\""), value.strip()
        if value.startswith("[") and value.endswith("]"):
            out[key] = _js_array(value, None)
        elif value.startswith("{") and value.endswith("}"):
            out[key] = _js_dict(value)
        else:
            out[key] = js_literal(value.strip("'\""))
    return out


LANGUAGES = {"java": (JAVA_TYPES, java_value), "javascript": (JS_TYPES, js_value)}
