"""`herd tooldata`: verified tool-use trajectories (real tools) as SFT dialogs with message-level masks."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from herd.post.encoding import encode_sft
from herd.post.records import read_dialogs
from herd.tokenizer import Llama3Tokenizer
from herd.tokenizer.chat import Message, ToolCall, as_message
from herd.tokenizer.llama3_chat import Llama3ChatFormat
from herd.tools.agent import Toolbox, run_agent
from herd.tools.tool_tasks import CATEGORIES, OUTAGE, ToolTask, generate_tasks, math_query
from herd.tools.tooldata import OracleTeacher, make_tool_data, verify, with_message_masks


@pytest.fixture(scope="module")
def llama3() -> Llama3ChatFormat:
    return Llama3ChatFormat(Llama3Tokenizer())


@pytest.fixture(scope="module")
def oracle_data(llama3):
    return make_tool_data(generate_tasks(12, seed=3), lambda task, attempt: OracleTeacher(task), llama3)


class Scripted:
    """A teacher that replies from a fixed list."""

    def __init__(self, replies: Sequence[Message]) -> None:
        self.replies = list(replies)

    def respond(self, messages):  # type: ignore[no-untyped-def]
        return self.replies.pop(0)


def test_the_oracle_covers_every_category_with_verified_real_tool_results(oracle_data, llama3):
    records, report = oracle_data
    assert report.kept == report.tasks and set(report.tasks) == set(CATEGORIES)
    by_category = {}
    for r in records:
        by_category.setdefault(r["category"], []).append(r["messages"])
    calls = {c: [sum(len(m.get("tool_calls", [])) for m in msgs) for msgs in dialogs]
             for c, dialogs in by_category.items()}
    assert all(n == 0 for n in calls["no_tool"])
    assert all(n >= 2 for n in calls["multi_step"] + calls["upload"])
    assert all(n == 4 for n in calls["long"]) and all(n == 1 for n in calls["single"])
    # the tools really ran: the sandbox's output and the math engine's sections are in the results
    text = json.dumps(records)
    assert "[stdout]" in text and "Decimal approximation" in text and OUTAGE in text
    # as the model is prompted: Llama 3.1's tools system prompt, ipython results, eom after a call
    dialog = by_category["multi_step"][0]
    assert dialog[0]["role"] == "system" and dialog[0]["content"].startswith("Environment: ipython\nTools: wolfram_alpha")
    assert dialog[2]["tool_calls"][0]["function"]["name"] == "wolfram_alpha" and dialog[2]["end_of_message"]
    assert dialog[3]["role"] == "ipython" and dialog[3]["content"].startswith("Input interpretation:")


def test_a_failed_call_is_context_not_a_target(oracle_data, llama3, tmp_path):
    records, report = oracle_data
    assert report.masked_turns == 1  # the buggy program of the one failing_tool task of that kind
    path = tmp_path / "tools.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    dialogs = read_dialogs(path).records
    assert len(dialogs) == len(records)
    (buggy,) = [d for d in dialogs if any(not m.train for m in d.messages)]
    masked = next(m for m in buggy.messages if not m.train)
    assert "math.comb" in masked.tool_calls[0].arguments["code"] and "import" not in masked.tool_calls[0].arguments["code"]
    enc = encode_sft(llama3, list(buggy.messages))
    trained = llama3.tokenizer.decode([t for t, m in zip(enc.tokens, enc.loss_mask, strict=True) if m])
    assert "import math" in trained and "There are" in trained
    assert trained.count("math.comb") == 1  # the fixed call only
    # the outage case retries the same call: both calls are targets
    outage = next(d for d in dialogs if any(m.content == OUTAGE for m in d.messages))
    assert all(m.train for m in outage.messages)


def test_weight_zero_is_openai_fine_tuning_json_and_both_formats_honour_it(llama3, smollm2_path):
    from serve_helpers import shared_model

    message = as_message({"role": "assistant", "content": "x", "weight": 0})
    assert message.train is False and as_message({"role": "assistant", "content": "x"}).train
    with pytest.raises(ValueError, match="weight must be 0 or 1"):
        as_message({"role": "assistant", "content": "x", "weight": 0.5})
    chatml = shared_model().chat_format
    for fmt in (llama3, chatml):
        msgs = [Message("user", "Hi"), Message("assistant", "Wrong.", train=False), Message("user", "Again?"),
                Message("assistant", "Right.")]
        enc = encode_sft(fmt, msgs)
        trained = fmt.tokenizer.decode([t for t, m in zip(enc.tokens, enc.loss_mask, strict=True) if m])
        assert "Right." in trained and "Wrong." not in trained


def test_records_with_a_bad_weight_are_skipped_by_reason(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "a"},
                                             {"role": "assistant", "content": "b", "weight": 3}]}) + "\n")
    report = read_dialogs(path)
    assert report.records == [] and report.skipped == {"weight not 0 or 1": 1}


def _run(task: ToolTask, replies: Sequence[Message], max_steps: int = 8):  # type: ignore[no-untyped-def]
    return run_agent(Scripted(replies), [Message("user", task.prompt)], Toolbox(task.tools), max_steps=max_steps)


def test_verification_rejects_wrong_lazy_and_unneeded_trajectories():
    tasks = generate_tasks(6, seed=1)
    single, no_tool = tasks[0], tasks[5]
    assert single.category == "single" and no_tool.category == "no_tool"
    call = single.plan[0]([])
    right = f"It is {single.expected[0]}."
    assert verify(single, _run(single, [Message("assistant", "", [call], True), Message("assistant", right)])).ok
    wrong = _run(single, [Message("assistant", "", [call], True), Message("assistant", "It is 7.")])
    assert verify(single, wrong).reason == "wrong answer"
    lazy = _run(single, [Message("assistant", right)])  # the right number without running anything
    assert verify(single, lazy).reason == "0 successful calls, needs 1"
    needless = _run(no_tool, [Message("assistant", "", [math_query("1+1")], True),
                              Message("assistant", no_tool.final([]))])
    assert verify(no_tool, needless).reason == "called a tool for a no-tool question"
    looping = _run(single, [Message("assistant", "", [call], True)] * 2, max_steps=2)
    assert verify(single, looping).reason == "stopped by max_steps"


def test_a_search_answer_must_be_backed_by_a_result():
    from herd.tools.search import Document, SearchIndex

    task = generate_tasks(3, ["single"], seed=0)[2]
    assert task.evidence and task.expected == ("`json`",)
    unrelated = SearchIndex.build([Document("csv", "https://docs.python.org/3/library/csv.html", "CSV files")])
    records, report = make_tool_data([task], lambda t, a: OracleTeacher(t), Llama3ChatFormat(Llama3Tokenizer()),
                                     search_index=unrelated)
    assert records == [] and report.rejected == {"wrong answer": 1}
    liar = Scripted([Message("assistant", "", [ToolCall("brave_search", {"query": "csv"})], True),
                     Message("assistant", "Use the `json` module.")])
    result = run_agent(liar, [Message("user", task.prompt)], Toolbox(task.tools, search_index=unrelated))
    assert verify(task, result).reason == "answer not backed by a result"


def test_message_masks_leave_outages_and_successes_trained():
    dialog = [Message("user", "q"),
              Message("assistant", "", [ToolCall("code_interpreter", {"code": "1/0"})], True),
              Message("ipython", "error: ZeroDivisionError\n[stderr]\n...\n[/stderr]"),
              Message("assistant", "", [ToolCall("code_interpreter", {"code": "print(1)"})], True),
              Message("ipython", OUTAGE),
              Message("assistant", "", [ToolCall("code_interpreter", {"code": "print(1)"})], True),
              Message("ipython", "completed\n[stdout]\n1\n[/stdout]"),
              Message("assistant", "1")]
    assert [m.train for m in with_message_masks(dialog) if m.role == "assistant"] == [False, True, True, True]


def test_tooldata_command_writes_dialogs_and_a_report(tmp_path: Path):
    out = tmp_path / "tooldata"
    proc = subprocess.run([sys.executable, "-m", "herd", "tooldata", "--out", str(out), "--n", "4",
                           "--categories", "no_tool,failing_tool"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in (out / "tools.jsonl").read_text().splitlines()]
    assert [r["category"] for r in lines] == ["no_tool", "failing_tool", "no_tool", "failing_tool"]
    # SmolLM2's ChatML: built-ins offered as functions, results wrapped in <tool_response>
    assert "<tools>" in lines[1]["messages"][0]["content"]
    assert lines[1]["messages"][3]["content"].startswith("<tool_response>\n")
    report = json.loads((out / "report.json").read_text())
    assert report["kept"] == {"no_tool": 2, "failing_tool": 2} and report["teacher"] == "oracle"
    assert "kept 4 of 4 tasks" in proc.stderr
    bad = subprocess.run([sys.executable, "-m", "herd", "tooldata", "--out", str(out), "--categories", "poems"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "unknown tool-data categories ['poems']" in bad.stderr
