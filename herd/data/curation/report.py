"""The run report: `report.md` with kept/removed counts and reasons per step, examples of removals,
rejects, the language distribution, classifier provenance, the final mixes; PNG histograms beside it."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from herd.data.curation.config import CurateConfig
from herd.data.curation.minhash import similarity_at

STEP_ORDER = [("filter", "read"), ("filter", "extract"), ("filter", "empty"), ("filter", "blocklist"),
              ("filter", "langid"), ("filter", "pii"), ("filter", "empty_final"), ("dedup", "url_dedup"),
              ("final", "minhash"), ("final", "line_dedup"), ("final", "filters"), ("final", "classify")]
HIDDEN = {("filter", "url_record"), ("final", "url_dedup"), ("final", "record"),  # bookkeeping / replays
          ("lines", "url_dedup"), ("lines", "minhash"), ("lines", "line_signature")}


def step_counts(out: Path) -> dict[tuple[str, str], Counter]:
    """Sum of every step's per-rank counts, keyed by (stage, step)."""
    totals: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for path in sorted((out / "counts").glob("*/*/*.json")):
        totals[(path.parent.parent.name, path.parent.name)].update(json.loads(path.read_text()))
    return totals


def _examples(out: Path, step: str, limit: int = 3) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted((out / "removed" / step).glob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    by_reason: dict[str, list] = defaultdict(list)
    for r in rows:
        by_reason[r["reason"]].append(r)
    picked = []
    for reason in sorted(by_reason):  # one of each reason first, then more
        picked.append(by_reason[reason][0])
    for r in rows:
        if len(picked) >= limit:
            break
        if r not in picked:
            picked.append(r)
    return picked[: max(limit, len(by_reason))]


def read_rejects(out: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted((out / "rejects").glob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return rows


def _records(out: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted((out / "records").glob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return rows


def _plots(out: Path, records: list[dict[str, Any]], langs: Counter, quality_cats: list[str]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    made = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        made.append(name)

    if records:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        cats = sorted({r["category"] for r in records})
        toks = [np.log10([max(r["tokens"], 1) for r in records if r["category"] == c]) for c in cats]
        ax.hist(toks, bins=30, stacked=True, label=cats)
        ax.set_xlabel("log10 tokens per kept document")
        ax.set_ylabel("documents")
        ax.legend(fontsize=8)
        save(fig, "hist_tokens.png")
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.hist([r["quality"] for r in records if r.get("quality") is not None and r["category"] in quality_cats],
                bins=20, range=(0, 1))
        ax.set_xlabel(f"quality score P(high) of kept documents ({', '.join(quality_cats)})")
        ax.set_ylabel("documents")
        save(fig, "hist_quality.png")
    if langs:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        top = langs.most_common(15)
        ax.bar([k for k, _ in top], [v for _, v in top])
        ax.set_ylabel("documents (after filters)")
        ax.set_title("language distribution")
        save(fig, "languages.png")
    return made


def write_report(cfg: CurateConfig, out: Path, summary: dict[str, Any]) -> Path:
    counts = step_counts(out)
    records = _records(out)
    rejects = read_rejects(out)
    tj = out / "models" / "training.json"
    training = json.loads(tj.read_text()) if tj.is_file() else {}
    langid = counts.get(("filter", "langid"), Counter())
    langs = Counter({k.split(":", 1)[1]: v for k, v in langid.items() if k.startswith("lang:")})
    kept_langs = Counter(r.get("lang") for r in records)
    pngs = _plots(out, records, langs, list(cfg.quality.apply_to))
    mh = cfg.minhash
    L: list[str] = [f"# Curation report: `{cfg.source}`", ""]
    L += ["Stages run this time: " + ", ".join(f"{k} ({'ran' if v else 'skipped: complete'})"
                                               for k, v in summary["stages_run"].items()), ""]
    if summary.get("corpus_absent"):
        L += ["Local sources not available here: " + "; ".join(f"{k}: {v}" for k, v in
                                                                list(summary["corpus_absent"].items())[:8]), ""]
    L += ["## Kept and removed per step", "", "| stage | step | in | kept | removed / rejected (reason: count) |",
          "|---|---|---|---|---|"]
    seen = set()
    for key in STEP_ORDER + sorted(k for k in counts if k not in STEP_ORDER):
        if key not in counts or key in seen or key in HIDDEN:
            continue
        seen.add(key)
        c = counts[key]
        why = ", ".join(f"{k}: {v}" for k, v in sorted(c.items()) if k.startswith(("removed:", "rejected:")))
        L.append(f"| {key[0]} | {key[1]} | {c.get('in', 0)} | {c.get('kept', 0)} | {why or '-'} |")
    ld = counts.get(("final", "line_dedup"), Counter())
    lf = Path(out / "work" / "lines" / "frequent" / "summary.json")
    ld["frequent_line_hashes"] = json.loads(lf.read_text())["frequent_line_hashes"] if lf.is_file() else 0
    pii = counts.get(("filter", "pii"), Counter())
    L += ["", f"Line dedup removed {ld.get('lines_removed', 0)} lines ({ld.get('chars_removed', 0)} characters; "
              f"{ld.get('frequent_line_hashes', 0)} distinct lines seen more than {cfg.line_dedup.max_count} times "
              f"in a bucket of {cfg.line_dedup.bucket_docs} documents).",
          "PII replaced: " + (", ".join(f"{k[4:]}: {v}" for k, v in sorted(pii.items()) if k.startswith("pii:"))
                              or "none"), ""]
    L += [f"MinHash: word {mh.ngram}-grams, {mh.bands} bands x {mh.rows} rows = {mh.bands * mh.rows} hashes; "
          f"catch probability 50% at Jaccard {similarity_at(0.5, mh.bands, mh.rows):.3f}, "
          f"90% at {similarity_at(0.9, mh.bands, mh.rows):.3f}; per language: {mh.per_language}.", ""]
    L += ["## Examples of what each step removed", ""]
    for step in ("blocklist", "filters", "url_dedup", "minhash", "line_dedup", "classify"):
        ex = _examples(out, step)
        if not ex:
            continue
        L += [f"### {step}", ""]
        for e in ex:
            text = " ".join(str(e.get("text", "")).split())[:220]
            L.append(f"- `{e.get('reason')}` ({e.get('source')}, {e.get('id')}): {text}")
        L.append("")
    L += ["## Rejected input (bad records)", ""]
    if rejects:
        L += [f"- {r}: {n}" for r, n in Counter(x["reason"] for x in rejects).most_common()]
        L += ["", "Files: `rejects/*.jsonl` (one line per record, with the reason)."]
    else:
        L.append("None.")
    removed_langs: Counter = Counter()
    for key, c in counts.items():
        if key not in HIDDEN:
            removed_langs.update({k.split(":", 1)[1]: v for k, v in c.items() if k.startswith("lang_removed:")})
    L += ["", "## Languages", "",
          "| language | identified | removed by dedup, filters, classifiers | kept at the end |",
          "|---|---|---|---|"]
    L += [f"| {k} | {v} | {removed_langs.get(k, 0)} | {kept_langs.get(k, 0)} |" for k, v in langs.most_common()]
    L += ["", "## Classifiers and where their labels came from", ""]
    if training:
        L.append(f"- Sample: {training.get('sample')} documents of the filtered corpus.")
        L.append(f"- Domain seeds (label:source): {training.get('domain_seeds')}; `given` = the input's configured "
                 "domain (stdlib code = code, synthetic problems = math), `heuristic` = code/math line rules.")
        L.append(f"- Knowledge categories: keyword seeds {training.get('knowledge_seeds')} "
                 f"({training.get('knowledge_unseeded')} unseeded); "
                 f"predicted shares {training.get('knowledge_shares')}; "
                 f"keep rates (cap {cfg.domain.category_cap}): {training.get('keep_rates')}.")
        q = training.get("quality")
        if q:
            L.append(f"- Quality: annotator `{q['annotator']}` scored {q['annotated']} documents "
                     f"(log P(Yes) - log P(No)); median split -> {q['labels']}; student: hashed n-gram softmax.")
            L += ["", "| id | annotator score | label | answer | text |", "|---|---|---|---|---|"]
            for e in q["examples"]:
                text = " ".join(e["text"].split())[:80].replace("|", "/")
                answer = str(e.get("answer", "")).strip()[:12]
                L.append(f"| {e['id']} | {e['score']} | {e['label']} | {answer} | {text} |")
    L += ["", "## Final mix", ""]
    for name in ("pretrain", "anneal"):
        m = summary["mix"][name]
        L += [f"**{name}** (budget {m['budget_tokens']:,} tokens at <= {cfg.mix.max_epochs} epochs per source)", "",
              "| category | documents | tokens | weight | epochs at budget |", "|---|---|---|---|---|"]
        L += [f"| {c} | {s['documents']} | {s['tokens']:,} | {s['weight']:.3f} | {s['epochs_at_budget']} |"
              for c, s in m["sources"].items()]
        if m["dropped"]:
            L.append(f"\nNo data for: {', '.join(m['dropped'])} (weights renormalised).")
        L.append("")
    L += [f"Target: {summary['mix']['target']}. Files: `mix.toml` (the mix file: a pretrain recipe trains on it "
          f"with `data.mix_file`), `curated/<category>/*.jsonl`, `anneal/<category>/*.jsonl`"
          + (", token shards in `tokens/<source>`." if summary["mix"].get("tokenized") else "."), ""]
    L += [f"![{p}]({p})" for p in pngs]
    path = out / "report.md"
    path.write_text("\n".join(L) + "\n", encoding="utf-8")
    return path
