"""`herd demo`: the whole Llama 3 pretraining story, end to end, on a laptop CPU in under 20 minutes.

Seven stages, each recorded in `<out>/state.json` when it finishes:

1. corpus: raw local documents (stdlib docs and code, translated man pages, synthetic arithmetic);
2. curate: `herd curate`'s pipeline on them (extraction, filters, PII, language ID, URL/MinHash/line
   dedup, quality and domain classifiers) with a fast recipe; its mix gives the token shards and the
   pretraining and annealing mixes;
3. pretrain: a small Llama 3 (the real 128K tokenizer and architecture) with warmup + cosine and a
   batch/sequence ramp, document-masked packing;
4. long context: 4x the pretraining context with synthetic retrieval documents mixed in, gated on
   short-context loss recovery and needle-in-a-haystack retrieval (herd.train.long_context);
5. anneal: LR linearly to 0 on curation's high-quality annealing mix;
6. average: Polyak average of the annealing checkpoints, saved in Hugging Face format;
7. report: held-out losses, the NIAH grid (depth x length), plots, samples, each stage's cost.

A stop request (SIGTERM or Ctrl-C) ends the whole command after the running stage has saved what it
can (training stages save a checkpoint); `herd demo --resume` skips finished stages and continues the
interrupted one. `--scale` multiplies every token budget (0.2: a ~3-minute smoke run whose gates are
not expected to pass, and are labelled so).

Training runs in float32 on CPU: bf16 autocast is fast only on CPUs with native bf16 arithmetic, and
~50x slower than float32 on the common AVX2 ones, so the demo never depends on it.

Modules, one job each: `state` (settings, state.json, result), `progress` (the status line),
`stopping` (stop requests, quiet stages), `recipes` (budgets and configs), `stages` (the seven
stages), `report` (averaging, samples, plots, report.md) and `runner` (run_demo). Everything public
is re-exported here, so `from herd.train.demo import run_demo` keeps working.
"""

from __future__ import annotations

from herd.train.demo.progress import Progress
from herd.train.demo.recipes import (
    ANNEAL_TOKENS,
    LONG_ROUNDS,
    LONG_SEQ,
    LONG_TOKENS_PER_ROUND,
    MODEL,
    NIAH_DEPTHS,
    NIAH_LENGTHS,
    PRETRAIN_TOKENS,
    RETRIEVAL_FACTS,
    SHORT_SEQ,
    CuratedData,
    anneal_config,
    base_config,
    curate_recipe,
    curated_data,
    long_context_stage,
    retrieval_data,
)
from herd.train.demo.report import PROMPTS, plot_losses, samples, save_average, write_report
from herd.train.demo.runner import run_demo
from herd.train.demo.state import SMOKE_BELOW, STAGES, DemoError, DemoResult, DemoSettings, DemoState
from herd.train.demo.stopping import StopRequested

__all__ = [
    "ANNEAL_TOKENS", "LONG_ROUNDS", "LONG_SEQ", "LONG_TOKENS_PER_ROUND", "MODEL", "NIAH_DEPTHS", "NIAH_LENGTHS",
    "PRETRAIN_TOKENS", "PROMPTS", "RETRIEVAL_FACTS", "SHORT_SEQ", "SMOKE_BELOW", "STAGES",
    "CuratedData", "DemoError", "DemoResult", "DemoSettings", "DemoState", "Progress", "StopRequested",
    "anneal_config", "base_config", "curate_recipe", "curated_data", "long_context_stage", "plot_losses",
    "retrieval_data", "run_demo", "samples", "save_average", "write_report",
]
