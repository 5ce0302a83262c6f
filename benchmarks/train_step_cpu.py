"""Training step time with the plain head + cross-entropy vs the fused chunked one (herd.train.fused_loss).

    .venv/bin/python benchmarks/train_step_cpu.py [--rounds 3] [--steps 3] [--shapes 8x256,2x1024]

One float32 llama3-tiny (4 layers, the real 128,256-token vocabulary, where the head and its loss are
most of a step) run forward + backward through `herd.train.loss.loss_sum`, once with `fused_head=False`
and once with `fused_head=True`, in alternating rounds so both see the same machine state. Prints the
host's CPU flags, the best seconds per step of each and their ratio, and checks that both give the
same loss.
"""

from __future__ import annotations

import argparse
import time

import torch

from herd.model import Transformer, get_config
from herd.train.loss import loss_sum

try:
    from host import describe
except ImportError:  # run from another directory
    from benchmarks.host import describe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--shapes", default="8x256,2x1024", help="batch x sequence, comma-separated")
    args = parser.parse_args()
    print(f"machine: {describe()}")
    cpu = torch.device("cpu")
    for shape in args.shapes.split(","):
        batch, seq = (int(x) for x in shape.split("x"))
        torch.manual_seed(0)
        model = Transformer(get_config("llama3-tiny", n_layers=4, max_seq_len=seq))
        tokens = torch.randint(0, model.config.vocab_size, (batch, seq + 1))
        times: dict[bool, list[float]] = {False: [], True: []}
        losses: dict[bool, float] = {}
        for _ in range(args.rounds):
            for fused in (False, True):
                start = time.perf_counter()
                for _ in range(args.steps):
                    loss = loss_sum(model, tokens[:, :-1], tokens[:, 1:], (None, None), cpu, None, fused_head=fused)
                    (loss / tokens[:, 1:].numel()).backward()
                    model.zero_grad(set_to_none=True)  # no optimizer step: same weights, comparable losses
                    losses[fused] = float(loss.detach()) / tokens[:, 1:].numel()
                times[fused].append((time.perf_counter() - start) / args.steps)
        plain, fused = min(times[False]), min(times[True])
        print(f"{batch}x{seq}: plain {plain:.3f} s/step ({batch * seq / plain:,.0f} tok/s), fused {fused:.3f} s/step "
              f"({batch * seq / fused:,.0f} tok/s), speedup {plain / fused:.2f}x; "
              f"loss plain {losses[False]:.5f} fused {losses[True]:.5f}")


if __name__ == "__main__":
    main()
