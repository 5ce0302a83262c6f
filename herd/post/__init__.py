"""Post-training: records, reward model, rejection sampling, SFT, DPO, model averaging, chat-data curation.

Kept import-light (no torch at import time): `herd --help` registers the post-training commands through
this package without paying for the training stack.
"""
