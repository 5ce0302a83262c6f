"""Pretraining: config, LR schedule and batch ramp, AdamW, the loop, atomic checkpoints, metrics.

Public API:
    load_config(path, overrides) / config_from_dict(data, overrides) -> TrainConfig   (ConfigError on bad input)
    train(config, resume=None|"auto"|path, loader_factory=None, hooks=None) -> TrainResult
    Trainer(config, ...).run()  (the same, with access to the model/optimizer)
    Schedule(config).lr(step, tokens) / .shape_at(tokens)
    latest_checkpoint(dir), load_checkpoint(path), load_model_weights(path)

The names are imported on first use (PEP 562), not when the package is: `import herd.train.x` (every
`herd` command registers through herd.train.cli) then costs no torch start-up, and importing a
submodule of herd.train.parallel, which builds on herd.train's modules, never runs this file's
imports of the trainer (which builds on herd.train.parallel) half-way through.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "herd.train.checkpointing": ("latest_checkpoint", "list_checkpoints", "load_checkpoint", "load_model_weights"),
    "herd.train.config": ("ConfigError", "StageConfig", "TrainConfig", "config_from_dict", "load_config"),
    "herd.train.parallel": ("SingleProcessPlan",),
    "herd.train.schedule": ("Schedule", "StepShape"),
    "herd.train.trainer": ("Trainer", "TrainHooks", "TrainingError", "TrainResult", "train"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [name for names in _EXPORTS.values() for name in names]

if TYPE_CHECKING:
    from herd.train.checkpointing import latest_checkpoint, list_checkpoints, load_checkpoint, load_model_weights
    from herd.train.config import ConfigError, StageConfig, TrainConfig, config_from_dict, load_config
    from herd.train.parallel import SingleProcessPlan
    from herd.train.schedule import Schedule, StepShape
    from herd.train.trainer import Trainer, TrainHooks, TrainingError, TrainResult, train


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'herd.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
