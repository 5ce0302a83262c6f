"""Batch-1 bf16 decode on a GPU as a fraction of measured memory bandwidth (Llama-3.2-1B shape).

Decode at batch 1 reads every weight once per token, so tokens/s x bytes/token over the device's
measured copy bandwidth says how close to the hardware floor a decoder runs. Peers in the same run:
HF transformers `generate` (same weights) and herd's eager KV-cache loop; herd's compiled decoder
(torch.compile + CUDA graphs over a static KV cache) is the fast path.

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
from herd.infer.static_cache import CompiledDecoder
from herd.model import KVCache, Transformer, get_config, init_weights, param_counts


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


def time_decode(step, n: int) -> float:  # type: ignore[no-untyped-def]
    """Tokens/s of `step(i)` called n times (after the caller's warm-up), host-synchronized."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(n):
        step(i)
    torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="llama3.2-1b")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--skip-eager", action="store_true")
    parser.add_argument("--mode", default="reduce-overhead", help="torch.compile mode for the decode step")
    parser.add_argument("--coordinate-descent", action="store_true", help="inductor coordinate-descent tuning")
    parser.add_argument("--fuse", action="store_true", help="fuse wq/wk/wv and w1/w3 before compiling")
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
    unfused_state = {k: v for k, v in model.state_dict().items()}
    max_len = args.prompt + args.tokens + 16
    prompt = torch.randint(0, config.vocab_size, (1, args.prompt), device="cuda")
    bandwidth = copy_bandwidth()
    results: dict[str, float] = {}

    # herd eager: contiguous KV cache, one forward per token.
    cache = KVCache(config, 1, max_len, dtype=torch.bfloat16, device="cuda")
    token = torch.zeros(1, 1, dtype=torch.long, device="cuda")
    with torch.inference_mode():
        model(prompt, cache=cache)

        def eager(i: int) -> None:
            model(token, cache=cache, start_pos=args.prompt + i)

        if not args.skip_eager:
            for i in range(5):
                eager(i)
            results["herd eager (KV cache)"] = time_decode(eager, args.tokens)

    # herd compiled: static cache + CUDA graphs.
    if args.fuse:
        model.fuse_projections()
    decoder = CompiledDecoder(model, max_len, compile=True, mode=args.mode)
    decoder.prefill(prompt)
    positions = [torch.tensor([args.prompt + i], device="cuda") for i in range(args.tokens + 8)]
    compile_start = time.perf_counter()
    for i in range(8):
        decoder.decode(token, positions[i])
    torch.cuda.synchronize()
    compile_s = time.perf_counter() - compile_start
    results[f"herd compiled ({args.mode}{', fused' if args.fuse else ''})"] = time_decode(lambda i: decoder.decode(token, positions[i]), args.tokens)

    # Correctness of the fast path: greedy tokens equal the eager path's.
    with torch.inference_mode():
        ref_cache = KVCache(config, 1, max_len, dtype=torch.bfloat16, device="cuda")
        logits, ref = model(prompt, cache=ref_cache, last_only=True), []
        for i in range(16):
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            ref.append(int(nxt))
            logits = model(nxt, cache=ref_cache, start_pos=args.prompt + i)
    fast_decoder = CompiledDecoder(model, max_len, compile=True, mode=args.mode)
    logits, fast = fast_decoder.prefill(prompt), []
    for i in range(16):
        nxt = logits.argmax(-1, keepdim=True)
        fast.append(int(nxt))
        logits = fast_decoder.decode(nxt.view(1, 1), positions[i])
    agree = sum(a == b for a, b in zip(ref, fast))

    if not args.skip_hf:
        from transformers import LlamaConfig, LlamaForCausalLM

        hf_cfg = {k: v for k, v in config_to_hf(config).items() if k not in ("architectures", "model_type", "torch_dtype")}
        with torch.device("cuda"):
            hf = LlamaForCausalLM(LlamaConfig(**hf_cfg)).to(torch.bfloat16).eval()
        hf.load_state_dict(herd_to_hf_state_dict(config, unfused_state), strict=False)
        with torch.inference_mode():
            hf.generate(prompt, max_new_tokens=8, min_new_tokens=8, do_sample=False)
            torch.cuda.synchronize()
            start = time.perf_counter()
            hf.generate(prompt, max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False)
            torch.cuda.synchronize()
            results["HF transformers generate"] = args.tokens / (time.perf_counter() - start)

    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}; shape {args.shape} bf16, "
          f"{weight_bytes / 1e9:.2f} GB of weights; copy bandwidth {bandwidth / 1e12:.2f} TB/s; "
          f"compile+capture {compile_s:.0f} s; compiled greedy tokens equal eager: {agree}/16")
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
