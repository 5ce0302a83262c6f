"""The part the sandboxed tools share: their limits and a sandbox made on first use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SandboxedTool:
    """A tool that runs code in `herd.sandbox` under `timeout_s` and `memory_mb`."""

    timeout_s: float = 10.0
    memory_mb: int = 1024
    _sandbox: Any = field(default=None, repr=False)

    @property
    def sandbox(self) -> Any:
        if self._sandbox is None:  # built on first use: constructing a tool costs nothing
            from herd.sandbox import Sandbox

            self._sandbox = Sandbox(timeout_s=self.timeout_s, memory_mb=self.memory_mb)
        return self._sandbox
