"""Tokenized pretraining data: token shards, source mixes, packed resumable loading, a local corpus.

Public API (imported lazily so `import herd.data` does not pull torch or the tokenizer):

- `build_loader(sources, weights, *, seed=0, split="train")` -> a TrainLoader of packed `Batch`es
- `tokenize_files(...)` writes token shards; `TokenShards` reads them; `NAMED_MIXES` the data mixes
- `build_local_corpus(out_dir)` builds a real corpus from the Python install; `unigram_entropy(dirs)`
- `DataError`: every bad-input error of this package (a ValueError)
"""

from __future__ import annotations

import importlib
from typing import Any

from herd.data.errors import DataError

_LAZY = {
    "Batch": "herd.data.loader",
    "TrainLoader": "herd.data.loader",
    "PackedLoader": "herd.data.loader",
    "build_loader": "herd.data.loader",
    "IGNORE_INDEX": "herd.data.loader",
    "NAMED_MIXES": "herd.data.mixture",
    "MixtureSampler": "herd.data.mixture",
    "resolve_weights": "herd.data.mixture",
    "ShardWriter": "herd.data.shards",
    "TokenShards": "herd.data.shards",
    "read_manifest": "herd.data.shards",
    "tokenize_files": "herd.data.tokenize_sources",
    "build_local_corpus": "herd.data.local_corpus",
    "unigram_entropy": "herd.data.local_corpus",
}

__all__ = [
    "IGNORE_INDEX",
    "NAMED_MIXES",
    "Batch",
    "DataError",
    "MixtureSampler",
    "PackedLoader",
    "ShardWriter",
    "TokenShards",
    "TrainLoader",
    "build_loader",
    "build_local_corpus",
    "read_manifest",
    "resolve_weights",
    "tokenize_files",
    "unigram_entropy",
]
assert set(__all__) == {"DataError", *_LAZY}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'herd.data' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
