"""Training step time with the plain head + cross-entropy vs the fused chunked one (herd.train.fused_loss).

    .venv/bin/python benchmarks/train_step_cpu.py [--rounds 3] [--steps 3] [--shapes 8x256,2x1024]
    .venv/bin/python benchmarks/train_step_cpu.py --model 12,1,1,1024 --shapes 8x128 --steps 50   # a scaling-law size

One float32 llama3-tiny (4 layers, the real 128,256-token vocabulary, where the head and its loss are
most of a step) run forward + backward through `herd.train.loss.loss_sum`, once with `fused_head=False`
and once with `fused_head=True`, in alternating rounds so both see the same machine state. Prints the
host's CPU flags, the best seconds per step of each and their ratio, and checks that both give the
same loss. With a small vocabulary (`--model dim,layers,heads,vocab`) the fused path is also timed with
the old fixed 256-token chunks, to show what `herd.train.fused_loss.chunk_tokens` changes.
"""

from __future__ import annotations

import argparse
import time

import torch

from herd.model import Transformer, get_config
from herd.train import fused_loss
from herd.train.loss import loss_sum

DEFAULT_CHUNK = fused_loss.DEFAULT_CHUNK_TOKENS

try:
    from host import describe
except ImportError:  # run from another directory
    from benchmarks.host import describe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--shapes", default="8x256,2x1024", help="batch x sequence, comma-separated")
    parser.add_argument("--model", default="", help="dim,layers,heads,vocab instead of llama3-tiny (4 layers)")
    args = parser.parse_args()
    dims = {}
    if args.model:
        dim, layers, heads, vocab = (int(x) for x in args.model.split(","))
        dims = {"dim": dim, "n_layers": layers, "n_heads": heads, "n_kv_heads": heads, "vocab_size": vocab,
                "ffn_dim": max(8, round(dim * 8 / 3 / 8) * 8)}
    variants = {"plain": (False, None), "fused": (True, None)}
    if dims:
        variants["fused, 256-token chunks"] = (True, 256)
    print(f"machine: {describe()}")
    cpu = torch.device("cpu")
    for shape in args.shapes.split(","):
        batch, seq = (int(x) for x in shape.split("x"))
        torch.manual_seed(0)
        model = Transformer(get_config("llama3-tiny", **({"n_layers": 4} | dims), max_seq_len=seq))
        tokens = torch.randint(0, model.config.vocab_size, (batch, seq + 1))
        times: dict[str, list[float]] = {name: [] for name in variants}
        losses: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, (fused, chunk) in variants.items():
                fused_loss.DEFAULT_CHUNK_TOKENS = chunk or DEFAULT_CHUNK
                fused_loss.CHUNK_LOGITS = (chunk or DEFAULT_CHUNK) * (1 if chunk else 128_256)
                start = time.perf_counter()
                for _ in range(args.steps):
                    loss = loss_sum(model, tokens[:, :-1], tokens[:, 1:], (None, None), cpu, None, fused_head=fused)
                    (loss / tokens[:, 1:].numel()).backward()
                    model.zero_grad(set_to_none=True)  # no optimizer step: same weights, comparable losses
                    losses[name] = float(loss.detach()) / tokens[:, 1:].numel()
                times[name].append((time.perf_counter() - start) / args.steps)
        fused_loss.DEFAULT_CHUNK_TOKENS, fused_loss.CHUNK_LOGITS = DEFAULT_CHUNK, DEFAULT_CHUNK * 128_256
        plain = min(times["plain"])
        print(f"{batch}x{seq} ({model.config.vocab_size:,}-token vocabulary): " + "; ".join(
            f"{name} {min(t):.4f} s/step ({batch * seq / min(t):,.0f} tok/s, {plain / min(t):.2f}x plain, "
            f"loss {losses[name]:.5f})" for name, t in times.items()))


if __name__ == "__main__":
    main()
