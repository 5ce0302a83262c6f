"""The Llama 3 paper's contamination study (section 5.1.4) over herd token shards.

An item (its query + gold answer, tokenized with the corpus's tokenizer) is *contaminated at
threshold T* when at least a share T of its tokens lie inside some n-gram (n = 8) that occurs in the
pretraining corpus. Per benchmark the paper reports the share of contaminated items and the
*estimated performance gain*: accuracy on all items minus accuracy on the clean items, with T chosen
per benchmark as the value giving the largest significant gain. `contamination_table` gives those
numbers per threshold, with N per group and a 95% interval for the gain; `contamination_report`
scans once for several benchmarks and returns a JSON-ready dict; `report_markdown` renders it and
`write_report` writes both (what `herd eval contamination --shards DIR` needs).

Defined edge cases (so no item silently disappears):
- an item shorter than n tokens has no n-gram, so none of its tokens can be covered: its fraction is
  0.0 (clean at every threshold) and the report counts such items under `too_short`;
- an empty item likewise has fraction 0.0;
- an n-gram that spans two documents of the shards (or two shard files) does not count: it is not
  text of the corpus, only an artefact of storing documents back to back.

The scan itself (rolling hash, exact check, document bounds) is `herd.eval.ngram_scan`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from herd.data import TokenShards
from herd.eval.ngram_scan import DEFAULT_CHUNK_TOKENS, ItemNGrams, ScanStats, scan_sources

DEFAULT_N = 8
DEFAULT_THRESHOLDS = (0.2, 0.4, 0.6, 0.8)
Z95 = 1.959963984540054

ShardDirs = str | Path | Sequence[str | Path]
MANIFEST = "manifest.json"  # what marks a token shard source directory (herd.data.shards)


def open_shard_sources(shard_dir: ShardDirs) -> list[TokenShards]:
    """Token shard sources from a source directory (has manifest.json), a directory of source
    directories (e.g. a run's `tokens/`), or a list of either."""
    dirs = [shard_dir] if isinstance(shard_dir, (str, Path)) else list(shard_dir)
    if not dirs:
        raise ValueError("no token shard directory given")
    sources: list[TokenShards] = []
    for entry in dirs:
        path = Path(entry)
        if not path.is_dir():
            raise ValueError(f"token shard directory not found: {path}")
        if (path / MANIFEST).is_file():
            sources.append(TokenShards(path))
            continue
        children = sorted(p for p in path.iterdir() if (p / MANIFEST).is_file())
        if not children:
            raise ValueError(f"no herd token shards in {path} (expected {MANIFEST} there or in its subdirectories)")
        sources.extend(TokenShards(child) for child in children)
    return sources


@dataclass
class ContaminationScan:
    """Per item: covered-token fraction and whether it was too short to have an n-gram."""

    fractions: list[float]
    too_short: list[bool]
    n: int
    stats: ScanStats


def scan(shard_dir: ShardDirs, items: Sequence[Sequence[int]], n: int = DEFAULT_N, *,
         chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> ContaminationScan:
    """One pass over the shards for all `items` (token-id lists); see the module docstring."""
    index = ItemNGrams(items, n)
    found, stats = scan_sources(open_shard_sources(shard_dir), index, chunk_tokens)
    return ContaminationScan(fractions=[float(f) for f in index.coverage(found)],
                             too_short=[bool(length < n) for length in index.lengths], n=n, stats=stats)


def scan_items(shard_dir: ShardDirs, items: Sequence[Sequence[int]], n: int = DEFAULT_N) -> list[float]:
    """Per item, the share of its tokens inside an n-gram that occurs within a document of the shards."""
    return scan(shard_dir, items, n).fractions


def _check_thresholds(thresholds: Sequence[float]) -> list[float]:
    values = [float(t) for t in thresholds]
    if not values:
        raise ValueError("need at least one contamination threshold")
    for t in values:
        if not 0.0 < t <= 1.0:
            raise ValueError(f"contamination thresholds must be in (0, 1], got {t}")
    return values


def _check_scores(correct: Sequence[float] | Sequence[bool], count: int) -> np.ndarray:
    scores = np.asarray(correct, dtype=np.float64)
    if scores.ndim != 1 or scores.size != count:
        raise ValueError(f"need one correctness value per item: {count} items, got shape {scores.shape}")
    if not np.all(np.isfinite(scores)) or scores.size and (scores.min() < 0.0 or scores.max() > 1.0):
        raise ValueError("correctness values must be bools or scores in [0, 1]")
    return scores


def _gain_interval(contaminated: np.ndarray, clean: np.ndarray, share: float) -> list[float] | None:
    """95% interval for gain = share * (acc_contaminated - acc_clean), Agresti-Caffo for the difference
    (one success and one failure added to each group: sane at small N and at 0% or 100%)."""
    if contaminated.size == 0 or clean.size == 0:
        return None
    p1 = (contaminated.sum() + 1.0) / (contaminated.size + 2.0)
    p2 = (clean.sum() + 1.0) / (clean.size + 2.0)
    half = Z95 * math.sqrt(p1 * (1 - p1) / (contaminated.size + 2.0) + p2 * (1 - p2) / (clean.size + 2.0))
    return [share * (p1 - p2 - half), share * (p1 - p2 + half)]


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def contamination_table(fractions: Sequence[float], correct: Sequence[float] | Sequence[bool] | None = None,
                        thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> list[dict[str, Any]]:
    """One row per threshold T (an item is contaminated when its fraction >= T).

    Row keys: threshold, n_all, n_clean, n_contaminated, contaminated_share, and with `correct`
    (bools or scores in [0, 1], one per item): acc_all, acc_clean, acc_contaminated, gain
    (= acc_all - acc_clean, the paper's estimate), gain_ci95 and significant (the interval excludes 0).
    Values that are undefined (an empty group, no `correct`) are None.
    """
    frac = np.asarray(fractions, dtype=np.float64)
    if frac.ndim != 1 or (frac.size and (not np.all(np.isfinite(frac)) or frac.min() < 0 or frac.max() > 1)):
        raise ValueError("fractions must be a flat list of values in [0, 1]")
    scores = None if correct is None else _check_scores(correct, frac.size)
    rows = []
    for t in _check_thresholds(thresholds):
        dirty = frac >= t
        n_dirty = int(dirty.sum())
        share = n_dirty / frac.size if frac.size else 0.0
        row: dict[str, Any] = {"threshold": t, "n_all": int(frac.size), "n_clean": int(frac.size - n_dirty),
                               "n_contaminated": n_dirty, "contaminated_share": share,
                               "acc_all": None, "acc_clean": None, "acc_contaminated": None,
                               "gain": None, "gain_ci95": None, "significant": None}
        if scores is not None:
            acc_all, acc_clean = _mean(scores), _mean(scores[~dirty])
            interval = _gain_interval(scores[dirty], scores[~dirty], share)
            row.update(acc_all=acc_all, acc_clean=acc_clean, acc_contaminated=_mean(scores[dirty]),
                       gain=None if acc_all is None or acc_clean is None else acc_all - acc_clean,
                       gain_ci95=interval,
                       significant=None if interval is None else bool(interval[0] > 0 or interval[1] < 0))
        rows.append(row)
    return rows


def choose_threshold(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """The paper's per-benchmark choice: the threshold with the largest significant positive gain
    (None when no threshold shows one; then the benchmark shows no measurable contamination effect)."""
    best: Mapping[str, Any] | None = None
    for row in rows:
        if row.get("significant") and row["gain"] is not None and row["gain"] > 0:
            if best is None or row["gain"] > best["gain"]:
                best = row
    return None if best is None else float(best["threshold"])


def contamination_report(shard_dir: ShardDirs, tasks: Mapping[str, Sequence[Sequence[int]]],
                         correct: Mapping[str, Sequence[float] | Sequence[bool]] | None = None, *,
                         n: int = DEFAULT_N, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                         chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> dict[str, Any]:
    """Scan the shards once for every task's items; return a JSON-ready dict (see report_markdown).

    `tasks` maps a benchmark name to its items as token-id lists (query + gold answer); `correct`
    (optional, per task) the per-item correctness of a model, for the accuracy and gain columns.
    """
    if not tasks:
        raise ValueError("no tasks to check for contamination")
    thresholds = _check_thresholds(thresholds)
    correct = dict(correct or {})
    unknown = sorted(set(correct) - set(tasks))
    if unknown:
        raise ValueError(f"correctness given for unknown task(s): {', '.join(unknown)}")
    for name, values in correct.items():
        _check_scores(values, len(tasks[name]))  # fail before the scan, not after it
    names = list(tasks)
    flat = [item for name in names for item in tasks[name]]
    result = scan(shard_dir, flat, n, chunk_tokens=chunk_tokens)
    out: dict[str, Any] = {
        "method": {
            "n": n, "thresholds": thresholds,
            "rule": f"an item is contaminated at threshold T when >= T of its tokens lie inside an {n}-gram "
                    "found within one document of the shards (Llama 3 paper, section 5.1.4)",
            "gain": "accuracy on all items minus accuracy on clean items; 95% interval (Agresti-Caffo) "
                    "for share * (acc_contaminated - acc_clean)",
            "too_short": f"items with fewer than {n} tokens have no {n}-gram: fraction 0.0 (clean)",
        },
        "corpus": result.stats.to_dict(),
        "tasks": {},
    }
    start = 0
    for name in names:
        count = len(tasks[name])
        fractions = result.fractions[start:start + count]
        rows = contamination_table(fractions, correct.get(name), thresholds)
        out["tasks"][name] = {
            "items": count,
            "too_short": int(sum(result.too_short[start:start + count])),
            "mean_fraction": float(np.mean(fractions)) if count else 0.0,
            "fractions": fractions,
            "table": rows,
            "chosen_threshold": choose_threshold(rows) if name in correct else None,
        }
        start += count
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.1f}"


def report_markdown(report: Mapping[str, Any]) -> str:
    """The paper's table (per benchmark: contaminated %, estimated gain at the chosen threshold),
    then the per-threshold detail with N per group. Percentages; gains in accuracy points."""
    method, corpus = report["method"], report["corpus"]
    lines = [
        f"## Contamination ({method['n']}-gram overlap with the pretraining shards)",
        "",
        f"Rule: {method['rule']}. Gain: {method['gain']}. Short items: {method['too_short']}.",
        f"Corpus: {corpus['tokens']:,} tokens in {corpus['documents']:,} documents, {corpus['shards']} shard "
        f"files ({corpus['duplicate_shards_skipped']} identical copies skipped), scanned at "
        f"{corpus['tokens_per_s'] / 1e6:.1f}M tokens/s.",
        "",
        "| benchmark | N | threshold | contaminated % | acc all | acc clean | est. gain |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, task in report["tasks"].items():
        chosen = task["chosen_threshold"]
        row = next((r for r in task["table"] if r["threshold"] == chosen), None)
        if row is None:  # no significant gain (or no accuracies): show the lowest threshold
            row = task["table"][0]
        label = f"{row['threshold']:g}"
        if chosen is None:
            label += " (no sig. gain)" if row["acc_all"] is not None else " (no accuracies)"
        lines.append(f"| {name} | {task['items']} | {label} | {_pct(row['contaminated_share'])} | "
                     f"{_pct(row['acc_all'])} | {_pct(row['acc_clean'])} | {_signed(row['gain'])} |")
    lines += ["", "| benchmark | T | N clean | N contaminated | contaminated % | acc all | acc clean | "
              "acc contaminated | gain | gain 95% CI |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, task in report["tasks"].items():
        for r in task["table"]:
            ci = "-" if r["gain_ci95"] is None else f"[{_signed(r['gain_ci95'][0])}, {_signed(r['gain_ci95'][1])}]"
            lines.append(f"| {name} | {r['threshold']:g} | {r['n_clean']} | {r['n_contaminated']} | "
                         f"{_pct(r['contaminated_share'])} | {_pct(r['acc_all'])} | {_pct(r['acc_clean'])} | "
                         f"{_pct(r['acc_contaminated'])} | {_signed(r['gain'])} | {ci} |")
    return "\n".join(lines) + "\n"


def write_report(report: Mapping[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write `contamination.json` (the report as is) and `contamination.md` into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "contamination.json", out / "contamination.md"
    json_path.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    md_path.write_text(report_markdown(report), encoding="utf-8")
    return json_path, md_path
