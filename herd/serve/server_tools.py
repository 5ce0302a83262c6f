"""`herd serve --execute-builtin-tools`: the server runs the built-in tools itself.

With it, a chat request in auto tool mode (no `tool_choice`, or `"auto"`) is offered the built-in
tools (`code_interpreter`, `brave_search`, `wolfram_alpha`: `herd.tools`), named in the prompt as the
chat format expects them (Llama 3.1: `Environment: ipython` / `Tools: ...`). When the model calls
only built-ins, the server runs them (the code interpreter and the math engine in the sandbox, with a
working directory kept for the request), appends the call and its result to the dialog and lets the
model go on, up to `max_steps` rounds; the client receives the final answer, streamed like any
other, and the runs in `tool_runs` (non-streamed body) or as SSE comment lines (streamed; OpenAI
clients skip them). A call of a client's own function is returned as usual (`tool_calls`) for the
client to run, and so is a built-in call after the last round. `n` must be 1: each choice would be its
own conversation with its own tool results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from herd.tokenizer.chat import ToolCall


@dataclass
class ServerTools:
    """Which built-in tools the server runs, and its limits per call and per request."""

    builtin: tuple[str, ...]
    timeout_s: float = 10.0
    max_steps: int = 5  # most tool rounds per request
    search_index: Any = None  # a herd.tools.search.SearchIndex; None: the standard-library index
    code_shield: Any = None  # a herd.safety.code_shield.Policy applied to code_interpreter calls
    prompt_guard: Any = None  # a herd.safety.prompt_attack.PromptAttackClassifier scanning tool results

    def __post_init__(self) -> None:
        if not self.builtin:
            raise ValueError("--execute-builtin-tools needs at least one tool (code, math, search)")
        if self.max_steps < 1:
            raise ValueError(f"the server's tool rounds must be >= 1, got {self.max_steps}")

    def toolbox(self) -> Any:
        """The tools of one request (a fresh code-interpreter working directory)."""
        from herd.tools.agent import Toolbox

        return Toolbox(self.builtin, timeout_s=self.timeout_s, search_index=self.search_index,
                       code_shield=self.code_shield, prompt_guard=self.prompt_guard)

    def warm_up(self) -> None:
        """Build (or read from the cache) the search index now, not on the first request that searches."""
        if "brave_search" in self.builtin and self.search_index is None:
            from herd.tools.search import default_index

            self.search_index = default_index()

    def runs_all(self, calls: Sequence[ToolCall]) -> bool:
        """True when every call is a built-in this server runs (a client function goes back to the client)."""
        return bool(calls) and all(c.name in self.builtin for c in calls)
