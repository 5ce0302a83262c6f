"""Training checkpoints: atomic, self-describing, the last N kept.

Layout of a checkpoint directory:

    checkpoints/
      step_00000200/        model.pt (weights), optim.pt (AdamW state), state.json (everything else)
      step_00000300/
      latest                text file naming the newest complete checkpoint ("step_00000300")

A save writes into `step_XXXXXXXX.tmp/`, fsyncs every file and the directory, then renames it to
`step_XXXXXXXX/` with `os.replace` (atomic on POSIX), and only then rewrites `latest` the same way.
A crash at any point leaves either the old set of complete checkpoints or the new one; a leftover
`.tmp` directory is never mistaken for a checkpoint and is removed by the next successful save.
Resume scans for the newest complete `step_*` directory, so a stale `latest` cannot mislead it.

state.json holds the step, tokens consumed, loader state, config, RNG states (python, numpy, torch
CPU and CUDA) and a format version; it is JSON so it can be read without torch.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from herd.checkpoint.errors import CheckpointError

FORMAT_VERSION = 1
_NAME = re.compile(r"^step_(\d{8,})$")
REQUIRED_FILES = ("model.pt", "optim.pt", "state.json")
DCP_DIR = "dcp"  # distributed runs: model and optimizer in torch.distributed.checkpoint format


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_bytes_durably(path: Path, write) -> None:  # type: ignore[no-untyped-def]
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def write_torch(path: Path, obj: Any) -> None:
    """torch.save + fsync (a module-level function so tests can inject a crash mid-save)."""
    _write_bytes_durably(path, lambda f: torch.save(obj, f))


def write_json(path: Path, obj: Any) -> None:
    data = json.dumps(obj, indent=1).encode()
    _write_bytes_durably(path, lambda f: f.write(data))


def _replace_text_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    _write_bytes_durably(tmp, lambda f: f.write(text.encode()))
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def save_checkpoint(
    directory: str | Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    optim_state: dict[str, Any],
    meta: dict[str, Any],
    keep_last: int,
) -> Path:
    """Atomically write checkpoint `step` under `directory`, update `latest`, prune to `keep_last`."""
    tmp = begin_checkpoint(directory, step)
    write_torch(tmp / "model.pt", model_state)
    write_torch(tmp / "optim.pt", optim_state)
    return commit_checkpoint(tmp, step, meta, keep_last)


def begin_checkpoint(directory: str | Path, step: int) -> Path:
    """A fresh `step_XXXXXXXX.tmp/` directory to write a checkpoint's files into."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (checkpoint_name(step) + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def commit_checkpoint(tmp: Path, step: int, meta: dict[str, Any], keep_last: int) -> Path:
    """Write state.json into `tmp`, rename it to its final name atomically, update `latest`, prune."""
    directory = tmp.parent
    final = directory / checkpoint_name(step)
    write_json(tmp / "state.json", {"format_version": FORMAT_VERSION, "step": step, **meta})
    _fsync_dir(tmp)
    if final.exists():  # re-saving the same step (e.g. stopped right after a resume): swap it out
        old = directory / (final.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    _fsync_dir(directory)
    _replace_text_atomically(directory / "latest", final.name + "\n")
    _prune(directory, keep_last)
    return final


def _prune(directory: Path, keep_last: int) -> None:
    complete = list_checkpoints(directory)
    for path in complete[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)
    for leftover in directory.iterdir():  # partial saves from crashed runs
        if leftover.is_dir() and (leftover.name.endswith(".tmp") or leftover.name.endswith(".old")):
            shutil.rmtree(leftover, ignore_errors=True)


def is_complete(path: Path) -> bool:
    if not (_NAME.match(path.name) and path.is_dir() and (path / "state.json").is_file()):
        return False
    return all((path / f).is_file() for f in REQUIRED_FILES) or is_distributed(path)


def is_distributed(path: Path) -> bool:
    """Written by a multi-process run: sharded model/optimizer state under dcp/ (any layout can load it)."""
    return (path / DCP_DIR / ".metadata").is_file()


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if is_complete(p)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))  # type: ignore[union-attr]


def latest_checkpoint(directory: str | Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def resolve_resume(spec: str | Path | None, directory: str | Path) -> Path | None:
    """`None` -> no resume; "auto" -> newest complete checkpoint in `directory` or None; else a path.

    A path may be a checkpoint (`step_XXXXXXXX`) or a directory of them (its newest is used). Anything
    missing or incomplete is a CheckpointError, raised before the trainer builds a model.
    """
    if spec is None or spec == "":
        return None
    if str(spec) == "auto":
        return latest_checkpoint(directory)
    path = Path(spec)
    if not path.exists():
        raise CheckpointError(f"--resume {path}: no such checkpoint (give a step_XXXXXXXX directory, "
                              "a directory of them, or 'auto')")
    if is_complete(path):
        return path
    newest = latest_checkpoint(path)
    if newest is None:
        missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
        raise CheckpointError(
            f"--resume {path}: not a complete training checkpoint (missing {', '.join(missing)}) and holds "
            "no step_XXXXXXXX checkpoints"
        )
    return newest


@dataclass
class TrainingState:
    path: Path
    model: dict[str, torch.Tensor]
    optim: dict[str, Any]
    meta: dict[str, Any]


def read_meta(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        meta = json.loads((path / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read state.json: {exc}") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint format {meta.get('format_version')!r}")
    return meta


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> TrainingState:
    path = Path(path)
    if not is_complete(path):
        raise CheckpointError(f"{path} is not a complete training checkpoint (needs {', '.join(REQUIRED_FILES)})")
    meta = read_meta(path)
    if is_distributed(path):
        model, optim = read_consolidated(path / DCP_DIR)
        return TrainingState(path, model, optim, meta)
    try:
        model = torch.load(path / "model.pt", map_location=map_location, weights_only=True)
        optim = torch.load(path / "optim.pt", map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise CheckpointError(f"{path}: damaged checkpoint file: {exc}") from None
    return TrainingState(path, model, optim, meta)


def load_model_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights only, for `run.init_from`: a training checkpoint (or a directory of them), or any
    format herd.checkpoint reads (Meta, Hugging Face, GGUF)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"run.init_from {path}: no such file or directory")
    if is_complete(path) or latest_checkpoint(path) is not None:
        ckpt = path if is_complete(path) else latest_checkpoint(path)
        if is_distributed(ckpt):  # type: ignore[arg-type]
            return read_consolidated(ckpt / DCP_DIR, optimizer=False)[0]  # type: ignore[operator]
        return torch.load(ckpt / "model.pt", map_location="cpu", weights_only=True)  # type: ignore[operator]
    from herd.checkpoint import read_checkpoint

    return read_checkpoint(path).state


def read_consolidated(directory: Path, optimizer: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Full model (and flattened optimizer) state from a DCP directory, in this one process, on CPU.

    Here rather than in herd.train.parallel.dcp: reading a checkpoint back needs no parallelism, and
    herd.train.parallel builds on this module (never the other way round).
    """
    import warnings

    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

    keys = {"model", "optim"} if optimizer else {"model"}
    try:
        with warnings.catch_warnings():  # "no process group: loading in a single process" is the intent
            warnings.simplefilter("ignore")
            state = _load_state_dict_from_keys(keys, checkpoint_id=str(directory))
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{directory}: cannot read the distributed checkpoint: {exc}") from None
    model = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in state["model"].items()}
    return model, state.get("optim")


# ---- RNG state as JSON


def rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])
