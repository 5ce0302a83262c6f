"""Engine throughput on this CPU with the real SmolLM2-135M-Instruct: concurrency and prompt sharing.

    .venv/bin/python benchmarks/engine_cpu.py [--dtype float16] [--tokens 64] [--prompt-tokens 512]
        [--quantization int4] [--compile]

Two measurements, each against a baseline measured in the same run:

1. Aggregate decode throughput: 8 different prompts submitted together (continuous batching) against
   the same 8 run one after another through the same engine (single stream). Tokens/s counts generated
   tokens over wall time, prefill included.
2. Rejection sampling, as the paper uses it (10-30 samples per prompt): one prompt, n=16 samples with
   `SamplingParams(n=16)` (the prompt is prefilled once and its KV blocks are shared copy-on-write)
   against 16 independent requests of the same prompt submitted together with prefix caching off
   (each computes and stores its own prompt KV, what an engine without sharing does). A long prompt
   (`--prompt-tokens`) makes the shared prefill matter, as with the paper's long SFT prompts.

EOS is ignored so every run generates exactly `--tokens` per sequence.
"""

from __future__ import annotations

import argparse
import time

import torch

import herd
from herd.infer import EngineConfig, LLMEngine, SamplingParams

try:
    from host import describe
except ImportError:  # run from another directory
    from benchmarks.host import describe

PROMPTS = [
    "The history of the llama begins in the Andes, where",
    "Write a Python function that reverses a linked list.",
    "Explain why the sky is blue in two sentences.",
    "List three prime numbers larger than one hundred:",
    "The quick brown fox",
    "In 1969, the first humans to walk on the Moon",
    "A recipe for bread needs flour, water, salt and",
    "def fibonacci(n):",
]


def long_prompt(tokenizer, n_tokens: int) -> list[int]:
    """A real text prompt (pydoc topics) cut to n_tokens."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))
    ids = tokenizer.encode(text)[: n_tokens - 12]
    return ids + tokenizer.encode("\n\nSummarize the text above:")


def timed_generate(engine: LLMEngine, prompts, params) -> tuple[float, int]:
    start = time.perf_counter()
    outs = engine.generate(prompts, params)
    elapsed = time.perf_counter() - start
    return elapsed, sum(len(c.token_ids) for o in outs for c in o.outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="float16", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--quantization", default=None, choices=["int8", "fp8", "int4"])
    parser.add_argument("--compile", action="store_true", help="compiled decode steps (compiled before timing)")
    args = parser.parse_args()

    loaded = herd.load_model("smollm2-135m-instruct", dtype=getattr(torch, args.dtype))
    print(f"machine: {describe()}; SmolLM2-135M-Instruct {args.dtype}, quantization {args.quantization}, "
          f"compile {args.compile}; {args.tokens} new tokens each")

    options = {"quantization": args.quantization, "compile": args.compile}
    if args.compile:  # compile every graph the runs use (shapes are dynamic, so short runs cover them)
        measure(loaded, options, 4, args.prompt_tokens, args.samples, report=False)
    measure(loaded, options, args.tokens, args.prompt_tokens, args.samples, report=True)


def measure(loaded, options: dict, tokens: int, prompt_tokens: int, samples: int, report: bool) -> None:  # type: ignore[no-untyped-def]
    tok = loaded.tokenizer
    say = print if report else (lambda *a, **k: None)
    greedy = SamplingParams(max_tokens=tokens, ignore_eos=True)
    engine = LLMEngine(loaded, EngineConfig(num_blocks=2048, max_num_seqs=64, **options))
    prompts = [tok.encode(p) for p in PROMPTS]
    timed_generate(engine, prompts[:2], SamplingParams(max_tokens=8, ignore_eos=True))  # warm-up
    t_seq, n_seq = 0.0, 0
    for p in prompts:
        t, n = timed_generate(engine, [p], greedy)
        t_seq, n_seq = t_seq + t, n_seq + n
    t_conc, n_conc = timed_generate(engine, prompts, greedy)
    say(f"8 requests one at a time : {n_seq / t_seq:7.1f} tok/s ({n_seq} tokens in {t_seq:.1f} s)")
    say(f"8 concurrent requests    : {n_conc / t_conc:7.1f} tok/s ({n_conc} tokens in {t_conc:.1f} s)"
        f"  x{(n_conc / t_conc) / (n_seq / t_seq):.2f}")

    prompt = long_prompt(tok, prompt_tokens)
    sampled = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=tokens, ignore_eos=True, seed=0)
    shared = LLMEngine(loaded, EngineConfig(num_blocks=2048, max_num_seqs=64, **options))
    t_shared, n_shared = timed_generate(shared, [prompt], SamplingParams(**{**sampled.__dict__, "n": samples}))
    unshared = LLMEngine(loaded, EngineConfig(num_blocks=2048, max_num_seqs=64, enable_prefix_caching=False, **options))
    t_indep, n_indep = timed_generate(
        unshared, [prompt] * samples,
        [SamplingParams(**{**sampled.__dict__, "seed": i}) for i in range(samples)],
    )
    say(f"rejection sampling, {len(prompt)}-token prompt, {samples} samples x {tokens} tokens:")
    say(f"  {samples} independent requests (no sharing): {t_indep:6.1f} s  ({n_indep / t_indep:6.1f} tok/s)")
    say(f"  n={samples}, prompt KV shared              : {t_shared:6.1f} s  ({n_shared / t_shared:6.1f} tok/s)"
        f"  x{t_indep / t_shared:.2f}")
    say(f"  prefix-cache hits: {shared.stats().prefix_cache_hit_tokens} tokens, "
        f"copy-on-write block copies: {shared.stats().cow_copies_total}")


if __name__ == "__main__":
    main()
