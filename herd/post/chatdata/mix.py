"""Mixing curated sources into one SFT set: weights and caps per group, seeded.

The paper adjusts the proportions of its post-training data per capability/topic; here dialogs are
grouped by a field (`capability`, `topic`, ...) or by the file they came from (`source`), and each
group contributes:

  without --total   round(weight x group size) dialogs: weight 1 keeps a group as is, 0.5 keeps a random
                    half, 2 repeats it twice (a weight above 1 upsamples: every dialog once per whole
                    multiple, the fraction sampled without replacement);
  with --total N    round(N x weight / sum of weights) dialogs (the weights are proportions, up- or
                    downsampling each group as needed).

A cap per group then bounds its count. Groups without a weight get `default_weight`. The output is
shuffled with the seed; the same inputs and seed give the same file.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from herd.post.chatdata.rows import Row

UNKNOWN = "unknown"


def parse_assignments(items: Sequence[str], what: str, cast: type = float) -> dict[str, Any]:
    """`["math=2", "code=0.5"]` or `["math=2,code=0.5"]` -> {"math": 2.0, "code": 0.5}."""
    out: dict[str, Any] = {}
    for item in items:
        for part in (p for p in item.split(",") if p.strip()):
            name, sep, value = part.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"{what} takes NAME=VALUE, got {part!r}")
            try:
                number = cast(value)
            except ValueError:
                raise ValueError(f"{what} {name.strip()}: {value!r} is not a number") from None
            if number < 0:
                raise ValueError(f"{what} {name.strip()}: must be >= 0, got {value}")
            out[name.strip()] = number
    return out


def group_of(row: Row, by: str) -> str:
    if by == "source":
        return row.source or UNKNOWN
    value = row.extra.get(by)
    return str(value) if value not in (None, "") else UNKNOWN


def _take(rng: random.Random, items: list[int], count: int) -> list[int]:
    """`count` of `items`: whole passes over a shuffled copy, the remainder sampled without replacement."""
    whole, rest = divmod(count, len(items)) if items else (0, 0)
    chosen = []
    for _ in range(whole):
        chosen += items
    chosen += rng.sample(items, rest)
    return chosen


def mix_rows(rows: Sequence[Row], by: str = "source", weights: Mapping[str, float] | None = None,
             caps: Mapping[str, int] | None = None, total: int | None = None, default_weight: float = 1.0,
             seed: int = 0) -> tuple[list[Row], dict[str, Any]]:
    """The mixed rows (shuffled) and a report per group: available, weight, target, taken, repeats."""
    weights, caps = dict(weights or {}), dict(caps or {})
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(group_of(row, by), []).append(i)
    unknown = sorted((set(weights) | set(caps)) - set(groups))  # likely typos: reported, not fatal
    weight = {g: float(weights.get(g, default_weight)) for g in groups}
    if total is not None and total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    if total is not None:
        mass = sum(weight.values())
        if mass <= 0:
            raise ValueError("with --total the weights must not all be 0")
        target = _apportion(total, {g: w / mass for g, w in weight.items()})
    else:
        target = {g: round(weight[g] * len(groups[g])) for g in groups}
    rng = random.Random(seed)
    chosen: list[int] = []
    report_groups = {}
    for g in sorted(groups):
        count = min(target[g], caps[g]) if g in caps else target[g]
        picked = _take(rng, groups[g], count)
        chosen += picked
        report_groups[g] = {"available": len(groups[g]), "weight": weight[g], "target": target[g],
                            "cap": caps.get(g), "taken": len(picked), "unique": len(set(picked))}
    rng.shuffle(chosen)
    report = {"by": by, "seed": seed, "total": total, "dialogs_in": len(rows), "dialogs_out": len(chosen),
              "groups": report_groups, "unknown_groups_in_flags": unknown}
    if by == "source":  # keep the provenance the grouping used, unless the record already names one
        return [Row(rows[i].dialog, {"source": rows[i].source, **rows[i].extra}, rows[i].source) for i in chosen], report
    return [rows[i] for i in chosen], report


def _apportion(total: int, shares: Mapping[str, float]) -> dict[str, int]:
    """Largest-remainder rounding: integer counts in proportion to `shares` that add up to `total`."""
    exact = {g: total * s for g, s in shares.items()}
    counts = {g: int(v) for g, v in exact.items()}
    left = total - sum(counts.values())
    for g in sorted(exact, key=lambda g: (-(exact[g] - counts[g]), g))[:left]:
        counts[g] += 1
    return counts
