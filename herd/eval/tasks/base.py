"""What an evaluation task is: its items, its kind, and where its data comes from.

A task is data plus a kind; the harness (herd.eval.harness) knows how to run each kind through the
engine. Items are plain dataclasses so a task file, a PyPI-shipped set and a generated set look the
same to the harness, and so the few-shot sampler can draw examples from any of them.

Kinds:
- `mc`: pick one of several continuations by log-likelihood (acc, and acc_norm by characters).
- `generate`: sample an answer (greedy by default), extract it, compare with the gold answer.
- `lm`: per-item gold negative log-likelihood and bits per byte of a text (scaling-law inputs).
- `code`: sample function bodies, run each with the problem's tests in the sandbox, report pass@k.
- `niah`: needle-in-a-haystack retrieval (herd.eval.niah) over a grid of lengths and depths.
- `tool_call`: offer functions as tools in the model's chat format, parse the calls it makes and match
  them against the possible answers (BFCL's AST match, herd.eval.bfcl_ast).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["mc", "generate", "lm", "code", "niah", "tool_call"]
KINDS: tuple[str, ...] = ("mc", "generate", "lm", "code", "niah", "tool_call")


@dataclass(frozen=True)
class MCItem:
    """A question and its choices; `query` is the context, each choice a continuation."""

    id: str
    query: str
    choices: tuple[str, ...]
    gold: int

    def __post_init__(self) -> None:
        if len(self.choices) < 2:
            raise ValueError(f"item {self.id}: a multiple-choice item needs at least 2 choices")
        if not 0 <= self.gold < len(self.choices):
            raise ValueError(f"item {self.id}: gold {self.gold} is not a choice index (0..{len(self.choices) - 1})")


@dataclass(frozen=True)
class GenerateItem:
    """A prompt whose completion must contain `answer` (after the task's answer extraction)."""

    id: str
    prompt: str
    answer: str
    # the worked answer shown when this item is a few-shot example (defaults to `answer`)
    demonstration: str | None = None


@dataclass(frozen=True)
class LMItem:
    """A text scored token by token (all of it, or the part after `prefix`)."""

    id: str
    text: str
    prefix: str = ""


@dataclass(frozen=True)
class CodeItem:
    """A HumanEval-style problem: `prompt` is the code to complete; `problem` holds its tests
    (`test`, `entry_point`) as herd.eval.passk.check_humaneval reads them."""

    id: str
    prompt: str
    problem: dict = field(hash=False, compare=False)


@dataclass(frozen=True)
class NIAHItem:
    """One needle-in-a-haystack case: a haystack of `length` tokens, the asked needle at `depth`, and
    `needles - 1` distractor needles with other keys (RULER's multi-key retrieval)."""

    id: str
    length: int
    depth: float
    needles: int = 1
    seed: int = 0


@dataclass(frozen=True)
class ToolCallItem:
    """A dialog, the functions offered to the model (BFCL's JSON-schema-like docs) and the calls that
    count as right: `possible_answer` is BFCL's ground truth, one `{name: {param: [accepted values]}}`
    per expected call (an empty string among the values: the parameter may be left out). An empty
    `possible_answer` with `no_call` set means the right answer is no call (BFCL's irrelevance)."""

    id: str
    messages: tuple[dict, ...] = field(hash=False, compare=False)
    functions: tuple[dict, ...] = field(hash=False, compare=False)
    possible_answer: tuple[dict, ...] = field(hash=False, compare=False)
    no_call: bool = False
    language: str = "python"  # BFCL's java/javascript sets: values are that language's source text

    def __post_init__(self) -> None:
        if not self.messages or not self.functions or not (self.possible_answer or self.no_call):
            raise ValueError(f"item {self.id}: a tool-call item needs messages, functions and a possible answer")


Item = MCItem | GenerateItem | LMItem | CodeItem | NIAHItem | ToolCallItem


@dataclass(frozen=True)
class Task:
    """A named, versioned task. `load()` returns its items in a fixed order (ids are unique)."""

    name: str
    version: str
    kind: Kind
    source: str                # where the data comes from (package and file)
    licence: str
    description: str
    load: Callable[[], list[Item]] = field(repr=False, compare=False)
    # few-shot formatting: "\n\n" between examples; the answer of an `mc` example is its gold choice
    fewshot_separator: str = "\n\n"
    # generate kind: strings that end the answer, and how to pull the answer out of the text
    stop: tuple[str, ...] = ("\n\n",)
    extract: str = "first_line"   # "first_line" | "last_number" | "first_number"
    max_tokens: int = 256
    # where few-shot examples come from (default: the task's other items)
    fewshot_pool: Callable[[], list[Item]] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
