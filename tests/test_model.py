"""The Transformer against Hugging Face transformers' LlamaForCausalLM, plus masking, attention-state and
composition invariants."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from herd.checkpoint.hf import config_to_hf, herd_to_hf_state_dict
from herd.model import (
    DocumentMask,
    ModelConfig,
    RopeScaling,
    Transformer,
    flops_per_token,
    get_config,
    init_weights,
    param_counts,
)
from herd.model.attention import sdpa

VOCAB = 512


def random_model(config: ModelConfig, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(config)
    init_weights(model)
    with torch.no_grad():  # norms away from 1 so a wrong norm placement cannot hide
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def hf_twin(config: ModelConfig, model: Transformer) -> LlamaForCausalLM:
    hf_dict = {k: v for k, v in config_to_hf(config).items() if k not in ("architectures", "model_type", "torch_dtype")}
    hf = LlamaForCausalLM(LlamaConfig(**hf_dict)).eval()
    result = hf.load_state_dict(herd_to_hf_state_dict(config, model.state_dict()), strict=False)
    assert not result.unexpected_keys
    assert set(result.missing_keys) <= {"lm_head.weight"} and (config.tie_embeddings or not result.missing_keys)
    return hf


CASES = {
    # name: (heads, kv_heads, rope_scaling, tied)
    "llama3.1-scaling-gqa4": (8, 2, RopeScaling(factor=8.0, original_context=128), False),
    "llama3.2-scaling-tied-gqa2": (8, 4, RopeScaling(factor=32.0, original_context=128), True),
    "gqa1-mqa": (4, 1, None, False),  # one KV head shared by all (ratio 4 via MQA-like shape)
    "mha": (4, 4, None, True),
    "gqa2-untied": (4, 2, None, False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers(case: str) -> None:
    heads, kv_heads, scaling, tied = CASES[case]
    config = ModelConfig(
        dim=64, n_layers=2, n_heads=heads, n_kv_heads=kv_heads, vocab_size=VOCAB, ffn_dim=160,
        rope_scaling=scaling, tie_embeddings=tied, max_seq_len=1024,
    )
    model = random_model(config)
    hf = hf_twin(config, model)
    tokens = torch.randint(0, VOCAB, (2, 300), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(tokens)
        theirs = hf(tokens).logits
    assert (ours - theirs).abs().max().item() <= 1e-4


def test_gqa_ratios_covered() -> None:
    ratios = {h // kv for h, kv, _, _ in CASES.values()}
    assert {1, 2, 4} <= ratios


def test_document_mask_equals_separate_documents() -> None:
    config = get_config("llama3-tiny", vocab_size=VOCAB)
    model = random_model(config)
    docs = [torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(n)) for n in (7, 12, 5)]
    packed = torch.cat(docs)[None]
    doc_ids = torch.cat([torch.full((len(d),), i) for i, d in enumerate(docs)])[None]
    with torch.no_grad():
        documents = DocumentMask(doc_ids)
        together = model(packed, documents.positions, documents)[0]
        apart = torch.cat([model(d[None])[0] for d in docs])
    assert (together - apart).abs().max().item() < 1e-5
    # Without the mask, later documents would see earlier ones (the test can fail).
    with torch.no_grad():
        unmasked = model(packed)[0]
    assert (unmasked[7:] - apart[7:]).abs().max().item() > 1e-3


def test_repeated_doc_id_is_still_a_new_document() -> None:
    config = get_config("llama3-tiny", vocab_size=VOCAB)
    model = random_model(config)
    a, b = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        documents = DocumentMask(torch.tensor([[0] * 6 + [1] * 6 + [0] * 6]))
        packed = model(torch.cat([a, b, a])[None], documents.positions, documents)[0]
        alone = model(a[None])[0]
    assert (packed[12:] - alone).abs().max().item() < 1e-5


def _packed_doc_ids(lengths_per_row: list[list[int]]) -> torch.Tensor:
    return torch.stack([torch.cat([torch.full((n,), i) for i, n in enumerate(row)]) for row in lengths_per_row])


def test_document_mask_blocks_equal_one_full_masked_call_with_gradients() -> None:
    """Short documents packed into long rows run per query block against only the keys they may see;
    outputs and gradients equal one full masked SDPA call (which the test also runs)."""
    gen = torch.Generator().manual_seed(0)
    rows = [[100, 140, 90, 150, 64, 120, 97, 263], [200, 60, 128, 128, 100, 80, 140, 188]]  # 1,024 each
    documents = DocumentMask(_packed_doc_ids(rows))
    blocks = documents.key_blocks()
    assert blocks is not None and len(blocks) == 8 and blocks[0] == (0, 128, 0)
    assert sum((q1 - q0) * (q1 - k0) for q0, q1, k0 in blocks) < 0.5 * 1024 * 1024  # the work it saves
    q = torch.randn(2, 4, 1024, 16, generator=gen, requires_grad=True)
    k = torch.randn(2, 2, 1024, 16, generator=gen, requires_grad=True)
    v = torch.randn(2, 2, 1024, 16, generator=gen, requires_grad=True)
    blocked = documents.attend(0, q, k, v)
    grads = torch.autograd.grad(blocked.square().sum(), (q, k, v))
    full = sdpa(q, k, v, documents.mask)
    full_grads = torch.autograd.grad(full.square().sum(), (q, k, v))
    assert (blocked - full).abs().max().item() < 1e-5
    for got, want in zip(grads, full_grads):
        assert (got - want).abs().max().item() < 1e-4


def test_document_mask_keeps_one_call_for_long_documents_and_short_rows() -> None:
    assert DocumentMask(_packed_doc_ids([[1000, 24]])).key_blocks() is None      # keys reach back to 0
    assert DocumentMask(_packed_doc_ids([[120, 80]])).key_blocks() is None  # under two blocks long


def test_packed_short_documents_through_the_model_equal_separate_documents() -> None:
    config = get_config("llama3-tiny", vocab_size=VOCAB)
    model = random_model(config)
    lengths = [150, 97, 200, 65, 100, 100, 44]  # 756 tokens: blocks of 128 queries
    docs = [torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(n)) for n in lengths]
    with torch.no_grad():
        documents = DocumentMask(_packed_doc_ids([lengths]))
        assert documents.key_blocks() is not None
        together = model(torch.cat(docs)[None], documents.positions, documents)[0]
        apart = torch.cat([model(d[None])[0] for d in docs])
    assert (together - apart).abs().max().item() < 1e-4


class AppendingCache:
    """A test-only `AttentionState` that keeps every layer's keys/values across calls (a minimal cache)."""

    def __init__(self) -> None:
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}

    def attend(self, layer_id: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if layer_id in self.keys:
            k, v = torch.cat([self.keys[layer_id], k], 2), torch.cat([self.values[layer_id], v], 2)
        self.keys[layer_id], self.values[layer_id] = k, v
        new, total = q.shape[2], k.shape[2]
        mask = torch.arange(total)[None, :] <= torch.arange(total - new, total)[:, None]
        return sdpa(q, k, v, mask)


def test_incremental_decoding_through_an_attention_state_equals_full_forward() -> None:
    """The state protocol plus explicit positions is all a cache needs: prefill, a chunk, then tokens."""
    model = random_model(get_config("llama3-tiny", vocab_size=VOCAB))
    tokens = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(5))
    cache = AppendingCache()
    spans = [(0, 8), (8, 13)] + [(i, i + 1) for i in range(13, 20)]
    with torch.no_grad():
        full = model(tokens)
        steps = [model(tokens[:, a:b], torch.arange(a, b), cache) for a, b in spans]
    assert (torch.cat(steps, dim=1) - full).abs().max().item() < 1e-5
    # the positions matter: the same chunk at positions 0.. gives other logits (the test can fail)
    with torch.no_grad():
        wrong = model(tokens[:, 13:14], torch.arange(1), AppendingCache())
    assert (wrong - full[:, 13:14]).abs().max().item() > 1e-3


def test_embed_layers_head_compose_to_forward() -> None:
    """Callers run the parts separately (pipeline stages, layers inserted between blocks)."""
    model = random_model(get_config("llama3-small", vocab_size=VOCAB))
    tokens = torch.randint(0, VOCAB, (2, 11), generator=torch.Generator().manual_seed(6))
    positions = torch.arange(11)
    select = torch.tensor([3, 10])
    with torch.no_grad():
        full = model(tokens)
        h = model.embed(tokens)
        h = model.run_layers(h, positions, start=0, end=2)
        h = h + 0.0  # where an adapter (cross-attention, a stitch layer) would run
        h = model.run_layers(h, positions, start=2)
        assert (model.head(h) - full).abs().max().item() < 1e-6
        assert (model.head(h, select) - full[:, select]).abs().max().item() < 1e-6
        assert (model(tokens, select=select) - full[:, select]).abs().max().item() < 1e-6
        skipped = model.head(model.run_layers(model.embed(tokens), positions, start=1))
    assert (skipped - full).abs().max().item() > 1e-3  # skipping a layer changes the logits


def test_tokens_must_be_two_dimensional() -> None:
    model = random_model(get_config("llama3-tiny", vocab_size=VOCAB))
    with pytest.raises(ValueError, match=r"tokens must be \[batch, seq\], got shape \(5,\)"):
        model(torch.zeros(5, dtype=torch.long))


def test_bfloat16_keeps_float32_rope_and_norm() -> None:
    model = random_model(get_config("llama3-tiny", vocab_size=VOCAB)).to(torch.bfloat16)
    assert model.inv_freq.dtype == torch.float32
    logits = model(torch.zeros(1, 3, dtype=torch.long))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()


def test_named_sizes_have_the_papers_shapes() -> None:
    expected = {"llama3-8b": (14336, 8.03e9), "llama3-70b": (28672, 70.55e9), "llama3-405b": (53248, 405.85e9),
                "llama3.2-1b": (8192, 1.236e9), "llama3.2-3b": (8192, 3.213e9)}
    for name, (ffn, params) in expected.items():
        config = get_config(name)
        assert config.ffn_dim == ffn
        assert abs(param_counts(config)["total"] - params) / params < 1e-3
        assert config.vocab_size == 128_256 and config.n_kv_heads == 8
    assert get_config("llama3.1-405b").rope_scaling == RopeScaling(factor=8.0)
    assert get_config("llama3.2-1b").tie_embeddings and get_config("llama3.2-1b").rope_scaling.factor == 32


def test_param_counts_match_a_built_model() -> None:
    for name in ("llama3-tiny", "llama3-small"):
        config = get_config(name)
        model = Transformer(config)
        assert param_counts(config)["total"] == sum(p.numel() for p in model.parameters())


def test_flops_per_token_formula() -> None:
    config = get_config("llama3-8b")
    counts = param_counts(config)
    expected = 6 * (counts["total"] - counts["embedding"]) + 12 * 32 * 32 * 128 * 8192
    assert flops_per_token(config, 8192) == expected


def test_bad_configs_are_rejected_with_reasons() -> None:
    with pytest.raises(ValueError, match="not divisible by n_kv_heads"):
        ModelConfig(dim=64, n_layers=1, n_heads=4, n_kv_heads=3, vocab_size=10, ffn_dim=8)
    with pytest.raises(ValueError, match="dim 66 is not divisible by n_heads 4"):
        ModelConfig(dim=66, n_layers=1, n_heads=4, n_kv_heads=4, vocab_size=10, ffn_dim=8)
    with pytest.raises(KeyError, match="known sizes"):
        get_config("llama3-9b")


def test_tied_head_stays_tied_through_meta_init_and_moves() -> None:
    """The trainer builds on the meta device and calls `to_empty`, which gives every module a new tensor:
    a tied head must come out tied (it was untied, uninitialised memory that trained on its own)."""
    config = get_config("llama3-tiny", tie_embeddings=True)
    with torch.device("meta"):
        model = Transformer(config)
    model.to_empty(device="cpu")
    assert model.output.weight is model.tok_embeddings.weight
    assert "output.weight" not in dict(model.named_parameters())
    model = model.to(torch.bfloat16)
    assert model.output.weight is model.tok_embeddings.weight


def test_rope_complex_form_equals_the_real_rotation_across_position_tables() -> None:
    """apply_rope's complex multiply equals the real-arithmetic pair rotation bit for bit, and its cached
    complex table follows the (cos, sin) objects, so a new position table is never served a stale one."""
    import torch

    from herd.model.rope import apply_rope, rope_cos_sin, rope_inv_freq, rope_table

    inv = rope_inv_freq(16, 500_000.0, None)
    x = torch.randn(2, 5, 3, 16)
    for start in (0, 7, 0):
        cos, sin = rope_cos_sin(torch.arange(start, start + 5), inv)
        pairs = x.unflatten(-1, (-1, 2))
        c, s = cos[None, :, None, :], sin[None, :, None, :]
        real = torch.stack((pairs[..., 0] * c - pairs[..., 1] * s, pairs[..., 0] * s + pairs[..., 1] * c), -1)
        assert torch.equal(apply_rope(x, cos, sin), real.flatten(-2))
        assert rope_table(cos, sin) is rope_table(cos, sin)
    batched = rope_cos_sin(torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]), inv)
    one = rope_cos_sin(torch.arange(5, 10), inv)
    assert torch.equal(apply_rope(x, *batched)[1], apply_rope(x[1:], *one)[0])
