"""FP8 vs BF16 prefill throughput on Llama-3-8B-shaped layers (needs a GPU with compute capability >= 8.9).

    python benchmarks/quant_gpu.py [--layers 4] [--batch 8] [--seq 2048] [--iters 10] [--json out.json]

Builds a herd Transformer with the Llama 3 8B shapes (dim 4096, FFN 14336, 32 heads / 8 KV heads,
vocab 128256) but only `--layers` layers, random weights (the pretraining init), in bfloat16 on the
GPU, and a copy quantized with `prepare_for_inference(model, quantization="fp8")` (the paper's recipe:
FFN matmuls of layers 1..L-2 in FP8 with row-wise scales, activation amax bounded at 1200, attention in BF16).

Measured (CUDA events, mean of `--iters` after warm-up), for a prefill of batch x seq tokens:
- the whole small model as built (embedding, L layers with first/last BF16, final norm, output
  head for the last position of each sequence, as a prefill that samples the next token does);
- one inner Transformer layer (the layer that is BF16 or FP8; 30 of the 8B model's 32 layers are
  inner) and its FFN alone;
- an estimate for the full 32-layer Llama 3 8B: T_model(L) + (32 - L) * T_inner_layer, the
  embedding/head/first/last-layer time measured once and the missing inner layers added.
The target (>= 1.3x) is checked on the 32-layer estimate; the as-built number for L=4 quantizes only
2 of 4 layers and is reported beside it.

Numerics: the max over positions of max|logit_fp8 - logit_bf16| / max|logit_bf16| and the overall
relative L2 difference, on the as-built model; and one FP8 linear's `torch._scaled_mm` output against
the CPU emulation path computed on the GPU (the numbers the CPU tests check).

Prints one summary line beginning "quant_gpu:"; exits 2 without CUDA, 3 without an FP8-capable GPU,
4 if the FP8 kernel path failed and fell back to the emulation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch


def cuda_time_ms(fn, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def compare_ms(fns: dict, iters: int, warmup: int, rounds: int) -> dict:
    """Median over `rounds` of each function's mean time, the functions interleaved round by round
    (so clock and thermal drift hit all of them alike)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(cuda_time_ms(fn, iters, 0))
    return {name: statistics.median(v) for name, v in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    parser.add_argument("--full-layers", type=int, default=32, help="layers of the model to extrapolate to")
    parser.add_argument("--target", type=float, default=1.3)
    parser.add_argument("--eager-quant", action="store_true", help="do not compile the activation quantization")
    parser.add_argument("--int8", action="store_true", help="also time Int8Linear's CUDA kernels (decode shapes)")
    parser.add_argument("--json", help="write all numbers here")
    args = parser.parse_args()

    if not torch.cuda.is_available():
        print("quant_gpu: CUDA is not available; this benchmark needs a GPU with compute capability >= 8.9 (H100)")
        return 2

    import herd.infer.quant as quant
    from herd.infer import prepare_for_inference
    from herd.infer.quant import Fp8Linear, fp8_kernel_available, fp8_scaled_mm_emulated
    from herd.model import Causal, Transformer, get_config, init_weights
    from herd.model.transformer import FeedForward
    from herd.model.rope import rope_cos_sin

    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    cap = torch.cuda.get_device_capability(device)
    if not fp8_kernel_available(device):
        print(f"quant_gpu: {name} (sm_{cap[0]}{cap[1]}) has no row-wise FP8 torch._scaled_mm (needs sm_89+)")
        return 3
    if args.eager_quant:
        quant.COMPILE_CUDA_QUANT = False
    torch.backends.cuda.matmul.allow_tf32 = True

    cfg = get_config("llama3-8b", n_layers=args.layers, max_seq_len=max(args.seq, 2048))
    torch.manual_seed(0)
    with torch.device(device):
        model = Transformer(cfg)
    init_weights(model, generator=torch.Generator(device=device).manual_seed(0))
    bf16 = model.to(torch.bfloat16).eval()
    fp8 = prepare_for_inference(bf16, quantization="fp8")
    n_fp8 = sum(isinstance(m, Fp8Linear) for m in fp8.modules())

    tokens = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), device=device)
    n_tokens = tokens.numel()
    results: dict = {"device": name, "capability": cap, "torch": torch.__version__, "layers": args.layers,
                     "batch": args.batch, "seq": args.seq, "fp8_linears": n_fp8,
                     "compiled_act_quant": quant.COMPILE_CUDA_QUANT}

    with torch.inference_mode():
        # --- numerics first (also compiles the activation quantization outside the timed region)
        t0 = time.perf_counter()
        sample = tokens[:2, : min(args.seq, 512)]
        ref, out = bf16(sample).float(), fp8(sample).float()
        row_rel = (out - ref).abs().amax(-1) / ref.abs().amax(-1)
        results["max_rel_logit_diff"] = row_rel.max().item()
        results["rel_l2_logit_diff"] = ((out - ref).norm() / ref.norm()).item()
        results["argmax_agree"] = (out.argmax(-1) == ref.argmax(-1)).float().mean().item()
        del ref, out
        lin = fp8.layers[1].feed_forward.w2
        x = torch.randn(1000, lin.in_features, device=device, dtype=torch.bfloat16) * 3
        y_kernel = lin(x).float()
        x_fp8, x_scale = quant.quantize_fp8_rowwise(x, lin.scale_ub)
        y_emul = fp8_scaled_mm_emulated(x_fp8, x_scale, lin.weight, lin.weight_scale)
        # the kernel writes bf16: compare with the emulation rounded the same way (what is left is the
        # kernel's fast accumulation and the compiled-vs-eager quantization)
        y_emul = y_emul.bfloat16().float()
        results["kernel_vs_emulation_rel"] = ((y_kernel - y_emul).norm() / y_emul.norm()).item()
        x_fp8_c, x_scale_c = quant._quantize_activations(x, lin.scale_ub)
        results["compiled_quant_elements_differing"] = (
            (x_fp8_c.view(torch.uint8) != x_fp8.view(torch.uint8)).float().mean().item()
        )
        results["compiled_quant_scale_max_rel_diff"] = ((x_scale_c - x_scale).abs() / x_scale).max().item()
        for m_rows in (1, 7, 33):  # decode-like shapes through the kernel (M not a multiple of 16)
            lin(torch.randn(m_rows, lin.in_features, device=device, dtype=torch.bfloat16))
        kernel_ok = not any(m._kernel_broken for m in fp8.modules() if isinstance(m, Fp8Linear))
        results["kernel_used"] = kernel_ok
        results["setup_s"] = time.perf_counter() - t0

        # --- whole small model, as built; and with fused projections (wqkv, w13) on both
        bf16_f = prepare_for_inference(bf16, fuse=True)
        fp8_f = prepare_for_inference(bf16, quantization="fp8", fuse=True)
        fp8_f(sample)  # compile for the fused shapes outside the timed region
        models = {"bf16": bf16, "fp8": fp8, "bf16_fused": bf16_f, "fp8_fused": fp8_f}
        last = torch.tensor([args.seq - 1], device=device)
        t_model = compare_ms({k: (lambda m=m: m(tokens, select=last)) for k, m in models.items()},
                             args.iters, args.warmup, args.rounds)

        # --- one inner layer, its FFN and its attention, on real post-embedding activations
        positions = torch.arange(args.seq, device=device)
        cos, sin = rope_cos_sin(positions, bf16.inv_freq)
        causal = Causal()
        h = bf16.tok_embeddings(tokens)
        hn = bf16.layers[1].ffn_norm(h)
        hq_in = torch.randn(n_tokens, cfg.ffn_dim, device=device, dtype=torch.bfloat16)
        fns = {}
        for k, m in models.items():
            layer = m.layers[1]
            fns["layer_" + k] = lambda layer=layer: layer(h, cos, sin, causal)
            fns["ffn_" + k] = lambda layer=layer: layer.feed_forward(hn)
        layer_f = fp8.layers[1]
        fns["ffn_fp8_module_by_module"] = lambda: FeedForward.forward(layer_f.feed_forward, hn)
        layer_b = bf16.layers[1]
        fns["attention"] = lambda: layer_b.attention(layer_b.attention_norm(h), cos, sin, causal)
        fns["act_quant"] = lambda: quant._quantize_activations(hq_in, quant.FP8_SCALE_UB)
        t = compare_ms(fns, args.iters, args.warmup, args.rounds)
        del bf16_f, fp8_f, models

    extra = args.full_layers - args.layers
    tok_s = lambda ms: n_tokens / (ms / 1e3)  # noqa: E731
    results["times_ms"] = {**{"model_" + k: v for k, v in t_model.items()}, **t}
    for variant in ("", "_fused"):
        b, f = "bf16" + variant, "fp8" + variant
        est_b = t_model[b] + extra * t["layer_" + b]
        est_f = t_model[f] + extra * t["layer_" + f]
        results["summary" + variant] = {
            "model_tok_s_bf16": tok_s(t_model[b]), "model_tok_s_fp8": tok_s(t_model[f]),
            "model_ratio": t_model[b] / t_model[f],
            "layer_ratio": t["layer_" + b] / t["layer_" + f], "ffn_ratio": t["ffn_" + b] / t["ffn_" + f],
            "est_full_tok_s_bf16": tok_s(est_b), "est_full_tok_s_fp8": tok_s(est_f), "est_full_ratio": est_b / est_f,
        }
    r = results
    print(f"device {name} (sm_{cap[0]}{cap[1]}), torch {torch.__version__}; Llama-3-8B shapes, {args.layers} layers "
          f"({n_fp8} FP8 linears), prefill {args.batch}x{args.seq} = {n_tokens} tokens; activation quantization "
          f"{'compiled' if quant.COMPILE_CUDA_QUANT else 'eager'}; median of {args.rounds} interleaved rounds")
    for variant, label in (("", "as built"), ("_fused", "fused projections on both")):
        sm, b, f = r["summary" + variant], "bf16" + variant, "fp8" + variant
        print(f"  [{label}] {args.layers}-layer model: bf16 {sm['model_tok_s_bf16']:,.0f} tok/s "
              f"({t_model[b]:.1f} ms), fp8 {sm['model_tok_s_fp8']:,.0f} tok/s ({t_model[f]:.1f} ms), "
              f"ratio {sm['model_ratio']:.2f}x")
        print(f"      inner layer {t['layer_' + b]:.2f} -> {t['layer_' + f]:.2f} ms ({sm['layer_ratio']:.2f}x); "
              f"FFN {t['ffn_' + b]:.2f} -> {t['ffn_' + f]:.2f} ms ({sm['ffn_ratio']:.2f}x); "
              f"est. {args.full_layers}-layer 8B: bf16 {sm['est_full_tok_s_bf16']:,.0f} tok/s, "
              f"fp8 {sm['est_full_tok_s_fp8']:,.0f} tok/s, ratio {sm['est_full_ratio']:.2f}x")
    print(f"  FP8 FFN module by module (no fusion) {t['ffn_fp8_module_by_module']:.2f} ms; attention block "
          f"(bf16 in both) {t['attention']:.2f} ms; quantizing a [{n_tokens}, {cfg.ffn_dim}] activation "
          f"{t['act_quant']:.2f} ms")
    print(f"  logits fp8 vs bf16: max rel {r['max_rel_logit_diff']:.4f}, rel L2 {r['rel_l2_logit_diff']:.4f}, "
          f"argmax agree {r['argmax_agree']:.3f}; "
          f"_scaled_mm vs CPU-path emulation rel {r['kernel_vs_emulation_rel']:.2e}; "
          f"compiled vs eager quantization: {r['compiled_quant_elements_differing']:.1e} of fp8 elements differ, "
          f"scales within {r['compiled_quant_scale_max_rel_diff']:.1e}")
    sm, smf = r["summary"], r["summary_fused"]
    verdict = "PASS" if sm["est_full_ratio"] >= args.target else "BELOW TARGET"
    if not kernel_ok:
        verdict = "KERNEL FAILED (emulation used)"
    print(f"quant_gpu: {name} | bf16 {sm['est_full_tok_s_bf16']:,.0f} tok/s | "
          f"fp8 {sm['est_full_tok_s_fp8']:,.0f} tok/s | "
          f"ratio {sm['est_full_ratio']:.2f}x (est. {args.full_layers}-layer 8B prefill; inner layer "
          f"{sm['layer_ratio']:.2f}x, {args.layers}-layer as built {sm['model_ratio']:.2f}x; "
          f"fused projections {smf['est_full_ratio']:.2f}x) | target >= {args.target}x: {verdict} | "
          f"max rel logit diff {r['max_rel_logit_diff']:.4f}")
    if args.int8:
        results["int8"] = int8_table(args.iters)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0 if kernel_ok else 4


def int8_table(iters: int) -> list[dict]:
    """Int8Linear on CUDA: aten._weight_int8pack_mm vs dequantize + matmul vs the bf16 matmul."""
    from herd.infer.quant import Int8Linear

    rows_out = []
    print("Int8Linear on CUDA (ms): rows | bf16 dense | int8 auto | packed op | dequant+mm | rel err vs dequant ref")
    with torch.inference_mode():
        for k, n in [(4096, 14336), (14336, 4096)]:
            lin = torch.nn.Linear(k, n, bias=False, device="cuda", dtype=torch.bfloat16)
            q = Int8Linear.from_linear(lin)
            for rows in (1, 16, 256):
                x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
                r = {"k": k, "n": n, "rows": rows}
                r["bf16"] = cuda_time_ms(lambda: lin(x), iters * 10, 3)
                r["auto"] = cuda_time_ms(lambda: q(x), iters * 10, 3)
                ref = (x.float() @ (q.weight.float() * q.weight_scale[:, None]).t())
                try:
                    y = torch.ops.aten._weight_int8pack_mm(x, q.weight, q.weight_scale.to(torch.bfloat16))
                    r["pack"] = cuda_time_ms(
                        lambda: torch.ops.aten._weight_int8pack_mm(x, q.weight, q.weight_scale.to(torch.bfloat16)),
                        iters * 10, 3)
                    r["pack_rel_err"] = ((y.float() - ref).norm() / ref.norm()).item()
                except Exception as err:  # noqa: BLE001
                    r["pack"] = float("nan")
                    r["pack_error"] = str(err)[:200]
                q.pack_max_rows = -1
                r["dequant"] = cuda_time_ms(lambda: q(x), iters * 10, 3)
                q.pack_max_rows = Int8Linear(1, 1).pack_max_rows
                print(f"  {k}x{n} {rows:5d} | {r['bf16']:.3f} | {r['auto']:.3f} | {r['pack']:.3f} | "
                      f"{r['dequant']:.3f} | "
                      f"{r.get('pack_rel_err', r.get('pack_error'))}")
                rows_out.append(r)
    return rows_out


if __name__ == "__main__":
    sys.exit(main())
