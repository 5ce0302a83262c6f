"""The planner's predictions against measured memory and step time of real parallel runs on this CPU.

    .venv/bin/python benchmarks/parallel_cpu.py [--steps 6] [--layouts single,fsdp,tp,pp,cp,fsdp_tp]

For each layout, `torchrun` launches the real trainer (herd.train under herd.train.parallel, gloo,
one thread per rank) on a 4-layer dim-256 model with the byte vocabulary (text from Python's own
sources, tests/train_helpers.py) at a global batch of 8 x 256 tokens, bf16 autocast / FSDP bf16.
Each rank records:
  - model-state bytes: its local (sharded) fp32 weights, AdamW moments and gradients, counted from the
    tensors themselves (exact, no allocator noise);
  - peak resident memory minus the resident memory before the model was built (activations,
    buffers, allocator caching: an upper bound of what the planner calls activations + buffers);
  - median step time over the steps after the first two.
The planner (herd.train.parallel.planner) gets a `Hardware.cpu` calibrated in the same run: per-rank
peak = the measured bf16 matmul FLOP/s of one thread, bandwidth = the measured gloo all-reduce bus
bandwidth between two ranks. Prints one table; the lead records it in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    from host import describe
except ImportError:  # run from another directory
    from benchmarks.host import describe

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEQ, BATCH, MICRO = 256, 8, 4
LAYOUTS: dict[str, tuple[int, list[str]]] = {
    "single": (1, []),
    "fsdp": (2, ["dp_shard=2"]),
    "ddp": (2, ["dp_shard=1", "dp_replicate=2"]),
    "tp": (2, ["dp_shard=1", "tp=2"]),
    "pp": (2, ["dp_shard=1", "pp=2", "pp_microbatches=4"]),
    "cp": (2, ["dp_shard=1", "cp=2"]),
    "fsdp_tp": (4, ["dp_shard=2", "tp=2"]),
}


def overrides(sources: dict[str, str], out: Path, steps: int) -> list[str]:
    from tests.train_helpers import tiny_overrides

    return tiny_overrides(sources, out) + [
        "model.size=llama3-small", "model.n_layers=4", "run.dtype=bfloat16", f"run.max_steps={steps}",
        "schedule.warmup_steps=1", f"schedule.decay_steps={steps}", "eval.interval=0", "checkpoint.interval=0",
        "log.interval=1",
        (f"schedule.stages=[{{after_tokens = 0, batch_size = {BATCH}, seq_len = {SEQ}, "
         f"micro_batch_size = {MICRO}}}]"),
    ]


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _local_bytes(tensor) -> int:  # type: ignore[no-untyped-def]
    from torch.distributed.tensor import DTensor

    local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
    return local.numel() * local.element_size()


def worker(spec_path: str) -> None:
    """One rank: train, then write this rank's measurements next to the run."""
    import torch

    from herd.train import TrainHooks, load_config
    from herd.train.trainer import Trainer

    spec = json.loads(Path(spec_path).read_text())
    config = load_config(ROOT / "configs/pretrain/tiny.toml", spec["sets"])
    before = _rss_kib("VmRSS")
    states: dict[str, int] = {}

    class Measure(TrainHooks):
        def on_step_end(self, trainer, step, record):  # type: ignore[no-untyped-def]
            if step == 1:
                params = sum(_local_bytes(p) for p in trainer.model.parameters())
                moments = sum(_local_bytes(v) for opt in getattr(trainer.optimizer, "optimizers", [trainer.optimizer])
                              for s in opt.state.values() for k, v in s.items() if k != "step")
                states.update(weights=params, moments=moments, gradients=params)

    trainer = Trainer(config, hooks=Measure())
    trainer.run()
    rank = trainer.plan.rank
    result = {"rank": rank, **states, "peak_delta": (_rss_kib("VmHWM") - before) * 1024}
    if spec.get("calibrate"):  # every rank takes part in the all-reduce
        from herd.train.metrics import measure_matmul_flops

        result["allreduce_bytes_s"], result["latency_s"] = _allreduce_bandwidth()
        result["matmul_flops"] = measure_matmul_flops(torch.device("cpu"), torch.bfloat16)
    Path(spec["out"], f"rank{rank}.json").write_text(json.dumps(result))
    trainer.plan.close()
    del torch


def _allreduce_bandwidth() -> tuple[float, float]:
    """Bus bandwidth of a gloo all-reduce of 16 MiB between the ranks (the planner's link speed) and
    the time of a 4-byte one (its latency)."""
    import torch
    import torch.distributed as dist

    x = torch.ones(4 * 1024 * 1024)
    dist.all_reduce(x)
    start = time.perf_counter()
    for _ in range(5):
        dist.all_reduce(x)
    n = dist.get_world_size()
    bandwidth = 5 * 2 * (n - 1) / n * x.numel() * 4 / (time.perf_counter() - start)
    tiny = torch.ones(1)
    dist.all_reduce(tiny)
    start = time.perf_counter()
    for _ in range(200):
        dist.all_reduce(tiny)
    return bandwidth, (time.perf_counter() - start) / 200


def _layout(name: str):  # type: ignore[no-untyped-def]
    from herd.train.parallel.planner import Layout

    nproc, sets = LAYOUTS[name]
    values = dict(s.split("=") for s in sets)
    dp = int(values.get("dp_shard", nproc if not sets else 1)) * int(values.get("dp_replicate", 1))
    pp = int(values.get("pp", 1))
    micro = MICRO // dp if pp == 1 else MICRO // dp // int(values.get("pp_microbatches", 1))
    n_micro = BATCH // dp // micro
    return Layout(dp_replicate=int(values.get("dp_replicate", 1)), dp_shard=int(values.get("dp_shard", 1)),
                  cp=int(values.get("cp", 1)), pp=pp, tp=int(values.get("tp", 1)),
                  microbatch_sequences=micro, n_microbatches=n_micro)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    from herd.train import load_config
    from herd.train.metrics import read_records
    from herd.train.parallel.planner import Hardware, estimate
    from tests.train_helpers import write_byte_shards

    tmp = Path(tempfile.mkdtemp(prefix="herd-parallel-bench-"))
    sources = write_byte_shards(tmp / "data")
    calibration: dict[str, float] = {}
    rows = []
    for name in args.layouts.split(","):
        nproc, sets = LAYOUTS[name]
        out = tmp / name
        out.mkdir()
        spec = {"sets": overrides(sources, out, args.steps) + [f"parallel.{s}" for s in sets], "out": str(out),
                "calibrate": nproc == 2 and "allreduce_bytes_s" not in calibration}
        (out / "spec.json").write_text(json.dumps(spec))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        if nproc == 1:
            cmd = [sys.executable, __file__, "--worker", str(out / "spec.json")]
            env.pop("WORLD_SIZE", None)
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), __file__,
                   "--worker", str(out / "spec.json")]
        proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
        ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]
        if ranks[0].get("allreduce_bytes_s"):
            calibration.update(matmul_flops=ranks[0]["matmul_flops"], allreduce_bytes_s=ranks[0]["allreduce_bytes_s"],
                               latency_s=ranks[0]["latency_s"])
        times = [r["tokens"] / r["tokens_per_s"] for r in read_records(out / "metrics.jsonl") if r.get("kind") == "train"]
        rows.append((name, nproc, ranks, statistics.median(times[2:]) if len(times) > 2 else times[-1]))
    model = load_config(ROOT / "configs/pretrain/tiny.toml", overrides(sources, tmp, 1)).model_config()
    hardware = Hardware.cpu(calibration["matmul_flops"], calibration["allreduce_bytes_s"], 24e9,
                            latency_s=calibration["latency_s"])
    # Small matmuls on a CPU run far below the large-matmul peak: calibrate the achievable fraction on
    # the one-process run, then let the planner predict how the parallel layouts scale from there.
    single = next((step for name, _, _, step in rows if name == "single"), None)
    if single is not None:
        ideal = estimate(model, _layout("single"), SEQ, BATCH, hardware, activations="eager").step_time_s
        hardware = dataclasses.replace(hardware, achievable_fraction=ideal / single)
    print(f"# parallel_cpu: {describe()}; model dim {model.dim} x {model.n_layers} layers, vocab "
          f"{model.vocab_size}; batch {BATCH} x {SEQ}; calibration: bf16 matmul "
          f"{calibration['matmul_flops'] / 1e9:.1f} GFLOP/s per thread, gloo all-reduce "
          f"{calibration['allreduce_bytes_s'] / 1e9:.2f} GB/s, latency {calibration['latency_s'] * 1e6:.0f} us; achievable fraction of that peak (from the "
          f"one-process run) {hardware.achievable_fraction:.3f}")
    print("| layout | ranks | states/rank measured MB | planner MB | peak RSS growth MB (max rank) | planner act+buf MB "
          "| step s measured | planner s | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, nproc, ranks, step_s in rows:
        est = estimate(model, _layout(name), SEQ, BATCH, hardware, activations="eager")
        is_state = [k.startswith(("weights fp32", "AdamW", "gradients fp32")) and "buffers" not in k for k in est.memory]
        planned_states = sum(v for v, state in zip(est.memory.values(), is_state) if state)
        planned_other = sum(v for (k, v), state in zip(est.memory.items(), is_state) if not state and k != "fixed overhead")
        measured_states = max(r["weights"] + r["moments"] + r["gradients"] for r in ranks)
        peak = max(r["peak_delta"] for r in ranks)
        print(f"| {name} | {nproc} | {measured_states / 1e6:.1f} | {planned_states / 1e6:.1f} | {peak / 1e6:.0f} | "
              f"{planned_other / 1e6:.1f} | {step_s:.2f} | {est.step_time_s:.2f} | {step_s / est.step_time_s:.2f} |")


if __name__ == "__main__":
    main()
