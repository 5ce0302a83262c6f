"""`herd pretrain CONFIG.toml [--set key=value ...] [--resume PATH|auto]`."""

from __future__ import annotations

import argparse
import sys

from herd.cli_args import add_out_arg
from herd.config import add_recipe_arguments, add_set_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain",
        help="pretrain (or continue) a model from a TOML recipe",
        description=(
            "Train as the TOML recipe says (configs/pretrain/*.toml). Writes <out_dir>/metrics.jsonl, "
            "TensorBoard logs, loss.png and checkpoints; SIGTERM/Ctrl-C saves a checkpoint and exits."
        ),
    )
    add_recipe_arguments(p, "optim.lr=1e-3 --set run.max_steps=50")
    p.add_argument("--resume", default=None, metavar="PATH|auto",
                   help="restore everything from a checkpoint (a step_XXXXXXXX dir or a dir of them); "
                        "'auto' = the newest one in the run's checkpoint dir, if any")
    p.set_defaults(func=run_pretrain)

    j = subparsers.add_parser(
        "judge-data",
        help="annealing to judge a dataset: anneal with and without a candidate source, compare held-out losses",
        description="From CHECKPOINT, anneal (LR linearly to 0 over --tokens) on the recipe's default mix, and again "
        "with --share (default 30%%) of the candidate token shards; report both held-out losses (the paper, 3.1.3).",
    )
    j.add_argument("config", help="TOML recipe (model, optimizer, data sources and mix)")
    j.add_argument("checkpoint", help="training checkpoint (or a directory of them) to anneal from")
    j.add_argument("new_data", help="token-shard directory of the candidate data (from `herd tokenize`)")
    add_out_arg(j, "runs/judge", "output directory")
    j.add_argument("--tokens", type=int, required=True, help="annealing tokens for each of the two runs")
    j.add_argument("--share", type=float, default=0.3, help="candidate share of the annealing mix (default 0.3)")
    add_set_argument(j)
    j.set_defaults(func=run_judge)


def run_judge(args: argparse.Namespace) -> int:
    from herd.train.judge import judge_dataset

    result = judge_dataset(args.config, args.checkpoint, args.new_data, args.out, tokens=args.tokens,
                           new_share=args.share, overrides=args.overrides)
    print(result.summary())
    return 0


def _is_collective_failure(exc: BaseException) -> bool:
    """A torch.distributed error that means a peer is gone or hung (not a bug in this rank)."""
    import torch.distributed as dist

    text = str(exc).lower()
    return isinstance(exc, dist.DistError) or any(
        marker in text for marker in ("connection closed by peer", "timed out", "timeout", "connection reset")
    )


def run_pretrain(args: argparse.Namespace) -> int:
    from herd.config import print_recipe
    from herd.train.config import load_config
    from herd.train.trainer import TrainingError, train

    config = load_config(args.config, args.overrides)
    if args.print_config:
        print_recipe(config, args.config)
        return 0
    from herd.train.parallel.distributed import make_plan

    plan = make_plan(config)
    try:
        result = train(config, resume=args.resume, plan=plan)
    except TrainingError as exc:
        print(f"herd pretrain: error{f' (rank {plan.rank})' if plan.world_size > 1 else ''}: {exc}", file=sys.stderr)
        return 3
    except RuntimeError as exc:
        if plan.world_size == 1 or not _is_collective_failure(exc):
            raise
        print(
            f"herd pretrain: rank {plan.rank} stopped: another rank died, or stopped responding for more than "
            f"{config.parallel.timeout_s:g} s (parallel.timeout_s) during a collective; the job exits instead of "
            f"hanging. Relaunch with --resume auto to continue from the last checkpoint. ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})",
            file=sys.stderr,
        )
        return 4
    finally:
        plan.close()
    if not plan.is_main:
        return 0
    loss = f"{result.final_loss:.4f}" if result.final_loss is not None else "n/a"
    val = f", validation loss {result.val_loss:.4f}" if result.val_loss is not None else ""
    print(
        f"{'stopped by signal' if result.stopped == 'signal' else 'done'}: step {result.steps}, "
        f"{result.tokens:,} tokens, loss {loss}{val}; checkpoint {result.checkpoint}; metrics {result.metrics_path}"
        + (f"; loss curve {result.loss_curve}" if result.loss_curve else "")
    )
    return 0
