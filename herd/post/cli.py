"""`herd sft CONFIG.toml` and `herd dpo CONFIG.toml` (post-training on the one training loop)."""

from __future__ import annotations

import argparse
import json
import sys

from herd.cli_args import add_out_arg
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


def _add_resume(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", default=None, metavar="PATH|auto",
                   help="continue from a checkpoint (a step_XXXXXXXX dir or a dir of them); 'auto' = the newest "
                        "one in the run's checkpoint dir, if any")


def register(subparsers: argparse._SubParsersAction) -> None:
    for method in ("sft", "dpo"):
        p = subparsers.add_parser(method, help=HELP[method][0], description=HELP[method][1])
        add_recipe_arguments(p, EXAMPLE[method])
        _add_resume(p)
        p.set_defaults(func=run_method, method=method)
    rm = subparsers.add_parser("rm", help="reward model: train (ranking loss, one row per prompt) and score",
                               description="`herd rm train CONFIG.toml` trains a reward model from `post.model`; "
                                           "`herd rm score MODEL --data FILE` scores ranked responses with one.")
    sub = rm.add_subparsers(dest="rm_command", required=True, metavar="COMMAND")
    t = sub.add_parser("train", help="train a reward model (Llama 2's ranking loss without the margin term)",
                       description="Train the trunk of `post.model` with a scalar head read at each response's "
                                   "closing token, on ranked preferences (pairs weaker than rm.min_strength "
                                   "dropped). Writes <out_dir>/model as a Hugging Face LlamaForSequenceClassification.")
    add_recipe_arguments(t, "post.train_files=['prefs.jsonl'] --set rm.min_strength=better")
    _add_resume(t)
    t.set_defaults(func=run_method, method="rm")
    s = sub.add_parser("score", help="score ranked responses with a trained reward model",
                       description="Rewards for every response of every preference record in --data (each prompt "
                                   "computed once); prints the ranking accuracy and writes one JSON line per record.")
    s.add_argument("model", help="a reward model directory (`herd rm train`'s <out_dir>/model)")
    s.add_argument("--data", required=True, nargs="+", help="preference files (herd, TRL or ShareGPT ranking)")
    s.add_argument("--out", default=None, help="JSONL of {index, rewards, correct} (default: none)")
    s.add_argument("--batch-size", type=int, default=8, help="preferences per forward pass (default 8)")
    s.set_defaults(func=run_rm_score)
    register_rs(subparsers)
    register_posttrain(subparsers)


def run_rm_score(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from herd.post.encoding import encode_preference
    from herd.post.records import read_preferences
    from herd.post.reward_model import load_reward_model, preference_rewards
    from herd.tokenizer.chat import chat_format_for

    model, tokenizer = load_reward_model(args.model)
    chat_format = chat_format_for(tokenizer)  # type: ignore[arg-type]
    report = read_preferences(args.data)
    print(f"herd rm score: {report.summary()}", file=sys.stderr)
    prefs = [encode_preference(chat_format, r.prompt, r.responses, "completion", r.strength) for r in report.records]
    right = pairs = 0
    lines = []
    with torch.no_grad():
        for start in range(0, len(prefs), args.batch_size):
            part = prefs[start:start + args.batch_size]
            for offset, rewards in enumerate(preference_rewards(model, part)):
                values = [float(x) for x in rewards]
                correct = [values[i] > values[j] for i in range(len(values)) for j in range(i + 1, len(values))]
                right += sum(correct)
                pairs += len(correct)
                lines.append(json.dumps({"index": start + offset, "rewards": values, "correct": correct}))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    print(f"{len(prefs)} preferences, {pairs} ranked pairs: accuracy {right / max(1, pairs):.3f}"
          + (f"; rewards in {args.out}" if args.out else ""))
    return 0


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


def register_rs(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "rs", help="rejection sampling: K samples per prompt, verifiers, the reward model picks (SFT + preference data)",
        description="For each prompt record (JSONL: prompt, optional capability, answer, constraints, tests) draw "
                    "K samples in one engine request (they share the prompt's KV cache), judge them with the "
                    "verifiers that apply (math answer, format constraints, code tests in the sandbox, the response in the "
                    "prompt's language), score them "
                    "with --rm (each prompt once with its K responses), and write sft.jsonl (best verified sample), "
                    "preferences.jsonl (best vs worst), samples.jsonl and summary.json (pass rate of the selected, a "
                    "random, the reward model's best and any sample). Deterministic under --seed.")
    p.add_argument("--model", default="smollm2-135m-instruct", help="the policy (any model spec)")
    p.add_argument("--prompts", required=True, nargs="+", help="prompt JSONL files")
    add_out_arg(p, None, "output directory: sft.jsonl, preferences.jsonl, samples.jsonl, summary.json")
    p.add_argument("--rm", default=None, help="a reward model directory (`herd rm train`); none: verifiers only")
    p.add_argument("--k", type=int, default=8, help="samples per prompt (the paper: 10-30; default 8)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="use the first N prompts")
    p.add_argument("--system-prompt", action="append", default=[], metavar="CAPABILITY=TEXT",
                   help="system prompt for prompts of a capability (repeatable), e.g. math='Think step by step.'")
    p.add_argument("--verifiers", default="math,format,code,language",
                   help="comma-separated subset of math,format,code,language")
    p.set_defaults(func=run_rs)


def run_rs(args: argparse.Namespace) -> int:
    from pathlib import Path

    from herd.post.rejection import RejectionSamplingConfig, run_rejection_sampling

    systems = {}
    for item in args.system_prompt:
        capability, sep, text = item.partition("=")
        if not sep or not capability:
            raise ValueError(f"--system-prompt takes CAPABILITY=TEXT, got {item!r}")
        systems[capability] = text
    config = RejectionSamplingConfig(k=args.k, temperature=args.temperature, top_p=args.top_p,
                                     max_tokens=args.max_tokens, seed=args.seed, limit=args.limit or 0,
                                     system_prompts=systems, verifiers=[v for v in args.verifiers.split(",") if v])
    summary = run_rejection_sampling(args.model, args.prompts, config, Path(args.out), args.rm)
    print(json.dumps(summary))
    return 0


def register_posttrain(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "posttrain", help="post-training rounds: reward model -> rejection sampling -> SFT -> DPO -> average",
        description="`herd posttrain demo` runs the post-training demo (report in --out/report.md). "
                    "Otherwise: run N rounds of the paper's post-training loop from one recipe (configs/post/posttrain-*.toml): "
                    "[posttrain] model, rounds, prompts, preference_files, sft_files; [rs] sampling; [rm], [sft], "
                    "[dpo] the tables of each stage's recipe; [average] variants (DPO overrides whose models are "
                    "averaged). Every finished stage goes into <out_dir>/manifest.json with its checksum; rerun the "
                    "same command to continue a stopped run.")
    add_recipe_arguments(p, "posttrain.rounds=2")
    add_out_arg(p, "runs/posttrain", "`herd posttrain demo` only: output directory")
    p.add_argument("--scale", type=float, default=1.0,
                   help="`herd posttrain demo` only: multiply prompt counts and steps (0.1: a quick smoke run)")
    p.add_argument("--model", default=None, help="`herd posttrain demo` only: the starting model spec")
    p.set_defaults(func=run_posttrain_command)


def run_posttrain_command(args: argparse.Namespace) -> int:
    from herd.config import print_recipe
    from herd.post.posttrain import load_posttrain_config, run_posttrain

    if args.config == "demo":
        from dataclasses import replace
        from pathlib import Path

        from herd.post.demo import DemoScale, run_demo

        scale = DemoScale().scaled(args.scale)
        if args.model:
            scale = replace(scale, model=args.model)
        run_demo(Path(args.out), scale)
        return 0
    config = load_posttrain_config(args.config, args.overrides)
    if args.print_config:
        print_recipe(config, args.config)
        return 0
    manifest = run_posttrain(config)
    print(f"done: {config.posttrain.rounds} round(s); final model {manifest['final_model']}; "
          f"manifest {config.posttrain.out_dir}/manifest.json")
    return 0
