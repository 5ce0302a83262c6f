"""`herd generate` (one prompt) and `herd chat` (interactive, streaming)."""

from __future__ import annotations

import argparse
import sys

from herd.cli_args import add_device_arg, add_dtype_arg, add_model_arg


def _add_model_and_sampling(p: argparse.ArgumentParser, temperature: float) -> None:
    add_model_arg(p)
    add_device_arg(p)
    add_dtype_arg(p, allow_auto=True)
    p.add_argument("--max-tokens", type=int, default=256, help="most new tokens per reply")
    p.add_argument("--temperature", type=float, default=temperature, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--quantization", default=None, choices=["int8", "fp8", "int4"],
                   help="int8/fp8: FFN weights (the paper's recipe); int4: every projection and the head (CPU decode)")
    p.add_argument("--compile", action="store_true",
                   help="compile the decode step (torch.compile; the first tokens wait ~1 min on a small CPU)")


def register(subparsers: argparse._SubParsersAction) -> None:
    g = subparsers.add_parser("generate", help="complete one prompt", description="Stream a completion.")
    _add_model_and_sampling(g, temperature=0.0)
    g.add_argument("--prompt", required=True, help="text to complete ('-' reads standard input)")
    g.add_argument("--chat", action="store_true", help="wrap the prompt as a user turn in the chat format")
    g.add_argument("--system", default=None, help="system prompt (with --chat)")
    g.set_defaults(func=run_generate)

    c = subparsers.add_parser(
        "chat", help="interactive chat", description="Chat in the terminal. /reset, /system TEXT, Ctrl-D quits."
    )
    _add_model_and_sampling(c, temperature=0.7)
    c.add_argument("--system", default=None, help="initial system prompt")
    c.set_defaults(func=run_chat)


def _load(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from herd.cli_args import resolve_device, warn_if_slow_dtype
    from herd.infer.auto_dtype import load_for_inference
    from herd.infer.sampling import SamplingParams

    params = SamplingParams(
        args.temperature, args.top_p, args.top_k, args.max_tokens, args.seed,
        min_p=args.min_p, repetition_penalty=args.repetition_penalty, stop=tuple(args.stop),
    )
    device = resolve_device(args.device)  # before loading: a bad device fails in a second, not after the load
    warn_if_slow_dtype(args.dtype, device)
    return load_for_inference(args.model, args.dtype, device)[0], params


def run_generate(args: argparse.Namespace) -> int:
    from herd.infer.generate import single_request_engine
    from herd.tokenizer.chat import Message

    loaded, params = _load(args)
    text = sys.stdin.read() if args.prompt == "-" else args.prompt
    if args.chat:
        messages = ([Message(role="system", content=args.system)] if args.system else []) + [
            Message(role="user", content=text)
        ]
        prompt = loaded.chat_format.encode_dialog(messages, add_generation_prompt=True).tokens
    else:
        tokenizer = loaded.tokenizer
        prompt = tokenizer.encode(text, bos=tokenizer.add_bos and tokenizer.bos_id is not None)
    engine = single_request_engine(
        loaded.model, loaded.tokenizer, len(prompt), params.max_tokens,
        quantization=args.quantization, compile=args.compile,
    )
    for out in engine.stream(prompt, params):
        piece = out.outputs[0].delta_text
        if piece:
            sys.stdout.write(piece)
            sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def run_chat(args: argparse.Namespace) -> int:
    from herd.infer.chat_session import ChatSession

    loaded, params = _load(args)
    session = ChatSession(loaded, params, system=args.system, quantization=args.quantization, compile=args.compile)
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"herd chat with {args.model} - /reset clears, /system TEXT sets the system prompt, Ctrl-D quits")
    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:
            if interactive:
                print()
            return 0
        line = line.strip()
        if not line:
            continue
        if line == "/reset":
            session.reset()
            print("[conversation cleared]")
            continue
        if line.startswith("/system"):
            session.set_system(line.removeprefix("/system").strip())
            print(f"[system prompt {'set' if session.system else 'cleared'}]")
            continue
        for piece in session.send(line):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        reply = session.last_reply
        if reply is not None and reply.tool_calls:
            for call in reply.tool_calls:
                print(f"[tool call] {call.name}({call.arguments})")
