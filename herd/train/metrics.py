"""What a run reports: JSONL records, TensorBoard scalars, a terminal progress bar, a loss-curve PNG.

The JSONL file (`<out_dir>/metrics.jsonl`) is the source of truth: one JSON object per line, `kind`
"train" (step, tokens, loss, grad_norm, lr, tokens_per_s, mfu, memory_mb, batch shape, phase) or "val"
(step, tokens, val_loss). Floats are written with `repr` precision, so losses read back bit-exactly
(the resume test compares them). On resume, records after the resumed step are dropped first, so
the file always describes one consistent history.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from herd.train.mfu import H100_BF16_PEAK_FLOPS


def memory_mb(device: torch.device) -> float:
    """Peak allocated CUDA memory on GPU; resident set size of this process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):  # not Linux: peak RSS instead
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (2**20 if sys.platform == "darwin" else 2**10)


def measure_matmul_flops(device: torch.device, dtype: torch.dtype, size: int = 1024, seconds: float = 0.5) -> float:
    """FLOP/s of a square matmul on this device: the practical peak used for MFU on a CPU.

    A CPU has no single datasheet number that torch reaches, so MFU on CPU is reported against this
    measured value (say so when quoting it).
    """
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.matmul(a, b)  # warm up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    n, start = 0, time.perf_counter()
    while True:
        torch.matmul(a, b)
        n += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return 2 * size**3 * n / elapsed


def peak_flops(device: torch.device, dtype: torch.dtype, configured: float) -> tuple[float, str]:
    """The MFU denominator and where it came from."""
    if configured > 0:
        return configured, "configured"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if "H100" in name or "H200" in name:
            return H100_BF16_PEAK_FLOPS, f"{name} dense bf16 datasheet"
        return measure_matmul_flops(device, dtype, size=4096), f"measured {dtype} matmul on {name}"
    return measure_matmul_flops(device, dtype), f"measured {str(dtype).removeprefix('torch.')} matmul on CPU"


def read_records(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by kill -9
                continue
    return records


class MetricsLogger:
    """JSONL + optional TensorBoard + optional tqdm bar for one run (resumable)."""

    def __init__(
        self,
        out_dir: str | Path,
        *,
        start_step: int,
        total_steps: int | None,
        tensorboard: bool,
        progress: bool,
        quiet: bool = False,
    ) -> None:
        self.quiet = quiet  # non-main ranks of a distributed run: records to their own file, no messages
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / "metrics.jsonl"
        kept = [r for r in read_records(self.path) if r.get("step", 0) <= start_step] if start_step else []
        with open(self.path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        self._file = open(self.path, "a")
        self.tb = None
        self.tb_note = ""
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=start_step + 1)
            except ImportError as exc:
                self.tb_note = f"TensorBoard disabled: {exc} (pip install tensorboard)"
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, file=sys.stderr)

    def log(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self.tb is not None:
            prefix = "val" if record.get("kind") == "val" else "train"
            for key, value in record.items():
                numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
                if numeric and key not in ("step", "kind", "phase"):
                    self.tb.add_scalar(f"{prefix}/{key}", value, record["step"])

    def progress(self, step: int, loss: float, lr: float, tokens_per_s: float) -> None:
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)

    def message(self, text: str) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        self._file.close()
        if self.tb is not None:
            self.tb.close()
        if self.bar is not None:
            self.bar.close()


def plot_loss_curve(jsonl: str | Path, png: str | Path) -> Path:
    """Training (and validation) loss against tokens consumed, written with matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_records(jsonl)
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot([r["tokens"] for r in train], [r["loss"] for r in train], label="train", linewidth=1)
    if val:
        ax.plot([r["tokens"] for r in val], [r["val_loss"] for r in val], "o-", label="validation")
    ax.set_xlabel("tokens")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png = Path(png)
    fig.savefig(png)
    plt.close(fig)
    return png
