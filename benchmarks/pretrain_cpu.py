"""Pretraining throughput and MFU of herd.train on this CPU.

    .venv/bin/python benchmarks/pretrain_cpu.py [--data DIR] [--steps 10] [--sizes llama3-tiny,llama3-small]

Runs the real trainer (`herd.train.train`, configs/pretrain/tiny.toml with overrides) for a few steps
per model size and autocast dtype at a fixed batch of 4 x 128 tokens (no ramp, no validation), on
real Llama 3 token shards (`--data`: a `herd corpus ... --tokenize` tokens directory; by default one
is built in a temporary directory from the local corpus). Reports the median tokens/s over the steps
after the first two, and MFU by the DESIGN.md formula (torchtitan convention).

A CPU has no datasheet peak that torch reaches, so the MFU denominator is measured in this same run:
the FLOP/s of a large square matmul (2048^3) in the same dtype. MFU here therefore means "fraction of
what this CPU's matmul achieves", not of a theoretical peak.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from herd.model import flops_per_token, get_config
from herd.train.mfu import mfu as model_flops_utilization
from herd.train import load_config, train
from herd.train.metrics import measure_matmul_flops, read_records

try:
    from host import describe
except ImportError:  # run from another directory
    from benchmarks.host import describe

ROOT = Path(__file__).resolve().parents[1]


def corpus_tokens(tmp: Path) -> Path:
    from herd.data.local_corpus import build_local_corpus
    from herd.data.tokenize_sources import tokenize_files

    paths = build_local_corpus(tmp / "corpus", max_docs_per_source=200)
    for name, path in paths.items():
        tokenize_files([path], tmp / "tokens" / name, name, workers=1, validation_fraction=0.01)
    return tmp / "tokens"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="directory with general/code/math token shards")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--sizes", default="llama3-tiny,llama3-small")
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    threads = torch.get_num_threads()
    print(f"machine: {describe()}")
    peaks = {}
    for dtype in args.dtypes.split(","):
        peaks[dtype] = measure_matmul_flops(torch.device("cpu"), getattr(torch, dtype), size=2048, seconds=3.0)
        print(f"measured peak: {dtype} 2048^3 matmul {peaks[dtype] / 1e9:.1f} GFLOP/s")

    results = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = args.data or corpus_tokens(tmp)
        sources = [s for s in ("general", "code", "math") if (data / s / "manifest.json").is_file()]
        for size in args.sizes.split(","):
            for dtype in args.dtypes.split(","):
                out = tmp / f"{size}-{dtype}"
                sets = [f"data.sources.{s}={data / s}" for s in sources]
                sets += [
                    "data.mix={" + ", ".join(f"{s} = 1" for s in sources) + "}",
                    f"model.size={size}", f"run.dtype={dtype}", f"run.max_steps={args.steps}", f"run.out_dir={out}",
                    "run.device=cpu", "schedule.stages=[{after_tokens = 0, batch_size = 4, seq_len = 128}]",
                    "eval.interval=0", "checkpoint.interval=0", "log.tensorboard=false", "log.plot=false",
                    "log.progress=false", f"log.peak_flops={peaks[dtype]}",
                ]
                train(load_config(ROOT / "configs" / "pretrain" / "tiny.toml", sets))
                steps = [r for r in read_records(out / "metrics.jsonl") if r["kind"] == "train"][2:]
                tok_s = statistics.median(r["tokens_per_s"] for r in steps)
                model = get_config(size)
                mfu = model_flops_utilization(tok_s, model, 128, peaks[dtype])
                row = {"size": size, "dtype": dtype, "tokens_per_s": tok_s, "mfu": mfu,
                       "flops_per_token": flops_per_token(model, 128), "peak_flops": peaks[dtype],
                       "memory_mb": steps[-1]["memory_mb"], "loss_first": steps[0]["loss"],
                       "loss_last": steps[-1]["loss"]}
                results.append(row)
                print(f"{size:14s} {dtype:9s} {tok_s:9.1f} tok/s  MFU {100 * mfu:5.1f}% of measured {dtype} matmul  "
                      f"RSS {row['memory_mb']:.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps({"peaks": peaks, "threads": threads, "results": results}, indent=1))


if __name__ == "__main__":
    main()
