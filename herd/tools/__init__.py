"""Tools (paper 4.3.5): the code interpreter, math engine and offline search built-ins, zero-shot
function calling (`@tool`), and the multi-step agent loop (`run_agent`).

Names are imported on first use, so `herd --help` (which imports `herd.tools.cli`) stays light."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AgentResult": "herd.tools.agent", "EngineAgentModel": "herd.tools.agent", "Toolbox": "herd.tools.agent",
    "run_agent": "herd.tools.agent", "CodeInterpreter": "herd.tools.code_interpreter",
    "Tool": "herd.tools.function", "tool": "herd.tools.function", "validate_arguments": "herd.tools.function",
    "MathEngine": "herd.tools.math_engine", "Document": "herd.tools.search", "SearchIndex": "herd.tools.search",
    "SearchTool": "herd.tools.search",
}
__all__ = ["AgentResult", "CodeInterpreter", "Document", "EngineAgentModel", "MathEngine", "SearchIndex",
           "SearchTool", "Tool", "Toolbox", "run_agent", "tool", "validate_arguments"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'herd.tools' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
