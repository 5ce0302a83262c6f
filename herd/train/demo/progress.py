"""The demo's one status line for every stage (and the trainer hook that feeds it)."""

from __future__ import annotations

import shutil
import time
from typing import Any, TextIO

from herd.train.demo.state import STAGES
from herd.train.trainer import TrainHooks


class Progress:
    """`stage 3/7 pretrain  tokens 120,000/300,000  loss 3.21  1:05 eta 1:40`, rewritten in place.

    On a terminal the line is redrawn (at most 4 times a second); elsewhere (a log, CI) a line is
    printed at each stage's start and end and at every 10% in between, so logs stay short."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.index, self.name, self.start = 0, "", time.perf_counter()
        self._drawn, self._tenth = 0.0, -1

    def stage(self, index: int, name: str, *, quiet: bool = False) -> None:
        self.index, self.name, self.start, self._tenth = index, name, time.perf_counter(), -1
        if not quiet:
            self._emit(f"stage {index}/{len(STAGES)} {name}", force=True)

    def update(self, done: int, total: int, unit: str, **info: float) -> None:
        elapsed = time.perf_counter() - self.start
        frac = min(done / total, 1.0) if total else 0.0
        eta = f" eta {_clock(elapsed / frac - elapsed)}" if frac > 0.02 else ""
        extra = "".join(f"  {k} {v:.3g}" for k, v in info.items())
        text = (f"stage {self.index}/{len(STAGES)} {self.name}  {unit} {done:,}/{total:,}{extra}  "
                f"{_clock(elapsed)}{eta}")
        tenth = int(frac * 10)
        if self.tty or tenth > self._tenth:
            self._tenth = tenth
            self._emit(text)

    def note(self, text: str) -> None:
        self._emit(f"stage {self.index}/{len(STAGES)} {self.name}  {text}", force=True)

    def finish(self, summary: str) -> None:
        self._line(f"stage {self.index}/{len(STAGES)} {self.name}  done in {_clock(time.perf_counter() - self.start)}: "
                   f"{summary}")

    def skip(self, summary: str) -> None:
        self._line(f"stage {self.index}/{len(STAGES)} {self.name}  finished earlier: {summary}")

    def _line(self, text: str) -> None:
        self.stream.write(("\r\033[K" if self.tty else "") + text + "\n")
        self.stream.flush()

    def _emit(self, text: str, force: bool = False) -> None:
        now = time.perf_counter()
        if self.tty:
            if force or now - self._drawn > 0.25:
                self.stream.write("\r\033[K" + text[: shutil.get_terminal_size().columns - 1])
                self.stream.flush()
                self._drawn = now
        else:
            self.stream.write(text + "\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class _TrainProgress(TrainHooks):
    """Feeds the trainer's step records to the status line (the trainer's own display is off)."""

    def __init__(self, progress: Progress, total_tokens: int, offset: int = 0) -> None:
        self.progress, self.total, self.offset = progress, total_tokens, offset

    def on_step_end(self, trainer: Any, step: int, record: dict[str, Any]) -> None:
        info = {"step": step} if record.get("loss") is None else {"step": step, "loss": record["loss"]}
        self.progress.update(min(self.offset + int(record["tokens"]), self.total), self.total, "tokens", **info)
