"""`herd mm vqa`: train an image adapter around a frozen chat model on synthetic scenes and score it."""

from __future__ import annotations

import argparse
import json
import sys

from herd.cli_args import add_out_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("mm", help="multimodal adapters: image cross-attention around a frozen model",
                              description="The paper's section 7: compositional adapters on a frozen language model.")
    sub = p.add_subparsers(dest="mm_command", required=True, metavar="SUBCOMMAND")
    v = sub.add_parser("vqa", help="train an image adapter on synthetic scenes (frozen SmolLM2 + EfficientNet-Lite0) "
                                   "and score it on fresh scenes and held-out colour-shape pairs",
                       description="Renders scenes of 2-3 coloured shapes, trains the projection, the gated "
                                   "cross-attention layers and the image-token row with the language model "
                                   "frozen, and writes report.json and adapter.safetensors.")
    v.add_argument("--model", default="smollm2-135m-instruct", help="the frozen chat model (ChatML)")
    v.add_argument("--train", type=int, default=2048, help="training questions (default 2048)")
    v.add_argument("--steps", type=int, default=160, help="optimizer steps (default 160)")
    v.add_argument("--batch", type=int, default=16, help="questions per step (default 16)")
    v.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default 3e-3; the gates get 10x)")
    v.add_argument("--gate-lr-scale", type=float, default=10.0,
                   help="learning-rate multiple for the tanh gates, which start closed (default 10)")
    v.add_argument("--eval", type=int, default=300, help="test questions of each kind of scene (default 300)")
    v.add_argument("--image-size", type=int, default=160, help="scene size in pixels, a multiple of 32 (default 160)")
    v.add_argument("--cross-layers", type=int, default=8, help="cross-attention layers (default 8)")
    v.add_argument("--seed", type=int, default=0)
    add_out_arg(v, "runs/mm-vqa", "run directory")
    v.set_defaults(func=run_vqa_cmd)


def run_vqa_cmd(args: argparse.Namespace) -> int:
    from herd.multimodal.vqa import VQASettings, run_vqa

    settings = VQASettings(train=args.train, steps=args.steps, batch=args.batch, lr=args.lr, eval=args.eval,
                           image_size=args.image_size, cross_layers=args.cross_layers, seed=args.seed,
                           gate_lr_scale=args.gate_lr_scale)
    report = run_vqa(args.out, settings, args.model, log=lambda m: print(m, file=sys.stderr, flush=True))
    summary = {"fresh": report["fresh"]["all"]["accuracy"], "held_out": report["held_out"]["all"]["accuracy"],
               "per_kind_fresh": {k: v["accuracy"] for k, v in report["fresh"].items() if k != "all"},
               "language_model_unchanged": report["language_model_unchanged"],
               "seconds": round(report["seconds"]["total"], 1), "out": str(args.out)}
    print(json.dumps(summary, indent=2))
    return 0
