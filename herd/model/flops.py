"""Parameter counts and training FLOPs per token (the torchtitan MFU convention, DESIGN.md).

MFU itself (achieved over peak) is training's: herd.train.mfu.
"""

from __future__ import annotations

from herd.model.config import ModelConfig


def param_counts(config: ModelConfig) -> dict[str, int]:
    """Parameters by group, computed from the shape alone (no model needs to be built)."""
    hd = config.head_dim
    attention = config.dim * hd * (2 * config.n_heads + 2 * config.n_kv_heads)
    ffn = 3 * config.dim * config.ffn_dim
    norms = 2 * config.dim
    embedding = config.vocab_size * config.dim
    output = 0 if config.tie_embeddings else config.vocab_size * config.dim
    layers = config.n_layers * (attention + ffn + norms)
    total = embedding + layers + config.dim + output
    return {"embedding": embedding, "layers": layers, "output": output, "total": total}


def flops_per_token(config: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 * (N - N_embedding) + 12 * L * H * Dh * T.

    The first term counts forward+backward matmuls over the non-embedding weights (a tied output
    head is a matmul too, so it is added back); the second counts attention scores and values.
    """
    counts = param_counts(config)
    matmul_params = counts["total"] - counts["embedding"]
    if config.tie_embeddings:
        matmul_params += counts["embedding"]
    return 6 * matmul_params + 12 * config.n_layers * config.n_heads * config.head_dim * seq_len

