"""`herd sft CONFIG.toml` and `herd dpo CONFIG.toml` (post-training on the one training loop)."""

from __future__ import annotations

import argparse
import sys

from herd.config import add_recipe_arguments

EXAMPLE = {
    "sft": "post.train_files=['dialogs.jsonl'] --set run.max_steps=20",
    "dpo": "post.train_files=['prefs.jsonl'] --set dpo.beta=0.1",
}
HELP = {
    "sft": ("supervised fine-tuning on chat dialogs (loss on the assistant's tokens only, packed)",
            ("Fine-tune `post.model` on dialogs (herd JSONL `messages`, TRL conversational, ShareGPT `conversations`). "
            "The loss is on the assistant's bodies and closing tokens (sft.mask = paper) or on everything after the "
            "last generation prompt (completion); dialogs are packed with document masks. Writes <out_dir>/model "
            "(Hugging Face layout with tokenizer), metrics.jsonl, loss.png and checkpoints.")),
    "dpo": ("direct preference optimization with the paper's recipe (beta 0.1, NLL 0.2, formatting tokens masked)",
            ("DPO from `post.model` (also the reference) on ranked preferences (herd `prompt`/`responses`, TRL "
            "`prompt`/`chosen`/`rejected`[/`edited`]). Each prompt is computed once with its responses in one row; "
            "reference log-probs are precomputed and cached. Metrics use TRL's names (rewards/chosen, "
            "rewards/margins, logps/chosen, nll_loss, ...). Writes <out_dir>/model, metrics.jsonl and checkpoints.")),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    for method in ("sft", "dpo"):
        p = subparsers.add_parser(method, help=HELP[method][0], description=HELP[method][1])
        add_recipe_arguments(p, EXAMPLE[method])
        p.add_argument("--resume", default=None, metavar="PATH|auto",
                       help="continue from a checkpoint (a step_XXXXXXXX dir or a dir of them); 'auto' = the newest "
                            "one in the run's checkpoint dir, if any")
        p.set_defaults(func=run_method, method=method)


def run_method(args: argparse.Namespace) -> int:
    from herd.config import print_recipe
    from herd.post.config import load_post_config
    from herd.post.run import run_post
    from herd.train.trainer import TrainingError

    config = load_post_config(args.config, args.overrides)
    if args.print_config:
        print_recipe(config, args.config)
        return 0
    try:
        result, exported = run_post(config, args.method, resume=args.resume)
    except TrainingError as exc:
        print(f"herd {args.method}: error: {exc}", file=sys.stderr)
        return 3
    loss = f"{result.final_loss:.4f}" if result.final_loss is not None else "n/a"
    val = f", validation loss {result.val_loss:.4f}" if result.val_loss is not None else ""
    print(f"{'stopped by signal' if result.stopped == 'signal' else 'done'}: step {result.steps}, loss {loss}{val}; "
          f"checkpoint {result.checkpoint}; metrics {result.metrics_path}"
          + (f"; model {exported}" if exported else "; continue with --resume auto"))
    return 0
