"""The `herd curate` recipe: a TOML file read into typed, validated dataclasses.

Every key has a default, so a recipe names only what differs; unknown keys are errors (a typo must not
silently fall back to a default). Errors are `CurationConfigError` (a ValueError) naming the file and key.
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from herd.data.errors import DataError

INPUT_KINDS = ("html", "jsonl", "text", "parquet", "warc")
CATEGORIES = ("general", "math", "code", "multilingual")
ALL_STEPS = ("extract", "blocklist", "langid", "filters", "pii", "line_dedup")
FILTER_NAMES = ("gopher_repetition", "gopher_quality", "c4", "fineweb", "dirty_words", "token_kl")
# the paper's heuristics (section 3.1.1): duplicated n-gram coverage, dirty words, token-distribution KL
PAPER_FILTERS = ("gopher_repetition", "dirty_words", "token_kl")


class CurationConfigError(DataError):
    """A bad `herd curate` recipe: the message names the file and the key."""


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
    tokenize: bool = False          # also write token shards (herd tokenize) under <output_dir>/tokens/
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
    source: str = "<dict>"

    def validate(self) -> "CurateConfig":
        where = self.source
        if self.tasks < 1 or self.workers < 1:
            raise CurationConfigError(f"{where}: tasks and workers must be >= 1 (got {self.tasks}, {self.workers})")
        if not self.inputs and not self.generate.enabled:
            raise CurationConfigError(f"{where}: no [[inputs]] and [generate] is off: nothing to curate")
        names = set()
        for i, inp in enumerate(self.inputs):
            if inp.kind not in INPUT_KINDS:
                raise CurationConfigError(f"{where}: inputs[{i}].kind={inp.kind!r}, expected one of {INPUT_KINDS}")
            if inp.domain is not None and inp.domain not in CATEGORIES:
                raise CurationConfigError(f"{where}: inputs[{i}].domain={inp.domain!r}, expected one of {CATEGORIES}")
            bad = [s for s in inp.skip if s not in ALL_STEPS]
            if bad:
                raise CurationConfigError(f"{where}: inputs[{i}].skip has unknown steps {bad}; known: {ALL_STEPS}")
            if inp.content not in ("text", "html"):
                raise CurationConfigError(f"{where}: inputs[{i}].content={inp.content!r}, expected 'text' or 'html'")
            if inp.name in names:
                raise CurationConfigError(f"{where}: inputs[{i}].name={inp.name!r} is used twice")
            names.add(inp.name)
        bad = [f for f in self.steps.filters if f not in FILTER_NAMES]
        if bad:
            raise CurationConfigError(f"{where}: steps.filters has unknown filters {bad}; known: {FILTER_NAMES}")
        if self.line_dedup.bucket_docs < 1 or self.line_dedup.max_count < 1:
            raise CurationConfigError(f"{where}: line_dedup.bucket_docs and max_count must be >= 1")
        if self.minhash.ngram < 1 or self.minhash.bands < 1 or self.minhash.rows < 1:
            raise CurationConfigError(f"{where}: minhash.ngram, bands and rows must be >= 1")
        unknown = [c for c in self.mix.target if c not in CATEGORIES]
        if unknown or any(v < 0 for v in self.mix.target.values()) or sum(self.mix.target.values()) <= 0:
            raise CurationConfigError(
                f"{where}: mix.target={self.mix.target} must give non-negative weights to categories {CATEGORIES}"
            )
        bad = [c for c in self.quality.apply_to if c not in CATEGORIES]
        if bad:
            raise CurationConfigError(f"{where}: quality.apply_to has unknown categories {bad}; known: {CATEGORIES}")
        if self.executor.kind not in EXECUTORS:
            raise CurationConfigError(f"{where}: executor.kind={self.executor.kind!r}, expected one of {EXECUTORS}")
        if self.executor.kind == "slurm" and not {"partition", "time"} <= set(self.executor.options):
            raise CurationConfigError(f"{where}: executor.options needs 'partition' and 'time' for slurm")
        if not 0 < self.domain.category_cap <= 1:
            raise CurationConfigError(f"{where}: domain.category_cap must be in (0, 1], got {self.domain.category_cap}")
        return self


def _build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from a TOML table, recursing into nested dataclasses; unknown keys are errors."""
    if not isinstance(data, dict):
        raise CurationConfigError(f"{where}: expected a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields or key == "source":
            known = sorted(k for k in fields if k != "source")
            raise CurationConfigError(f"{where}: unknown key {key!r}; known: {known}")
        sub = _NESTED.get((cls.__name__, key))
        if sub is not None and key == "inputs":
            if not isinstance(value, list):
                raise CurationConfigError(f"{where}.inputs: expected an array of tables ([[inputs]])")
            kwargs[key] = [_build(sub, v, f"{where}.inputs[{i}]") for i, v in enumerate(value)]
        elif sub is not None:
            kwargs[key] = _build(sub, value, f"{where}.{key}")
        else:
            kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise CurationConfigError(f"{where}: {exc}") from None


_NESTED = {
    ("CurateConfig", "inputs"): InputConfig,
    ("CurateConfig", "generate"): GenerateConfig,
    ("CurateConfig", "steps"): FilterStepsConfig,
    ("CurateConfig", "minhash"): MinhashConfig,
    ("CurateConfig", "line_dedup"): LineDedupConfig,
    ("CurateConfig", "quality"): QualityConfig,
    ("CurateConfig", "domain"): DomainConfig,
    ("CurateConfig", "mix"): MixConfig,
    ("CurateConfig", "executor"): ExecutorConfig,
}


def _set_override(data: dict[str, Any], assignment: str, where: str) -> None:
    """Apply one `--set a.b=value` override; the value is parsed as TOML (falls back to a string)."""
    if "=" not in assignment:
        raise CurationConfigError(f"{where}: --set {assignment!r} is not KEY=VALUE")
    key, raw = assignment.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise CurationConfigError(f"{where}: --set {key}: {part} is not a table")
    node[parts[-1]] = value


def config_from_dict(data: dict[str, Any], source: str = "<dict>", overrides: list[str] | None = None) -> CurateConfig:
    data = copy.deepcopy(data)  # overrides write into nested tables; never into the caller's dict
    for assignment in overrides or []:
        _set_override(data, assignment, source)
    cfg = _build(CurateConfig, data, source)
    cfg.source = source
    return cfg.validate()


def load_config(path: str | Path, overrides: list[str] | None = None) -> CurateConfig:
    """Read a recipe; relative paths inside it are resolved against the current directory."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"curation config {path} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise CurationConfigError(f"{path}: not valid TOML: {exc}") from None
    return config_from_dict(data, str(path), overrides)
