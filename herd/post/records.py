"""Post-training data files read into typed records: SFT dialogs and ranked preferences.

Real chat data is dirty (missing keys, empty turns, a scraped JSON array cut off mid-string), and one
bad record must not stop a run that has 100,000 good ones. So every reader here counts what it skips,
by reason, and returns the counts with the records; commands print `ReadReport.summary()`
("read 980 records, skipped 20: 12 missing 'chosen', 8 not JSON"). Nothing here raises on bad data;
only a missing file or a bad `format=` argument is an error.

Formats, detected per record (or forced with `format=`):

  herd      SFT `{"messages": [{"role", "content"}, ...]}`; preference `{"prompt": [...], "responses":
            [[...messages] | {"role", "content"} | "text", ...], "strength": "better"}`, responses
            ranked best first.
  trl       TRL's conversational datasets: SFT `{"messages": [...]}` or `{"prompt": [...],
            "completion": [...]}`; preference `{"prompt", "chosen", "rejected", optional "edited"}`
            (ranked edited > chosen > rejected, the paper's order), each a list of messages or a plain
            string (the prompt a user message, a response an assistant message); without "prompt"
            (TRL's implicit prompt) chosen and rejected are whole dialogs and the prompt is their
            longest common message prefix.
  sharegpt  `{"conversations": [{"from": "human"|"gpt"|"system"|..., "value": ...}]}`; preference
            (LLaMA-Factory's ranking layout) adds `"chosen"`/`"rejected"` as one `{"from", "value"}`.

A message may also carry OpenAI-style `tool_calls` (read by `herd.tokenizer.chat.as_message`) and
OpenAI fine-tuning's `"weight": 0` (an assistant turn kept as context, out of the SFT loss), and its
content may be a list of `{"type": "text", "text": ...}` parts (joined; other part types are skipped
as records). Files are JSONL, or JSON (an array, or concatenated objects), optionally gzipped; a JSON
array is decoded element by element so that a truncated file still yields every complete record.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

from herd.tokenizer.chat import Message, as_message

FORMATS = ("auto", "herd", "trl", "sharegpt")
# The paper's four preference levels (Llama 3, section 4.2.1), strongest first.
STRENGTHS = ("significantly_better", "better", "slightly_better", "marginally_better")
# ShareGPT speaker names -> chat roles. ShareGPT_V3 also credits answers to "chatgpt", "bing", "bard".
SHAREGPT_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
    "bing": "assistant", "bard": "assistant", "system": "system", "observation": "ipython", "tool": "ipython",
}
_CHUNK = 1 << 20  # bytes of a JSON array read at a time

T = TypeVar("T")


class RecordError(ValueError):
    """One record is malformed; `reason` is the short text it is counted under (e.g. "missing 'chosen'")."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Dialog:
    """An SFT example: the messages, ending in the assistant turn(s) the model learns to produce."""

    messages: tuple[Message, ...]

    def __post_init__(self) -> None:
        _check_messages(self.messages, "dialog")
        if not any(m.role == "assistant" for m in self.messages):
            raise RecordError("no assistant message")
        if self.messages[-1].role != "assistant":
            raise RecordError("dialog does not end with an assistant message")


@dataclass(frozen=True)
class Preference:
    """A prompt with 2+ responses ranked best first (edited > chosen > rejected) and how much better the
    first is than the second (`strength`, one of STRENGTHS; None when the data does not say)."""

    prompt: tuple[Message, ...]
    responses: tuple[tuple[Message, ...], ...]
    strength: str | None = None

    def __post_init__(self) -> None:
        if not self.prompt:
            raise RecordError("empty prompt")
        _check_messages(self.prompt, "prompt")
        if len(self.responses) < 2:
            raise RecordError("fewer than 2 responses")
        for response in self.responses:
            if not response:
                raise RecordError("empty response")
            _check_messages(response, "response")
            if response[-1].role != "assistant":
                raise RecordError("response does not end with an assistant message")
        if len(set(map(_key, self.responses))) < len(self.responses):
            raise RecordError("identical responses")
        if self.strength is not None and self.strength not in STRENGTHS:
            raise RecordError("unknown strength")

    @property
    def chosen(self) -> tuple[Message, ...]:
        return self.responses[0]

    @property
    def rejected(self) -> tuple[Message, ...]:
        return self.responses[-1]


@dataclass
class ReadReport(Generic[T]):
    """What a reader kept, what it skipped (count per reason) and how many records it saw in all."""

    records: list[T]
    skipped: Counter[str] = field(default_factory=Counter)
    total: int = 0

    def summary(self) -> str:
        """One line: 'read 980 records, skipped 20: 12 missing 'chosen', 8 not JSON'."""
        line = f"read {len(self.records)} records"
        n = sum(self.skipped.values())
        if n:
            top = self.skipped.most_common()
            parts = [f"{count} {reason}" for reason, count in top[:6]]
            if len(top) > 6:
                parts.append(f"{sum(c for _, c in top[6:])} for {len(top) - 6} other reasons")
            line += f", skipped {n}: " + ", ".join(parts)
        return line


# ---- files -> JSON values ------------------------------------------------------------------------------


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _first_char(path: Path) -> str:
    with _open(path) as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head[:1].decode("ascii", errors="replace")


def iter_json_records(path: str | Path, skipped: Counter[str] | None = None) -> Iterator[Any]:
    """Every JSON value in `path`, one at a time; what cannot be decoded is counted in `skipped`.

    A file starting with `[` is a JSON array, decoded element by element with `raw_decode`, so a file
    cut off mid-record yields every complete element before the cut (counted once as "truncated
    JSON"), and a 100 MB file is never parsed as one document. Other `.json` files are concatenated
    JSON values; anything else is JSONL (a bad line is counted as "not JSON" and reading goes on).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file")
    counter = skipped if skipped is not None else Counter()
    first = _first_char(path)
    suffixes = [s for s in path.suffixes if s != ".gz"]
    if first == "[":
        yield from _stream_values(path, counter, array=True)
    elif suffixes and suffixes[-1] == ".json":
        yield from _stream_values(path, counter, array=False)
    else:
        yield from _jsonl_values(path, counter)


def _jsonl_values(path: Path, counter: Counter[str]) -> Iterator[Any]:
    with _open(path) as f:
        for raw in f:
            if not raw.strip():
                continue
            try:
                yield json.loads(raw)
            except UnicodeDecodeError:
                counter["not UTF-8"] += 1
            except json.JSONDecodeError:
                counter["not JSON"] += 1


_SEPARATORS = re.compile(r"[\s,]*")


def _stream_values(path: Path, counter: Counter[str], *, array: bool) -> Iterator[Any]:
    """JSON values separated by whitespace (and commas inside an array), read in chunks.

    A value that does not decode is retried with more of the file; at the end of the file it is
    truncated. Reading stops there (or at a syntax error inside the array: the next element's start
    cannot be found reliably), counting the rest as one skipped record.
    """
    decoder = json.JSONDecoder()
    with _open(path) as raw:
        reader = _text_reader(raw)
        buffer, eof = "", False
        pos = 0

        def more(size: int) -> bool:
            nonlocal buffer, pos, eof
            if eof:
                return False
            chunk = reader(size)
            if not chunk:
                eof = True
                return False
            buffer = buffer[pos:] + chunk
            pos = 0
            return True

        more(_CHUNK)
        buffer = buffer.lstrip("\ufeff")
        if array:
            start = buffer.index("[")
            pos = start + 1
        want = _CHUNK
        while True:
            pos = _SEPARATORS.match(buffer, pos).end() if array else _skip_space(buffer, pos)
            if pos >= len(buffer) and not more(_CHUNK):
                return
            if pos >= len(buffer):
                continue
            if array and buffer[pos] == "]":
                return
            try:
                value, end = decoder.raw_decode(buffer, pos)
            except json.JSONDecodeError:
                if more(want):  # the value may go on past the buffer: read more (doubling) and retry
                    want *= 2
                    continue
                counter["truncated JSON" if eof else "not JSON"] += 1
                return
            # a number (or true/false/null) at the buffer's end may go on in the next chunk
            if end == len(buffer) and not isinstance(value, (dict, list, str)) and more(want):
                continue
            want = _CHUNK
            pos = end
            yield value


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _text_reader(raw: IO[bytes]) -> Callable[[int], str]:
    """read(n) on bytes, decoded as UTF-8 without ever splitting a character (bad bytes replaced)."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def read(size: int) -> str:
        while True:
            data = raw.read(size)
            text = decoder.decode(data, final=not data)
            if text or not data:
                return text

    return read


# ---- JSON values -> records ----------------------------------------------------------------------------


def _paths(path_or_paths: str | Path | Iterable[str | Path]) -> list[Path]:
    if isinstance(path_or_paths, (str, Path)):
        return [Path(path_or_paths)]
    return [Path(p) for p in path_or_paths]


def _read(path_or_paths: str | Path | Iterable[str | Path], format: str, limit: int | None,
          parse: Callable[[Any, str], T]) -> ReadReport[T]:
    if format not in FORMATS:
        raise ValueError(f"unknown data format {format!r}; choose one of {', '.join(FORMATS)}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    paths = _paths(path_or_paths)
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such data file")
    report: ReadReport[T] = ReadReport([])
    for path in paths:
        for value in iter_json_records(path, report.skipped):
            if limit is not None and len(report.records) >= limit:
                break
            try:
                report.records.append(parse(value, format))
            except RecordError as exc:
                report.skipped[exc.reason] += 1
        if limit is not None and len(report.records) >= limit:
            break
    report.total = len(report.records) + sum(report.skipped.values())
    return report


def read_dialogs(path_or_paths: str | Path | Iterable[str | Path], format: str = "auto",
                 limit: int | None = None) -> ReadReport[Dialog]:
    """SFT dialogs from herd/TRL `messages`, TRL `prompt`+`completion`, or ShareGPT `conversations`.

    `limit` stops after that many good records (the skipped ones before it are still counted).
    """
    return _read(path_or_paths, format, limit, parse_dialog)


def read_preferences(path_or_paths: str | Path | Iterable[str | Path], format: str = "auto",
                     limit: int | None = None) -> ReadReport[Preference]:
    """Ranked preferences from herd `responses`, TRL `chosen`/`rejected`(/`edited`) or ShareGPT ranking."""
    return _read(path_or_paths, format, limit, parse_preference)


def detect_format(record: dict[str, Any], kind: str) -> str:
    """The format a record is in, judged by its keys; "" when none fits."""
    if "conversations" in record:
        return "sharegpt"
    if kind == "dialog":
        return "herd" if "messages" in record else "trl" if "completion" in record else ""
    if "responses" in record:
        return "herd"
    return "trl" if any(k in record for k in ("chosen", "rejected", "edited")) else ""


def parse_dialog(record: Any, format: str = "auto") -> Dialog:
    """One SFT record as a Dialog; raises RecordError with the reason it is malformed."""
    if not isinstance(record, dict):
        raise RecordError("not an object")
    fmt = detect_format(record, "dialog") if format == "auto" else format
    if fmt == "sharegpt":
        return Dialog(_messages(_require(record, "conversations"), "conversations"))
    if fmt in ("herd", "trl") and "messages" in record:
        return Dialog(_messages(record["messages"], "messages"))
    if fmt == "trl" and "completion" in record:
        prompt = _side(_require(record, "prompt"), "prompt", "user")
        return Dialog(prompt + _side(record["completion"], "completion", "assistant"))
    expected = {"sharegpt": "conversations", "herd": "messages", "trl": "messages"}.get(fmt, "messages")
    raise RecordError(f"missing '{expected}'")


def parse_preference(record: Any, format: str = "auto") -> Preference:
    """One preference record as a Preference (responses best first); raises RecordError when malformed."""
    if not isinstance(record, dict):
        raise RecordError("not an object")
    fmt = detect_format(record, "preference") if format == "auto" else format
    strength = parse_strength(record.get("strength"))
    if fmt == "herd":
        prompt = _side(_require(record, "prompt"), "prompt", "user")
        responses = _require(record, "responses")
        if not isinstance(responses, list):
            raise RecordError("'responses' is not a list")
        return Preference(prompt, tuple(_side(r, "responses", "assistant") for r in responses), strength)
    if fmt == "sharegpt":
        prompt = _messages(_require(record, "conversations"), "conversations")
        ranked = [_side(_require(record, key), key, "assistant") for key in ("chosen", "rejected")]
        return Preference(prompt, tuple(ranked), strength)
    if fmt == "trl":
        names = [key for key in ("edited", "chosen", "rejected") if key in record]
        for key in ("chosen", "rejected"):
            _require(record, key)
        if "prompt" in record:
            prompt = _side(record["prompt"], "prompt", "user")
            return Preference(prompt, tuple(_side(record[k], k, "assistant") for k in names), strength)
        return _implicit_prompt([_side(record[k], k, "assistant") for k in names], strength)
    raise RecordError("missing 'chosen'")  # no format fits: name what the most common one (TRL's) needs


def parse_strength(value: Any) -> str | None:
    """'Significantly Better', 'slightly-better', 'marginally_better' -> the STRENGTHS spelling; None stays."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise RecordError("unknown strength")
    name = re.sub(r"[\s\-_]+", "_", value.strip().lower())
    if name not in STRENGTHS:
        raise RecordError("unknown strength")
    return name


def _implicit_prompt(dialogs: list[tuple[Message, ...]], strength: str | None) -> Preference:
    """TRL's implicit prompt: the responses are whole dialogs; the prompt is their longest common prefix."""
    n = 0
    while all(n < len(d) for d in dialogs) and all(_key((d[n],)) == _key((dialogs[0][n],)) for d in dialogs):
        n += 1
    if n == 0:
        raise RecordError("missing 'prompt'")  # nothing shared: no prompt to split off
    return Preference(dialogs[0][:n], tuple(d[n:] for d in dialogs), strength)


def _require(record: dict[str, Any], key: str) -> Any:
    if key not in record or record[key] is None:
        raise RecordError(f"missing '{key}'")
    return record[key]


def _side(value: Any, name: str, role: str) -> tuple[Message, ...]:
    """A prompt or response: a list of messages, one message dict, or plain text (a `role` message)."""
    if isinstance(value, str):
        return (_message({"role": role, "content": value}),)
    if isinstance(value, dict):
        return (_message(value),)
    return _messages(value, name)


def _messages(value: Any, name: str) -> tuple[Message, ...]:
    if not isinstance(value, list):
        raise RecordError(f"'{name}' is not a list")
    if not value:
        raise RecordError(f"empty '{name}'")
    return tuple(_message(m) for m in value)


def _message(value: Any) -> Message:
    """A `{"role", "content"}` (OpenAI/TRL/herd) or `{"from", "value"}` (ShareGPT) dict as a Message."""
    if not isinstance(value, dict):
        raise RecordError("message is not an object")
    if "role" not in value and "from" in value:
        speaker = value["from"]
        role = SHAREGPT_ROLES.get(speaker.strip().lower()) if isinstance(speaker, str) else None
        if role is None:
            raise RecordError(f"unknown role {str(speaker)[:24]!r}")
        value = {"role": role, "content": value.get("value")}
    if "role" not in value:
        raise RecordError("message without 'role'")
    content = value.get("content")
    if isinstance(content, list):  # multimodal-style parts: the text ones joined
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                   for p in content):
            raise RecordError("non-text content")
        value = {**value, "content": "".join(p["text"] for p in content)}
    elif content is not None and not isinstance(content, str):
        raise RecordError("content is not text")
    try:
        return as_message(value)
    except ValueError as exc:
        if "unknown message role" in str(exc):
            raise RecordError(f"unknown role {str(value['role'])[:24]!r}") from None
        if "weight" in str(exc):
            raise RecordError("weight not 0 or 1") from None
        raise RecordError("malformed message") from None
    except (TypeError, KeyError, AttributeError):
        raise RecordError("malformed message") from None


def _check_messages(messages: Sequence[Message], name: str) -> None:
    for m in messages:
        if not m.content.strip() and not m.tool_calls:
            raise RecordError("empty content")


def _key(messages: Sequence[Message]) -> tuple[Any, ...]:
    """A hashable identity of messages (Message itself is a mutable, unhashable dataclass)."""
    return tuple((m.role, m.content, repr(m.tool_calls), m.end_of_message, m.train) for m in messages)
