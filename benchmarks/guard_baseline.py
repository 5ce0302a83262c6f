"""The input guard's baseline on held-out sources: hashed word n-gram logistic regression.

Trains `herd.safety.ngram_guard.NgramGuard` on `guard_split("train")` (Do-Not-Answer, PyRIT objectives,
BFCL questions, half of herd's borderline prompts) and scores `guard_split("test")` (AdvBench, HarmBench,
MT-bench, HumanEval, the other borderline half): F1 / precision / recall at 0.5, false-positive rates on
benign and borderline prompts, AUPRC. Prints the host line; the numbers go to benchmarks/RESULTS.md.

    python benchmarks/guard_baseline.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from host import describe  # noqa: E402


def main() -> None:
    from herd.safety.guard_data import guard_split
    from herd.safety.guard_metrics import guard_report
    from herd.safety.ngram_guard import NgramGuard

    train, test = guard_split("train"), guard_split("test")
    start = time.perf_counter()
    guard = NgramGuard().fit([e.text for e in train], [e.unsafe for e in train])
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    scores = guard.score([e.text for e in test])
    score_ms = (time.perf_counter() - start) / len(test) * 1e3
    report = guard_report(scores, [e.kind for e in test])
    print(describe())
    print(f"train {len(train)} prompts, test {len(test)}; fit {fit_s:.1f} s, scoring {score_ms:.3f} ms/prompt")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in report.items()}, indent=1))


if __name__ == "__main__":
    main()
