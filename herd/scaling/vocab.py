"""A small byte-level BPE vocabulary for tiny scaling-law models.

Below ~10M parameters the Llama 3 128,256-token head would hold most of a model's parameters and
FLOPs, so an IsoFLOP sweep of tiny models on it would measure the head, not the model. The sweep can
instead train a BPE of a few thousand tokens on its own corpus (the `tokenizers` library's trainer, the
Llama 3 pre-tokenizer split, byte-level so every text encodes) and record which vocabulary it used.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from herd.tokenizer.base import Tokenizer
from herd.tokenizer.bpe import BPETokenizer, _llama3_pre

BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"
MIN_VOCAB = 300  # 256 byte tokens + the two specials + a few merges


def train_small_bpe(texts: Iterable[str], vocab_size: int, out_dir: str | Path) -> BPETokenizer:
    """Train a `vocab_size`-token BPE on `texts`, save `tokenizer.json` + `tokenizer_config.json` in
    `out_dir` (so `herd.tokenizer.files.tokenizer_from_directory` reads it back) and return it."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size {vocab_size} is below {MIN_VOCAB} (256 bytes + specials + merges)")
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = _llama3_pre()
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(texts, trainer)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    backend.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": BOS, "eos_token": EOS, "add_bos_token": True, "model_max_length": 1 << 20}, indent=1) + "\n")
    return BPETokenizer.from_tokenizer_json(out)


def tokenizer_info(tokenizer: Tokenizer) -> dict[str, object]:
    """What a token-shard manifest records about the tokenizer (its vocabulary size and name)."""
    return {"name": getattr(tokenizer, "name", type(tokenizer).__name__), "vocab_size": tokenizer.vocab_size}
