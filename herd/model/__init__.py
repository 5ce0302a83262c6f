"""The Llama 3 model herd: shapes, the Transformer, and its FLOP/parameter arithmetic.

Nothing here knows about training, data or serving.
"""

from herd.model.config import MODEL_SIZES, PEAK_LR, ModelConfig, RopeScaling, ffn_hidden_dim, get_config, llama_config
from herd.model.flops import H100_BF16_PEAK_FLOPS, flops_per_token, mfu, param_counts
from herd.model.kv_cache import KVCache
from herd.model.transformer import Transformer, block_causal_mask, document_positions, init_weights

__all__ = [
    "MODEL_SIZES", "PEAK_LR", "ModelConfig", "RopeScaling", "ffn_hidden_dim", "get_config", "llama_config",
    "H100_BF16_PEAK_FLOPS", "flops_per_token", "mfu", "param_counts", "KVCache", "Transformer",
    "block_causal_mask", "document_positions", "init_weights",
]
