"""Aggregate decode throughput of herd's paged engine at 64 concurrent sequences on a GPU.

A Llama-3.2-1B-shaped model (random weights, bf16), 64 requests of `--prompt` tokens each generating
`--tokens` tokens (EOS ignored) through LLMEngine; the peer in the same run is HF transformers
`generate` on the same weights with the same batch (left-padded, static batch).

    PYTHONPATH=. python3 benchmarks/engine_gpu.py [--shape llama3.2-1b] [--seqs 64]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from herd.checkpoint.hf import config_to_hf, herd_to_hf_state_dict
from herd.infer.engine import EngineConfig, LLMEngine
from herd.infer.sampling import SamplingParams
from herd.loading import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="llama3.2-1b")
    parser.add_argument("--seqs", type=int, default=64)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--attention", default="portable", choices=["portable", "flex"],
                        help="paged attention: portable (gathers blocks) or flex (reads the cache in place)")
    parser.add_argument("--json", default=os.path.join(os.environ.get("OUT", "."), "engine_gpu.json"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("engine_gpu.py needs a CUDA GPU")
    loaded = load_model(f"random:{args.shape}", dtype=torch.bfloat16, device="cuda")
    config = loaded.config
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 120_000, (args.prompt,), generator=gen).tolist() for _ in range(args.seqs)]
    params = SamplingParams(max_tokens=args.tokens, ignore_eos=True)
    engine = LLMEngine(loaded, EngineConfig(max_num_seqs=args.seqs, max_batched_tokens=8192, attention=args.attention))
    engine.generate(prompts[:2], SamplingParams(max_tokens=8, ignore_eos=True))  # warm-up
    results = {}
    for n in (1, args.seqs):
        torch.cuda.synchronize()
        start = time.perf_counter()
        outputs = engine.generate(prompts[:n], params)
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        generated = sum(len(o.outputs[0].token_ids) for o in outputs)
        results[f"herd engine, {n} seqs"] = generated / elapsed
    if not args.skip_hf:
        from transformers import LlamaConfig, LlamaForCausalLM

        hf_cfg = {k: v for k, v in config_to_hf(config).items() if k not in ("architectures", "model_type", "torch_dtype")}
        with torch.device("cuda"):
            hf = LlamaForCausalLM(LlamaConfig(**hf_cfg)).to(torch.bfloat16).eval()
        hf.load_state_dict(herd_to_hf_state_dict(config, loaded.model.state_dict()), strict=False)
        batch = torch.tensor(prompts, device="cuda")
        with torch.inference_mode():
            hf.generate(batch[:2], max_new_tokens=8, min_new_tokens=8, do_sample=False)
            torch.cuda.synchronize()
            start = time.perf_counter()
            hf.generate(batch, max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False)
            torch.cuda.synchronize()
        results[f"HF generate, batch {args.seqs}"] = args.seqs * args.tokens / (time.perf_counter() - start)
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}; {args.shape} bf16, prompt "
          f"{args.prompt}, {args.tokens} new tokens per sequence")
    for name, rate in results.items():
        print(f"{name:28s} {rate:9.1f} generated tok/s")
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
