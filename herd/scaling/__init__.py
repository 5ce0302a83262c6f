"""Scaling laws (the paper, section 3.2.1): IsoFLOP sweeps of ordinary pretraining runs, the
compute-optimal token law D*(C) = A C^alpha, a parametric cross-check, and the two-step forecast of
downstream accuracy (gold-answer NLL linear in log FLOPs, then a sigmoid to accuracy).

- `laws`: quadratic IsoFLOP fits, the power law with bootstrap intervals, Chinchilla's approach 3;
- `forecast`: the two-step downstream forecast;
- `vocab`, `sweep`, `plots`, `cli`: the small-vocabulary data, the sweep runner, figures, `herd scaling`.
"""
