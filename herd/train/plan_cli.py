"""`herd plan`: memory per GPU and step time of a parallel layout, a layout search, the paper's Table 4."""

from __future__ import annotations

import argparse
import dataclasses

DEFAULT_BATCH_TOKENS = 4 * 2**20  # the paper's first 405B batch (4M tokens)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "plan",
        help="estimate memory per GPU and step time of a 4D-parallel layout (or search for one)",
        description=(
            "Analytic planner for FSDP x tensor x pipeline x context parallelism (assumptions: "
            "herd/train/parallel/planner.py). Give a layout to see its memory breakdown and step time, "
            "--search to rank every layout that fits, or --paper-table to check the Llama 3 paper's Table 4."
        ),
    )
    p.add_argument("--model", default=None, help="model size (herd.model MODEL_SIZES, e.g. llama3-405b)")
    p.add_argument("--gpus", type=int, default=None, help="number of GPUs (world size)")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size (default 1)")
    p.add_argument("--cp", type=int, default=1, help="context-parallel size (default 1)")
    p.add_argument("--pp", type=int, default=1, help="pipeline stages (ranks) (default 1)")
    p.add_argument("--dp-replicate", type=int, default=1, help="HSDP replicas (default 1)")
    p.add_argument("--dp-shard", type=int, default=-1, help="FSDP shard size; -1 = what the others leave (default)")
    p.add_argument("--stages-per-rank", type=int, default=1, help="virtual pipeline stages per rank (interleaved)")
    p.add_argument("--microbatch", type=int, default=1, help="sequences per micro-batch (default 1)")
    p.add_argument("--seq-len", type=int, default=8192, help="training sequence length (default 8192)")
    batch = p.add_mutually_exclusive_group()
    batch.add_argument("--batch-tokens", type=int, default=None,
                       help=f"global batch in tokens (default {DEFAULT_BATCH_TOKENS:,})")
    batch.add_argument("--batch-seqs", type=int, default=None, help="global batch in sequences")
    p.add_argument("--ac", action="store_true", help="activation checkpointing (recompute each layer)")
    p.add_argument("--reshard", choices=["auto", "always", "never"], default="auto",
                   help="FSDP reshard after forward; auto = not with pipelining (the paper)")
    p.add_argument("--activations", choices=["compiled", "eager"], default="compiled",
                   help="which tensors backward keeps: fused/compiled (default) or plain eager")
    p.add_argument("--hardware", choices=["h100", "cpu"], default="h100")
    p.add_argument("--memory-gb", type=float, default=None,
                   help="memory per device (overrides the preset; cpu: required)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="peak TFLOP/s per device (cpu: the measured matmul rate)")
    p.add_argument("--bandwidth-gbs", type=float, default=None, help="cpu: measured copy bandwidth in GB/s")
    p.add_argument("--latency-us", type=float, default=100.0,
                   help="cpu: measured time of a tiny all-reduce in microseconds (default 100)")
    p.add_argument("--search", action="store_true", help="list the layouts that fit, fastest predicted first")
    p.add_argument("--top", type=int, default=15, help="with --search: how many layouts to show (default 15)")
    p.add_argument("--paper-table", action="store_true", help="check the planner against the paper's Table 4 (405B)")
    p.set_defaults(func=run_plan)


def _hardware(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from herd.train.parallel.planner import Hardware, PlanError

    if args.hardware == "cpu":
        given = {"--peak-tflops": args.peak_tflops, "--bandwidth-gbs": args.bandwidth_gbs,
                 "--memory-gb": args.memory_gb}
        missing = [flag for flag, value in given.items() if value is None]
        if missing:
            raise PlanError(f"--hardware cpu needs measured numbers: {', '.join(missing)}")
        return Hardware.cpu(args.peak_tflops * 1e12, args.bandwidth_gbs * 1e9, args.memory_gb * 1e9,
                            latency_s=args.latency_us * 1e-6)
    hw = Hardware.h100()
    if args.memory_gb is not None:
        hw = dataclasses.replace(hw, memory_bytes=args.memory_gb * 1e9)
    if args.peak_tflops is not None:
        hw = dataclasses.replace(hw, peak_flops=args.peak_tflops * 1e12)
    return hw


def _batch_sequences(args: argparse.Namespace) -> int:
    from herd.train.parallel.planner import PlanError

    if args.seq_len < 1:
        raise PlanError(f"--seq-len must be positive, got {args.seq_len}")
    if args.batch_seqs is not None:
        sequences = args.batch_seqs
    else:
        tokens = args.batch_tokens if args.batch_tokens is not None else DEFAULT_BATCH_TOKENS
        if tokens % args.seq_len:
            raise PlanError(f"--batch-tokens {tokens} is not a multiple of --seq-len {args.seq_len}")
        sequences = tokens // args.seq_len
    if sequences < 1:
        raise PlanError(f"the global batch must hold at least one sequence, got {sequences}")
    return sequences


def run_plan(args: argparse.Namespace) -> int:
    from herd.model import get_config
    from herd.train.parallel.planner import Layout, PlanError, estimate, validate_layout
    from herd.train.parallel.planner_table import format_paper_table, format_search, paper_table, search

    hw = _hardware(args)
    if args.paper_table:
        print(format_paper_table(paper_table(hw if args.hardware == "h100" else None)))
        return 0
    if args.model is None or args.gpus is None:
        raise PlanError("give --model and --gpus (or --paper-table)")
    try:
        config = get_config(args.model)
    except KeyError as exc:
        raise PlanError(exc.args[0]) from None
    if args.gpus < 1:
        raise PlanError(f"--gpus must be positive, got {args.gpus}")
    sequences = _batch_sequences(args)
    if args.search:
        results = search(config, args.gpus, args.seq_len, sequences, hw, activations=args.activations)
        print(f"{args.model} on {args.gpus} x {hw.name}, seq {args.seq_len:,}, batch {sequences:,} sequences "
              f"({sequences * args.seq_len:,} tokens): {len(results)} layouts fit")
        if not results:
            print("no layout fits: more GPUs, a shorter sequence or a smaller batch")
            return 1
        print(format_search(results, args.top))
        return 0
    from herd.config import ConfigError, MeshSizes

    try:
        sizes = MeshSizes.resolve(args.gpus, dp_replicate=args.dp_replicate, dp_shard=args.dp_shard, pp=args.pp,
                                  cp=args.cp, tp=args.tp)
    except ConfigError as exc:
        raise PlanError(str(exc).replace("parallel.", "--")) from None
    dp = sizes.dp
    if args.microbatch < 1 or sequences % (dp * args.microbatch):
        raise PlanError(f"the batch of {sequences} sequences does not split into {dp} data-parallel ranks x "
                        f"micro-batches of {args.microbatch} sequence(s)")
    reshard = {"auto": None, "always": True, "never": False}[args.reshard]
    layout = Layout(**vars(sizes), pp_stages_per_rank=args.stages_per_rank, microbatch_sequences=args.microbatch,
                    n_microbatches=sequences // (dp * args.microbatch), activation_checkpointing=args.ac,
                    reshard_after_forward=reshard)
    problems = validate_layout(config, layout, args.gpus, args.seq_len, sequences)
    if problems:
        raise PlanError(f"layout {layout.describe()} for {args.model} cannot run: " + "; ".join(problems))
    result = estimate(config, layout, args.seq_len, sequences, hw, activations=args.activations)
    print(f"{args.model} on {args.gpus} x {hw.name}, seq {args.seq_len:,}, batch {sequences:,} sequences "
          f"({sequences * args.seq_len:,} tokens)")
    print(result.report())
    return 0 if result.fits else 1
