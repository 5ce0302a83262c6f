"""Tools (paper 4.3.5): the code interpreter, math engine and offline search built-ins, zero-shot function calling
(`@tool`), and the multi-step agent loop (`run_agent`)."""

from herd.tools.agent import AgentResult, EngineAgentModel, Toolbox, run_agent
from herd.tools.code_interpreter import CodeInterpreter
from herd.tools.function import Tool, tool, validate_arguments
from herd.tools.math_engine import MathEngine
from herd.tools.search import Document, SearchIndex, SearchTool

__all__ = ["AgentResult", "CodeInterpreter", "Document", "EngineAgentModel", "MathEngine", "SearchIndex", "SearchTool",
           "Tool", "Toolbox", "run_agent", "tool", "validate_arguments"]
