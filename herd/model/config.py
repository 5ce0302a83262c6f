"""Model shapes: `ModelConfig` and the registry of named Llama 3 sizes.

The numbers here are the paper's (DESIGN.md section 2). A config is plain data so it can be written
to `params.json` / `config.json` / GGUF metadata and read back without loss.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

LLAMA3_VOCAB_SIZE = 128_256


@dataclass(frozen=True)
class RopeScaling:
    """Llama 3.1-style frequency scaling (wavelengths past the original context are stretched).

    Llama 3.1 uses factor 8; Llama 3.2 1B/3B use factor 32. Wavelengths longer than
    `original_context / low_freq_factor` are divided by `factor`, those shorter than
    `original_context / high_freq_factor` are kept, and the band between is blended smoothly.
    """

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_context: int = 8192


def ffn_hidden_dim(dim: int, ffn_dim_multiplier: float | None, multiple_of: int) -> int:
    """The reference SwiGLU width: 2/3 of 4*dim, times the multiplier, rounded up to `multiple_of`."""
    hidden = int(2 * 4 * dim / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


@dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of a dense Llama-style Transformer.

    `ffn_dim` is the source of truth for the FFN width; `ffn_dim_multiplier`/`multiple_of` are kept
    so a Meta `params.json` can be written back exactly. Use `ModelConfig.from_meta_params` (or
    `llama_config`) to derive `ffn_dim` the way the reference code does.
    """

    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    ffn_dim: int
    norm_eps: float = 1e-5
    rope_theta: float = 500_000.0
    rope_scaling: RopeScaling | None = None
    tie_embeddings: bool = False
    max_seq_len: int = 8192
    ffn_dim_multiplier: float | None = None
    multiple_of: int | None = None
    head_dim_override: int | None = field(default=None)

    def __post_init__(self) -> None:
        problems = []
        for name in ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "ffn_dim", "max_seq_len"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if not problems:
            if self.head_dim_override is None and self.dim % self.n_heads:
                problems.append(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
            if self.n_heads % self.n_kv_heads:
                problems.append(f"n_heads {self.n_heads} is not divisible by n_kv_heads {self.n_kv_heads}")
            if self.head_dim % 2:
                problems.append(f"head_dim {self.head_dim} must be even for rotary embeddings")
        if problems:
            raise ValueError("invalid ModelConfig: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.head_dim_override or self.dim // self.n_heads

    @classmethod
    def from_meta_params(cls, params: dict[str, Any], **overrides: Any) -> "ModelConfig":
        """Build from a Meta `params.json` dictionary (keys as the llama-models reference writes them)."""
        missing = [k for k in ("dim", "n_layers", "n_heads") if k not in params]
        if missing:
            raise ValueError(f"params.json lacks required keys: {', '.join(missing)}")
        multiple_of = int(params.get("multiple_of", 256))
        mult = params.get("ffn_dim_multiplier")
        ffn_dim = int(params.get("ffn_dim") or ffn_hidden_dim(params["dim"], mult, multiple_of))
        scaling = None
        if params.get("use_scaled_rope"):
            scaling = RopeScaling(
                factor=float(params.get("rope_scaling_factor", 8.0)),
                low_freq_factor=float(params.get("rope_low_freq_factor", 1.0)),
                high_freq_factor=float(params.get("rope_high_freq_factor", 4.0)),
                original_context=int(params.get("rope_original_context", 8192)),
            )
        kwargs: dict[str, Any] = dict(
            dim=int(params["dim"]),
            n_layers=int(params["n_layers"]),
            n_heads=int(params["n_heads"]),
            n_kv_heads=int(params.get("n_kv_heads") or params["n_heads"]),
            vocab_size=int(params.get("vocab_size", LLAMA3_VOCAB_SIZE)),
            ffn_dim=ffn_dim,
            norm_eps=float(params.get("norm_eps", 1e-5)),
            rope_theta=float(params.get("rope_theta", 500_000.0)),
            rope_scaling=scaling,
            tie_embeddings=bool(params.get("tie_embeddings", False)),
            max_seq_len=int(params.get("max_seq_len", 131_072 if scaling else 8192)),
            ffn_dim_multiplier=mult,
            multiple_of=multiple_of,
            head_dim_override=params.get("head_dim"),
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_meta_params(self) -> dict[str, Any]:
        """The `params.json` dictionary that reproduces this config through `from_meta_params`."""
        params: dict[str, Any] = {
            "dim": self.dim,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "vocab_size": self.vocab_size,
            "norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "use_scaled_rope": self.rope_scaling is not None,
        }
        if (
            self.multiple_of is not None
            and ffn_hidden_dim(self.dim, self.ffn_dim_multiplier, self.multiple_of) == self.ffn_dim
        ):
            params["multiple_of"] = self.multiple_of
            params["ffn_dim_multiplier"] = self.ffn_dim_multiplier
        else:
            params["multiple_of"] = 1
            params["ffn_dim"] = self.ffn_dim  # exact width; the multiplier form cannot express it
        scaling = self.rope_scaling
        if scaling is not None:
            if scaling.factor != 8.0:
                params["rope_scaling_factor"] = scaling.factor
            if scaling != RopeScaling(factor=scaling.factor):
                # herd extension keys; the reference ignores keys it does not know
                params["rope_low_freq_factor"] = scaling.low_freq_factor
                params["rope_high_freq_factor"] = scaling.high_freq_factor
                params["rope_original_context"] = scaling.original_context
        if self.tie_embeddings:
            params["tie_embeddings"] = True
        if self.head_dim_override is not None:
            params["head_dim"] = self.head_dim_override
        params["max_seq_len"] = self.max_seq_len
        return params

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


def llama_config(
    dim: int,
    n_layers: int,
    n_heads: int,
    n_kv_heads: int,
    ffn_dim_multiplier: float | None,
    multiple_of: int,
    **kwargs: Any,
) -> ModelConfig:
    """A config whose FFN width follows the reference formula."""
    return ModelConfig(
        dim=dim,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        vocab_size=kwargs.pop("vocab_size", LLAMA3_VOCAB_SIZE),
        ffn_dim=ffn_hidden_dim(dim, ffn_dim_multiplier, multiple_of),
        ffn_dim_multiplier=ffn_dim_multiplier,
        multiple_of=multiple_of,
        **kwargs,
    )


_L31 = dict(rope_scaling=RopeScaling(factor=8.0), max_seq_len=131_072)
_L32 = dict(rope_scaling=RopeScaling(factor=32.0), max_seq_len=131_072, tie_embeddings=True)

MODEL_SIZES: dict[str, ModelConfig] = {
    "llama3-8b": llama_config(4096, 32, 32, 8, 1.3, 1024),
    "llama3-70b": llama_config(8192, 80, 64, 8, 1.3, 4096),
    "llama3-405b": llama_config(16384, 126, 128, 8, 1.2, 4096),
    "llama3.1-8b": llama_config(4096, 32, 32, 8, 1.3, 1024, **_L31),
    "llama3.1-70b": llama_config(8192, 80, 64, 8, 1.3, 4096, **_L31),
    "llama3.1-405b": llama_config(16384, 126, 128, 8, 1.2, 4096, **_L31),
    "llama3.2-1b": llama_config(2048, 16, 32, 8, 1.5, 256, **_L32),
    "llama3.2-3b": llama_config(3072, 28, 24, 8, 1.0, 256, **_L32),
    # Small shapes with the real 128K vocabulary, for tests, laptops and the CPU demo.
    "llama3-tiny": llama_config(64, 2, 4, 2, None, 32, max_seq_len=2048),
    "llama3-small": llama_config(256, 4, 8, 2, None, 64, max_seq_len=2048),
    "llama3-base": llama_config(768, 12, 12, 4, None, 256, max_seq_len=4096),
    # The CPU demo's model: llama3-tiny's width with 64-dim heads (head_dim 16 leaves RoPE at theta
    # 500,000 too few fast frequencies to find "the token after the key") and a tied embedding (the
    # head can copy a token it has rarely seen); 2 layers are the fewest an induction circuit needs.
    "llama3-demo": llama_config(64, 2, 4, 2, None, 32, max_seq_len=2048, head_dim_override=64,
                                tie_embeddings=True),
}

def get_config(name: str, **overrides: Any) -> ModelConfig:
    """Look up a named size; unknown names list the known ones."""
    try:
        config = MODEL_SIZES[name]
    except KeyError:
        raise KeyError(f"unknown model size {name!r}; known sizes: {', '.join(MODEL_SIZES)}") from None
    return config.replace(**overrides) if overrides else config
