"""Pretraining: config, LR schedule and batch ramp, AdamW, the loop, atomic checkpoints, metrics.

Public API:
    load_config(path, overrides) / config_from_dict(data, overrides) -> TrainConfig   (ConfigError on bad input)
    train(config, resume=None|"auto"|path, loader_factory=None, hooks=None) -> TrainResult
    Trainer(config, ...).run()  (the same, with access to the model/optimizer)
    Schedule(config).lr(step, tokens) / .shape_at(tokens)
    latest_checkpoint(dir), load_checkpoint(path), load_model_weights(path)
"""

from herd.train.checkpointing import latest_checkpoint, list_checkpoints, load_checkpoint, load_model_weights
from herd.train.config import ConfigError, StageConfig, TrainConfig, config_from_dict, load_config
from herd.train.parallel import SingleProcessPlan
from herd.train.schedule import Schedule, StepShape
from herd.train.trainer import Trainer, TrainHooks, TrainingError, TrainResult, train

__all__ = [
    "latest_checkpoint", "list_checkpoints", "load_checkpoint", "load_model_weights",
    "ConfigError", "StageConfig", "TrainConfig", "config_from_dict", "load_config",
    "SingleProcessPlan", "Schedule", "StepShape",
    "TrainHooks", "TrainingError", "TrainResult", "Trainer", "train",
]
