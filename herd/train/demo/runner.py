"""`run_demo`: runs (or resumes) the stages in order under stop handling, with the status line."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from herd.train.demo.progress import Progress, _clock
from herd.train.demo.stages import _Demo
from herd.train.demo.state import STAGES, DemoError, DemoResult, DemoSettings, DemoState
from herd.train.demo.stopping import StopRequested, _output_to, _stop_requests


def run_demo(out_dir: str | Path = "runs/demo", scale: float = 1.0, max_docs: int | None = 150, *,
             resume: bool = False, stream: TextIO | None = None) -> DemoResult:
    """Run (or with `resume`, continue) the demo; raises StopRequested when a stop request ended it."""
    out = Path(out_dir)
    if resume:
        state = DemoState.load(out)
        if (state.settings.scale, state.settings.max_docs) != (scale, max_docs):
            s = state.settings
            raise DemoError(f"--resume: {out} was started with --scale {s.scale} --max-docs {s.max_docs or 0}; "
                            "resume with those, or start afresh without --resume")
    else:
        if scale <= 0:
            raise DemoError(f"--scale must be > 0, got {scale}")
        # a fresh run: nothing of an earlier run may leak into this one's checkpoints or mixes
        for name in ("state.json", "corpus", "curate", "pretrain", "long_context", "anneal", "final", "demo.log"):
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        state = DemoState(out, DemoSettings(scale, max_docs))
        state._write()
    own_stream = stream is None
    progress = Progress(stream or _terminal())
    demo = _Demo(out, state, progress)
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "corpus": demo.corpus, "curate": demo.curate, "pretrain": demo.pretrain, "long context": demo.long_context,
        "anneal": demo.anneal, "average": demo.average, "report": demo.report,
    }
    start = time.perf_counter()
    try:
        with _stop_requests():
            _run_stages(out, state, progress, steps)
    finally:
        if own_stream:
            progress.stream.flush()
            progress.stream.close()
    report = state.finished("report")
    seconds = sum(state.finished(n)["seconds"] for n in STAGES)
    result = DemoResult(str(out), report["unigram_entropy"], report["losses"], state.finished("long context")["passed"],
                        report["report"], str(out / "final"), seconds, state.settings.smoke,
                        report.get("report_card", {}))
    (out / "result.json").write_text(json.dumps(asdict(result), indent=1))
    print(f"herd demo: done in {_clock(time.perf_counter() - start)} ({_clock(seconds)} of stage time in all): "
          f"{report['report']}", file=sys.stderr, flush=True)
    return result


def _terminal() -> TextIO:
    """Where the status line goes: the process's stderr as it is now, before stages redirect fd 2."""
    try:
        return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
    except (AttributeError, OSError, ValueError):  # a stderr without a file descriptor (e.g. captured)
        return open(os.devnull, "w") if sys.stderr is None else _Unclosable(sys.stderr)


class _Unclosable:
    """A borrowed stream that `close()` leaves open."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def close(self) -> None:
        self._stream.flush()


def _run_stages(out: Path, state: DemoState, progress: Progress, steps: dict[str, Callable[[], dict[str, Any]]]) -> None:
    for index, name in enumerate(STAGES, 1):
        done = state.finished(name)
        progress.stage(index, name, quiet=done is not None)
        if done is not None:
            progress.skip(done["result"])
            continue
        t0 = time.perf_counter()
        try:
            with _output_to(out / "demo.log"):
                info = steps[name]()
        except StopRequested:
            state.interrupted(name)
            raise
        info["seconds"] = round(time.perf_counter() - t0, 1)
        state.finish(name, info)
        progress.finish(info["result"])
