"""`herd agent`: the tool loop in the terminal, one-shot (`--prompt`) or interactive."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

from herd.cli_args import add_device_arg, add_dtype_arg, add_model_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "agent", help="multi-step tool use: the model calls tools, sees their results, answers",
        description="Run the paper's tool loop: the model calls a tool (ending its turn with eom), herd runs it "
                    "(code: Python in the sandbox with a working directory kept for the conversation; math: "
                    "SymPy in the sandbox; search: BM25 over the standard library's docs, offline; custom: the @tool functions of --tool-module), appends the result "
                    "and asks again until the model answers without a call or --max-steps turns have run. "
                    "Every step is printed with its time. Without --prompt: an interactive session "
                    "(/reset starts over, Ctrl-D quits). Example: herd agent --tools code,math "
                    "--prompt 'What is the integral of x^2 sin x from 0 to pi?'")
    add_model_arg(p)
    add_device_arg(p)
    add_dtype_arg(p, allow_auto=True)
    p.add_argument("--tools", default="code,math,search", help="built-in tools: comma-separated subset of "
                   "code,math,search (empty: none)")
    p.add_argument("--tool-module", default=None, metavar="FILE.py",
                   help="a Python file whose @herd.tools.tool functions are offered as custom tools")
    p.add_argument("--prompt", default=None, help="one request; without it, an interactive session")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--upload", action="append", default=[], metavar="FILE",
                   help="a file placed in the code interpreter's working directory (repeatable)")
    p.add_argument("--max-steps", type=int, default=10, help="most model turns per request (default 10)")
    p.add_argument("--max-tokens", type=int, default=512, help="most new tokens per model turn")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per tool call (default 10)")
    p.add_argument("--code-shield", default="off", choices=["block", "warn", "off"],
                   help="scan code_interpreter calls with herd's insecure-code shield before they run: block "
                        "(high/critical findings never run; medium runs with a warning), warn, off (default)")
    p.add_argument("--prompt-guard", default=None, metavar="DIR",
                   help="scan every tool result with a prompt-attack classifier (`herd guard train --kind attack`): "
                        "a result flagged as an injection or jailbreak is withheld from the model")
    p.set_defaults(func=run_agent_command)


def load_tool_module(path: str) -> list[Any]:
    """The `Tool` objects a user's module defines (module-level names decorated with @tool)."""
    from herd.tools.function import Tool

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--tool-module {path}: no such file")
    spec = importlib.util.spec_from_file_location(f"herd_user_tools_{file.stem}", file)
    if spec is None or spec.loader is None:
        raise ValueError(f"--tool-module {path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tools = [v for v in vars(module).values() if isinstance(v, Tool)]
    if not tools:
        raise ValueError(f"--tool-module {path}: defines no @herd.tools.tool function")
    return tools


def run_agent_command(args: argparse.Namespace) -> int:
    from herd.cli_args import resolve_device
    from herd.infer.auto_dtype import load_for_inference
    from herd.tokenizer.chat import Message
    from herd.tools.agent import EngineAgentModel, Toolbox, builtin_tool_names, run_agent

    builtin = builtin_tool_names(args.tools)
    if args.max_steps < 1:
        raise ValueError(f"--max-steps must be >= 1, got {args.max_steps}")
    custom = load_tool_module(args.tool_module) if args.tool_module else []
    uploads = {}
    for path in args.upload:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--upload {path}: no such file")
        uploads[Path(path).name] = Path(path).read_bytes()
    shield = None
    if args.code_shield != "off":
        from herd.safety.code_shield import Policy

        shield = Policy.from_mode(args.code_shield)
    prompt_guard = None
    if args.prompt_guard is not None:
        from herd.safety.prompt_attack import PromptAttackClassifier

        prompt_guard = PromptAttackClassifier.load(args.prompt_guard)
    device = resolve_device(args.device)
    loaded = load_for_inference(args.model, args.dtype, device)[0]

    def new_toolbox() -> Toolbox:
        box = Toolbox(builtin, custom, timeout_s=args.timeout, code_shield=shield, prompt_guard=prompt_guard)
        if uploads and "code_interpreter" in box.builtin:
            for name, data in uploads.items():
                box.interpreter.upload(name, data)
        return box

    toolbox = new_toolbox()
    model = EngineAgentModel(loaded, toolbox, max_tokens=args.max_tokens, temperature=args.temperature)
    history: list[Message] = [Message("system", args.system)] if args.system else []

    def ask(text: str) -> None:
        history.append(Message("user", text))
        result = run_agent(model, history, toolbox, max_steps=args.max_steps, log=sys.stderr)
        history[:] = result.messages
        print(result.answer if result.stop_reason == "eot" else f"[stopped: {result.stop_reason}]", flush=True)

    if args.prompt is not None:
        ask(args.prompt)
        return 0
    print(f"herd agent ({args.model}; tools: {', '.join(toolbox.builtin + list(toolbox.custom)) or 'none'}); "
          "/reset starts over, Ctrl-D quits", file=sys.stderr)
    while True:
        try:
            line = input("> ").strip()
        except EOFError:
            return 0
        if line == "/reset":
            toolbox = new_toolbox()
            model.tools = toolbox
            del history[1 if args.system else 0:]
            continue
        if line:
            ask(line)
