"""Domain experts (Branch-Train-Stitch, arXiv 2502.00075): experts branched from one seed model are
joined by trainable stitch layers while the seed ("hub") and every expert stay frozen; model soup,
task arithmetic, BTM ensembles and BTX mixtures of experts are the baselines on the same experts."""

from herd.experts.btx import MixtureFeedForward, build_btx, load_balancing_loss
from herd.experts.merging import BTMEnsemble, model_soup, task_arithmetic
from herd.experts.stitch import (
    EXPERTS_INTO_HUB,
    HUB_INTO_EXPERTS,
    StitchedModel,
    StitchLayer,
    stitch_parameter_count,
    stitch_plan,
)

__all__ = [
    "EXPERTS_INTO_HUB",
    "HUB_INTO_EXPERTS",
    "BTMEnsemble",
    "MixtureFeedForward",
    "StitchLayer",
    "StitchedModel",
    "build_btx",
    "load_balancing_loss",
    "model_soup",
    "stitch_parameter_count",
    "stitch_plan",
    "task_arithmetic",
]
