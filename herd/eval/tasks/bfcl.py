"""The Berkeley Function Calling Leaderboard's AST categories, read from the `bfcl-eval` package's files.

bfcl-eval (Apache-2.0) ships its data as JSON lines: questions in `bfcl_eval/data/BFCL_v4_<cat>.json`
(`id`, `question` = a list of turns, each a list of messages, and `function` = the function docs) and
the accepted calls in `bfcl_eval/data/possible_answer/BFCL_v4_<cat>.json` (`id`, `ground_truth`).
`scripts/setup.sh` installs it with `--no-deps` (its dependencies are every model vendor's client):
only these files are read, and they are found without importing the package.

Categories with possible answers, scored by herd.eval.bfcl_ast: `simple` (BFCL's `simple_python`, 400
items, one function, one call), `multiple` (200: pick the right one of 2-4 functions), `parallel`
(200: several calls of one function), `parallel_multiple` (200: several calls of several functions).
`irrelevance` (240) offers functions that cannot answer the question: an item is right when the model
calls none (BFCL's relevance rule; the category has no possible-answer file). `java` (100) and
`javascript` (50) are BFCL's `simple_java` / `simple_javascript`: one function whose parameters are
offered as strings holding Java / JavaScript source (BFCL's language hints in the descriptions), read
back by their declared types when scored. BFCL v4 has no other language sets.
"""

from __future__ import annotations

import json
from pathlib import Path

from herd.eval.tasks.base import Item, ToolCallItem
from herd.eval.tasks.packaged import TaskDataMissing, package_file

# herd's category name -> BFCL's file stem (BFCL calls the Python simple set `simple_python`)
FILES = {"simple": "simple_python", "multiple": "multiple", "parallel": "parallel",
         "parallel_multiple": "parallel_multiple", "irrelevance": "irrelevance", "java": "simple_java",
         "javascript": "simple_javascript"}
NO_CALL = ("irrelevance",)  # categories where the right answer is no call at all
LANGUAGES = {"java": "java", "javascript": "javascript"}  # categories whose functions are not Python
VERSION = "v4"


def _rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load(category: str) -> list[Item]:
    """The category's items in BFCL's order, each with its possible answer."""
    if category not in FILES:
        raise ValueError(f"unknown BFCL category {category!r}; expected one of {', '.join(FILES)}")
    stem = f"BFCL_{VERSION}_{FILES[category]}.json"
    questions = _rows(package_file("bfcl_eval", f"data/{stem}"))
    answers = ({row["id"]: [] for row in questions} if category in NO_CALL else
               {r["id"]: r["ground_truth"] for r in _rows(package_file("bfcl_eval", f"data/possible_answer/{stem}"))})
    items: list[Item] = []
    for row in questions:
        if row["id"] not in answers:
            raise TaskDataMissing(f"bfcl-eval has no possible answer for {row['id']} in possible_answer/{stem}")
        if len(row["question"]) != 1:
            raise ValueError(f"{row['id']}: {len(row['question'])} turns; the AST categories are single-turn")
        items.append(ToolCallItem(id=row["id"], messages=tuple(row["question"][0]), functions=tuple(row["function"]),
                                  possible_answer=tuple(answers[row["id"]]), no_call=category in NO_CALL,
                                  language=LANGUAGES.get(category, "python")))
    return items


def category_of(task_name: str) -> str:
    """`bfcl_parallel_multiple` -> `parallel_multiple` (the checker's category)."""
    category = task_name.removeprefix("bfcl_")
    if category not in FILES:
        raise ValueError(f"task {task_name!r} is not a BFCL task (bfcl_{'|bfcl_'.join(FILES)})")
    return category


# BFCL's own type names -> JSON schema (bfcl-eval's GORILLA_TO_OPENAPI, the subset its Python sets use)
OPENAPI_TYPES = {"integer": "integer", "float": "number", "number": "number", "string": "string",
                 "boolean": "boolean", "bool": "boolean", "array": "array", "list": "array", "tuple": "array",
                 "dict": "object", "object": "object", "any": "string"}
PYTHON_HINT = " Note that the provided function is in Python 3 syntax."
HINTS = {"python": PYTHON_HINT, "java": " Note that the provided function is in Java 8 SDK syntax.",
         "javascript": " Note that the provided function is in JavaScript syntax."}
LANGUAGE_NAMES = {"java": "Java", "javascript": "JavaScript"}


def _openapi_properties(properties: dict) -> dict:
    """BFCL's `_cast_to_openai_type`: its types as JSON schema, recursively (floats noted as such)."""
    out = {}
    for key, spec in properties.items():
        spec = dict(spec)
        kind = spec.get("type", "string")
        if kind == "float":
            spec["format"] = "float"
            spec["description"] = spec.get("description", "") + " This is a float type value."
        spec["type"] = OPENAPI_TYPES.get(kind, "string")
        if isinstance(spec.get("properties"), dict):
            spec["properties"] = _openapi_properties(spec["properties"])
        if isinstance(spec.get("items"), dict):
            spec["items"] = _openapi_properties({"_": spec["items"]})["_"]
        out[key] = spec
    return out


def _source_text_properties(properties: dict, language: str) -> dict:
    """BFCL's language pre-processing: every parameter offered as a string of Java/JavaScript source,
    its declared type (and a collection's item type or a dict's schema) told in the description."""
    name = LANGUAGE_NAMES[language]
    out = {}
    for key, spec in properties.items():
        spec = dict(spec)
        kind = spec.get("type", "any")
        description = spec.get("description", "")
        if kind == "any":
            description += f" This parameter can be of any type of {name} object in string representation."
        else:
            description += f" This is {name} {kind} type parameter in string representation."
        if kind in ("ArrayList", "Array") and language == "java" or kind == "array" and language == "javascript":
            item = (spec.pop("items", None) or {}).get("type")
            description += f" The list elements are of type {item}; they are not in string representation."
        if kind == "dict" and language == "javascript" and "properties" in spec:
            description += (" The dictionary entries have the following schema; they are not in string "
                            f"representation. {json.dumps(spec.pop('properties'))}")
        spec["description"] = description
        spec["type"] = "string"
        out[key] = spec
    return out


def tool_schema(function: dict, language: str = "python") -> dict:
    """One BFCL function doc as the tool a chat format offers: `{name, description, parameters}` with a
    JSON-schema `parameters`, and BFCL's language hint appended to the description as its generation
    step does for every model (Java/JavaScript parameters become source-text strings)."""
    params = dict(function.get("parameters") or {})
    params["type"] = "object"
    properties = params.get("properties") or {}
    if language == "python":
        params["properties"] = _openapi_properties(properties)
    else:
        params["properties"] = _openapi_properties(_source_text_properties(properties, language))
    return {"name": function["name"], "description": function.get("description", "") + HINTS[language],
            "parameters": params}
