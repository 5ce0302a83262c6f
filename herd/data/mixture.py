"""Data mixes: named source weights and a deterministic, resumable weighted document sampler.

Weights are shares of *tokens* (the paper's mix is "50% general knowledge, 25% math and reasoning,
17% code, 8% multilingual" tokens). Sources differ wildly in document length (a stdlib module vs. a
three-line word problem), so the sampler picks a source for each document with probability
proportional to weight / mean document length, which makes the expected token share equal the weight.

Within a source, documents are visited in a fresh seeded permutation per epoch; when a source runs
out, its epoch counter increases and a new permutation starts. The state (draw counter, per-source
cursor and epoch) is a small JSON dict, so a checkpoint resumes the exact sequence.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from herd.config import load_recipe, write_toml
from herd.data.errors import DataError
from herd.data.shards import splitmix64

# Token shares. "llama3" is the paper's final pretraining mix; "llama3-anneal" upsamples the
# high-quality math and code sources for the annealing phase (the paper anneals on upsampled
# high-quality data; the exact ratios are not published, these are ours).
NAMED_MIXES: dict[str, dict[str, float]] = {
    "llama3": {"general": 0.50, "math": 0.25, "code": 0.17, "multilingual": 0.08},
    "llama3-anneal": {"general": 0.30, "math": 0.35, "code": 0.27, "multilingual": 0.08},
}
MISSING_POLICIES = ("error", "renormalize")


def resolve_weights(
    weights: Mapping[str, float] | str, available: Iterable[str], *, missing: str = "error"
) -> dict[str, float]:
    """Normalised token shares over the available sources (sources with weight 0 dropped).

    `weights` is a mapping or the name of a mix in NAMED_MIXES. A source with weight > 0 that is not
    available is a DataError listing the available ones, unless `missing="renormalize"`, which drops
    it and renormalises the rest. Available sources absent from `weights` get weight 0.
    """
    available = list(available)
    if missing not in MISSING_POLICIES:
        raise DataError(f"missing must be one of {MISSING_POLICIES}, got {missing!r}")
    if isinstance(weights, str):
        if weights not in NAMED_MIXES:
            raise DataError(f"unknown mix {weights!r}; named mixes: {', '.join(NAMED_MIXES)}")
        weights = NAMED_MIXES[weights]
    if not isinstance(weights, Mapping):
        raise DataError(f"weights must be a mapping of source -> weight or a mix name, got {type(weights).__name__}")
    chosen: dict[str, float] = {}
    for name, weight in weights.items():
        try:
            w = float(weight)
        except (TypeError, ValueError):
            raise DataError(f"weight for source {name!r} is not a number: {weight!r}") from None
        if not np.isfinite(w) or w < 0:
            raise DataError(f"weight for source {name!r} must be finite and >= 0, got {weight!r}")
        if w == 0:
            continue
        if name not in available:
            if missing == "renormalize":
                continue
            raise DataError(
                f"the mix gives source {name!r} weight {w} but it has no data; available sources: "
                f"{', '.join(available) or '(none)'} (drop it from the mix, or pass missing='renormalize')"
            )
        chosen[name] = w
    total = sum(chosen.values())
    if total <= 0:
        raise DataError(f"no source with a positive weight among the available ones ({', '.join(available)})")
    return {name: w / total for name, w in chosen.items()}


def _uniform(seed: int, counter: int) -> float:
    """A uniform [0, 1) number for draw `counter`: stateless, so the state is just the counter."""
    key = np.array([(seed * 0x9E3779B97F4A7C15 + counter) & ((1 << 64) - 1)], dtype=np.uint64)
    return float(splitmix64(splitmix64(key))[0] >> np.uint64(11)) / float(1 << 53)


def stable_source_id(name: str) -> int:
    """A per-source seed component that does not depend on Python's salted `hash`."""
    return zlib.crc32(name.encode("utf-8"))


class MixtureSampler:
    """Draw (source, position-in-source) pairs by token-share weights; deterministic and resumable.

    `num_documents[s]` is how many documents source `s` has in the split being read and
    `mean_length[s]` their mean length in tokens. `next()` returns the source name and an index into
    that source's document list (a permutation per epoch).
    """

    def __init__(
        self, weights: Mapping[str, float], num_documents: Mapping[str, int], mean_length: Mapping[str, float],
        *, seed: int = 0,
    ) -> None:
        self.names = sorted(weights)  # canonical order: the same draws whatever the mapping order
        for name in self.names:
            if num_documents.get(name, 0) <= 0:
                raise DataError(f"source {name!r} has no documents in this split")
        self.seed = int(seed)
        self.weights = {n: float(weights[n]) for n in self.names}
        self.num_documents = {n: int(num_documents[n]) for n in self.names}
        raw = np.array([self.weights[n] / float(mean_length[n]) for n in self.names])
        self.doc_probs = raw / raw.sum()  # probability that a document comes from each source
        self._cumulative = np.cumsum(self.doc_probs)
        self._cumulative[-1] = 1.0
        self.draws = 0
        self.cursors = {n: 0 for n in self.names}
        self.epochs = {n: 0 for n in self.names}
        self._perm: dict[str, tuple[int, np.ndarray]] = {}

    def _permutation(self, name: str) -> np.ndarray:
        epoch = self.epochs[name]
        cached = self._perm.get(name)
        if cached is None or cached[0] != epoch:
            rng = np.random.default_rng([self.seed, stable_source_id(name), epoch])
            cached = (epoch, rng.permutation(self.num_documents[name]))
            self._perm[name] = cached
        return cached[1]

    def next(self) -> tuple[str, int]:
        u = _uniform(self.seed, self.draws)
        self.draws += 1
        name = self.names[int(np.searchsorted(self._cumulative, u, side="right"))]
        position = int(self._permutation(name)[self.cursors[name]])
        self.cursors[name] += 1
        if self.cursors[name] == self.num_documents[name]:
            self.cursors[name] = 0
            self.epochs[name] += 1
        return name, position

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed, "draws": self.draws,
            "weights": dict(self.weights), "num_documents": dict(self.num_documents),
            "cursors": dict(self.cursors), "epochs": dict(self.epochs),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key in ("seed", "draws", "weights", "num_documents", "cursors", "epochs"):
            if key not in state:
                raise DataError(f"mixture sampler state is missing {key!r}")
        if int(state["seed"]) != self.seed:
            raise DataError(f"sampler state has seed {state['seed']}, this loader uses seed {self.seed}")
        if dict(state["num_documents"]) != self.num_documents:
            raise DataError(f"sampler state was saved for documents {state['num_documents']}, "
                            f"the data now has {self.num_documents} (the shards changed)")
        if {k: round(float(v), 12) for k, v in state["weights"].items()} != {
                k: round(v, 12) for k, v in self.weights.items()}:
            raise DataError(f"sampler state was saved with weights {state['weights']}, this loader uses {self.weights}")
        self.draws = int(state["draws"])
        self.cursors = {n: int(state["cursors"][n]) for n in self.names}
        self.epochs = {n: int(state["epochs"][n]) for n in self.names}


# ---------------------------------------------------------------------------------------------------
# Mix files: what `herd curate` writes and `herd pretrain` reads (`data.mix_file`)


@dataclass
class MixData:
    sources: dict[str, str] = field(default_factory=dict)  # name -> token-shard dir (relative: to the file)
    mix: dict[str, float] = field(default_factory=dict)  # token shares of the pretraining mix


@dataclass
class MixAnneal:
    mix: dict[str, float] = field(default_factory=dict)  # token shares of the annealing mix ({} = none)


@dataclass
class MixFile:
    """A data mix as a file: `[data] sources, mix` and `[anneal] mix` are laid out as in a pretrain
    recipe (so the tables can also be pasted into one); `[provenance]` is free-form, what made the mix
    (token counts, budgets, the curation recipe), and is read by no one but people and reports.

    `tokenized = false` (curation without `mix.tokenize`): the sources are JSONL directories, which
    pretraining cannot read; loading such a file for training is an error that says what to run."""

    data: MixData = field(default_factory=MixData)
    anneal: MixAnneal = field(default_factory=MixAnneal)
    tokenized: bool = True
    provenance: dict[str, Any] = field(default_factory=dict)


def write_mix_file(path: str | Path, mix: MixFile, header: str = "") -> Path:
    """Write `mix` as TOML (tomli-w); relative source paths are kept relative to the file's directory."""
    return write_toml(path, mix, header)


def load_mix_file(path: str | Path) -> MixFile:
    """Read a mix file through herd's recipe loader, with relative source paths resolved against the
    file's directory (a curation output directory can be moved or referred to from anywhere)."""
    path = Path(path)
    mix = load_recipe(MixFile, path)  # a bad file is a ConfigError naming it and the key
    base = path.parent
    mix.data.sources = {name: str(p if Path(p).is_absolute() else base / p) for name, p in mix.data.sources.items()}
    return mix
