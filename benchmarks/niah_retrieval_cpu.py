"""The NIAH gate's standalone experiment: does a tiny model learn key-matched retrieval, and when?

Issue 13's demo gate needs the llama3-demo-sized model to retrieve a needle at 1,008 tokens. The demo's
trainer is too slow to search recipes with, so this loop trains the herd `Transformer` directly on
synthetic retrieval documents (herd.data.synthetic_retrieval.retrieval_example: facts planted in a
haystack, questions at the end, word keys that are never NIAH keys) with the loss **only on the answer
tokens** (the head runs only there, so a step costs the body), and every `--eval-every` steps measures
the NIAH task itself (herd.eval.niah.build_case: pydoc filler, real-word keys, one needle at 10 depths)
at 256 and 1,008 tokens: the teacher-forced loss on the value's tokens (uniform guessing ~6.9 nats) and
greedy exact match.

`--phases` is a curriculum "step:length:facts:batch,...": from each step on, documents of `length` tokens
with `facts` facts, `batch` documents a step. `--lengths` (from step `--mix-from` on) instead draws each
step's document length from a list, single-fact documents, `--tokens-per-step` tokens a step. The
haystacks are Python's own standard-library sources (`--filler code`, the first 120 files of the running
interpreter's lib directory: never the pydoc prose the evaluation uses) or a text file. Results:
benchmarks/RESULTS.md, "Demo NIAH gate".

    .venv/bin/python -u benchmarks/niah_retrieval_cpu.py --steps 2500 --seed 2 --emb-std 0.05 \\
        --phases 0:128:1:32,900:256:1:16,1400:512:2:8,1900:1024:2:4
    # the eighth round's L1: single-fact 128-token documents at LR 3e-3
    .venv/bin/python -u benchmarks/niah_retrieval_cpu.py --steps 3000 --seed 2 --emb-std 0.05 --lr 3e-3 \\
        --phases 0:128:1:32
"""

from __future__ import annotations

import argparse
import math
import random
import sysconfig
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from herd.data.synthetic_retrieval import retrieval_example, word_keys
from herd.eval.niah import build_case, score_response
from herd.model.config import get_config
from herd.model.transformer import Transformer, init_weights
from herd.tokenizer import Llama3Tokenizer

try:
    from host import describe
except ImportError:  # run from another directory
    from benchmarks.host import describe

DEPTHS = (0.1, 0.3, 0.5, 0.7, 0.9, 0.2, 0.4, 0.6, 0.8, 0.5)


def parse_phases(text: str) -> list[tuple[int, int, int, int]]:
    phases = [tuple(int(x) for x in part.split(":")) for part in text.split(",")]
    if not phases or phases[0][0] != 0 or any(len(p) != 4 for p in phases):
        raise SystemExit(f"--phases {text!r}: want 'step:length:facts:batch,...' starting at step 0")
    return phases  # type: ignore[return-value]


def filler_text(spec: str) -> str:
    if spec == "code":
        files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:120]
        return "\n\n".join(f.read_text(encoding="utf-8", errors="ignore") for f in files)
    return Path(spec).read_text(encoding="utf-8")


@torch.no_grad()
def evaluate(model: Transformer, tok: Llama3Tokenizer, cases: dict[int, list]) -> dict[int, tuple[float, float]]:
    """Per NIAH length: (mean teacher-forced loss on the value tokens, greedy exact-match rate)."""
    model.eval()
    out = {}
    for length, group in cases.items():
        losses, hits = [], 0
        for case in group:
            prompt, value = case.queries[0], tok.encode(" " + case.needles[0].value)
            ids = torch.tensor([prompt + value])
            logits = model(ids, select=torch.arange(len(prompt) - 1, len(prompt) - 1 + len(value)))[0]
            losses.append(F.cross_entropy(logits, torch.tensor(value)).item())
            generated = list(prompt)
            for _ in range(3):
                step = model(torch.tensor([generated]), select=torch.tensor([len(generated) - 1]))[0, -1]
                generated.append(int(step.argmax()))
            hits += score_response(tok.decode(generated[len(prompt):]), case.needles[0].value)
        out[length] = (sum(losses) / len(losses), hits / len(group))
    model.train()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-2, help="peak LR: 20 warm-up steps, cosine to 10%%")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--phases", default="0:128:1:32,900:256:1:16,1400:512:2:8,1900:1024:2:4")
    parser.add_argument("--lengths", default="",
                        help="instead of --phases: single-fact documents whose length is drawn per step from "
                             "this list (e.g. 128,256,512,1024), --tokens-per-step tokens a step")
    parser.add_argument("--tokens-per-step", type=int, default=4096)
    parser.add_argument("--mix-from", type=int, default=0, help="--phases before this step, --lengths from it")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--filler", default="code", help="'code' (stdlib sources) or a text file")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--emb-std", type=float, default=0.0, help="re-initialise the (tied) embedding with this std")
    parser.add_argument("--save", default="", help="write the model's state_dict here at every evaluation")
    parser.add_argument("--init", default="", help="start from this state_dict (a --save of an earlier run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    print(describe(), flush=True)
    tok = Llama3Tokenizer()
    model = Transformer(get_config("llama3-demo", n_heads=args.heads, n_kv_heads=args.kv_heads))
    init_weights(model, generator=torch.Generator().manual_seed(args.seed))
    if args.emb_std:
        torch.nn.init.normal_(model.tok_embeddings.weight, std=args.emb_std)
    if args.init:
        model.load_state_dict(torch.load(args.init, map_location="cpu"))
    filler = tok.encode(filler_text(args.filler))
    keys = word_keys(tok)
    phases = parse_phases(args.phases)
    lengths = [int(x) for x in args.lengths.split(",")] if args.lengths else []
    rng = random.Random(args.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    cases = {length: [build_case(tok, length, (d,), seed=100 + i) for i, d in enumerate(DEPTHS)]
             for length in (256, 1008)}
    print(f"filler {len(filler):,} tokens, {sum(p.numel() for p in model.parameters()):,} parameters", flush=True)

    def lr_at(step: int) -> float:
        if step < 20:
            return args.lr * (step + 1) / 20
        return args.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, step / args.steps))))

    start, seen = time.time(), 0
    for step in range(args.steps + 1):
        if lengths and step >= args.mix_from:
            length = rng.choice(lengths)
            facts, batch = 1, max(1, args.tokens_per_step // length)
        else:
            _, length, facts, batch = [p for p in phases if p[0] <= step][-1]
        if step % args.eval_every == 0 or step == args.steps:
            result = evaluate(model, tok, cases)
            print(f"step {step} len {length} | " + " | ".join(f"{k}: {loss:.2f} ({exact:.1f})"
                                                             for k, (loss, exact) in result.items())
                  + f" | {seen / max(time.time() - start, 1e-9):.0f} tok/s {time.time() - start:.0f}s", flush=True)
            if args.save:
                torch.save(model.state_dict(), args.save)
        if step == args.steps:
            break
        docs = [retrieval_example(tok, filler, length - 2, facts, rng, keys=keys) for _ in range(batch)]
        width = max(len(ids) for ids, _ in docs) + 1
        ids = torch.zeros(batch, width, dtype=torch.long)
        targets = torch.full((batch, width), -100)
        for row, (doc, mask) in enumerate(docs):
            full = [tok.bos_id, *doc]
            ids[row, :len(full)] = torch.tensor(full)
            for j, trained in enumerate(mask):
                if trained:
                    targets[row, j] = full[j + 1]  # position j (after BOS) predicts the answer token
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        hidden = model.run_layers(model.embed(ids), torch.arange(width))
        selected = targets != -100
        loss = F.cross_entropy(model.head(hidden[selected].unsqueeze(0))[0], targets[selected])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        seen += batch * width
        if step % 50 == 0:
            print(f"  step {step} answer loss {loss.item():.3f}", flush=True)


if __name__ == "__main__":
    main()
