"""`herd guard`: train the probe guard on the source-split prompt sets, and score a saved one."""

from __future__ import annotations

import argparse
import json
import random
import sys

from herd.cli_args import add_out_arg

EXAMPLE = "herd guard train --out runs/guard && herd guard eval runs/guard"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("guard", help="the input/output guard: train the probe guard, score it on held-out sources",
                              description="Train herd's probe guard (logistic-regression heads on a model's hidden "
                                          "states: P(unsafe) and S-codes) on herd.safety.guard_data's training "
                                          "sources and save it for `herd serve --guard DIR`; `eval` scores a saved "
                                          "guard on the held-out sources (F1, FPR benign/borderline, AUPRC). "
                                          "Example: " + EXAMPLE)
    sub = p.add_subparsers(dest="guard_command", required=True, metavar="ACTION")
    t = sub.add_parser("train", help="train and save a probe guard")
    add_out_arg(t, None, "directory for guard.json + probe.safetensors")
    t.add_argument("--model", default="smollm2-135m-instruct", help="the model whose hidden states are probed")
    t.add_argument("--limit", type=int, default=None, help="train on a random N of the training prompts (quick runs)")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=run_train)
    e = sub.add_parser("eval", help="score a saved guard on the held-out test sources")
    e.add_argument("guard", metavar="DIR")
    e.add_argument("--limit", type=int, default=None, help="a random N of the test prompts")
    e.add_argument("--threshold", type=float, default=0.5)
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=run_eval)


def _subset(examples: list, limit: int | None, seed: int) -> list:  # type: ignore[type-arg]
    if limit is None:
        return examples
    if limit < 2:
        raise ValueError(f"--limit must be >= 2, got {limit}")
    return random.Random(seed).sample(examples, min(limit, len(examples)))


def run_train(args: argparse.Namespace) -> int:
    from herd.loading import load_model
    from herd.safety.guard_data import guard_split
    from herd.safety.probe_guard import ProbeGuard

    train = _subset(guard_split("train"), args.limit, args.seed)
    print(f"herd guard: {len(train)} training prompts; probing {args.model}", file=sys.stderr)
    guard = ProbeGuard(load_model(args.model)).fit(train)
    print(f"saved {guard.save(args.out)}", file=sys.stderr)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from herd.loading import load_model
    from herd.safety.guard_data import guard_split
    from herd.safety.guard_metrics import guard_report
    from herd.safety.probe_guard import ProbeGuard

    meta = Path(args.guard) / "guard.json"
    if not meta.is_file():
        raise FileNotFoundError(f"{args.guard}: no guard.json (train one with `herd guard train --out DIR`)")
    guard = ProbeGuard.load(args.guard, load_model(json.loads(meta.read_text())["base"]))
    test = _subset(guard_split("test"), args.limit, args.seed)
    report = guard_report(guard.score([e.text for e in test]), [e.kind for e in test], args.threshold)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in report.items()}, indent=1))
    return 0
