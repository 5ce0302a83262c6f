"""The Llama 3 model herd: shapes, the Transformer, attention states and FLOP/parameter arithmetic.

Nothing here knows about training, data or serving.
"""

from herd.model.attention import AttentionState, Causal, DocumentMask, Masked, block_causal_mask, document_positions
from herd.model.config import MODEL_SIZES, ModelConfig, RopeScaling, ffn_hidden_dim, get_config, llama_config
from herd.model.flops import flops_per_token, param_counts
from herd.model.transformer import Transformer, init_weights

__all__ = [
    "AttentionState", "Causal", "DocumentMask", "Masked", "block_causal_mask", "document_positions",
    "MODEL_SIZES", "ModelConfig", "RopeScaling", "ffn_hidden_dim", "get_config", "llama_config",
    "flops_per_token", "param_counts", "Transformer", "init_weights",
]
