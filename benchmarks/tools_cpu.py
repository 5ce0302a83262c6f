"""herd.tools on this CPU: sandbox overhead per tool call, math-engine latency, search index build and
query latency, agent steps/s with a scripted model (the loop's own cost, tools included).

    .venv/bin/python benchmarks/tools_cpu.py [--calls 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

QUERIES = ["serialize python object to JSON string with indentation", "read a csv file row by row",
           "sort a list in place", "current date and time", "walk a directory tree recursively",
           "compute md5 hash of bytes", "parse command line arguments", "run a subprocess and capture output"]


def timed(fn, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def summary(values: list[float], unit: float = 1e3, name: str = "ms") -> str:
    return f"median {statistics.median(values) * unit:.1f} {name}, min {min(values) * unit:.1f}, max {max(values) * unit:.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--calls", type=int, default=20)
    a = p.parse_args()
    from host import describe

    from herd.sandbox import Sandbox
    from herd.sandbox.runner import isolation
    from herd.tokenizer.chat import Message
    from herd.tokenizer.llama3 import Llama3Tokenizer
    from herd.tokenizer.llama3_chat import Llama3ChatFormat
    from herd.tools import CodeInterpreter, MathEngine, Toolbox, run_agent
    from herd.tools.search import default_index

    print(describe(), flush=True)
    print(f"sandbox isolation: {isolation()}")
    box = Sandbox(timeout_s=10)
    print(f"sandbox run_python('pass'):              {summary(timed(lambda: box.run_python('pass'), a.calls))}")
    interpreter = CodeInterpreter()
    print(f"code_interpreter print(6*7):             {summary(timed(lambda: interpreter('print(6*7)'), a.calls))}")
    math = MathEngine()
    print(f"math engine 'integrate x^2 sin x from 0 to pi': "
          f"{summary(timed(lambda: math('integrate x^2 sin x from 0 to pi'), max(3, a.calls // 4)))}")
    with tempfile.TemporaryDirectory() as cache:
        build = timed(lambda: default_index(cache), 1)[0]
        load = timed(lambda: default_index(cache), 3)
        index = default_index(cache)
    print(f"search index build: {build:.2f} s ({len(index.documents)} documents); cached load {summary(load)}")
    per_query = timed(lambda: [index.search(q, 5) for q in QUERIES], a.calls)
    print(f"search query (mean of {len(QUERIES)}): {summary([t / len(QUERIES) for t in per_query])}")

    fmt = Llama3ChatFormat(Llama3Tokenizer())

    class Scripted:
        def __init__(self) -> None:
            self.turn = 0

        def respond(self, messages):  # type: ignore[no-untyped-def]
            self.turn += 1
            text = "<|python_tag|>print(6*7)<|eom_id|>" if self.turn % 2 else "The answer is 42.<|eot_id|>"
            return fmt.parse_assistant(text)

    toolbox = Toolbox(["code_interpreter"])
    runs = timed(lambda: run_agent(Scripted(), [Message("user", "6*7?")], toolbox), a.calls)
    print(f"agent loop, 2 model turns + 1 code call (scripted model): {summary(runs)}; "
          f"{2 / statistics.median(runs):.1f} steps/s")


if __name__ == "__main__":
    main()
