"""Shared helpers for the trainer tests: real text (Python's own sources) as byte-level token shards.

A byte vocabulary (256 bytes + BOS 256 + EOS 257) keeps the model's output head small, so a real
training run takes seconds on a 2-core CPU while still learning real text.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

BOS, EOS, VOCAB = 256, 257, 258
STDLIB = Path(sysconfig.get_paths()["stdlib"])
FILES = {
    "general": ["this.py", "textwrap.py", "difflib.py", "argparse.py"],
    "code": ["functools.py", "heapq.py", "bisect.py", "shlex.py"],
    "math": ["fractions.py", "statistics.py", "decimal.py", "numbers.py"],
}


def documents(files: list[str], chunk: int = 1500) -> list[list[int]]:
    docs = []
    for name in files:
        text = (STDLIB / name).read_bytes()
        for i in range(0, len(text), chunk):
            docs.append([BOS, *text[i : i + chunk], EOS])
    return docs


def write_byte_shards(root: Path) -> dict[str, str]:
    """Token shard directories (herd.data format) for the sources general/code/math; 10% held out."""
    from herd.data import ShardWriter

    sources = {}
    for name, files in FILES.items():
        out = root / name
        if not (out / "manifest.json").is_file():
            with ShardWriter(out, name, tokenizer={"name": "bytes", "vocab_size": VOCAB}, validation_fraction=0.1) as w:
                w.add_many(documents(files))
                w.close()
        sources[name] = str(out)
    return sources


def tiny_overrides(sources: dict[str, str], out_dir: Path, **extra: object) -> list[str]:
    """--set overrides that point configs/pretrain/tiny.toml at byte shards and a small, fast run."""
    sets = [f"data.sources.{name}={path}" for name, path in sources.items()]
    sets.append("data.mix={" + ", ".join(f"{name} = 1" for name in sources) + "}")
    sets += [
        f"run.out_dir={out_dir}", "run.device=cpu", f"model.vocab_size={VOCAB}", "log.progress=false",
        "log.tensorboard=false", "log.plot=false", "log.peak_flops=1e11", "run.cpu_threads=1",
    ]
    sets += [f"{k.replace('__', '.')}={v}" for k, v in extra.items()]
    return sets


# `herd pretrain` that stops still (without exiting) before step `pause_at + 1`: it writes `marker`
# and then waits forever, so a test can SIGKILL it at a known point of the run instead of racing it.
_PAUSING_CLI = """
import sys, threading
from pathlib import Path
from herd.train.trainer import TrainHooks

pause_at, marker = int(sys.argv[1]), Path(sys.argv[2])

def on_step_start(self, trainer, step):
    if step == pause_at:
        marker.write_text(str(step))
        threading.Event().wait()

TrainHooks.on_step_start = on_step_start
from herd.cli import main
sys.exit(main(sys.argv[3:]))
"""


def pausing_herd_command(pause_at: int, marker: Path, herd_args: list[str]) -> list[str]:
    """`python -m herd.cli *herd_args`, except that training halts once `pause_at` steps are done
    (their metrics logged, their checkpoints committed) and `marker` appears."""
    import sys

    return [sys.executable, "-c", _PAUSING_CLI, str(pause_at), str(marker), *herd_args]
