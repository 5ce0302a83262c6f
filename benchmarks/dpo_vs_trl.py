"""herd dpo vs TRL's DPOTrainer: tokens/s of the training step, peak memory and the first step's numbers.

Same machine, same run, same everything the comparison hinges on:

- Model: SmolLM2-135M-Instruct, float32 on CPU on both sides: herd's built-in spec
  `smollm2-135m-instruct` (the Q4_1 GGUF dequantized to float32) written once as a Hugging Face
  directory by `herd convert --to hf --dtype float32` (tokenizer and chat template included), which
  both sides read (`post.model = DIR` for herd), so both start from identical float32 weights and
  neither pays the GGUF dequantization (herd would do it for the policy and again for the reference).
- Data: identical preference pairs in TRL's conversational format (`prompt`, `chosen`, `rejected`),
  generated from herd.data.synthetic_math: a system prompt and a user message with `--shots` worked
  problems before the question (long prompts, as in few-shot or RAG preference data); chosen is the
  worked solution, rejected the same solution with a wrong final answer. herd reads the very same JSONL
  (`post.format = "trl"`). The file is written in the order of herd's seeded epoch permutation and TRL
  samples sequentially, so step k of both sides trains on the same pairs (checked).
- Recipe: batch `--batch` pairs, `--steps` steps, lr 1e-5 constant, AdamW betas (0.9, 0.999), eps 1e-8,
  no weight decay, grad clip 1.0, beta 0.1, TRL's "sigmoid" loss and herd's `dpo.nll_weight = 0`,
  `dpo.mask = "completion"` (every token after the generation prompt, as TRL's completion mask), no
  truncation (TRL `max_length=None`; herd's `seq_len` covers the longest pair).
- Peers: herd's defaults (reference log-probs precomputed once, prompt shared once per pair, vocabulary
  projected only at the scored tokens); TRL's defaults (reference model run live every step); TRL with
  `precompute_ref_log_probs=True`.

Measured per run, each in a fresh subprocess (herd in this interpreter's environment, TRL in
benchmarks/.trl-env, never a herd dependency: `python -m venv benchmarks/.trl-env &&
benchmarks/.trl-env/bin/pip install torch==2.13.0 trl transformers datasets`):

- tokens/s = prompt+response tokens of the step's pairs (2 x prompt + chosen + rejected, no padding:
  what the pairs hold, the same count for both sides) / wall seconds of the optimizer step (forward,
  backward, clip, AdamW), over the steps after the first (warm-up). herd's step is `Trainer._train_step`,
  TRL's the time between the trainer callbacks `on_step_begin` and `on_step_end`.
- setup seconds: the one-off work before the first step (herd: build the trainer and precompute the
  reference log-probs; TRL: build DPOTrainer, which tokenizes and, when asked, precomputes).
- peak RSS: `resource.getrusage(RUSAGE_SELF).ru_maxrss` of the process at its end (model loading
  included on both sides).
- step-0 numbers: the first step's loss (ln 2 = 0.6931 when the policy is the reference) and the
  per-pair sequence log-probs of chosen and rejected under the starting weights (herd's precomputed
  reference vs TRL's precomputed reference).

Rounds alternate herd, TRL, TRL-precompute in fresh processes (the host may be shared with other jobs);
each figure is the best round of its side.

SFT (`--methods sft`): prompt-completion dialogs with 0..shots+1 worked examples (varied lengths), one
epoch; herd packs whole dialogs into rows (`sft.pack = true`, document masks), TRL's SFTTrainer pads
each batch (its defaults: no packing); completion-only loss on both; tokens/s = the dialogs' tokens
(no padding) / seconds of all the epoch's steps.

Reward model (`--methods rm`): the same preference pairs; herd rm trains with the prompt once and both
responses after it in one row (`rm.one_row = true`, the paper's layout), `herd-rm-rows` is herd with
each response in its own row (what the one-row layout saves), TRL's RewardTrainer pads chosen and
rejected as separate sequences. Both score heads start at zero so the first step's loss is ln 2 on
every side, and the later steps' losses must agree too (same data order, same optimizer).
tokens/s = 2 x prompt + chosen + rejected per pair, as for DPO.

    python benchmarks/dpo_vs_trl.py --rounds 2 --steps 3 --batch 1 --shots 2 --methods dpo sft rm
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TRL_PY = HERE / ".trl-env" / "bin" / "python"
WORK = REPO / "runs" / "bench-dpo-vs-trl"
SYSTEM = ("You are a careful math tutor. Solve each word problem step by step: name every quantity, show each "
          "computation with its result, and finish with a line of the form 'Answer: N'. Do not skip steps, "
          "do not round, and check the arithmetic before you answer.")
PEERS = ("herd", "trl", "trl-precompute")
SFT_PEERS = ("herd-sft", "trl-sft")
RM_PEERS = ("herd-rm", "herd-rm-rows", "trl-rm")
WORKERS = {"herd": lambda a: worker_herd(a), "trl": lambda a: worker_trl(a, False),
           "trl-precompute": lambda a: worker_trl(a, True), "herd-sft": lambda a: worker_herd_sft(a),
           "trl-sft": lambda a: worker_trl_sft(a), "herd-rm": lambda a: worker_herd_rm(a, True),
           "herd-rm-rows": lambda a: worker_herd_rm(a, False), "trl-rm": lambda a: worker_trl_rm(a)}


# ---------------------------------------------------------------------------------------------- data
def _wrong(answer_line: str, rng: random.Random) -> str:
    """The answer line with every number moved by 1-9: a plausible, wrong final answer."""
    return re.sub(r"\d+", lambda m: str(int(m.group()) + rng.randint(1, 9)), answer_line)


def make_preferences(n: int, shots: int, seed: int = 0) -> list[dict[str, Any]]:
    """n preference pairs in TRL's conversational format, each prompt carrying `shots` worked examples."""
    sys.path.insert(0, str(REPO))
    from herd.data.synthetic_math import word_problem

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        examples = [word_problem(rng) for _ in range(shots)]
        question, solution = word_problem(rng).split("\nSolution: ", 1)
        body, answer = solution.rsplit("\n", 1)
        user = ("Here are worked examples in the format I need.\n\n" + "\n\n".join(examples)
                + "\n\nNow solve this one the same way.\n" + question.removeprefix("Question: "))
        out.append({
            "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
            "chosen": [{"role": "assistant", "content": f"{body}\n{answer}"}],
            "rejected": [{"role": "assistant", "content": f"{body}\n{_wrong(answer, rng)}"}],
        })
    return out


def make_dialogs(n: int, max_shots: int, seed: int = 1) -> list[dict[str, Any]]:
    """n SFT examples in TRL's prompt-completion format, 0..max_shots worked examples per prompt (lengths
    vary, which is what padding pays for and packing does not)."""
    sys.path.insert(0, str(REPO))
    from herd.data.synthetic_math import word_problem

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        examples = [word_problem(rng) for _ in range(rng.randint(0, max_shots))]
        question, solution = word_problem(rng).split("\nSolution: ", 1)
        user = ("\n\n".join(["Here are worked examples in the format I need.", *examples, "Now solve this one."])
                if examples else "Solve this one.") + "\n" + question.removeprefix("Question: ")
        out.append({"prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
                    "completion": [{"role": "assistant", "content": solution}]})
    return out


def herd_order(n: int, seed: int = 0, epoch: int = 0) -> list[int]:
    """An epoch's order of herd's post-training loaders (seeded permutation; checked against the run)."""
    import numpy as np

    return [int(i) for i in np.random.default_rng([seed, epoch]).permutation(n)]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ----------------------------------------------------------------------------------------- workers
def worker_herd(a: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    import torch

    from herd.post.config import post_config_from_dict
    from herd.post.run import build_trainer

    torch.set_num_threads(a.threads)
    out_dir = Path(a.workdir) / f"herd-run-{os.getpid()}"  # fresh: no reference cache from an earlier run
    config = post_config_from_dict({
        "post": {"model": a.hf_dir, "train_files": [a.data], "format": "trl"},
        "run": {"out_dir": str(out_dir), "max_steps": a.steps, "device": "cpu", "dtype": "float32",
                "cpu_threads": a.threads, "seed": 0},
        "schedule": {"warmup_steps": 0, "decay_steps": 10 * a.steps,
                     "stages": [{"after_tokens": 0, "batch_size": a.batch, "seq_len": a.seq_len,
                                 "micro_batch_size": a.batch}]},
        "optim": {"lr": 1e-5, "min_lr": 1e-5, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0,
                  "grad_clip": 1.0},
        "dpo": {"beta": 0.1, "nll_weight": 0.0, "mask": "completion", "reference": "precompute",
                "prefix_sharing": True, "loss_type": "sigmoid"},
        "log": {"progress": False, "plot": False, "tensorboard": False, "peak_flops": 1e12},
        "checkpoint": {"interval": 0}, "eval": {"interval": 0},
    })
    t0 = time.perf_counter()
    trainer, data = build_trainer(config, "dpo")
    built = time.perf_counter() - t0
    objective = trainer.objective
    objective.prepare(trainer)  # the reference log-probs, once (what herd dpo does before its first step)
    setup = time.perf_counter() - t0
    trainer.peak_flops = 1e12  # Trainer.run sets this before stepping; only the MFU column reads it
    seen: list[list[int]] = []
    step_fb = objective.forward_backward

    def recording(trainer_: Any, batch: Any, shape: Any) -> dict[str, Any]:
        seen.append([i for i, _ in batch])
        return step_fb(trainer_, batch, shape)

    objective.forward_backward = recording  # type: ignore[method-assign]
    trainer.model.train()
    steps = []
    for _ in range(a.steps):
        start = time.perf_counter()
        record = trainer._train_step()
        steps.append({"seconds": time.perf_counter() - start, "loss": record["loss"],
                      "logps/chosen": record["logps/chosen"], "logps/rejected": record["logps/rejected"]})
    prefs = data.train
    ref = objective._reference_logps["train"]  # the precomputed reference: the starting weights' log-probs
    return {
        "setup_seconds": setup, "reference_seconds": setup - built, "steps": steps, "batches": seen,
        "peak_rss_mb": peak_rss_mb(),
        "lengths": [[len(p.prompt), len(p.responses[0]), len(p.responses[1])] for p in prefs],
        "scored": [[sum(m) for m in p.branch_masks] for p in prefs],
        "ref_logps": [[float(x) for x in r] for r in ref],
    }


def worker_trl(a: argparse.Namespace, precompute: bool) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    torch.set_num_threads(a.threads)
    records = [json.loads(line) for line in Path(a.data_trl).read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(a.hf_dir)
    model = AutoModelForCausalLM.from_pretrained(a.hf_dir, dtype=torch.float32)
    steps: list[dict[str, Any]] = []

    out_dir = Path(a.workdir) / f"trl-run-{os.getpid()}"
    args = DPOConfig(
        output_dir=str(out_dir), per_device_train_batch_size=a.batch, gradient_accumulation_steps=1,
        max_steps=a.steps, learning_rate=1e-5, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=1.0, beta=0.1, loss_type=["sigmoid"],
        precompute_ref_log_probs=precompute, max_length=None, train_sampling_strategy="sequential",
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, seed=0, bf16=False, fp16=False,
        dataloader_num_workers=0, disable_tqdm=True,
    )
    t0 = time.perf_counter()
    trainer = DPOTrainer(model=model, args=args, processing_class=tokenizer,
                         train_dataset=Dataset.from_list(records),
                         callbacks=[loss_timer(steps, ("loss", "logps/chosen", "logps/rejected"))])
    setup = time.perf_counter() - t0
    trainer.train()
    ds = trainer.train_dataset
    out: dict[str, Any] = {
        "setup_seconds": setup, "steps": steps, "peak_rss_mb": peak_rss_mb(),
        "lengths": [[len(p), len(c), len(r)] for p, c, r in zip(ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"])],
        "token_ids": [[p, c, r] for p, c, r in zip(ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"])],
    }
    if precompute:
        out["ref_logps"] = [[float(c), float(r)] for c, r in zip(ds["ref_chosen_logps"], ds["ref_rejected_logps"])]
    return out


def worker_herd_sft(a: argparse.Namespace) -> dict[str, Any]:
    """One epoch of packed SFT (whole dialogs per row, document masks), completion-only loss."""
    sys.path.insert(0, str(REPO))
    import torch

    from herd.post.config import post_config_from_dict
    from herd.post.run import build_trainer

    torch.set_num_threads(a.threads)
    config = post_config_from_dict({
        "post": {"model": a.hf_dir, "train_files": [a.data], "format": "trl", "epochs": 1.0},
        "run": {"out_dir": str(Path(a.workdir) / f"herd-sft-run-{os.getpid()}"), "device": "cpu",
                "dtype": "float32", "cpu_threads": a.threads, "seed": 0},
        "schedule": {"warmup_steps": 0, "decay_steps": 1000,
                     "stages": [{"after_tokens": 0, "batch_size": 1, "seq_len": a.seq_len, "micro_batch_size": 1}]},
        "optim": {"lr": 1e-5, "min_lr": 1e-5, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0,
                  "grad_clip": 1.0},
        "sft": {"pack": True, "mask": "completion"},
        "log": {"progress": False, "plot": False, "tensorboard": False, "peak_flops": 1e12},
        "checkpoint": {"interval": 0}, "eval": {"interval": 0},
    })
    trainer, data = build_trainer(config, "sft")
    trainer.peak_flops = 1e12
    trainer.model.train()
    lengths = [min(len(e.tokens), a.seq_len) for e in data.train]
    loader = trainer.loader
    steps = []
    while loader.state_dict()["epoch"] == 0:  # exactly the rows that hold the first epoch's dialogs
        before = loader.state_dict()
        start = time.perf_counter()
        record = trainer._train_step()
        seconds = time.perf_counter() - start
        after = loader.state_dict()
        order = herd_order(len(lengths), 0, 0) + herd_order(len(lengths), 0, 1)
        first = before["epoch"] * len(lengths) + before["cursor"]
        last = after["epoch"] * len(lengths) + after["cursor"]
        steps.append({"seconds": seconds, "loss": record["loss"],
                      "tokens": sum(lengths[i] for i in order[first:last]), "dialogs": last - first})
    return {"steps": steps, "peak_rss_mb": peak_rss_mb(), "lengths": lengths,
            "trained": [sum(e.loss_mask) for e in data.train]}


def loss_timer(steps: list[dict[str, Any]], keys: tuple[str, ...] = ("loss",)) -> Any:
    """A TrainerCallback appending each optimizer step's seconds and its logged `keys` to `steps`."""
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            steps.append({"seconds": time.perf_counter() - self.start})

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs and steps and "loss" not in steps[-1]:
                steps[-1].update({k: logs[k] for k in keys if k in logs})

    return Timer()


def worker_trl_sft(a: argparse.Namespace) -> dict[str, Any]:
    """One epoch of TRL SFTTrainer defaults (padded batches, no packing), completion-only loss."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    torch.set_num_threads(a.threads)
    records = [json.loads(line) for line in Path(a.data).read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(a.hf_dir)
    model = AutoModelForCausalLM.from_pretrained(a.hf_dir, dtype=torch.float32)
    steps: list[dict[str, Any]] = []

    args = SFTConfig(
        output_dir=str(Path(a.workdir) / f"trl-sft-run-{os.getpid()}"), per_device_train_batch_size=a.batch,
        gradient_accumulation_steps=1, max_steps=math.ceil(len(records) / a.batch), learning_rate=1e-5,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999,
        adam_epsilon=1e-8, max_grad_norm=1.0, max_length=a.seq_len, packing=False,
        train_sampling_strategy="sequential", logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
        seed=0, bf16=False, fp16=False, dataloader_num_workers=0, disable_tqdm=True,
    )
    trainer = SFTTrainer(model=model, args=args, processing_class=tokenizer, train_dataset=Dataset.from_list(records),
                         callbacks=[loss_timer(steps)])
    trainer.train()
    ds = trainer.train_dataset
    lengths = [len(x) for x in ds["input_ids"]]
    trained = [sum(t != -100 for t in labels) for labels in ds["labels"]]  # completion-only: the completion
    for k, step in enumerate(steps):
        batch = lengths[k * a.batch:(k + 1) * a.batch]
        step.update({"tokens": sum(batch), "padded": max(batch) * len(batch), "dialogs": len(batch)})
    return {"steps": steps, "peak_rss_mb": peak_rss_mb(), "lengths": lengths, "trained": trained}


def worker_herd_rm(a: argparse.Namespace, one_row: bool) -> dict[str, Any]:
    """herd rm train: ranking loss, the prompt once per pair (one_row) or each response in its own row."""
    sys.path.insert(0, str(REPO))
    import torch

    from herd.post.config import post_config_from_dict
    from herd.post.reward_model import RewardModel
    from herd.post.run import build_trainer

    torch.set_num_threads(a.threads)
    config = post_config_from_dict({
        "post": {"model": a.hf_dir, "train_files": [a.data], "format": "trl"},
        "run": {"out_dir": str(Path(a.workdir) / f"herd-rm-run-{os.getpid()}"), "max_steps": a.steps,
                "device": "cpu", "dtype": "float32", "cpu_threads": a.threads, "seed": 0},
        "schedule": {"warmup_steps": 0, "decay_steps": 10 * a.steps,
                     "stages": [{"after_tokens": 0, "batch_size": a.batch, "seq_len": a.seq_len,
                                 "micro_batch_size": a.batch}]},
        "optim": {"lr": 1e-5, "min_lr": 1e-5, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0,
                  "grad_clip": 1.0},
        "rm": {"one_row": one_row},
        "log": {"progress": False, "plot": False, "tensorboard": False, "peak_flops": 1e12},
        "checkpoint": {"interval": 0}, "eval": {"interval": 0},
    })
    t0 = time.perf_counter()
    trainer, _ = build_trainer(config, "rm")
    setup = time.perf_counter() - t0
    (model,) = [m for m in trainer.model.modules() if isinstance(m, RewardModel)]
    with torch.no_grad():
        model.score.weight.zero_()  # as TRL's below: step 0 is ln 2 on both sides
    trainer.peak_flops = 1e12
    trainer.model.train()
    steps = []
    for _ in range(a.steps):
        start = time.perf_counter()
        record = trainer._train_step()
        steps.append({"seconds": time.perf_counter() - start, "loss": record["loss"]})
    return {"setup_seconds": setup, "steps": steps, "peak_rss_mb": peak_rss_mb()}


def worker_trl_rm(a: argparse.Namespace) -> dict[str, Any]:
    """TRL RewardTrainer: chosen and rejected as separate padded sequences, score head zeroed."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    torch.set_num_threads(a.threads)
    records = [json.loads(line) for line in Path(a.data_trl).read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(a.hf_dir)
    model = AutoModelForSequenceClassification.from_pretrained(a.hf_dir, num_labels=1, dtype=torch.float32)
    with torch.no_grad():
        model.score.weight.zero_()
    steps: list[dict[str, Any]] = []

    args = RewardConfig(
        output_dir=str(Path(a.workdir) / f"trl-rm-run-{os.getpid()}"), per_device_train_batch_size=a.batch,
        gradient_accumulation_steps=1, max_steps=a.steps, learning_rate=1e-5, lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=1.0,
        max_length=None, train_sampling_strategy="sequential", logging_steps=1, save_strategy="no",
        report_to="none", use_cpu=True, seed=0, bf16=False, fp16=False, dataloader_num_workers=0, disable_tqdm=True,
    )
    t0 = time.perf_counter()
    trainer = RewardTrainer(model=model, args=args, processing_class=tokenizer,
                            train_dataset=Dataset.from_list(records), callbacks=[loss_timer(steps)])
    setup = time.perf_counter() - t0
    trainer.train()
    return {"setup_seconds": setup, "steps": steps, "peak_rss_mb": peak_rss_mb()}


def herd_token_ids(data: Path, model: Path) -> list[list[list[int]]]:
    """herd's encoding of the pairs (prompt, chosen, rejected) for the token-for-token check against TRL's."""
    sys.path.insert(0, str(REPO))
    from herd.post.encoding import encode_preference
    from herd.post.records import read_preferences
    from herd.post.starting import StartingModel

    fmt = StartingModel.resolve(str(model)).chat_format
    out = []
    for record in read_preferences([str(data)], format="trl").records:
        e = encode_preference(fmt, record.prompt, record.responses, "completion")
        out.append([e.prompt, *e.responses])
    return out


# ---------------------------------------------------------------------------------------------- driver
def run_worker(peer: str, a: argparse.Namespace, files: dict[str, Path]) -> dict[str, Any]:
    result = Path(a.workdir) / f"{peer}-{time.time_ns()}.json"
    python = sys.executable if peer.startswith("herd") else str(TRL_PY)
    sft = peer in SFT_PEERS
    cmd = [python, __file__, "--worker", peer, "--result", str(result), "--workdir", str(a.workdir),
           "--data", str(files[("sft-trl" if peer.startswith("trl") else "sft") if sft else "herd"]),
           "--data-trl", str(files["trl"]),
           "--hf-dir", str(files["hf"]), "--steps", str(a.steps), "--batch", str(a.sft_batch if sft else a.batch),
           "--threads", str(a.threads), "--seq-len", str(a.sft_seq_len if sft else a.seq_len)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1",
           "HF_DATASETS_CACHE": str(Path(a.workdir) / f"hf-datasets-{time.time_ns()}")}  # no cached precompute
    if peer.startswith("herd"):
        env["PYTHONPATH"] = str(REPO)
    log = Path(a.workdir) / f"{peer}.log"
    with log.open("w") as f:
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        sys.exit(f"{peer} worker failed (exit {proc.returncode}); see {log}:\n" + log.read_text()[-3000:])
    return json.loads(result.read_text())


def pair_tokens(lengths: list[int]) -> int:
    p, c, r = lengths
    return 2 * p + c + r


def throughput(res: dict[str, Any], order: list[int], lengths: list[list[int]], batch: int) -> float:
    """Pair tokens per second over the steps after the first."""
    timed = res["steps"][1:] or res["steps"]
    first = len(res["steps"]) - len(timed)
    tokens = sum(pair_tokens(lengths[order[(first + k) * batch + j]]) for k in range(len(timed)) for j in range(batch))
    return tokens / sum(s["seconds"] for s in timed)


def prepare(a: argparse.Namespace) -> dict[str, Path]:
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    hf = WORK / "smollm2-135m-instruct-hf-f32"
    if not (hf / "model.safetensors").is_file():
        subprocess.run([sys.executable, "-m", "herd", "convert", "smollm2-135m-instruct", str(hf), "--to", "hf",
                        "--dtype", "float32"], check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    prefs = make_preferences(a.pairs, a.shots)
    order = herd_order(a.pairs)
    herd_file, trl_file = work / "prefs.jsonl", work / "prefs-herd-order.jsonl"
    herd_file.write_text("".join(json.dumps(p) + "\n" for p in prefs))
    trl_file.write_text("".join(json.dumps(prefs[i]) + "\n" for i in order))  # TRL samples sequentially
    dialogs = make_dialogs(a.sft_dialogs, a.shots + 1)
    sft_file, sft_trl_file = work / "sft.jsonl", work / "sft-herd-order.jsonl"
    sft_file.write_text("".join(json.dumps(d) + "\n" for d in dialogs))
    # TRL reads them in herd's epoch order: where herd's rows hold --sft-batch dialogs each, step 0 matches
    sft_trl_file.write_text("".join(json.dumps(dialogs[i]) + "\n" for i in herd_order(len(dialogs))))
    return {"herd": herd_file, "trl": trl_file, "hf": hf, "sft": sft_file, "sft-trl": sft_trl_file}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per run (the first is warm-up)")
    p.add_argument("--batch", type=int, default=2, help="preference pairs per step")
    p.add_argument("--pairs", type=int, default=0, help="pairs in the data (default steps x batch: one epoch)")
    p.add_argument("--shots", type=int, default=3, help="worked examples in each prompt (prompt length)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seq-len", type=int, default=2048, help="herd's seq_len (must cover the longest pair)")
    p.add_argument("--peers", nargs="+", default=list(PEERS), choices=PEERS)
    p.add_argument("--workdir", default=str(WORK / "work"))
    p.add_argument("--worker", choices=list(WORKERS))
    p.add_argument("--methods", nargs="+", default=["dpo", "sft", "rm"], choices=["dpo", "sft", "rm"],
                   help="dpo: herd dpo vs DPOTrainer; sft: packed herd sft vs TRL's padded SFTTrainer; rm: one-row "
                        "herd rm vs separate rows vs RewardTrainer")
    p.add_argument("--sft-dialogs", type=int, default=12)
    p.add_argument("--sft-batch", type=int, default=4, help="TRL's dialogs per step (herd packs rows of --sft-seq-len)")
    p.add_argument("--sft-seq-len", type=int, default=1024)
    p.add_argument("--result")
    p.add_argument("--data")
    p.add_argument("--data-trl")
    p.add_argument("--hf-dir")
    a = p.parse_args()
    if a.worker:
        Path(a.result).write_text(json.dumps(WORKERS[a.worker](a)))
        return
    a.pairs = a.pairs or a.steps * a.batch
    if a.pairs < a.steps * a.batch:
        sys.exit(f"--pairs {a.pairs} < steps x batch = {a.steps * a.batch}: every step must see new pairs")
    if any(peer != "herd" for peer in a.peers) and not TRL_PY.exists():
        sys.exit(f"TRL's environment is missing: see the docstring of {__file__}")
    sys.path.insert(0, str(HERE))
    from host import describe

    print(describe(), flush=True)
    if TRL_PY.exists():
        versions = subprocess.run([str(TRL_PY), "-c", "import trl, transformers, torch; "
                                   "print(f'TRL {trl.__version__}, transformers {transformers.__version__}, "
                                   "torch {torch.__version__}')"], capture_output=True, text=True).stdout.strip()
        print(f"peer: {versions}", flush=True)
    files = prepare(a)
    if "dpo" in a.methods:
        compare_dpo(a, files)
    if "sft" in a.methods:
        compare_sft(a, files)
    if "rm" in a.methods:
        compare_rm(a, files)


def compare_rm(a: argparse.Namespace, files: dict[str, Path]) -> None:
    """One-row herd rm vs herd with separate rows vs TRL RewardTrainer, alternating rounds."""
    order = herd_order(a.pairs)
    lengths = [[len(x) for x in ids] for ids in herd_token_ids(files["herd"], files["hf"])]
    print(f"\nRM: the {a.pairs} preference pairs, batch {a.batch} pairs, {a.steps} steps; score heads start at zero",
          flush=True)
    best: dict[str, dict[str, Any]] = {}
    for r in range(a.rounds):
        for peer in RM_PEERS:
            res = run_worker(peer, a, files)
            res["tokens_per_s"] = throughput(res, order, lengths, a.batch)
            if peer not in best or res["tokens_per_s"] > best[peer]["tokens_per_s"]:
                best[peer] = res
            print(f"  round {r} {peer:13} {res['tokens_per_s']:8.1f} tok/s  step s "
                  f"{' '.join(format(s['seconds'], '.2f') for s in res['steps'])}  peak RSS {res['peak_rss_mb']:.0f} MB"
                  f"  losses {' '.join(format(s.get('loss', float('nan')), '.6f') for s in res['steps'])}", flush=True)
    h = best["herd-rm"]
    for peer in ("herd-rm-rows", "trl-rm"):
        t = best[peer]
        print(f"  best: herd-rm {h['tokens_per_s']:.1f} tok/s vs {peer} {t['tokens_per_s']:.1f} -> "
              f"{h['tokens_per_s'] / t['tokens_per_s']:.2f}x; peak RSS {h['peak_rss_mb']:.0f} vs "
              f"{t['peak_rss_mb']:.0f} MB; max |loss diff| "
              f"{max(abs(x['loss'] - y.get('loss', float('nan'))) for x, y in zip(h['steps'], t['steps'])):.2e}")


def compare_dpo(a: argparse.Namespace, files: dict[str, Path]) -> None:
    """herd dpo vs TRL DPOTrainer (defaults, and with precomputed reference log-probs), alternating rounds."""
    order = herd_order(a.pairs)
    herd_ids = herd_token_ids(files["herd"], files["hf"])
    lengths = [[len(x) for x in ids] for ids in herd_ids]
    prompt = sorted(x[0] for x in lengths)
    resp = sorted(n for pair in lengths for n in pair[1:])
    print(f"data: {a.pairs} pairs, prompt tokens median {prompt[len(prompt) // 2]} (min {prompt[0]}, max "
          f"{prompt[-1]}), response tokens median {resp[len(resp) // 2]} (min {resp[0]}, max {resp[-1]}); "
          f"batch {a.batch} pairs, {a.steps} steps, {a.threads} threads", flush=True)
    best: dict[str, dict[str, Any]] = {}
    for r in range(a.rounds):
        for peer in a.peers:
            res = run_worker(peer, a, files)
            res["tokens_per_s"] = throughput(res, order, lengths, a.batch)
            if peer not in best or res["tokens_per_s"] > best[peer]["tokens_per_s"]:
                best[peer] = res
            print(f"  round {r} {peer:15} {res['tokens_per_s']:8.1f} tok/s  step s "
                  f"{' '.join(format(s['seconds'], '.2f') for s in res['steps'])}  setup {res['setup_seconds']:.1f} s  "
                  f"peak RSS {res['peak_rss_mb']:.0f} MB  step-0 loss {res['steps'][0].get('loss', float('nan')):.6f}",
                  flush=True)
    report(best, a, order, herd_ids)


def compare_sft(a: argparse.Namespace, files: dict[str, Path]) -> None:
    """Packed SFT (herd) vs padded SFTTrainer (TRL): tokens (no padding) per second over one epoch."""
    print(f"\nSFT: {a.sft_dialogs} prompt-completion dialogs, one epoch; herd packs rows of {a.sft_seq_len} "
          f"tokens (1 row per step), TRL pads batches of {a.sft_batch} dialogs; completion-only loss on both",
          flush=True)
    best: dict[str, dict[str, Any]] = {}
    for r in range(a.rounds):
        for peer in SFT_PEERS:
            res = run_worker(peer, a, files)
            res["tokens_per_s"] = sum(s["tokens"] for s in res["steps"]) / sum(s["seconds"] for s in res["steps"])
            if peer not in best or res["tokens_per_s"] > best[peer]["tokens_per_s"]:
                best[peer] = res
            pad = (f", {sum(s['tokens'] for s in res['steps']) / sum(s['padded'] for s in res['steps']):.2f} of "
                   "the padded batch is real" if "padded" in res["steps"][0] else "")
            print(f"  round {r} {peer:9} {res['tokens_per_s']:8.1f} tok/s  {len(res['steps'])} steps "
                  f"({' '.join(str(s['dialogs']) for s in res['steps'])} dialogs)  peak RSS "
                  f"{res['peak_rss_mb']:.0f} MB  step-0 loss {res['steps'][0].get('loss', float('nan')):.4f}{pad}",
                  flush=True)
    h, t = best["herd-sft"], best["trl-sft"]
    lengths = sorted(h["lengths"])
    print(f"  dialog tokens median {lengths[len(lengths) // 2]} (min {lengths[0]}, max {lengths[-1]}); token "
          f"counts equal TRL's: {sorted(h['lengths']) == sorted(t['lengths'])}; trained tokens equal: "
          f"{sorted(h['trained']) == sorted(t['trained'])}")
    print(f"  best: herd packed {h['tokens_per_s']:.1f} tok/s, TRL padded {t['tokens_per_s']:.1f} tok/s -> "
          f"{h['tokens_per_s'] / t['tokens_per_s']:.2f}x; peak RSS herd {h['peak_rss_mb']:.0f} MB, "
          f"TRL {t['peak_rss_mb']:.0f} MB")


def report(best: dict[str, dict[str, Any]], a: argparse.Namespace, order: list[int],
           herd_ids: list[list[list[int]]]) -> None:
    print("\nbest round of each (tokens = 2 x prompt + chosen + rejected per pair, steps after the first):")
    herd = best.get("herd")
    for peer, res in best.items():
        ratio = f"  herd {herd['tokens_per_s'] / res['tokens_per_s']:.2f}x" if herd and peer != "herd" else ""
        mem = f"  herd/peer memory {herd['peak_rss_mb'] / res['peak_rss_mb']:.2f}" if herd and peer != "herd" else ""
        print(f"  {peer:15} {res['tokens_per_s']:8.1f} tok/s  setup {res['setup_seconds']:6.1f} s  peak RSS "
              f"{res['peak_rss_mb']:7.0f} MB  step-0 loss {res['steps'][0].get('loss', float('nan')):.6f}{ratio}{mem}")
    if herd is not None:
        assert herd["batches"] == [order[k * a.batch:(k + 1) * a.batch] for k in range(a.steps)], \
            f"herd's batches {herd['batches']} are not the expected order {order}"
        print(f"  herd trained on the pairs in the order TRL read them: {herd['batches']}")
    trl = best.get("trl-precompute") or best.get("trl")
    if trl is not None:
        trl_ids = [None] * len(order)
        for pos, i in enumerate(order):
            trl_ids[i] = trl["token_ids"][pos]
        same = sum(h == t for h, t in zip(herd_ids, trl_ids))
        print(f"  token ids (prompt, chosen, rejected) identical in {same}/{len(order)} pairs")
        if herd is not None:
            scored = sum(hs == [len(t[1]), len(t[2])] for hs, t in zip(herd["scored"], trl_ids))
            print(f"  scored tokens per response equal TRL's completion mask in {scored}/{len(order)} pairs")
    if herd is not None and "trl-precompute" in best:
        trl_ref = [None] * len(order)
        for pos, i in enumerate(order):
            trl_ref[i] = best["trl-precompute"]["ref_logps"][pos]
        diffs = [abs(x - y) for h, t in zip(herd["ref_logps"], trl_ref) for x, y in zip(h, t)]
        rel = [abs(x - y) / abs(y) for h, t in zip(herd["ref_logps"], trl_ref) for x, y in zip(h, t)]
        print(f"  step-0 sequence log-probs (chosen, rejected), herd vs TRL: max |diff| {max(diffs):.2e}, "
              f"max rel {max(rel):.2e} over {len(diffs)}; first pair herd {herd['ref_logps'][0]} TRL {trl_ref[0]}")
    print(f"  ln 2 = {math.log(2):.6f}")


if __name__ == "__main__":
    main()
