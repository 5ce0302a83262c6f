"""`herd serve`: the OpenAI-compatible API and the web chat page over the batching engine."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from herd.cli_args import add_device_arg, add_dtype_arg, add_model_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="OpenAI-compatible HTTP server with a web chat page",
        description="Serve a model over HTTP: /v1/chat/completions, /v1/completions, /v1/models, /health, "
        "/metrics, and a chat page at /.",
    )
    add_model_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: all)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("HERD_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1 routes (default: $HERD_API_KEY, else none)")
    p.add_argument("--served-model-name", default=None, help="the model id clients use (default: --model)")
    add_dtype_arg(p, allow_auto=True)
    add_device_arg(p)
    p.add_argument("--max-num-seqs", type=int, default=None, help="most sequences in one engine step")
    p.add_argument("--max-batched-tokens", type=int, default=None, help="token budget per engine step")
    p.add_argument("--block-size", type=int, default=None, help="KV cache block size in tokens")
    p.add_argument("--num-blocks", type=int, default=None, help="KV cache blocks (default: from --kv-cache-gb)")
    p.add_argument("--kv-cache-gb", type=float, default=None, help="KV cache size in GiB")
    p.add_argument("--no-prefix-caching", action="store_true", help="do not share cached prompt prefixes")
    p.add_argument("--quantization", default=None, choices=["int8", "fp8", "int4"],
                   help="int8/fp8: FFN weights (the paper's recipe); int4: every projection and the head (CPU decode)")
    p.add_argument("--compile", action="store_true",
                   help="compile the decode step with torch.compile before serving (CPU: ~1 min the first time, "
                        "seconds from the on-disk cache; /health answers once it is ready)")
    p.add_argument("--execute-builtin-tools", nargs="?", const="code,math,search", default=None, metavar="TOOLS",
                   help="run built-in tool calls server-side (comma-separated subset of code,math,search; "
                        "no value: all three): in auto tool mode the model is offered them, the server runs "
                        "its calls (code and math in the sandbox, search over the offline index) and "
                        "streams the final answer")
    p.add_argument("--tool-timeout", type=float, default=10.0, help="seconds per server-side tool call (default 10)")
    p.add_argument("--max-tool-rounds", type=int, default=5,
                   help="most server-side tool rounds per request (default 5)")
    p.add_argument("--code-shield", default=None, choices=["block", "warn", "off"],
                   help="the insecure-code shield: scans the fenced code of answers (block: a high/critical finding "
                        "turns the answer into the canned refusal, finish_reason content_filter) and server-side "
                        "code_interpreter calls (which it blocks by default even without this flag)")
    p.add_argument("--guard", default=None, metavar="DIR",
                   help="input/output guard: a herd probe guard directory (herd.safety.probe_guard.ProbeGuard.save); "
                        "flagged requests never reach the model, flagged answers become the canned refusal "
                        "(finish_reason content_filter; streams are checked in windows); enables /v1/moderations")
    p.add_argument("--guard-exclude", default="", metavar="S6,S8",
                   help="hazard categories this deployment allows (comma-separated S-codes)")
    p.add_argument("--prompt-guard", default=None, metavar="DIR",
                   help="the prompt-attack classifier (`herd guard train --kind attack`): a request whose last user "
                        "turn is a jailbreak, or whose tool results carry an injection, is blocked like a "
                        "guard-flagged one; server-side tool results it flags are withheld from the model")
    p.add_argument("--guard-window", type=int, default=200,
                   help="characters of a streamed answer held back per output-guard check (default 200)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=run_serve)


def engine_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from herd.infer.engine import EngineConfig

    values = {
        "max_num_seqs": args.max_num_seqs,
        "max_batched_tokens": args.max_batched_tokens,
        "block_size": args.block_size,
        "num_blocks": args.num_blocks,
        "kv_cache_bytes": None if args.kv_cache_gb is None else int(args.kv_cache_gb * (1 << 30)),
        "quantization": args.quantization,
    }
    config = EngineConfig(**{k: v for k, v in values.items() if v is not None})
    if args.no_prefix_caching:
        config.enable_prefix_caching = False
    if args.compile:
        config.compile = True
    return config


def load_prompt_guard(args: argparse.Namespace, log):  # type: ignore[no-untyped-def]
    """The classifier of --prompt-guard, or None."""
    if getattr(args, "prompt_guard", None) is None:
        return None
    from herd.safety.prompt_attack import PromptAttackClassifier

    classifier = PromptAttackClassifier.load(args.prompt_guard)
    log.info("prompt-attack classifier: %s (threshold %.2f)", args.prompt_guard, classifier.threshold)
    return classifier


def serve_guard(args: argparse.Namespace, loaded, log, prompt_attack=None):  # type: ignore[no-untyped-def]
    """The ServeGuard of --guard / --guard-exclude / --code-shield / --prompt-guard, or None."""
    shield_mode = args.code_shield if args.code_shield in ("block", "warn") else None
    if args.guard is None and shield_mode is None and prompt_attack is None:
        if args.guard_exclude:
            raise ValueError("--guard-exclude needs --guard")
        return None
    from herd.safety.taxonomy import parse_codes
    from herd.serve.guarding import ServeGuard

    guard_model = None
    if args.guard is not None:
        from herd.safety.probe_guard import load_guard

        guard_model = load_guard(args.guard, loaded)
        log.info("guard: %s on %s", args.guard, guard_model.loaded.source)
    shield = None
    if shield_mode is not None:
        from herd.safety.code_shield import Policy

        shield = Policy.from_mode(shield_mode)
    return ServeGuard(guard_model, tuple(parse_codes(args.guard_exclude, "--guard-exclude categories")),
                      shield, args.guard_window, prompt_attack)


def run_serve(args: argparse.Namespace) -> int:
    from herd.cli_args import require_extra, resolve_device, warn_if_slow_dtype

    require_extra("serve", "fastapi", "uvicorn")
    device = resolve_device(args.device)
    import uvicorn

    from herd.infer.async_engine import AsyncEngine
    from herd.infer.auto_dtype import load_for_inference
    from herd.infer.engine import LLMEngine
    from herd.serve.app import create_app

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("herd.serve")
    server_tools = None
    prompt_attack = load_prompt_guard(args, log)
    if args.execute_builtin_tools is not None:
        from herd.serve.server_tools import ServerTools
        from herd.tools.agent import builtin_tool_names

        shield = None
        if (args.code_shield or "block") != "off":
            from herd.safety.code_shield import Policy

            shield = Policy.from_mode(args.code_shield or "block")
        server_tools = ServerTools(tuple(builtin_tool_names(args.execute_builtin_tools, "--execute-builtin-tools")),
                                   timeout_s=args.tool_timeout, max_steps=args.max_tool_rounds, code_shield=shield,
                                   prompt_guard=prompt_attack)
        server_tools.warm_up()
        log.info("built-in tools run server-side: %s", ", ".join(server_tools.builtin))
    log.info("loading %s on %s", args.model, device)
    warn_if_slow_dtype(args.dtype, device)
    loaded = load_for_inference(args.model, args.dtype, device)[0]
    llm = LLMEngine(loaded, engine_config(args))
    if args.compile:
        # the port opens (and /health answers) only once the compiled graphs exist: the first request
        # must not wait a minute for torch.compile
        log.info("compiling the decode step (or loading it from the cache) before serving")
        log.info("decode graphs ready in %.1f s", llm.warm_up())
    guard = serve_guard(args, loaded, log, prompt_attack)
    engine = AsyncEngine(llm)
    name = args.served_model_name or args.model
    app = create_app(engine, loaded, name, api_key=args.api_key, server_tools=server_tools, guard=guard)
    shown_host = "localhost" if args.host in ("0.0.0.0", "::") else args.host
    url = f"http://{shown_host}:{args.port}"
    log.info("serving %s at %s (web chat: %s/ , API: %s/v1)%s", name, url, url, url,
             " - API key required" if args.api_key else "")
    print(f"herd serve: {name} at {url}/  (OpenAI API at {url}/v1)", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run()
    finally:
        engine.shutdown()
    return 0
