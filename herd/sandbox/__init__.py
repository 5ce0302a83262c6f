"""Running untrusted code (model-written programs for pass@k, the tools' code interpreter).

Layers, each because the others can fail: namespaces (what the code can see: no network, no host
processes, an allow-listed read-only file system), a per-run unprivileged identity (what it may touch),
rlimits (how much memory, CPU, processes, file size), a seccomp filter (which kernel calls it may make),
an environment allow-list (no host secrets), capped output and a wall clock that kills everything the
code started. `Sandbox(...).run_python(code)` -> `ExecResult`.
"""

from herd.sandbox.result import STATUSES, ExecResult
from herd.sandbox.runner import UNSAFE_ENV, Sandbox, SandboxError, SandboxUnavailable, isolation

__all__ = ["STATUSES", "UNSAFE_ENV", "ExecResult", "Sandbox", "SandboxError", "SandboxUnavailable", "isolation"]
