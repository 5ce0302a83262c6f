"""The `code_interpreter` built-in tool (paper 4.3.5): model-written Python run in `herd.sandbox`.

One `CodeInterpreter` per conversation keeps a working directory across calls: the files a step
writes (and the files the user uploads) are put back into the sandbox for the next step, so a model
can save a CSV in one call and plot it in the next. The result the model reads back is text in
llama-stack's shape (`completed` / `error` / `timeout`, then `[stdout]` and `[stderr]` blocks), plus the
error type of an uncaught exception and the files the step created or changed (PNG plots included),
with stdout and stderr capped. A timeout or a crash is a result for the model, never an exception.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from herd.tools.sandboxed import SandboxedTool

_ERROR_LINE = re.compile(r"^(\w+(?:\.\w+)*(?:Error|Exception|Exit|Interrupt|Warning)|\w+Error)\b[:]?", re.MULTILINE)


@dataclass
class CodeResult:
    status: str  # ok, error, timeout, memory, killed, ... (herd.sandbox.result.STATUSES)
    stdout: str
    stderr: str
    error_type: str | None
    new_files: list[str]
    wall_s: float

    def text(self) -> str:
        """What goes back to the model in the `ipython` message."""
        head = {"ok": "completed", "timeout": "timeout: the code ran past its time limit"}.get(
            self.status, f"error: {self.error_type or self.status}")
        parts = [head]
        if self.stdout:
            parts.append(f"[stdout]\n{self.stdout.rstrip()}\n[/stdout]")
        if self.stderr:
            parts.append(f"[stderr]\n{self.stderr.rstrip()}\n[/stderr]")
        if self.new_files:
            parts.append("files: " + ", ".join(self.new_files))
        return "\n".join(parts)


def _cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit // 2] + f"\n... [{len(text) - limit} characters cut] ...\n" + text[-limit // 2:]


@dataclass
class CodeInterpreter(SandboxedTool):
    """Runs code in the sandbox with a per-conversation working directory (`files`)."""

    max_output_chars: int = 4000
    files: dict[str, bytes] = field(default_factory=dict)

    def upload(self, name: str, data: str | bytes) -> None:
        """Place a user's file in the working directory (readable by the next call)."""
        self.files[name] = data.encode() if isinstance(data, str) else bytes(data)

    def run(self, code: str) -> CodeResult:
        result = self.sandbox.run_python(code, files=dict(self.files))
        changed = sorted(name for name, data in result.files.items() if self.files.get(name) != data)
        if result.files:
            self.files = dict(result.files)
        error_type = None
        if result.status != "ok":
            found = _ERROR_LINE.findall(result.stderr)
            error_type = found[-1] if found else None
        return CodeResult(result.status, _cap(result.stdout, self.max_output_chars),
                          _cap(result.stderr, self.max_output_chars), error_type,
                          [f"{n} ({len(result.files[n])} bytes)" for n in changed], result.wall_s)

    def __call__(self, code: str) -> str:
        return self.run(code).text()
