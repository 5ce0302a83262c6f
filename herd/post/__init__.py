"""Post-training (paper section 4): reward model, rejection sampling, SFT, DPO and model averaging.

Import-light on purpose (`herd --help` must not pay for torch): the submodules are imported where used.
"""
