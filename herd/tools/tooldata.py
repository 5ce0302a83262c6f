"""Tool-use SFT data (paper 4.3.5): trajectories from the agent loop, verified, with message-level masks.

`make_tool_data(tasks, teacher, chat_format)` runs each task (`herd.tools.tool_tasks`) through
`run_agent` with real tools (the sandboxed code interpreter and math engine, offline search), keeps
a trajectory only when it verifies, and returns it as an SFT dialog in herd's format:

- verified: the loop ended with an answer (eot), it contains every expected string, the task's
  minimum number of successful calls ran (a no-tool task: no call at all), and for search the answer
  is backed by a result;
- failing tools: a task's injected outages come back to the model as errors and the trajectory must
  recover; an assistant turn whose own call failed (a bug in its program, a bad argument) is kept as
  context but out of the loss (`Message.train=False`, `"weight": 0` in the JSON), so the data teaches
  the fix, not the mistake;
- the dialog is saved as the model is prompted: the tools placed per chat format (Llama 3.1:
  `Environment: ipython` / `Tools:`; ChatML: a tools section), tool results as the format wraps them,
  so `herd posttrain` trains on exactly what `herd agent` and `herd serve` show the model.

Teachers: `OracleTeacher` follows the task's plan (each call built from the previous results, the
answer written from them: synthetic trajectories whose results are real); `EngineAgentModel` (any
herd model) samples its own, `attempts` times per task, the first verified one kept.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from herd.tokenizer.chat import ChatFormat, Message, ToolCall
from herd.tools.agent import AgentResult, Toolbox, prompt_dialog, run_agent
from herd.tools.tool_tasks import OUTAGE, ToolTask

ERROR_PREFIXES = ("error:", "Error:", "timeout")  # a result that says the call itself failed


class OracleTeacher:
    """Replies from a task's plan: the next call built from the results so far, then the final answer."""

    def __init__(self, task: ToolTask) -> None:
        self.task = task

    def respond(self, messages: Sequence[Message]) -> Message:
        results = [m.content for m in messages if m.role == "ipython"]  # outages included: a retry is a step
        if len(results) < len(self.task.plan):
            call = self.task.plan[len(results)](results)
            return Message("assistant", "", tool_calls=[call], end_of_message=True)
        return Message("assistant", self.task.final(results))


class OutageToolbox:
    """A toolbox whose first `outages` calls fail as if the tool were down (the paper's failing tools)."""

    def __init__(self, inner: Toolbox, outages: int) -> None:
        self.inner, self.left = inner, outages

    def run(self, call: ToolCall) -> str:
        if self.left > 0:
            self.left -= 1
            return OUTAGE
        return self.inner.run(call)


def call_failed(result: str) -> bool:
    """True when a tool result reports that the call itself went wrong (not an injected outage)."""
    return result != OUTAGE and result.lstrip().startswith(ERROR_PREFIXES)


def with_message_masks(messages: Sequence[Message]) -> list[Message]:
    """The dialog with every assistant call whose result was its own failure kept out of training."""
    out = list(messages)
    for i, m in enumerate(out):
        if m.role != "assistant" or not m.tool_calls:
            continue
        results = []
        for later in out[i + 1:]:
            if later.role != "ipython":
                break
            results.append(later.content)
        if any(call_failed(r) for r in results):
            out[i] = Message(m.role, m.content, list(m.tool_calls), m.end_of_message, train=False)
    return out


@dataclass
class Verdict:
    ok: bool
    reason: str = "verified"


def verify(task: ToolTask, result: AgentResult) -> Verdict:
    """Is this trajectory one to train on? (See the module docstring for the rules.)"""
    if result.stop_reason != "eot":
        return Verdict(False, f"stopped by {result.stop_reason}")
    answer = result.answer
    if not answer.strip():
        return Verdict(False, "empty answer")
    results = [m.content for m in result.messages if m.role == "ipython"]
    calls = sum(len(m.tool_calls) for m in result.messages if m.role == "assistant")
    if task.category == "no_tool" and calls:
        return Verdict(False, "called a tool for a no-tool question")
    good = sum(1 for r in results if r != OUTAGE and not call_failed(r))
    if good < task.min_calls:
        return Verdict(False, f"{good} successful calls, needs {task.min_calls}")
    missing = [e for e in task.expected if e.lower() not in answer.lower()]
    if missing:
        return Verdict(False, "wrong answer")
    if task.evidence and not any(e.strip("`").lower() in r.lower() for e in task.expected for r in results):
        return Verdict(False, "answer not backed by a result")
    return Verdict(True)


@dataclass
class ToolDataReport:
    tasks: Counter[str] = field(default_factory=Counter)  # per category
    kept: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)  # per reason (last attempt's)
    masked_turns: int = 0
    attempts: int = 0

    def summary(self) -> str:
        lines = [f"kept {sum(self.kept.values())} of {sum(self.tasks.values())} tasks "
                 f"({self.attempts} trajectories run, {self.masked_turns} failed-call turns masked)"]
        lines += [f"  {c}: {self.kept[c]}/{n}" for c, n in sorted(self.tasks.items())]
        if self.rejected:
            lines.append("  rejected: " + ", ".join(f"{n} {r}" for r, n in self.rejected.most_common()))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"tasks": dict(self.tasks), "kept": dict(self.kept), "rejected": dict(self.rejected),
                "masked_turns": self.masked_turns, "attempts": self.attempts}


def new_toolbox(task: ToolTask, timeout_s: float = 10.0, search_index: Any = None) -> Toolbox:
    box = Toolbox(task.tools, timeout_s=timeout_s, search_index=search_index)
    for name, data in task.uploads.items():
        box.interpreter.upload(name, data)
    return box


def upload_note(task: ToolTask) -> str:
    """The user's message: the prompt, and the uploaded files as the paper's file-upload data shows them."""
    if not task.uploads:
        return task.prompt
    files = ", ".join(f"{name} ({len(data.encode())} bytes)" for name, data in task.uploads.items())
    return f"[files uploaded to the working directory: {files}]\n{task.prompt}"


def make_tool_data(
    tasks: Iterable[ToolTask],
    teacher: Callable[[ToolTask, int], Any],
    chat_format: ChatFormat,
    attempts: int = 1,
    max_steps: int = 8,
    timeout_s: float = 10.0,
    search_index: Any = None,
) -> tuple[list[dict[str, Any]], ToolDataReport]:
    """Verified SFT records (herd JSON: `messages` plus `category`, `task_id`, `tools`) and a report.

    `teacher(task, attempt)` returns the model for one trajectory (`respond(messages) -> Message`).
    """
    from herd.post.chatdata.rows import message_json
    from herd.post.records import Dialog, RecordError

    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    report = ToolDataReport()
    records: list[dict[str, Any]] = []
    for task in tasks:
        report.tasks[task.category] += 1
        for attempt in range(attempts):
            report.attempts += 1
            box = new_toolbox(task, timeout_s, search_index)
            tools: Any = OutageToolbox(box, task.outages) if task.outages else box
            result = run_agent(teacher(task, attempt), [Message("user", upload_note(task))], tools,
                               max_steps=max_steps)
            verdict = verify(task, result)
            if not verdict.ok:
                report.rejected[verdict.reason] += 1
                continue
            messages = with_message_masks(result.messages)
            report.masked_turns += sum(1 for m in messages if m.role == "assistant" and not m.train)
            dialog = prompt_dialog(chat_format, messages, task.tools)
            try:
                Dialog(tuple(dialog))
            except RecordError as exc:
                report.rejected[f"not a training dialog: {exc.reason}"] += 1
                continue
            records.append({"messages": [message_json(m) for m in dialog], "category": task.category,
                            "task_id": task.task_id, "tools": list(task.tools)})
            report.kept[task.category] += 1
            break
    return records, report


def write_tool_data(path: str, records: Sequence[dict[str, Any]]) -> None:
    from pathlib import Path

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
