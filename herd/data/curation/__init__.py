"""Web-data curation: extraction, filtering, PII scrubbing, language ID, dedup and the `herd curate` pipeline.

Public API of the pipeline half (the per-document functions live in extract/filters/pii/langid/blocklist):

    load_config(path, overrides) -> CurateConfig      the TOML recipe
    run_curation(cfg) -> summary                      every datatrove stage, the mix config and the report
    MinHasher, s_curve, similarity_at                 MinHash signatures and their catch probability
    find_frequent_lines, drop_frequent_lines          bucketed line dedup (counts over all tasks)
    resolve_url_duplicates, normalize_url             URL dedup keeping the most recent copy
    HashedNgramClassifier                             the fast student classifier (quality, domain, topics)
    build_mix                                         token counts -> mix weights and budget
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "CurateConfig": "config", "CurationConfigError": "config", "load_config": "config", "config_from_dict": "config",
    "run_curation": "pipeline", "build_stages": "pipeline",
    "MinHasher": "minhash", "s_curve": "minhash", "similarity_at": "minhash", "shingle_hashes": "minhash",
    "find_frequent_lines": "line_dedup", "drop_frequent_lines": "line_dedup",
    "resolve_url_duplicates": "dedup_url", "normalize_url": "dedup_url",
    "HashedNgramClassifier": "quality_model", "build_mix": "mix",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    # lazy, so `import herd.data.curation.extract` does not import datatrove
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"herd.data.curation.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'herd.data.curation' has no attribute {name!r}")
