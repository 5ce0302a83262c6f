"""Batch-1 bf16 decode on a GPU as a fraction of measured memory bandwidth (Llama-3.2-1B shape).

Decode at batch 1 reads every weight once per token, so tokens/s x bytes/token over the device's
measured copy bandwidth says how close to the hardware floor a decoder runs. Peers in the same run:
HF transformers `generate` (same weights) and herd's engine eager; the engine's compiled decode step
(`EngineConfig(compile=True)`, optionally over `prepare_for_inference(fuse=True)`) is the fast path.

    PYTHONPATH=. python3 benchmarks/decode_gpu.py [--shape llama3.2-1b] [--tokens 256]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch._inductor.config

from herd.checkpoint.hf import config_to_hf, herd_to_hf_state_dict
from herd.infer import EngineConfig, LLMEngine, SamplingParams, prepare_for_inference
from herd.loading import LoadedModel
from herd.model import Transformer, get_config, init_weights, param_counts
from herd.tokenizer import Llama3Tokenizer, chat_format_for


def copy_bandwidth(nbytes: int = 2 << 30) -> float:
    """Device-to-device copy rate in bytes/s, counting bytes read plus bytes written."""
    src = torch.randn(nbytes // 2, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * nbytes / sorted(times)[len(times) // 2]


def engine_decode(engine: LLMEngine, prompt: list[int], tokens: int) -> tuple[float, list[int]]:
    """(tokens/s of greedy decode after the prompt, the tokens); prefill is timed separately and excluded."""
    greedy = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True)
    torch.cuda.synchronize()
    start = time.perf_counter()
    engine.generate([prompt], greedy)
    torch.cuda.synchronize()
    prefill_s = time.perf_counter() - start
    start = time.perf_counter()
    out = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True))[0]
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start - prefill_s
    return (tokens - 1) / elapsed, list(out.outputs[0].token_ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="llama3.2-1b")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--skip-eager", action="store_true")
    parser.add_argument("--coordinate-descent", action="store_true", help="inductor coordinate-descent tuning")
    parser.add_argument("--fuse", action="store_true", help="fuse wq/wk/wv and w1/w3 (prepare_for_inference)")
    parser.add_argument("--json", default=os.path.join(os.environ.get("OUT", "."), "decode_gpu.json"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("decode_gpu.py needs a CUDA GPU")
    torch.manual_seed(0)
    if args.coordinate_descent:
        torch._inductor.config.coordinate_descent_tuning = True
    config = get_config(args.shape)
    with torch.device("cuda"):
        model = Transformer(config)
    init_weights(model)
    model = model.to(torch.bfloat16).eval()
    weight_bytes = param_counts(config)["total"] * 2
    tokenizer = Llama3Tokenizer()
    loaded = LoadedModel(model, tokenizer, chat_format_for(tokenizer), config, f"random:{args.shape}")
    prompt = torch.randint(0, config.vocab_size, (args.prompt,)).tolist()
    blocks = (args.prompt + args.tokens) // 16 + 4
    bandwidth = copy_bandwidth()
    results: dict[str, float] = {}

    # herd eager: the engine's paged attention, one forward per token.
    if not args.skip_eager:
        eager = LLMEngine(loaded, EngineConfig(num_blocks=blocks, max_num_seqs=1))
        engine_decode(eager, prompt, 8)
        results["herd engine, eager"], eager_tokens = engine_decode(eager, prompt, args.tokens)

    # herd compiled: the engine's decode step through torch.compile (optionally fused projections).
    fast_model = prepare_for_inference(model, fuse=True) if args.fuse else model
    fast = LLMEngine(LoadedModel(fast_model, tokenizer, loaded.chat_format, config, loaded.source),
                     EngineConfig(num_blocks=blocks, max_num_seqs=1, compile=True))
    compile_start = time.perf_counter()
    engine_decode(fast, prompt, 8)
    torch.cuda.synchronize()
    compile_s = time.perf_counter() - compile_start
    name = f"herd engine, compiled{' + fused' if args.fuse else ''}"
    results[name], fast_tokens = engine_decode(fast, prompt, args.tokens)

    # Correctness of the fast path: greedy tokens equal the eager engine's.
    if args.skip_eager:
        eager_tokens = engine_decode(LLMEngine(loaded, EngineConfig(num_blocks=blocks, max_num_seqs=1)), prompt, 16)[1]
    agree = sum(a == b for a, b in zip(eager_tokens[:16], fast_tokens[:16]))

    if not args.skip_hf:
        from transformers import LlamaConfig, LlamaForCausalLM

        hf_cfg = {k: v for k, v in config_to_hf(config).items() if k not in ("architectures", "model_type", "torch_dtype")}
        with torch.device("cuda"):
            hf = LlamaForCausalLM(LlamaConfig(**hf_cfg)).to(torch.bfloat16).eval()
        hf.load_state_dict(herd_to_hf_state_dict(config, model.state_dict()), strict=False)
        with torch.inference_mode():
            ids = torch.tensor([prompt], device="cuda")
            hf.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=False)
            torch.cuda.synchronize()
            start = time.perf_counter()
            hf.generate(ids, max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False)
            torch.cuda.synchronize()
            results["HF transformers generate"] = args.tokens / (time.perf_counter() - start)

    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}; shape {args.shape} bf16, "
          f"{weight_bytes / 1e9:.2f} GB of weights; copy bandwidth {bandwidth / 1e12:.2f} TB/s; "
          f"first compiled steps {compile_s:.0f} s; compiled greedy tokens equal eager: {agree}/16")
    rows = []
    for name, tok_s in results.items():
        fraction = tok_s * weight_bytes / bandwidth
        rows.append({"engine": name, "tok_s": tok_s, "bandwidth_fraction": fraction})
        print(f"{name:32s} {tok_s:8.1f} tok/s  {100 * fraction:5.1f}% of measured bandwidth")
    with open(args.json, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "bandwidth": bandwidth, "rows": rows,
                   "agree": agree}, f, indent=2)


if __name__ == "__main__":
    main()
