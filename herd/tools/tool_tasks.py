"""Tool-use tasks with known answers, generated from a seed: the prompts of `herd tooldata`.

Paper 4.3.5 lists what tool-use data must cover; each category here is one of those:

  single        one call: arithmetic in the code interpreter, an equation for the math engine, a
                standard-library question for search
  multi_step    two calls, the second built from the first one's result (ReAct style): an integral
                from the math engine, then its value to 4 decimals from Python
  upload        a CSV the user uploads, read in one call and summarised in a second
  long          four calls: write a file, read it back and add up, check with the math engine's
                closed form, compare the two in Python
  failing_tool  the first call fails (the tool is down: the result is an outage error) and is retried,
                or the first program has a bug and is fixed (that call is then kept out of training)
  no_tool       a simple question answered without a tool, although tools are offered

Every task carries the strings a correct final answer contains (computed here, independently of the
tools) and a plan: the calls an oracle teacher makes, each built from the results so far, and the
final answer it writes from them. The plan is what `OracleTeacher` follows; a model teacher ignores it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the chat types load the tokenizer libraries: not at `herd --help` time
    from herd.tokenizer.chat import ToolCall

CATEGORIES = ("single", "multi_step", "upload", "long", "failing_tool", "no_tool")
OUTAGE = "Error: the tool is unavailable right now (HTTP 503: service unavailable); try again."

# Standard-library tasks for search: what a user wants to do -> the module that does it.
MODULE_TASKS = (
    ("serialize a Python object to a JSON string with indentation", "json"),
    ("parse command line arguments and options", "argparse"),
    ("read and write CSV files", "csv"),
    ("compute a SHA-256 hash of bytes", "hashlib"),
    ("compress and decompress gzip files", "gzip"),
    ("create a temporary file or directory", "tempfile"),
    ("copy a whole directory tree", "shutil"),
    ("match text against a regular expression", "re"),
    ("pickle and unpickle Python objects", "pickle"),
    ("work with dates and times and time zones", "datetime"),
)
CAPITALS = (
    ("France", "Paris"), ("Japan", "Tokyo"), ("Canada", "Ottawa"), ("Italy", "Rome"), ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Norway", "Oslo"), ("Spain", "Madrid"), ("Germany", "Berlin"),
    ("Portugal", "Lisbon"), ("Greece", "Athens"), ("Poland", "Warsaw"), ("Austria", "Vienna"),
)

Results = Sequence[str]  # the tool results so far, in call order


@dataclass
class ToolTask:
    """One prompt, the built-ins it is offered, and how a correct trajectory looks."""

    task_id: str
    category: str
    prompt: str
    tools: tuple[str, ...]
    expected: tuple[str, ...]  # each must appear in the final answer
    plan: list[Callable[[Results], ToolCall]] = field(default_factory=list)
    final: Callable[[Results], str] = lambda results: ""
    uploads: dict[str, str] = field(default_factory=dict)
    outages: int = 0  # the first `outages` tool calls fail as if the tool were down
    min_calls: int = 0  # a trajectory with fewer successful calls is rejected
    evidence: bool = False  # an expected string must also appear in a tool result (search)


def section(result: str, name: str) -> str:
    """The text under `name:` in a math-engine answer (`Result`, `Decimal approximation`)."""
    lines = result.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == f"{name}:" and i + 1 < len(lines):
            return lines[i + 1].strip()
    return ""


def stdout(result: str) -> str:
    """The `[stdout]` block of a code-interpreter result."""
    if "[stdout]" not in result:
        return ""
    return result.split("[stdout]", 1)[1].split("[/stdout]", 1)[0].strip()


def _call(name: str, arguments: dict[str, str]) -> ToolCall:
    from herd.tokenizer.chat import ToolCall

    return ToolCall(name, arguments)


def code(text: str) -> ToolCall:
    return _call("code_interpreter", {"code": text})


def math_query(text: str) -> ToolCall:
    return _call("wolfram_alpha", {"query": text})


def search(text: str) -> ToolCall:
    return _call("brave_search", {"query": text})


def _single(rng: random.Random, i: int) -> ToolTask:
    kind = i % 3
    if kind == 0:
        a, b, c = rng.randint(100, 999), rng.randint(100, 999), rng.randint(1000, 9999)
        value = a * b + c
        return ToolTask(f"single-{i}", "single", f"Use Python to compute {a} * {b} + {c}.", ("code_interpreter",),
                        (str(value),), [lambda r, a=a, b=b, c=c: code(f"print({a} * {b} + {c})")],
                        lambda r: f"{a} * {b} + {c} = {stdout(r[0])}.", min_calls=1)
    if kind == 1:
        r1, r2 = rng.randint(-9, 9), rng.randint(-9, 9)
        s, p = r1 + r2, r1 * r2
        eq = f"x^2 {'-' if s >= 0 else '+'} {abs(s)}x {'+' if p >= 0 else '-'} {abs(p)} = 0"
        roots = sorted({r1, r2})
        return ToolTask(f"single-{i}", "single", f"Solve {eq}.", ("wolfram_alpha",),
                        tuple(str(x) for x in roots), [lambda r, eq=eq: math_query(f"solve {eq}")],
                        lambda r, eq=eq: f"The solutions of {eq} are {section(r[0], 'Result').strip('[]')}.",
                        min_calls=1)
    purpose, module = MODULE_TASKS[(i // 3) % len(MODULE_TASKS)]

    def answer(r: Results) -> str:
        import json

        try:
            top = json.loads(r[0])[0]
        except (ValueError, IndexError, KeyError, TypeError):
            return "I could not find it."
        name = top.get("title", "").split(".")[0].split(" ")[0]
        return f"Use the `{name}` module: {top.get('description', '')}"

    return ToolTask(f"single-{i}", "single", f"Which Python standard-library module should I use to {purpose}?",
                    ("brave_search",), (f"`{module}`",), [lambda r, q=purpose: search(q)], answer, min_calls=1,
                    evidence=True)


def x_power_sin_integral(k: int) -> float:
    """The integral of x^k sin x from 0 to pi, by parts: I_k = pi^k - k(k-1) I_(k-2), I_0 = 2, I_1 = pi."""
    if k < 2:
        return (2.0, math.pi)[k]
    return math.pi**k - k * (k - 1) * x_power_sin_integral(k - 2)


def _multi_step(rng: random.Random, i: int) -> ToolTask:
    k = rng.randint(1, 4)
    expected = f"{x_power_sin_integral(k):.4f}"
    prompt = (f"Find the exact value of the integral of x^{k} sin x from 0 to pi, "
              "then give it to 4 decimal places using Python.")

    def second(r: Results) -> ToolCall:
        exact = section(r[0], "Result").replace("pi", "math.pi")
        return code(f"import math\nprint(f'{{{exact}:.4f}}')")

    return ToolTask(f"multi_step-{i}", "multi_step", prompt, ("wolfram_alpha", "code_interpreter"), (expected,),
                    [lambda r, k=k: math_query(f"integrate x^{k} sin x from 0 to pi"), second],
                    lambda r: f"The integral is {section(r[0], 'Result')}, about {stdout(r[1])}.", min_calls=2)


def _upload(rng: random.Random, i: int) -> ToolTask:
    rows = [(f"item{j}", rng.randint(1, 500)) for j in range(rng.randint(5, 12))]
    csv_text = "name,price\n" + "".join(f"{n},{p}\n" for n, p in rows)
    mean = sum(p for _, p in rows) / len(rows)
    expected = f"{mean:.2f}"
    look = "import csv\nrows = list(csv.DictReader(open('prices.csv')))\nprint(len(rows), list(rows[0]))"
    compute = ("import csv\nrows = list(csv.DictReader(open('prices.csv')))\n"
               "print(f\"{sum(float(r['price']) for r in rows) / len(rows):.2f}\")")
    return ToolTask(f"upload-{i}", "upload", "I uploaded prices.csv. What is the mean price, to 2 decimal places?",
                    ("code_interpreter",), (expected,), [lambda r: code(look), lambda r: code(compute)],
                    lambda r: f"The file has {stdout(r[0]).split(' ')[0]} rows; the mean price is {stdout(r[1])}.",
                    uploads={"prices.csv": csv_text}, min_calls=2)


def _long(rng: random.Random, i: int) -> ToolTask:
    n = rng.randint(5, 40)
    total = n * (n + 1) * (2 * n + 1) // 6
    prompt = (f"Write the squares of 1 to {n} to squares.txt, one per line; read the file back and add them up; "
              "check the total against the closed form n(n+1)(2n+1)/6 with the math engine; then confirm in "
              "Python that the two agree.")
    plan = [
        lambda r: code(f"with open('squares.txt', 'w') as f:\n    f.writelines(f'{{k * k}}\\n' for k in range(1, {n} + 1))"),
        lambda r: code("print(sum(int(line) for line in open('squares.txt')))"),
        lambda r: math_query(f"{n}*({n}+1)*(2*{n}+1)/6"),
        lambda r: code(f"print({stdout(r[1]) or 0} == {section(r[2], 'Result') or 0})"),
    ]
    return ToolTask(f"long-{i}", "long", prompt, ("code_interpreter", "wolfram_alpha"), (str(total),), plan,
                    lambda r: f"The squares add up to {stdout(r[1])}, and the closed form gives "
                              f"{section(r[2], 'Result')}: {'they agree' if stdout(r[3]) == 'True' else 'they differ'}.",
                    min_calls=4)


def _failing_tool(rng: random.Random, i: int) -> ToolTask:
    n, k = rng.randint(10, 30), rng.randint(2, 6)
    value = math.comb(n, k)
    prompt = f"How many ways are there to choose {k} items out of {n}? Use Python."
    if i % 2 == 0:  # the tool is down once; the same call is retried
        return ToolTask(f"failing_tool-{i}", "failing_tool", prompt, ("code_interpreter",), (str(value),),
                        [lambda r: code(f"import math\nprint(math.comb({n}, {k}))")] * 2,
                        lambda r: f"There are {stdout(r[1])} ways.", outages=1, min_calls=1)
    # the first program has a bug (math is not imported); the model reads the error and fixes it
    return ToolTask(f"failing_tool-{i}", "failing_tool", prompt, ("code_interpreter",), (str(value),),
                    [lambda r: code(f"print(math.comb({n}, {k}))"),
                     lambda r: code(f"import math\nprint(math.comb({n}, {k}))")],
                    lambda r: f"There are {stdout(r[1])} ways.", min_calls=1)


def _no_tool(rng: random.Random, i: int) -> ToolTask:
    country, capital = CAPITALS[i % len(CAPITALS)]
    return ToolTask(f"no_tool-{i}", "no_tool", f"What is the capital of {country}?",
                    ("code_interpreter", "brave_search", "wolfram_alpha"), (capital,), [],
                    lambda r: f"The capital of {country} is {capital}.")


MAKERS: dict[str, Callable[[random.Random, int], ToolTask]] = {
    "single": _single, "multi_step": _multi_step, "upload": _upload, "long": _long,
    "failing_tool": _failing_tool, "no_tool": _no_tool,
}


def generate_tasks(n: int, categories: Sequence[str] = CATEGORIES, seed: int = 0) -> list[ToolTask]:
    """`n` tasks, the categories taken in turn, reproducible from `seed`."""
    unknown = [c for c in categories if c not in MAKERS]
    if unknown:
        raise ValueError(f"unknown tool-data categories {unknown}; choose from {', '.join(CATEGORIES)}")
    if not categories:
        raise ValueError("no tool-data category chosen")
    if n < 1:
        raise ValueError(f"the number of tasks must be >= 1, got {n}")
    rng = random.Random(seed)
    counts = dict.fromkeys(categories, 0)
    tasks = []
    for j in range(n):
        category = categories[j % len(categories)]
        tasks.append(MAKERS[category](rng, counts[category]))
        counts[category] += 1
    return tasks
