"""The mix builder: token counts per category -> sampling weights, written as the mix config.

The pretraining loader (herd.data.mixture) samples sources by *token share*, so the weights are the
target shares (default 50% general, 25% math/reasoning, 17% code, 8% multilingual) restricted to the
categories that have data (`resolve_weights(..., missing="renormalize")`). What the counts add is the
*budget*: the largest number of tokens the mix can supply without repeating any category more than
`max_epochs` times, B = min_c tokens_c * max_epochs / w_c, and each category's epochs at that budget,
w_c * B / tokens_c (> 1 means it is upsampled).

The annealing mix takes the high-quality documents (quality >= anneal_threshold, written to
`anneal/<category>/`) and multiplies the target shares by `anneal_upsample` (math x2, code x1.5 by
default) before normalising: the paper anneals on upsampled high-quality sources.

Outputs in the run directory: `mix.toml` (herd.data.mixture.MixFile, written with tomli-w): `[data]
sources`, `[data] mix` and `[anneal] mix` laid out as in a pretrain recipe (the annealing subsets are
the sources `<category>_hq`; paths relative to the file), what made it under `[provenance]`; and
`mix.json`. With `mix.tokenize = true` (the default) the sources are token shards written by herd's
tokenizer (`tokens/<name>`), so a pretrain recipe trains on it unchanged with `data.mix_file =
"<output_dir>/mix.toml"`; with `false` they are the curated JSONL directories (`herd tokenize DIR --out
... --source-name <name>` each), and pretraining refuses the file until they are tokenized.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

from herd.data.curation.config import CurateConfig
from herd.data.mixture import MixAnneal, MixData, MixFile, write_mix_file


def category_counts(out: Path, anneal_threshold: float | None = None) -> dict[str, dict[str, int]]:
    """Documents and tokens per category from the final stage's records (optionally quality >= threshold)."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"documents": 0, "tokens": 0})
    for path in sorted((out / "records").glob("*.jsonl")):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                r = json.loads(line)
                if anneal_threshold is not None and (r.get("quality") or 0.0) < anneal_threshold:
                    continue
                c = counts[r["category"]]
                c["documents"] += 1
                c["tokens"] += int(r["tokens"])
    return dict(counts)


def build_mix(target: Mapping[str, float], counts: Mapping[str, Mapping[str, int]], max_epochs: float,
              upsample: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Weights over the categories with tokens, the token budget and each category's epochs."""
    from herd.data.mixture import resolve_weights

    available = [c for c, v in counts.items() if v["tokens"] > 0]
    raw = {c: w * (upsample or {}).get(c, 1.0) for c, w in target.items()}
    if not available or not any(raw.get(c, 0) > 0 for c in available):
        return {"weights": {}, "budget_tokens": 0, "sources": {}, "dropped": sorted(target)}
    weights = resolve_weights(raw, available, missing="renormalize")
    budget = min(counts[c]["tokens"] * max_epochs / w for c, w in weights.items())
    sources = {
        c: {"documents": counts[c]["documents"], "tokens": counts[c]["tokens"], "weight": round(w, 6),
            "epochs_at_budget": round(w * budget / counts[c]["tokens"], 4)}
        for c, w in weights.items()
    }
    dropped = sorted(c for c, w in target.items() if w > 0 and c not in weights)
    return {"weights": {c: round(w, 6) for c, w in weights.items()}, "budget_tokens": int(budget),
            "sources": sources, "dropped": dropped}


def _tokenize(cfg: CurateConfig, data_dir: Path, tokens_dir: Path, name: str) -> None:
    """`herd tokenize` of one curated directory, skipped when its shards are already complete."""
    from herd.data.shards import MANIFEST
    from herd.data.tokenize_sources import tokenize_files

    if (tokens_dir / MANIFEST).is_file():
        return
    tokenize_files([data_dir], tokens_dir, name, fmt="jsonl", workers=1,
                   validation_fraction=cfg.mix.validation_fraction)


def write_mix(cfg: CurateConfig, out: Path) -> dict[str, Any]:
    """Tokenize the curated categories (with `mix.tokenize`) and write `mix.toml` + `mix.json`."""
    main = build_mix(cfg.mix.target, category_counts(out), cfg.mix.max_epochs)
    anneal = build_mix(cfg.mix.target, category_counts(out, cfg.quality.anneal_threshold), cfg.mix.max_epochs,
                       cfg.mix.anneal_upsample)
    # source directories relative to `out`: the mix file resolves them against its own directory
    dirs = {c: (Path("curated") / c, Path("tokens") / c) for c in main["weights"]}
    dirs |= {f"{c}_hq": (Path("anneal") / c, Path("tokens") / f"{c}_hq") for c in anneal["weights"]}
    if cfg.mix.tokenize:
        for name, (data_dir, tokens_dir) in dirs.items():
            _tokenize(cfg, out / data_dir, out / tokens_dir, name)
    sources = {name: (tok if cfg.mix.tokenize else data).as_posix() for name, (data, tok) in dirs.items()}
    mix_file = MixFile(
        data=MixData(sources=sources, mix=main["weights"]),
        anneal=MixAnneal(mix={f"{c}_hq": w for c, w in anneal["weights"].items()}),
        tokenized=cfg.mix.tokenize,
        provenance={"recipe": cfg.source, "tokenizer": cfg.mix.tokenizer, "target": dict(cfg.mix.target),
                    "max_epochs": cfg.mix.max_epochs, "pretrain": main, "anneal": anneal},
    )
    header = ("written by `herd curate` from token counts (Llama 3 tokenizer); source paths are relative to this\n"
              "file. Train on it unchanged: a pretrain recipe with [data] mix_file = \"<this file>\" (as\n"
              "configs/pretrain/tiny-curated.toml), or any recipe with its own sources dropped:\n"
              f"  herd pretrain configs/pretrain/tiny.toml --set data.sources={{}} --set data.mix_file={out / 'mix.toml'}\n"
              f"pretraining budget: {main['budget_tokens']} tokens with no source above {cfg.mix.max_epochs} epochs")
    write_mix_file(out / "mix.toml", mix_file, header)
    both = {"pretrain": main, "anneal": anneal, "target": dict(cfg.mix.target),
            "sources": {name: str(out / p) for name, p in sources.items()}, "tokenized": cfg.mix.tokenize}
    (out / "mix.json").write_text(json.dumps(both, indent=1))
    return both
