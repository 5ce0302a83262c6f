"""Tools (paper 4.3.5): the code interpreter and math engine built-ins, zero-shot function calling
(`@tool`), and the multi-step agent loop (`run_agent`)."""

from herd.tools.agent import AgentResult, EngineAgentModel, Toolbox, run_agent
from herd.tools.code_interpreter import CodeInterpreter
from herd.tools.function import Tool, tool, validate_arguments
from herd.tools.math_engine import MathEngine

__all__ = ["AgentResult", "CodeInterpreter", "EngineAgentModel", "MathEngine", "Tool", "Toolbox", "run_agent",
           "tool", "validate_arguments"]
