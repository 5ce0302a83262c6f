"""CPU timings of herd.infer.quant: one linear and SmolLM2-135M decode, fp32 vs fp16 vs bf16 vs int8.

    .venv/bin/python benchmarks/quant_cpu.py [--tokens 32] [--repeats 100] [--json out.json]

Part 1 times one linear of the SmolLM2 FFN shapes (576->1536, 1536->576) and a Llama 3.2 1B shape
(2048->8192) at 1 row (decode), 16 and 128 rows (prefill chunks): the dense matmul in fp32 / fp16 /
bf16 and `Int8Linear` with each of its two CPU kernels forced (aten._weight_int8pack_mm, and
dequantize + matmul) and in its automatic choice. Median of `--repeats` calls after warm-up.

Part 2 decodes `--tokens` greedy tokens of the real SmolLM2-135M-Instruct (herd.load_model()) with the
contiguous KV cache and reports decode tokens/s (timed from the first generated token, best of two
runs) and prefill time of a 128-token prompt, for fp32, fp16, bf16, int8 (FFN weights int8, the rest
fp32) and int8 on a bf16 model. fp8 on CPU is a float emulation of the GPU kernel (slower, not a
speed mode) and is reported once for reference.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
from torch import nn

from herd.infer import prepare_for_inference
from herd.infer.quant import Int8Linear, memory_report

try:
    from host import describe
except ImportError:  # run from another directory
    from benchmarks.host import describe

PROMPT = "The history of the llama begins in the Andes, where"


def median_us(fn, repeats: int) -> float:
    for _ in range(max(3, repeats // 10)):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def linear_table(repeats: int) -> list[dict]:
    torch.manual_seed(0)
    rows_out = []
    for k, n in [(576, 1536), (1536, 576), (2048, 8192)]:
        lin = nn.Linear(k, n, bias=False)
        q = Int8Linear.from_linear(lin)
        dense = {dt: lin.weight.detach().to(dt) for dt in (torch.float32, torch.float16, torch.bfloat16)}
        reps = repeats if k * n < 4_000_000 else max(10, repeats // 5)
        for rows in (1, 16, 128):
            x32 = torch.randn(rows, k)
            xb = x32.bfloat16()
            r = {"k": k, "n": n, "rows": rows}
            with torch.inference_mode():
                for name, dt in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
                    x, w = x32.to(dt), dense[dt]
                    r[name] = median_us(lambda: x @ w.t(), reps)
                for label, x in (("int8_fp32act", x32), ("int8_bf16act", xb)):
                    r[label] = median_us(lambda: q(x), reps)  # automatic kernel choice
                    q.pack_max_rows = 1 << 30  # force the packed kernel
                    r[label + "_pack"] = median_us(lambda: q(x), reps)
                    q.pack_max_rows = -1  # force dequantize + matmul
                    r[label + "_dequant"] = median_us(lambda: q(x), reps)
                    q.pack_max_rows = Int8Linear(1, 1).pack_max_rows
            rows_out.append(r)
    return rows_out


def decode_rate(model: nn.Module, prompt: list[int], n: int) -> float:
    from herd.infer import SamplingParams, generate_tokens

    best = 0.0
    for _ in range(2):
        start, count = None, 0
        for _tok in generate_tokens(model, prompt, SamplingParams(max_tokens=n), stop_ids=()):
            if start is None:
                start = time.perf_counter()
            count += 1
        best = max(best, (count - 1) / (time.perf_counter() - start))
    return best


def prefill_ms(model: nn.Module, length: int) -> float:
    tokens = torch.randint(0, model.config.vocab_size, (1, length))
    last = torch.tensor([length - 1])
    with torch.inference_mode():
        model(tokens, select=last)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            model(tokens, select=last)
            times.append(time.perf_counter() - start)
    return min(times) * 1e3


def smollm2_table(n_tokens: int) -> list[dict]:
    import herd

    loaded = herd.load_model()
    prompt = loaded.tokenizer.encode(PROMPT)
    base = loaded.model
    variants = {
        "fp32": lambda: base,
        "fp16": lambda: copy.deepcopy(base).to(torch.float16),
        "bf16": lambda: copy.deepcopy(base).to(torch.bfloat16),
        "int8 (fp32 model)": lambda: prepare_for_inference(base, quantization="int8"),
        "int8 (bf16 model)": lambda: prepare_for_inference(copy.deepcopy(base).to(torch.bfloat16), quantization="int8"),
        "fp8 emulated (bf16 model)": lambda: prepare_for_inference(copy.deepcopy(base).to(torch.bfloat16),
                                                                   quantization="fp8"),
    }
    out = []
    reference = None
    for name, make in variants.items():
        model = make()
        from herd.infer import SamplingParams, generate_tokens

        tokens = list(generate_tokens(model, prompt, SamplingParams(max_tokens=16), stop_ids=()))
        reference = reference or tokens
        same = sum(a == b for a, b in zip(tokens, reference))
        row = {
            "variant": name,
            "decode_tok_s": decode_rate(model, prompt, n_tokens),
            "prefill128_ms": prefill_ms(model, 128),
            "greedy16_same_as_fp32": same,
            "weights_mib": memory_report(model).model_bytes / 2**20,
        }
        out.append(row)
        print(
            f"  {name:28s} decode {row['decode_tok_s']:6.1f} tok/s  prefill(128) {row['prefill128_ms']:7.1f} ms  "
            f"greedy16 = fp32 at {same:2d}/16  weights {row['weights_mib']:6.1f} MiB",
            flush=True,
        )
        del model
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--json", help="write all numbers here")
    parser.add_argument("--skip-model", action="store_true", help="only the single-linear table")
    args = parser.parse_args()

    print(
        f"{describe()}; ATen CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    print("\nOne linear, median microseconds (int8 auto = Int8Linear's own kernel choice):")
    header = (
        f"{'K':>5} {'N':>5} {'rows':>4} | {'fp32':>7} {'fp16':>7} {'bf16':>7} | "
        f"{'i8 f32':>7} {'pack':>7} {'deq':>7} | {'i8 bf16':>7} {'pack':>7} {'deq':>7}"
    )
    print(header)
    lin = linear_table(args.repeats)
    for r in lin:
        print(
            f"{r['k']:5d} {r['n']:5d} {r['rows']:4d} | {r['fp32']:7.0f} {r['fp16']:7.0f} {r['bf16']:7.0f} | "
            f"{r['int8_fp32act']:7.0f} {r['int8_fp32act_pack']:7.0f} {r['int8_fp32act_dequant']:7.0f} | "
            f"{r['int8_bf16act']:7.0f} {r['int8_bf16act_pack']:7.0f} {r['int8_bf16act_dequant']:7.0f}",
            flush=True,
        )
    model_rows: list[dict] = []
    if not args.skip_model:
        print(f"\nSmolLM2-135M-Instruct, greedy decode of {args.tokens} tokens (best of 2):")
        model_rows = smollm2_table(args.tokens)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "linear": lin,
                       "smollm2": model_rows}, f, indent=1)


if __name__ == "__main__":
    main()
