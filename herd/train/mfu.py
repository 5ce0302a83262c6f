"""Training constants that are not the model's: the paper's peak learning rates and MFU.

Model FLOPs per token are the model's arithmetic (herd.model.flops); what a run achieves against a
device's peak is a property of training.
"""

from __future__ import annotations

from herd.model.config import ModelConfig
from herd.model.flops import flops_per_token

# The paper's peak learning rates (Table 3), by model size.
PEAK_LR = {"llama3-8b": 3e-4, "llama3-70b": 1.5e-4, "llama3-405b": 8e-5}

H100_BF16_PEAK_FLOPS = 989e12  # dense bf16, the datasheet's number (MFU's denominator on H100/H200)


def mfu(tokens_per_second: float, config: ModelConfig, seq_len: int, peak_flops: float) -> float:
    """Model FLOPs utilization: achieved training FLOP/s over the hardware peak."""
    return tokens_per_second * flops_per_token(config, seq_len) / peak_flops
