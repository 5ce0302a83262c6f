"""The `herd curate` recipe: its sections and checks, read by herd.config's one recipe loader.

Every key has a default, so a recipe names only what differs; unknown keys are errors (a typo must not
silently fall back to a default). Errors are herd.config.ConfigError (a ValueError) naming the file and
the key path; `CurationConfigError` is the same class under the name this package used before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from herd.config import ConfigError, internal, load_recipe, recipe_from_dict

INPUT_KINDS = ("html", "jsonl", "text", "parquet", "warc")
CATEGORIES = ("general", "math", "code", "multilingual")
ALL_STEPS = ("extract", "blocklist", "langid", "filters", "pii", "line_dedup")
FILTER_NAMES = ("gopher_repetition", "gopher_quality", "c4", "fineweb", "dirty_words", "token_kl")
# the paper's heuristics (section 3.1.1): duplicated n-gram coverage, dirty words, token-distribution KL
PAPER_FILTERS = ("gopher_repetition", "dirty_words", "token_kl")


CurationConfigError = ConfigError  # a bad `herd curate` recipe: the message names the file and the key


@dataclass
class InputConfig:
    """One input source. `domain` is a *given* label (e.g. stdlib source files are code) that seeds the
    domain classifier; `skip` names per-document steps that do not apply (e.g. prose filters on code)."""

    name: str
    path: str
    kind: str = "jsonl"
    glob: str | None = None
    domain: str | None = None
    skip: list[str] = field(default_factory=list)
    text_key: str = "text"
    content: str = "text"  # "html": the records' text is HTML to extract (JSONL/Parquet of crawled pages)
    limit: int = -1


@dataclass
class GenerateConfig:
    """The first stage of the local recipe: build a real local corpus if its directory is absent."""

    enabled: bool = False
    dir: str = "data/curate/local"
    pydoc_modules: int = 60
    stdlib_code_files: int = 80
    python_doc_html: int = 40
    manpage_languages: list[str] = field(default_factory=lambda: ["de", "fr", "es", "ru", "ja", "it", "pl"])
    manpages_per_language: int = 25
    synthetic_math: int = 60
    seed: int = 0


@dataclass
class FilterStepsConfig:
    extract: bool = True
    blocklist: bool = True
    langid: bool = True
    filters: list[str] = field(default_factory=lambda: list(PAPER_FILTERS))
    pii: bool = True
    min_chars: int = 1
    kl_quantile: float = 0.99  # token_kl: drop documents above this quantile of the sample's KL scores
    kl_min_docs: int = 20      # token_kl: languages with fewer sample documents are not scored


@dataclass
class MinhashConfig:
    """Near-dedup parameters; see herd.data.curation.minhash for the S-curve they give."""

    enabled: bool = True
    ngram: int = 5
    bands: int = 14
    rows: int = 8
    seed: int = 1
    per_language: bool = True


@dataclass
class LineDedupConfig:
    enabled: bool = True
    bucket_docs: int = 30_000_000
    max_count: int = 6
    min_line_chars: int = 1
    per_language: bool = True


@dataclass
class QualityConfig:
    """Model-based quality: `annotator` is a herd model spec (an LLM through herd's engine) or
    `heuristic` (a transparent rule, used in tests); a hashed n-gram classifier learns its labels."""

    enabled: bool = True
    annotator: str = "smollm2-135m-instruct"
    sample: int = 30
    max_tokens: int = 4
    max_chars: int = 1200
    threshold: float = 0.0
    anneal_threshold: float = 0.6
    apply_to: list[str] = field(default_factory=lambda: ["general"])
    seed: int = 0


@dataclass
class DomainConfig:
    enabled: bool = True
    category_cap: float = 0.4
    sample: int = 2000
    seed: int = 0


@dataclass
class MixConfig:
    target: dict[str, float] = field(
        default_factory=lambda: {"general": 0.50, "math": 0.25, "code": 0.17, "multilingual": 0.08}
    )
    anneal_upsample: dict[str, float] = field(default_factory=lambda: {"math": 2.0, "code": 1.5})
    max_epochs: float = 4.0
    tokenizer: str = "llama3"
    tokenize: bool = True           # token shards (herd tokenize) under <output_dir>/tokens/: mix.toml feeds pretraining
    validation_fraction: float = 0.01


EXECUTORS = ("local", "slurm", "ray")


@dataclass
class ExecutorConfig:
    """Which datatrove executor runs the stages. `options` go to its constructor unchanged (Slurm needs
    at least `partition` and `time`; Ray takes e.g. `cpus_per_task`)."""

    kind: str = "local"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class CurateConfig:
    output_dir: str = "runs/curate"
    tasks: int = 2
    workers: int = 1
    inputs: list[InputConfig] = field(default_factory=list)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    steps: FilterStepsConfig = field(default_factory=FilterStepsConfig)
    minhash: MinhashConfig = field(default_factory=MinhashConfig)
    line_dedup: LineDedupConfig = field(default_factory=LineDedupConfig)
    url_dedup: bool = True
    quality: QualityConfig = field(default_factory=QualityConfig)
    domain: DomainConfig = field(default_factory=DomainConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    examples_per_step: int = 5
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    source: str = internal("<dict>")  # the recipe file (for the report), not a recipe key

    def validate(self) -> CurateConfig:
        if self.tasks < 1 or self.workers < 1:
            raise ConfigError(f"tasks and workers must be >= 1 (got {self.tasks}, {self.workers})")
        if not self.inputs and not self.generate.enabled:
            raise ConfigError("no [[inputs]] and [generate] is off: nothing to curate")
        names = set()
        for i, inp in enumerate(self.inputs):
            if inp.kind not in INPUT_KINDS:
                raise ConfigError(f"inputs[{i}].kind={inp.kind!r}, expected one of {INPUT_KINDS}")
            if inp.domain is not None and inp.domain not in CATEGORIES:
                raise ConfigError(f"inputs[{i}].domain={inp.domain!r}, expected one of {CATEGORIES}")
            bad = [s for s in inp.skip if s not in ALL_STEPS]
            if bad:
                raise ConfigError(f"inputs[{i}].skip has unknown steps {bad}; known: {ALL_STEPS}")
            if inp.content not in ("text", "html"):
                raise ConfigError(f"inputs[{i}].content={inp.content!r}, expected 'text' or 'html'")
            if inp.name in names:
                raise ConfigError(f"inputs[{i}].name={inp.name!r} is used twice")
            names.add(inp.name)
        bad = [f for f in self.steps.filters if f not in FILTER_NAMES]
        if bad:
            raise ConfigError(f"steps.filters has unknown filters {bad}; known: {FILTER_NAMES}")
        if self.line_dedup.bucket_docs < 1 or self.line_dedup.max_count < 1:
            raise ConfigError("line_dedup.bucket_docs and max_count must be >= 1")
        if self.minhash.ngram < 1 or self.minhash.bands < 1 or self.minhash.rows < 1:
            raise ConfigError("minhash.ngram, bands and rows must be >= 1")
        unknown = [c for c in self.mix.target if c not in CATEGORIES]
        if unknown or any(v < 0 for v in self.mix.target.values()) or sum(self.mix.target.values()) <= 0:
            raise ConfigError(
                f"mix.target={self.mix.target} must give non-negative weights to categories {CATEGORIES}"
            )
        bad = [c for c in self.quality.apply_to if c not in CATEGORIES]
        if bad:
            raise ConfigError(f"quality.apply_to has unknown categories {bad}; known: {CATEGORIES}")
        if self.executor.kind not in EXECUTORS:
            raise ConfigError(f"executor.kind={self.executor.kind!r}, expected one of {EXECUTORS}")
        if self.executor.kind == "slurm" and not {"partition", "time"} <= set(self.executor.options):
            raise ConfigError("executor.options needs 'partition' and 'time' for slurm")
        if not 0 < self.domain.category_cap <= 1:
            raise ConfigError(f"domain.category_cap must be in (0, 1], got {self.domain.category_cap}")
        return self


def config_from_dict(data: dict[str, Any], source: str = "<dict>", overrides: list[str] | None = None) -> CurateConfig:
    cfg = recipe_from_dict(CurateConfig, data, overrides or (), source=None if source == "<dict>" else source)
    cfg.source = source
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> CurateConfig:
    """Read a recipe; relative paths inside it are resolved against the current directory."""
    cfg = load_recipe(CurateConfig, path, overrides or ())
    cfg.source = str(path)
    return cfg
