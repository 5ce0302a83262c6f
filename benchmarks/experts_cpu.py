"""Branch-Train-Stitch in miniature on the local corpus (issue 20): per-domain held-out loss of the seed,
each expert, model soup, task arithmetic, a BTM ensemble and the stitched model.

A byte-level model (256 bytes + BOS/EOS, the `llama3-tiny` recipe with --dim/--layers) is pretrained on
an even mix of the local corpus's general, code and math sources (herd.data.local_corpus: pydoc and
docstrings, the standard library's source, synthetic word problems); each expert continues from it on
90% its domain + 10% general (the paper's code expert: 85% code); the stitches train on 15% per expert
domain + 55% general with the seed and experts frozen. Every run goes through `herd.train`'s loop.

    .venv/bin/python benchmarks/experts_cpu.py --out /tmp/experts [--seed-steps 300 --expert-steps 150 --stitch-steps 150]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
try:
    from host import describe
except ImportError:  # run from another directory
    from benchmarks.host import describe

from herd.data import ShardWriter
from herd.data.local_corpus import build_local_corpus
from herd.experts import BTMEnsemble, StitchedModel, model_soup, task_arithmetic
from herd.experts.train import train_stitches
from herd.model import Transformer
from herd.train import load_config, train
from herd.train.checkpointing import load_model_weights

BOS, EOS, VOCAB = 256, 257, 258
DOMAINS = ("general", "code", "math")
TINY = Path(__file__).resolve().parents[1] / "configs" / "pretrain" / "tiny.toml"


def byte_documents(jsonl: Path, limit: int) -> list[list[int]]:
    docs = []
    for line in jsonl.read_text(encoding="utf-8").splitlines()[:limit]:
        text = json.loads(line)["text"].encode("utf-8")[:4000]
        docs.append([BOS, *text, EOS])
    return docs


def write_domains(out: Path, docs_per_domain: int) -> tuple[dict[str, str], dict[str, list[list[int]]]]:
    """Byte shards per domain (training documents) and the held-out documents per domain (every 10th)."""
    corpus = build_local_corpus(out / "corpus", max_docs_per_source=docs_per_domain, seed=0)
    sources, held_out = {}, {}
    for domain in DOMAINS:
        docs = byte_documents(corpus[domain], docs_per_domain)
        held_out[domain] = docs[::10][:60]  # 60 held-out documents per domain keep the evaluation to a minute
        directory = out / "shards" / domain
        if not (directory / "manifest.json").is_file():
            with ShardWriter(directory, domain, tokenizer={"name": "bytes", "vocab_size": VOCAB},
                             validation_fraction=0.05) as writer:
                writer.add_many([d for i, d in enumerate(docs) if i % 10])
                writer.close()
        sources[domain] = str(directory)
    return sources, held_out


def recipe(sources: dict[str, str], out_dir: Path, mix: dict[str, float], steps: int, args: argparse.Namespace,
           *extra: str):
    sets = [f"data.sources.{name}={path}" for name, path in sources.items()]
    sets.append("data.mix={" + ", ".join(f"{name} = {weight}" for name, weight in mix.items()) + "}")
    sets += [
        f"run.out_dir={out_dir}", "run.device=cpu", f"model.vocab_size={VOCAB}", f"model.dim={args.dim}",
        f"model.n_layers={args.layers}", "log.progress=false", "log.tensorboard=false", "log.plot=false",
        f"run.max_steps={steps}", f"schedule.decay_steps={steps}", f"checkpoint.interval={steps}",
        "schedule.stages=[{after_tokens = 0, batch_size = 8, seq_len = 256}]", "eval.interval=0", *extra,
    ]
    return load_config(TINY, sets)


@torch.no_grad()
def domain_loss(model: torch.nn.Module, docs: list[list[int]], seq_len: int = 256) -> float:
    """Mean next-byte cross-entropy (nats) over the held-out documents, in windows of `seq_len`."""
    model.eval()
    total, count = 0.0, 0
    for doc in docs:
        ids = torch.tensor(doc)
        for start in range(0, len(doc) - 1, seq_len):
            window = ids[start : start + seq_len + 1]
            if len(window) < 2:
                continue
            logits = model(window[None, :-1])
            total += torch.nn.functional.cross_entropy(logits[0].float(), window[1:], reduction="sum").item()
            count += len(window) - 1
    return total / count


def transformer(config, state: dict[str, torch.Tensor]) -> Transformer:
    model = Transformer(config)
    model.load_state_dict(state)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--docs", type=int, default=1500, help="documents per domain from the local corpus")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--stitches", type=int, default=2)
    parser.add_argument("--seed-steps", type=int, default=300)
    parser.add_argument("--expert-steps", type=int, default=150)
    parser.add_argument("--stitch-steps", type=int, default=150)
    parser.add_argument("--general-expert", action="store_true", help="a third expert on general text")
    args = parser.parse_args()
    print(describe(), flush=True)
    began = time.perf_counter()
    sources, held_out = write_domains(args.out, args.docs)
    seed_run = args.out / "seed"
    train(recipe(sources, seed_run, {d: 1 for d in DOMAINS}, args.seed_steps, args))
    experts = {}
    for domain in DOMAINS if args.general_expert else DOMAINS[1:]:
        run = args.out / f"expert-{domain}"
        mix = {domain: 90, "general": 10} if domain != "general" else {"general": 1}
        train(recipe(sources, run, mix, args.expert_steps, args, f"run.init_from={seed_run / 'checkpoints'}",
                     "optim.lr=1e-3"))
        experts[domain] = run / "checkpoints"
    stitch_mix = {d: 15 for d in experts} | {"general": 55}
    train_stitches(recipe(sources, args.out / "stitched", stitch_mix, args.stitch_steps, args, "optim.lr=3e-3"),
                   seed_run / "checkpoints", list(experts.values()), n_stitches=args.stitches, dropout=0.1)
    print(f"training done in {time.perf_counter() - began:.0f} s", flush=True)

    config = recipe(sources, seed_run, {"general": 1}, 10, args).model_config()
    seed_state = load_model_weights(seed_run / "checkpoints")
    expert_states = {d: load_model_weights(p) for d, p in experts.items()}
    seed = transformer(config, seed_state)
    expert_models = {d: transformer(config, s) for d, s in expert_states.items()}
    models: dict[str, torch.nn.Module] = {"seed": seed}
    models |= {f"expert {d}": m for d, m in expert_models.items()}
    models["soup"] = transformer(config, model_soup(list(expert_states.values())))
    best = min((0.25, 0.5, 0.75, 1.0), key=lambda lam: sum(
        domain_loss(transformer(config, task_arithmetic(seed_state, list(expert_states.values()), lam)), held_out[d][:5])
        for d in DOMAINS))
    models[f"task arithmetic (lambda {best})"] = transformer(
        config, task_arithmetic(seed_state, list(expert_states.values()), best))
    models["BTM ensemble"] = BTMEnsemble(list(expert_models.values()))
    stitched = StitchedModel(transformer(config, seed_state), list(expert_models.values()), args.stitches)
    stitched_state = load_model_weights(args.out / "stitched" / "checkpoints")
    stitched.load_state_dict(stitched_state)
    models["stitched (BTS)"] = stitched.eval()
    rows = {}
    for name, model in models.items():
        rows[name] = {d: domain_loss(model, held_out[d]) for d in DOMAINS}
        rows[name]["mean"] = sum(rows[name][d] for d in DOMAINS) / len(DOMAINS)
    print("\n| model | " + " | ".join(DOMAINS) + " | mean |\n|---|" + "---:|" * (len(DOMAINS) + 1))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[d]:.3f}" for d in (*DOMAINS, "mean")) + " |")
    gates = stitched.last_gates(torch.tensor([held_out["math"][0][:256]]))
    print("\nlast stitch's mean gates on a math document (hub, " + ", ".join(experts) + "):",
          [round(float(g), 3) for g in gates[0].mean(0)])
    print(f"bits per byte = nats / ln 2; total {time.perf_counter() - began:.0f} s")
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
