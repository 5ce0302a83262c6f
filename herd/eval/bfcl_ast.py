"""BFCL's AST match: are the calls a model made among the calls the Berkeley Function Calling
Leaderboard accepts? Our own implementation of the rules of bfcl-eval's
`eval_checker/ast_eval/ast_checker.py` (Python categories), so that scores equal the leaderboard's
without importing bfcl-eval at run time (its checker module pulls in every model client it supports).

A call is `{name: {param: value}}`; a possible answer is `{name: {param: [accepted values]}}`, where an
empty string among the accepted values means the parameter may be left out. One call matches when:

- its function name is the expected one (exactly; herd offers names as BFCL spells them, dots kept);
- every parameter the function doc lists as required is present;
- no parameter is unknown to the doc or absent from the possible answer;
- each value has the doc's type (`integer`, `float`, `string`, `boolean`, `array`, `tuple`, `dict`,
  `any` = string; Python types compared exactly, so `True` is no integer), except that an int is taken
  for a float parameter, a tuple for a tuple parameter, and a value of the type the possible answers
  have is taken as a "variable" (BFCL's word for answers like "x" given for a numeric parameter); an
  array's items are type-checked one level deep against the item type;
- each value is among the accepted ones: strings after BFCL's normalisation (spaces and `,./-_*^`
  removed, lower case, `'` -> `"`), lists element by element with strings normalised, dicts key by key
  (the dict's own optional keys may be left out), lists of dicts position by position, anything else
  by Python equality (so 5.0 == 5);
- every parameter of the possible answer that is not optional was given.

Java and JavaScript (`java`, `javascript`: BFCL's `simple_java`, `simple_javascript`) are simple
categories whose argument values are source text (`"42L"`, `"[1, 2]"`): a value must be a string, is
read by its declared Java/JavaScript type as BFCL reads it (`herd.eval.bfcl_values`; text without the
type's form stays a string), and is then matched by the rules above with the type's Python counterpart
(no int-for-float allowance).

Categories: `simple` wants exactly one call; `multiple` exactly one, of the right function among
several offered; `parallel` and `parallel_multiple` as many calls as expected, in any order, matched as
BFCL does: each expected call in turn takes the first not yet matched call that fits it (greedy, not an
optimal assignment, so a leaderboard number and ours agree item by item). `irrelevance` wants no call
(none of the offered functions fits the question); any call is BFCL's `irrelevance_error:decoder_success`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CATEGORIES = ("simple", "multiple", "parallel", "parallel_multiple", "irrelevance", "java", "javascript")
LANGUAGE_CATEGORIES = ("java", "javascript")  # one call, like simple; values are source text

PYTHON_TYPES: dict[str, type] = {
    "string": str, "integer": int, "float": float, "boolean": bool, "array": list, "tuple": list,
    "dict": dict, "any": str,
}
NESTED = ("array", "tuple")            # types whose items are type-checked (one level deep)
_PUNCTUATION = re.compile(r"[ ,./\-_*^]")

Call = Mapping[str, Mapping[str, Any]]  # {name: {param: value}}


@dataclass(frozen=True)
class Check:
    """The verdict on a model's calls: `error_type` names the first rule broken (BFCL's names)."""

    valid: bool
    error: str = ""
    error_type: str = ""


OK = Check(True)
DECODER_FAILED = "ast_decoder:decoder_failed"  # BFCL's name for an answer whose call cannot be decoded
# Text that starts a call in each chat format's tool syntax (a Llama 3 JSON call may also open the reply).
CALL_MARKERS = {"chatml": ("<tool_call>",), "llama3": ("<|python_tag|>", "<function=")}


def attempted_call(format_name: str, text: str) -> bool:
    """Whether `text` tries to call a function in the format's syntax (so a parse failure is an error of its
    own kind, not an answer without a call)."""
    if any(marker in text for marker in CALL_MARKERS.get(format_name, ())):
        return True
    return format_name == "llama3" and text.lstrip()[:1] in ("{", "[")


def standardize_string(text: str) -> str:
    """BFCL's string normalisation: "April 1, 2024" == "april 1 2024" == "April 1,2024"."""
    return _PUNCTUATION.sub("", text).lower().replace("'", '"')


def _norm(value: Any) -> Any:
    return standardize_string(value) if type(value) is str else value


def _answer_type(accepted: Sequence[Any]) -> type | None:
    """The type of the first accepted value that is not the optional marker ""."""
    for answer in accepted:
        if answer != "":
            return type(answer)
    return None


def _type_check(param: str, value: Any, accepted: Sequence[Any], type_name: str, expected: type,
                nested: type | None) -> tuple[Check, bool]:
    """(verdict, is_variable): whether `value` has the parameter's type, and whether it was taken as a
    variable (the possible answers' type rather than the doc's, which skips value normalisation)."""
    answer_type = _answer_type(accepted)
    is_variable = answer_type is not None and answer_type is not expected
    nested_failed = False
    if type(value) is expected:
        if nested is None:
            return OK, is_variable
        for answer in accepted:
            fits = True
            if type(answer) is list:
                fits = all(_type_check(param, item, answer, nested.__name__, nested, None)[0].valid for item in value)
            if fits:
                return OK, is_variable
        nested_failed = True
    if answer_type is not None and type(value) is answer_type and not nested_failed:
        return OK, True
    if nested_failed:
        return Check(False, f"nested type check failed for {param!r}: expected {type_name} of {nested.__name__}, "
                            f"got {value!r}", "type_error:nested"), False
    return Check(False, f"{param!r} should be {type_name}, got {type(value).__name__} {value!r}",
                 "type_error:simple"), False


def _string_check(param: str, value: str, accepted: Sequence[Any]) -> Check:
    if standardize_string(value) in [standardize_string(a) for a in accepted if type(a) is str]:
        return OK
    return Check(False, f"{param!r}: {value!r} is not one of {list(accepted)} (case-insensitive)", "value_error:string")


def _list_check(param: str, value: Sequence[Any], accepted: Sequence[Any]) -> Check:
    got = [_norm(v) for v in value]
    # BFCL iterates each accepted value as a list; an optional marker "" is an empty iteration
    options = [[_norm(a) for a in answer] for answer in accepted]
    if got in options:
        return OK
    return Check(False, f"{param!r}: {list(value)!r} is not one of {list(accepted)}", "value_error:list/tuple")


def _dict_check(param: str, value: Mapping[str, Any], accepted: Sequence[Any]) -> Check:
    """A dict value against each accepted dict in turn (each key's value among that key's accepted ones)."""
    if not isinstance(value, Mapping):
        return Check(False, f"{param!r}: {value!r} is not a dict", "type_error:dict")
    verdict = Check(False, f"{param!r}: no accepted dict", "dict_checker:unclear")
    for answer in accepted:
        if answer == "":
            continue
        verdict = OK
        for key, item in value.items():
            if key not in answer:
                verdict = Check(False, f"{param!r}: unexpected dict key {key!r}", "value_error:dict_key")
                break
            if _norm(item) not in [_norm(a) for a in answer[key]]:
                verdict = Check(False, f"{param!r}: {key!r} = {item!r} is not one of {answer[key]}",
                                "value_error:dict_value")
                break
        if verdict.valid:
            for key, options in answer.items():
                if key not in value and "" not in options:
                    verdict = Check(False, f"{param!r}: missing dict key {key!r}", "value_error:dict_key")
                    break
        if verdict.valid:
            return OK
    return verdict


def _list_dict_check(param: str, value: Sequence[Any], accepted: Sequence[Any]) -> Check:
    """A list of dicts against each accepted list: same length, dicts matched position by position."""
    verdict = Check(False, f"{param!r}: no accepted list of dicts", "list_dict_checker:unclear")
    for answer in accepted:
        if len(value) != len(answer):
            verdict = Check(False, f"{param!r}: wrong number of dicts in the list", "value_error:list_dict_count")
            continue
        for got, want in zip(value, answer):
            verdict = _dict_check(param, got, [want])
            if not verdict.valid:
                break
        else:
            return OK
    return verdict


def _source_value(language: str, param: str, value: Any, type_name: str,
                  details: Mapping[str, Any]) -> tuple[Any, type, type | None, Check]:
    """A Java/JavaScript argument (source text) as (Python value, expected type, item type, verdict)."""
    from herd.eval.bfcl_values import COLLECTIONS, LANGUAGES, UnsupportedType

    types, read = LANGUAGES[language]
    if type_name not in types:
        return value, str, None, Check(False, f"{param!r}: unsupported parameter type {type_name!r}", "type_error:unknown")
    if type(value) is not str:
        tag = "java" if language == "java" else "js"
        return value, str, None, Check(False, f"{param!r} must be {language} source text (a string), got "
                                              f"{type(value).__name__} {value!r}", f"type_error:{tag}")
    item_type = (details.get("items") or {}).get("type") if type_name in COLLECTIONS else None
    try:
        converted = read(value, type_name, item_type)
    except UnsupportedType as exc:
        return value, str, None, Check(False, f"{param!r}: {exc}", "type_error:unknown")
    return converted, types[type_name], types.get(item_type) if item_type else None, OK


def check_call(function: Mapping[str, Any], call: Call, answer: Call, language: str = "python") -> Check:
    """One call against one expected call; `function` is the expected function's doc. For `language`
    java or javascript each value is source text, read by its declared type first (herd.eval.bfcl_values)."""
    name = function["name"]
    accepted_params: Mapping[str, Sequence[Any]] = next(iter(answer.values()))
    if name not in call:
        return Check(False, f"function {name!r} not called (got {list(call)})", "simple_function_checker:wrong_func_name")
    params = call[name]
    if not isinstance(params, Mapping):
        return Check(False, f"{name}: arguments are not an object", "simple_function_checker:wrong_format")
    schema = function.get("parameters") or {}
    details: Mapping[str, Any] = schema.get("properties") or {}
    for required in schema.get("required") or []:
        if required not in params:
            return Check(False, f"missing required parameter {required!r}", "simple_function_checker:missing_required")
    for param, value in params.items():
        if param not in details or param not in accepted_params:
            return Check(False, f"unexpected parameter {param!r}", "simple_function_checker:unexpected_param")
        accepted = accepted_params[param]
        type_name = details[param].get("type", "string")
        if language != "python":
            value, expected, nested, verdict = _source_value(language, param, value, type_name, details[param])
            if not verdict.valid:
                return verdict
        else:
            expected = PYTHON_TYPES.get(type_name)  # type: ignore[assignment]
            if expected is None:
                return Check(False, f"{param!r}: unsupported parameter type {type_name!r}", "type_error:unknown")
            nested = None
            if type_name in NESTED:
                item_type = (details[param].get("items") or {}).get("type")
                nested = PYTHON_TYPES.get(item_type) if item_type is not None else None
            if type_name == "float" and type(value) is int:
                value = float(value)
        if type_name == "tuple" and type(value) is tuple:
            value = list(value)
        verdict, is_variable = _type_check(param, value, accepted, type_name, expected, nested)
        if not verdict.valid:
            return verdict
        if not is_variable:
            if expected is dict:
                verdict = _dict_check(param, value, accepted)
            elif expected is list and nested is dict:
                verdict = _list_dict_check(param, value, accepted)
            elif expected is str:
                verdict = _string_check(param, value, accepted)
            elif expected is list:
                verdict = _list_check(param, value, accepted)
            else:
                verdict = OK if value in accepted else Check(
                    False, f"{param!r}: {value!r} is not one of {list(accepted)}", "value_error:others")
            if not verdict.valid:
                return verdict
            continue
        if value not in accepted:
            return Check(False, f"{param!r}: {value!r} is not one of {list(accepted)}", "value_error:others")
    for param, accepted in accepted_params.items():
        if param not in params and "" not in accepted:
            return Check(False, f"parameter {param!r} not given and not optional",
                         "simple_function_checker:missing_optional")
    return OK


def _doc(functions: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    return next((f for f in functions if f["name"] == name), None)


def check(functions: Sequence[Mapping[str, Any]], calls: Sequence[Call], answers: Sequence[Call],
          category: str) -> Check:
    """The model's `calls` (in the order made) against the item's possible `answers`."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown BFCL category {category!r}; expected one of {', '.join(CATEGORIES)}")
    if category == "irrelevance":
        return OK if not calls else Check(False, f"{len(calls)} call(s) made where no function fits",
                                          "irrelevance_error:decoder_success")
    if any(not isinstance(c, Mapping) or len(c) != 1 for c in calls):
        return Check(False, "each call must be one {name: {arguments}}", "format_error")
    if len(calls) != len(answers):
        return Check(False, f"{len(calls)} calls made, {len(answers)} expected", f"{category}:wrong_count")
    if category == "simple":
        return check_call(functions[0], calls[0], answers[0])
    if category in LANGUAGE_CATEGORIES:
        return check_call(functions[0], calls[0], answers[0], category)
    if category == "multiple":
        doc = _doc(functions, next(iter(answers[0])))
        if doc is None:
            raise ValueError(f"the expected function {next(iter(answers[0]))!r} is not among the item's functions")
        return check_call(doc, calls[0], answers[0])
    matched: set[int] = set()
    for i, answer in enumerate(answers):
        doc = _doc(functions, next(iter(answer)))
        if doc is None:
            raise ValueError(f"the expected function {next(iter(answer))!r} is not among the item's functions")
        last = Check(False)
        for j, call in enumerate(calls):
            if j in matched:
                continue
            last = check_call(doc, call, answer)
            if last.valid:
                matched.add(j)
                break
        if not last.valid:
            return Check(False, f"no call matches expected call {i} ({last.error})",
                         "parallel_function_checker_no_order:cannot_find_match")
    return OK
