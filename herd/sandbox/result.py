"""The outcome of one run, and how a raw exit becomes one of five statuses.

Callers score code by `status` alone (pass@k needs "did the tests pass", a tool loop needs "what went
wrong" in one word), so the classification lives here, once: "ok" (exit 0), "error" (nonzero exit),
"timeout" (the wall clock ran out; everything the code started is gone), "memory" (the address-space
limit was hit: Python raises MemoryError, or the process died of a failed allocation) and "killed"
(ended by a signal: a crash, the CPU-time limit, its own kill).
"""

from __future__ import annotations

from dataclasses import dataclass, field

STATUSES = ("ok", "error", "timeout", "memory", "killed")
MEMORY_MARKERS = (b"MemoryError", b"Cannot allocate memory", b"std::bad_alloc", b"out of memory")


@dataclass(frozen=True)
class ExecResult:
    """status: one of STATUSES; returncode: the exit code, -signal when killed by a signal, None on
    timeout; stdout/stderr: decoded (UTF-8, invalid bytes replaced), at most max_output_bytes each;
    files: the work directory's regular files after the run (relative path -> bytes, inputs included);
    wall_s: the whole run as the caller waited for it (sandbox start and teardown included);
    truncated: output or files went over their caps and were cut."""

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    files: dict[str, bytes] = field(default_factory=dict)
    wall_s: float = 0.0
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def classify(exit_code: int | None, signal: int | None, timed_out: bool, stderr_tail: bytes) -> tuple[str, int | None]:
    """(status, returncode) from how the main process ended."""
    if timed_out:
        return "timeout", None
    out_of_memory = any(m in stderr_tail for m in MEMORY_MARKERS)
    if signal is not None:
        return ("memory" if out_of_memory else "killed"), -signal
    if exit_code == 0:
        return "ok", 0
    return ("memory" if out_of_memory else "error"), exit_code
