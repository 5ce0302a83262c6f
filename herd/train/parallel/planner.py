"""Planner: memory per GPU and step time of a 4D-parallel layout, before launching anything.

`estimate(config, layout, seq_len, global_batch_sequences, hardware)` is an analytic model, not a
simulation. Every number it uses is stated here; nothing is fitted per configuration.

Layout and mesh. Sizes follow the paper's order [TP, CP, PP, DP] from innermost to outermost
(herd.train.parallel.layout). A group stays inside one node when the product of its size and the
sizes inside it is <= `Hardware.gpus_per_node`; it then uses `intra_bandwidth`, else `inter_bandwidth`.

Memory per GPU (the pipeline rank with the largest total decides; stages are split as the runtime
splits them, `stage_layer_counts`: first and last stage one layer fewer; rank r holds the looped
virtual stages r, r+pp, ...). Every weight is divided by tp (the norm weights tp replicates are
ignored, < 0.01% of a layer); FSDP shards over dp_shard * cp ranks (`shard`):
  * fp32 master weights 4 B/param, AdamW moments 8 B/param, fp32 sharded gradients 4 B/param: / shard.
    Without sharding (shard = 1) one bf16 copy and one fp32 gradient, whatever reshard says.
  * bf16 compute weights: reshard_after_forward = False (the paper's choice under pipelining, so
    that a backward never re-gathers) keeps the whole stage unsharded, 2 B/param, for the step, and
    gradients accumulate unsharded in fp32 over the micro-batches (the paper: "FP32 gradient
    accumulation ... reduce-scatter gradients in FP32"), 4 B/param, reduce-scattered once per step.
    reshard_after_forward = True (ZeRO-3) keeps only shards, plus two layers' unsharded bf16 weights
    (current + prefetched) and two layers' unsharded fp32 gradients (computed + being reduced).
  * Activations saved for backward, bf16, per token of one layer (h = dim, k = KV width, f = FFN):
    "compiled" (default; what fused kernels and torch.compile's recomputing partitioner keep): the
    two norm inputs (2h), q, k, v after RoPE (h + 2k), attention output (h), w1 and w3 outputs (2f),
    i.e. 2*(4h + 2k + 2f) bytes + fp32 softmax statistics (4 B x heads) + 2 fp32 norm scales.
    "eager": what herd's own Transformer block keeps under plain autograd (checked tensor by tensor in
    tests/test_planner.py): per RMSNorm an fp32 copy of the input (4 B), the normalized bf16 value
    and the output; q, k, v, attention output; w1 and w3 outputs, silu(w1 x) and the product, i.e.
    2*(10h + 2k + 4f) bytes + the same fp32 statistics.
    Everything is divided by tp (sequence parallelism shards the norm regions, heads and FFN columns
    shard the rest) and each GPU holds seq_len / cp tokens of a sequence (context parallelism).
    activation_checkpointing keeps only each layer's input (h per token) plus one layer's full set.
  * Micro-batches in flight on pipeline rank r: 1F1B: pp - r (pp on the first rank); interleaved
    with v stages per rank: pp + (pp - 1 - 2r) / v (Megatron's warm-up count, v chunks of 1/v of the
    rank's layers), both capped at n_microbatches. No pipelining: 1.
  * The last stage adds one micro-batch of vocabulary-parallel logits: bf16 logits + fp32 softmax +
    fp32 gradient = 10 B per logit of vocab / tp. Context parallelism adds one layer's gathered full
    sequence K/V and their gradients (transient). Pipeline send/receive buffers are freed at once
    (the paper deallocates them) and are not counted.
  * `Hardware.overhead_bytes`: CUDA context, NCCL buffers, allocator fragmentation, one constant.

Step time (per optimizer step; the slowest pipeline rank sets the pace):
  * compute: model FLOPs (herd.model.flops convention: 6 * params + 12 * heads * head_dim * seq per
    token and layer, output head 6 * vocab * dim) / (tp * cp) / (peak * achievable_fraction);
    activation checkpointing recomputes the forward (layer FLOPs x 4/3). `achievable_fraction` is an
    MFU-convention factor: what one GPU reaches on a Llama layer without any parallelism.
  * tensor parallel (sequence parallel): per layer and micro-batch 4 all-gathers / reduce-scatters
    forward and 4 backward (+4 with checkpointing) of the [tokens/cp, dim] bf16 activation; each moves
    (tp - 1)/tp of it per GPU. On the critical path (not overlapped).
  * context parallel: per layer and micro-batch an all-gather of K and V forward, again in backward
    plus a reduce-scatter of their gradients; (cp - 1)/cp of the full-sequence K/V. Not overlapped.
  * pipeline: per micro-batch and virtual stage one activation sent forward and one gradient back
    ([tokens/cp/tp, dim] bf16, sequence-parallel), not overlapped; plus the bubble
    (pp - 1) / (n_microbatches * stages_per_rank) times the busy time.
  * data parallel (FSDP over `shard`, fp32 reduce-scatter, bf16 all-gather, ring volume (s-1)/s;
    HSDP all-reduce of the shards across dp_replicate): reshard_after_forward = False: one
    all-gather + one reduce-scatter per step; True: 2 all-gathers + 1 reduce-scatter per micro-batch.
    Overlapped with compute: only the part longer than the busy time is exposed.
  * every collective or send also costs a fixed `Hardware.latency_s` (alpha-beta model): small
    per-layer tensor/context-parallel collectives are latency-bound, not bandwidth-bound.
  * Not modelled: the optimizer step (memory-bound on sharded state, ~ms), kernel launch gaps,
    stragglers, causal attention doing half the counted attention FLOPs (flash attention skips
    masked blocks: the model is pessimistic at long sequences), and kernels getting less efficient
    as tp and cp shrink each GPU's matmuls and attention blocks (so a search may pick small-sequence
    context parallelism that would disappoint in practice).
  * Precision: bf16 mixed precision (bf16 activations and compute weights, fp32 master, moments and
    gradient reduction). An fp32 run saves twice the activation bytes and has no separate bf16 copy.

Communication bandwidths are link rates; NCCL reaches ~80% of them, so communication is a lower bound.

CPU (to check the model against measurements with the gloo backend): time a large fp32 matmul,
`peak = 2*n**3 / seconds`, and a large tensor copy, `bandwidth = bytes / seconds`, then
`Hardware.cpu(peak_flops=peak, bandwidth_bytes_s=bandwidth, memory_bytes=psutil.virtual_memory().total)`.
Since `peak` is already the achieved matmul rate, the CPU `achievable_fraction` is 1.0 (a real
step adds element-wise work, so expect the measurement to be slower); all ranks share one "node", so
every group uses `bandwidth` (gloo over loopback is slower than a copy: timing one all-gather of a
large tensor gives a more faithful number). Compare `Estimate.step_time_s` with the
measured step time and the activation bytes with `torch.cuda.max_memory_allocated` on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from herd.config import MeshSizes
from herd.model import ModelConfig, flops_per_token, param_counts
from herd.train.parallel.layout import stage_layer_counts

GIB = 2**30


class PlanError(ValueError):
    """A layout or planner input that cannot work; the message says which value and why."""


@dataclass(frozen=True)
class Hardware:
    """One accelerator type. Bandwidths are bytes/s per GPU per direction."""

    name: str
    memory_bytes: float
    peak_flops: float
    intra_bandwidth: float  # inside a node (NVLink): TP and CP when they fit in a node
    inter_bandwidth: float  # between nodes (InfiniBand): DP, PP, and TP/CP groups that span nodes
    achievable_fraction: float  # MFU-convention fraction of peak one GPU reaches on a Llama layer
    gpus_per_node: int = 8
    overhead_bytes: float = 4 * GIB
    latency_s: float = 20e-6  # fixed cost of one collective or send, whatever its size (alpha-beta model)

    @classmethod
    def h100(cls) -> Hardware:
        """H100 SXM 80GB. 80e9 bytes (the card exposes ~79 GiB = ~85e9; the rest is margin); dense BF16 989 TFLOP/s;
        NVLink 4 450 GB/s per direction; one 400 Gb/s InfiniBand NIC per GPU = 50 GB/s.
        achievable_fraction 0.54: torchtitan 0.2.0 compiled, 8B layer shapes at seq 8,192 on one
        H100 (DESIGN.md section 4). overhead 4 GiB: ~0.5 GiB CUDA context, ~1-2 GiB NCCL
        buffers for four process groups, the rest allocator fragmentation. latency 20 us: a small
        NCCL collective inside a node (kernel launch + protocol), the usual alpha of an alpha-beta model."""
        return cls("h100", 80e9, 989e12, 450e9, 50e9, 0.54, gpus_per_node=8, overhead_bytes=4 * GIB, latency_s=20e-6)

    @classmethod
    def cpu(cls, peak_flops: float, bandwidth_bytes_s: float, memory_bytes: float,
            latency_s: float = 100e-6) -> Hardware:
        """A CPU box from measured numbers (module docstring): every rank in one node, gloo over
        memory, peak = the measured matmul rate (so achievable_fraction = 1); `latency_s` = the time
        of a tiny gloo all-reduce."""
        if min(peak_flops, bandwidth_bytes_s, memory_bytes, latency_s) <= 0:
            raise PlanError("Hardware.cpu: peak_flops, bandwidth_bytes_s, memory_bytes and latency_s must be positive")
        return cls("cpu", memory_bytes, peak_flops, bandwidth_bytes_s, bandwidth_bytes_s, 1.0,
                   gpus_per_node=1 << 20, overhead_bytes=0.5 * GIB, latency_s=latency_s)


HARDWARE = {"h100": Hardware.h100}


@dataclass(frozen=True, kw_only=True)
class Layout(MeshSizes):
    """Sizes of each parallel dimension (herd.config.MeshSizes, the type the runtime and the recipe
    use) and how the batch runs through them.

    `microbatch_sequences` sequences go through the model at once on each data-parallel rank;
    `n_microbatches` of them make one rank's share of the global batch (pipeline micro-batches, or
    gradient accumulation without pipelining). `reshard_after_forward` None = not with pp (the paper).
    """

    pp_stages_per_rank: int = 1
    microbatch_sequences: int = 1
    n_microbatches: int = 1
    activation_checkpointing: bool = False
    reshard_after_forward: bool | None = None

    @property
    def reshard(self) -> bool:
        return self.pp == 1 if self.reshard_after_forward is None else self.reshard_after_forward

    def describe(self) -> str:
        parts = [f"tp={self.tp}", f"cp={self.cp}", f"pp={self.pp}"]
        if self.pp_stages_per_rank > 1:
            parts.append(f"v={self.pp_stages_per_rank}")
        parts += [f"dp_shard={self.dp_shard}"] + ([f"dp_rep={self.dp_replicate}"] if self.dp_replicate > 1 else [])
        parts.append(f"mb={self.microbatch_sequences}x{self.n_microbatches}")
        flags = (["ac"] if self.activation_checkpointing else []) + (["reshard"] if self.reshard else [])
        return " ".join(parts + flags)


def layout_size_problems(sizes: MeshSizes, model: ModelConfig, world_size: int, seq_len: int,
                         pp_stages_per_rank: int = 1) -> list[str]:
    """Human-readable reasons these sizes cannot run this model (empty = fine). No torch: the
    runtime plan (herd.train.parallel.layout) calls it before building a device mesh, the planner
    before estimating."""
    dp_replicate, dp_shard, cp, pp, tp = sizes.dp_replicate, sizes.dp_shard, sizes.cp, sizes.pp, sizes.tp
    n_layers, n_heads, n_kv_heads, ffn_dim = model.n_layers, model.n_heads, model.n_kv_heads, model.ffn_dim
    named = {"dp_replicate": dp_replicate, "dp_shard": dp_shard, "cp": cp, "pp": pp, "tp": tp,
             "pp_stages_per_rank": pp_stages_per_rank}
    problems = [f"{name} = {value} must be >= 1" for name, value in named.items() if value < 1]
    if problems:
        return problems
    product = sizes.world_size
    if product != world_size:
        problems.append(f"dp_replicate*dp_shard*cp*pp*tp = {dp_replicate}*{dp_shard}*{cp}*{pp}*{tp} = {product}, "
                        f"but the world size is {world_size}")
    if n_heads % tp or n_kv_heads % tp:
        problems.append(f"tp = {tp} must divide the heads ({n_heads}) and the KV heads ({n_kv_heads})")
    if ffn_dim % tp:
        problems.append(f"tp = {tp} must divide the FFN width {ffn_dim}")
    stages = pp * pp_stages_per_rank
    if n_layers < stages:
        problems.append(f"{n_layers} layers cannot fill pp*pp_stages_per_rank = {pp}*{pp_stages_per_rank} "
                        f"= {stages} stages")
    if pp == 1 and pp_stages_per_rank > 1:
        problems.append("pp_stages_per_rank > 1 needs pp > 1")
    if cp > 1 and seq_len % (2 * cp):
        problems.append(f"sequence length {seq_len} is not divisible by 2*cp = {2 * cp} (load-balanced CP chunks)")
    elif (seq_len // cp) % tp:
        problems.append(f"the per-rank sequence {seq_len // cp} (seq_len / cp) is not divisible by tp = {tp} "
                        "(sequence parallelism splits it)")
    return problems


def validate_layout(config: ModelConfig, layout: Layout, world_size: int, seq_len: int,
                    global_batch_sequences: int | None = None) -> list[str]:
    """`layout_size_problems` for a model and a Layout, plus the batch split when the batch is known."""
    problems = layout_size_problems(layout, config, world_size, seq_len, layout.pp_stages_per_rank)
    if layout.microbatch_sequences < 1 or layout.n_microbatches < 1:
        problems.append("microbatch_sequences and n_microbatches must be >= 1")
    elif global_batch_sequences is not None:
        per_step = layout.dp * layout.microbatch_sequences * layout.n_microbatches
        if per_step != global_batch_sequences:
            problems.append(f"dp*microbatch_sequences*n_microbatches = {layout.dp}*{layout.microbatch_sequences}*"
                            f"{layout.n_microbatches} = {per_step} != the global batch of "
                            f"{global_batch_sequences} sequences")
    if config.tie_embeddings and layout.pp > 1:
        problems.append("tied embeddings cannot be split into pipeline stages "
                        "(embedding and output on different ranks)")
    return problems


@dataclass
class Estimate:
    """The planner's prediction for one layout. Bytes are per GPU on the worst pipeline rank."""

    layout: Layout
    memory: dict[str, float]
    worst_rank: int
    memory_bytes: float
    capacity_bytes: float
    time: dict[str, float]
    step_time_s: float
    tokens_per_s: float
    mfu: float
    tflops_per_gpu: float
    bubble_fraction: float

    @property
    def fits(self) -> bool:
        return self.memory_bytes <= self.capacity_bytes

    def report(self) -> str:
        lines = [f"layout: {self.layout.describe()}  ({self.layout.world_size} GPUs)"]
        lines.append(f"memory per GPU (pipeline rank {self.worst_rank}, the largest):")
        lines += [f"  {k:<26}{v / 1e9:8.2f} GB" for k, v in self.memory.items()]
        verdict = "fits" if self.fits else "does NOT fit"
        lines.append(f"  {'total':<26}{self.memory_bytes / 1e9:8.2f} GB of {self.capacity_bytes / 1e9:.1f} GB: "
                     f"{verdict}")
        lines.append("step time:")
        lines += [f"  {k:<26}{v:8.3f} s" for k, v in self.time.items()]
        lines.append(f"  {'step':<26}{self.step_time_s:8.3f} s  (pipeline bubble {self.bubble_fraction:.1%})")
        lines.append(f"throughput: {self.tokens_per_s:,.0f} tokens/s, {self.tflops_per_gpu:.0f} TFLOP/s per GPU, "
                     f"MFU {self.mfu:.1%}")
        return "\n".join(lines)


def in_flight_microbatches(pp: int, rank: int, stages_per_rank: int, n_microbatches: int) -> float:
    """Micro-batches whose activations pipeline rank `rank` holds at its peak, in units of all the
    rank's layers (module docstring): 1F1B pp - rank, interleaved pp + (pp - 1 - 2 rank) / v."""
    if pp == 1:
        return 1.0
    v = stages_per_rank
    chunks = pp - rank if v == 1 else (v - 1) * pp + 2 * (pp - 1 - rank) + 1
    return min(chunks, n_microbatches * v) / v


def bubble_fraction(pp: int, n_microbatches: int, stages_per_rank: int = 1) -> float:
    """Idle time of a 1F1B / interleaved pipeline relative to its busy time: (pp - 1) / (m * v)."""
    return (pp - 1) / (n_microbatches * stages_per_rank)


def activation_bytes_per_token(config: ModelConfig, mode: str = "compiled") -> float:
    """Bytes one Transformer layer saves for backward per token, before tp division (docstring)."""
    h, k, f = config.dim, config.n_kv_heads * config.head_dim, config.ffn_dim
    elements = {"compiled": 4 * h + 2 * k + 2 * f, "eager": 10 * h + 2 * k + 4 * f}  # in bf16 elements
    if mode not in elements:
        raise PlanError(f"activation mode {mode!r}; choose compiled or eager")
    return 2 * elements[mode] + 4 * config.n_heads + 2 * 4


def _stage_params(config: ModelConfig, layout: Layout) -> tuple[list[int], list[float], list[bool]]:
    """Per pipeline rank: layer count, parameters (before tp), whether it holds the output head."""
    counts = param_counts(config)
    per_layer = counts["layers"] / config.n_layers
    stages = layout.pp * layout.pp_stages_per_rank
    layers = stage_layer_counts(config.n_layers, stages)
    out: tuple[list[int], list[float], list[bool]] = ([], [], [])
    for rank in range(layout.pp):
        ids = [rank + i * layout.pp for i in range(layout.pp_stages_per_rank)]
        n = sum(layers[i] for i in ids)
        params = n * per_layer
        if 0 in ids:
            params += counts["embedding"]
        last = stages - 1 in ids
        if last:
            params += counts["output"] + config.dim  # output head + final norm
        out[0].append(n)
        out[1].append(params)
        out[2].append(last)
    return out


def _group_bandwidth(hw: Hardware, span: int) -> float:
    """A group whose members lie within `span` consecutive ranks is intra-node if span fits a node."""
    return hw.intra_bandwidth if span <= hw.gpus_per_node else hw.inter_bandwidth


def estimate(config: ModelConfig, layout: Layout, seq_len: int, global_batch_sequences: int,
             hardware: Hardware, activations: str = "compiled") -> Estimate:
    """Memory per GPU and step time of `layout` (every assumption: module docstring)."""
    hw, lay = hardware, layout
    problems = validate_layout(config, lay, lay.world_size, seq_len, global_batch_sequences)
    if problems:
        raise PlanError(f"layout {lay.describe()} cannot run: " + "; ".join(problems))
    tp, cp, pp, v, m = lay.tp, lay.cp, lay.pp, lay.pp_stages_per_rank, lay.n_microbatches
    shard = lay.dp_shard * cp
    counts = param_counts(config)
    per_layer = counts["layers"] / config.n_layers
    layers, params, has_output = _stage_params(config, lay)
    mb_tokens = lay.microbatch_sequences * seq_len  # tokens of one micro-batch (whole sequences)
    local_tokens = mb_tokens / cp  # this GPU's share of the sequence
    act_token = activation_bytes_per_token(config, activations) / tp
    kv_width = config.n_kv_heads * config.head_dim

    memories = []
    for rank in range(pp):
        p = params[rank] / tp
        mem: dict[str, float] = {"weights fp32 master": 4 * p / shard, "AdamW moments fp32": 8 * p / shard}
        if shard == 1:  # nothing to shard: one bf16 copy, one fp32 gradient
            mem["weights bf16"] = 2 * p
            mem["gradients fp32"] = 4 * p
        elif lay.reshard:
            mem["gradients fp32 shard"] = 4 * p / shard
            mem["weights bf16"] = 2 * p / shard + 2 * 2 * per_layer / tp
            mem["gradients fp32 buffers"] = 2 * 4 * per_layer / tp
        else:
            mem["gradients fp32 shard"] = 4 * p / shard
            mem["weights bf16 unsharded"] = 2 * p
            mem["gradients fp32 unsharded"] = 4 * p
        flight = in_flight_microbatches(pp, rank, v, m)
        one_layer = act_token * local_tokens
        if lay.activation_checkpointing:
            saved = flight * layers[rank] * 2 * config.dim / tp * local_tokens + one_layer
        else:
            saved = flight * layers[rank] * one_layer
        mem["activations"] = saved
        transient = 0.0
        if has_output[rank]:
            transient += 10 * local_tokens * config.vocab_size / tp
        if cp > 1:
            transient += 2 * (2 * 2 * mb_tokens * kv_width / tp)  # gathered K, V and their gradients
        mem["logits / CP K,V buffers"] = transient
        mem["fixed overhead"] = hw.overhead_bytes
        memories.append(mem)
    worst = max(range(pp), key=lambda r: sum(memories[r].values()))

    # time: one micro-batch on each rank, the slowest sets the pipeline pace
    attn = 12 * config.n_heads * config.head_dim * seq_len
    layer_flops = (6 * per_layer + attn) * (4 / 3 if lay.activation_checkpointing else 1)
    out_flops = 6 * counts["output"] if not config.tie_embeddings else 6 * counts["embedding"]
    rate = hw.peak_flops * hw.achievable_fraction
    tp_bw = _group_bandwidth(hw, tp)
    cp_bw = _group_bandwidth(hw, tp * cp)
    pp_bw = _group_bandwidth(hw, tp * cp * pp)
    act_bytes = local_tokens * config.dim * 2
    tp_colls = 8 + (4 if lay.activation_checkpointing else 0)
    cp_colls = 3 + (1 if lay.activation_checkpointing else 0)
    per_rank = []
    for rank in range(pp):
        flops = mb_tokens * (layers[rank] * layer_flops + (out_flops if has_output[rank] else 0)) / (tp * cp)
        alpha = hw.latency_s
        tp_t = layers[rank] * tp_colls * (act_bytes * (tp - 1) / tp / tp_bw + alpha) if tp > 1 else 0.0
        cp_t = (layers[rank] * cp_colls * (2 * 2 * mb_tokens * kv_width / tp * (cp - 1) / cp / cp_bw + alpha)
                if cp > 1 else 0.0)
        pp_t = 2 * v * (act_bytes / tp / pp_bw + alpha) if pp > 1 else 0.0
        per_rank.append((flops / rate, tp_t, cp_t, pp_t))
    slow = max(per_rank, key=sum)
    busy = m * sum(slow)
    bubble = bubble_fraction(pp, m, v) if pp > 1 else 0.0
    p_max = max(params) / tp
    ring = (shard - 1) / shard
    per_pass = 1 if not lay.reshard else m
    shard_bytes = per_pass * ((2 if lay.reshard else 1) * 2 * p_max * ring + 4 * p_max * ring)
    replicate_bytes = 2 * 4 * p_max / shard * (lay.dp_replicate - 1) / lay.dp_replicate  # ring all-reduce
    # FSDP moves one unit (a layer, plus the root) per collective: all-gather + reduce-scatter each
    units = max(layers) + 1
    dp_latency = per_pass * units * (3 if lay.reshard else 2) * hw.latency_s if shard > 1 else 0.0
    dp_latency += units * hw.latency_s if lay.dp_replicate > 1 else 0.0
    dp_t = (shard_bytes / _group_bandwidth(hw, tp * cp * pp * lay.dp_shard)
            + replicate_bytes / _group_bandwidth(hw, lay.world_size) + dp_latency)
    time = {
        "compute": m * slow[0],
        "tensor-parallel comm": m * slow[1],
        "context-parallel comm": m * slow[2],
        "pipeline send/recv": m * slow[3],
        "pipeline bubble": bubble * busy,
        "FSDP comm (exposed)": max(0.0, dp_t - busy),
    }
    step = sum(time.values())
    tokens = global_batch_sequences * seq_len
    tokens_per_s = tokens / step
    model_flops = tokens_per_s * flops_per_token(config, seq_len) / lay.world_size
    return Estimate(
        layout=lay, memory=memories[worst], worst_rank=worst, memory_bytes=sum(memories[worst].values()),
        capacity_bytes=hw.memory_bytes, time=time, step_time_s=step, tokens_per_s=tokens_per_s,
        mfu=model_flops / hw.peak_flops, tflops_per_gpu=model_flops / 1e12, bubble_fraction=bubble,
    )


def gpu_param_bytes(config: ModelConfig, layout: Layout) -> float:
    """fp32 master bytes summed over every GPU (a conservation check: = 4 B x params x dp_replicate)."""
    _, params, _ = _stage_params(config, layout)
    shard = layout.dp_shard * layout.cp
    return sum(4 * p / layout.tp / shard for p in params) * layout.tp * shard * layout.dp_replicate
