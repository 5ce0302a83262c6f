"""The demo's settings, its state file (`<out>/state.json`) and its result: what `--resume` reads back.

The bottom of the demo package: every other module shares these (the stage names, the smoke
threshold, the state file), and none of them is imported from here, so nothing here trains."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STAGES = ("corpus", "curate", "pretrain", "long context", "anneal", "average", "report")
SMOKE_BELOW = 0.5   # scales under this are smoke runs: the gates are reported, not expected to pass


class DemoError(ValueError):
    """Bad demo input (e.g. --resume with different settings): one line for the user."""


@dataclass
class DemoSettings:
    """What a run was started with; `--resume` continues only a run with the same settings."""

    scale: float = 1.0
    max_docs: int | None = 150
    seed: int = 0

    @property
    def smoke(self) -> bool:
        return self.scale < SMOKE_BELOW

    def tokens(self, base: int) -> int:
        return max(1, int(base * self.scale))

    @property
    def niah_cases(self) -> int:
        """NIAH cases per (length, depth) cell: 4 (1 at smoke scale, where evaluation would dominate)."""
        return 1 if self.smoke else 4


@dataclass
class DemoResult:
    out_dir: str
    unigram_entropy: float
    losses: dict[str, float]
    long_context_passed: bool
    report: str
    final_model: str
    seconds: float
    smoke: bool
    report_card: dict[str, Any] = field(default_factory=dict)   # herd eval's per-task results of the final model


class DemoState:
    """`<out>/state.json`: the settings and each finished stage's outputs and cost, written atomically."""

    def __init__(self, out: Path, settings: DemoSettings) -> None:
        self.path = out / "state.json"
        self.data: dict[str, Any] = {"settings": asdict(settings), "stages": {}}

    @classmethod
    def load(cls, out: Path) -> DemoState:
        path = out / "state.json"
        if not path.is_file():
            raise DemoError(f"--resume: {out} holds no demo run to continue (no state.json); run without --resume")
        data = json.loads(path.read_text())
        state = cls(out, DemoSettings(**data["settings"]))
        state.data = data
        return state

    @property
    def settings(self) -> DemoSettings:
        return DemoSettings(**self.data["settings"])

    def finished(self, stage: str) -> dict[str, Any] | None:
        return self.data["stages"].get(stage)

    def finish(self, stage: str, info: dict[str, Any]) -> None:
        self.data["stages"][stage] = info
        self.data.pop("interrupted", None)
        self._write()

    def interrupted(self, stage: str) -> None:
        self.data["interrupted"] = stage
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_name("state.json.tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)
