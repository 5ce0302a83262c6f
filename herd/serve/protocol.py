"""OpenAI wire format: request models (validated with pydantic), response builders and the error shape.

Requests are parsed by hand (`parse_request`) rather than through FastAPI's body parameters so that
every problem, malformed JSON included, becomes an OpenAI error object
`{"error": {"message", "type", "param", "code"}}` with status 400, never FastAPI's 422 shape.
Responses are plain dicts: they are built once per chunk on the hot path of streaming.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

# Logprobs of -inf do not survive JSON; vLLM clamps the same way.
MIN_LOGPROB = -9999.0
MAX_TOP_LOGPROBS = 20


class OpenAIError(Exception):
    """An error the client sees as OpenAI's error object with an HTTP status."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",  # noqa: A002 - the wire name
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:  # noqa: A002
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# ------------------------------------------------------------------------------------ requests


class ElementError(ValueError):
    """A validator's complaint about one element inside a field: validation_error names `param`
    (`prompt.1.0`), where pydantic's location would stop at the field (`prompt`)."""

    def __init__(self, param: str, problem: str) -> None:
        super().__init__(problem)
        self.param = param


def _check_token_ids(ids: list[Any], param: str) -> None:
    """Every id a JSON integer >= 0. pydantic's lax int would turn `true` into 1 and `1.0` or `"1"` into 1
    (bool is an int in Python), so a client's bug would generate from a prompt it never meant; a token id
    has one spelling. The upper bound (the vocabulary) is the served model's, checked where it is known."""
    for i, t in enumerate(ids):
        if isinstance(t, bool) or not isinstance(t, int):
            kind = " (a JSON boolean is not a token id)" if isinstance(t, bool) else ""
            raise ElementError(f"{param}.{i}", f"token ids must be integers, got {json.dumps(t)}{kind}")
        if t < 0:
            raise ElementError(f"{param}.{i}", f"token ids must be >= 0, got {t}")


class _Model(BaseModel):
    # Unknown fields are ignored (as OpenAI and vLLM do); clients send vendor extensions freely.
    model_config = ConfigDict(extra="ignore")


class FunctionDefinition(_Model):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinitionIn(_Model):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(_Model):
    name: str


class NamedToolChoice(_Model):
    type: Literal["function"] = "function"
    function: NamedFunction


class ToolCallFunctionIn(_Model):
    name: str
    arguments: str | dict[str, Any] = "{}"


class ToolCallIn(_Model):
    id: str | None = None
    type: Literal["function"] = "function"
    function: ToolCallFunctionIn


class ContentPart(_Model):
    type: str
    text: str | None = None


class ChatMessageIn(_Model):
    role: Literal["system", "developer", "user", "assistant", "tool", "ipython"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """The content as one string (text parts joined; other part types are refused)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        texts = []
        for i, part in enumerate(self.content):
            if part.type != "text" or part.text is None:
                raise OpenAIError(
                    f"content part type {part.type!r} is not supported; this server takes text only",
                    param=f"messages.content.{i}.type",
                )
            texts.append(part.text)
        return "\n".join(texts)


class StreamOptions(_Model):
    include_usage: bool = False


class _SamplingFields(_Model):
    model: str | None = None
    max_tokens: StrictInt | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: StrictInt = 1
    seed: StrictInt | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # vLLM extensions
    top_k: StrictInt | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    ignore_eos: bool = False
    stop_token_ids: list[StrictInt] | None = None

    @field_validator("stop_token_ids", mode="before")
    @classmethod
    def _stop_token_ids_are_ids(cls, value: Any) -> Any:
        if isinstance(value, list):
            _check_token_ids(value, "stop_token_ids")
        return value

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        return tuple(s for s in stops if s)


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = None
    logprobs: bool = False
    top_logprobs: StrictInt | None = None
    tools: list[ToolDefinitionIn] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None


class CompletionRequest(_SamplingFields):
    # OpenAI's str | str[] | int[] | int[][], and (as vLLM) a list that mixes texts and token lists
    prompt: str | list[StrictInt] | list[str | list[StrictInt]]
    echo: bool = False
    logprobs: StrictInt | None = None
    suffix: str | None = None
    best_of: StrictInt | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_token_ids_are_ids(cls, value: Any) -> Any:
        """A list of only non-lists/strings is one token-id prompt; any other list is a batch of prompts."""
        if not isinstance(value, list):
            return value
        if not any(isinstance(item, str | list) for item in value):
            _check_token_ids(value, "prompt")
            return value
        for i, item in enumerate(value):
            if isinstance(item, list):
                _check_token_ids(item, f"prompt.{i}")
            elif not isinstance(item, str):
                raise ElementError(f"prompt.{i}", "a list of prompts holds strings and token-id lists, got "
                                   f"{json.dumps(item)}")
        return value


M = TypeVar("M", bound=BaseModel)


def _loc_to_param(loc: tuple[Any, ...]) -> str | None:
    # pydantic adds union-branch names (e.g. "str", "list[ContentPart]") to the location; drop them
    parts = [str(p) for p in loc if isinstance(p, int) or not any(c in str(p) for c in "[]|") and p not in _TYPE_NAMES]
    return ".".join(parts) or None


_TYPE_NAMES = {"str", "int", "float", "bool", "dict", "list", "function-after", "literal", "NamedToolChoice"}


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_values(value: Any, path: tuple[str | int, ...] = ()) -> None:
    """Refuse what JSON can spell but the server cannot use, naming where it is.

    - A lone UTF-16 surrogate (`"\\udc80"`) is valid JSON but no Unicode text: it cannot be encoded
      to UTF-8, so the tokenizer (and any stop-string match) would fail deep inside the request.
      `json.loads` already joins correct surrogate pairs, so any surrogate left is a lone one.
    - `NaN` / `Infinity` are not JSON, yet Python's parser accepts them (and turns 1e999 into inf);
      a NaN passes every `x < 0` range check.
    """
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise _bad_value(path, "contains a lone UTF-16 surrogate (not valid Unicode text)")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _bad_value(path, f"must be a finite number, got {value}")
    elif isinstance(value, dict):
        for key, item in value.items():
            if _SURROGATE.search(key):
                raise _bad_value(path, "has a key that contains a lone UTF-16 surrogate")
            _check_values(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_values(item, (*path, i))


def _bad_value(path: tuple[str | int, ...], problem: str) -> OpenAIError:
    param = ".".join(str(p) for p in path) or None
    where = f"'{param}'" if param else "the request body"
    return OpenAIError(f"Invalid value for {where}: {problem}", param=param)


def parse_request(body: bytes, model: type[M]) -> M:
    """Bytes of a request body -> validated request, or an OpenAIError (400) saying what is wrong."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError (bytes that are not UTF-8) is a ValueError
        raise OpenAIError(
            "We could not parse the JSON body of your request. The body must be valid JSON.", param=None
        ) from None
    if not isinstance(data, dict):
        raise OpenAIError(f"the request body must be a JSON object, got {type(data).__name__}")
    _check_values(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def validation_error(exc: ValidationError | Any) -> OpenAIError:
    """The first pydantic (or FastAPI) validation error as an OpenAIError."""
    errors = exc.errors() if hasattr(exc, "errors") else []
    if not errors:
        return OpenAIError(str(exc))
    first = errors[0]
    loc = tuple(first.get("loc", ()))
    if loc and loc[0] == "body":
        loc = loc[1:]
    param = _loc_to_param(loc)
    msg = first.get("msg", "invalid value")
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, ElementError):
        param, msg = cause.param, str(cause)
    extra = f" ({len(errors) - 1} more error{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    where = f"'{param}'" if param else "the request body"
    return OpenAIError(f"Invalid value for {where}: {msg}{extra}", param=param)


# ----------------------------------------------------------------------------------- responses


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def new_tool_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def clamp_logprob(value: float) -> float:
    return value if value > MIN_LOGPROB else MIN_LOGPROB


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_logprob_entries(logprobs: list[Any], token_bytes: Any, top_n: int) -> list[dict[str, Any]]:
    """OpenAI chat `logprobs.content` entries from engine TokenLogprobs."""
    entries = []
    for lp in logprobs:
        entries.append(
            {
                "token": lp.token,
                "logprob": clamp_logprob(lp.logprob),
                "bytes": list(token_bytes(lp.token_id)),
                "top_logprobs": [
                    {"token": tok, "logprob": clamp_logprob(val), "bytes": list(token_bytes(tid))}
                    for tid, tok, val in (lp.top or [])[:top_n]
                ],
            }
        )
    return entries


def tool_call_json(call_id: str, name: str, arguments: str, index: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    if index is not None:
        out = {"index": index, **out}
    return out


def stream_chunk(
    request_id: str, obj: str, created: int, model: str, choices: list[dict[str, Any]],
    include_usage: bool, usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One SSE chunk of a chat or completion stream. `usage` is a field only when the client asked for
    it (stream_options.include_usage): null on every chunk but the last."""
    chunk: dict[str, Any] = {
        "id": request_id, "object": obj, "created": created, "model": model, "system_fingerprint": None,
        "choices": choices,
    }
    if include_usage:
        chunk["usage"] = usage
    return chunk
