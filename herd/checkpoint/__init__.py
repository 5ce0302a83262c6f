"""Checkpoint formats: Meta (params.json + consolidated.NN.pth), Hugging Face (safetensors), GGUF."""

from herd.checkpoint.errors import CheckpointError
from herd.checkpoint.formats import FORMATS, Checkpoint, convert, detect_format, read_checkpoint, write_checkpoint
from herd.checkpoint.validate import check_state_dict, load_state_dict_checked

__all__ = [
    "CheckpointError", "FORMATS", "Checkpoint", "convert", "detect_format", "read_checkpoint", "write_checkpoint",
    "check_state_dict", "load_state_dict_checked",
]
