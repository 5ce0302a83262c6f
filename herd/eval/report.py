"""`herd eval report DIR`: results.json as a readable page, with the plots people would rather look at.

Writes DIR/report.md and DIR/scores.png (each task's main metric with its 95% interval). Sections for
the contamination table and the robustness figures are added when their JSON files are in DIR.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MAIN_METRIC = {"mc": "acc", "generate": "exact_match", "lm": "bits_per_byte", "code": "pass@1", "niah": "accuracy"}


def _load(directory: Path) -> dict[str, Any]:
    path = directory / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run `herd eval run --out {directory}` first")
    return json.loads(path.read_text(encoding="utf-8"))


def plot_scores(results: dict[str, Any], path: Path) -> Path | None:
    """Bars of each accuracy-like task's main metric with 95% intervals (lm tasks have their own scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(name, t["metrics"][MAIN_METRIC[t["kind"]]]) for name, t in results["tasks"].items() if t["kind"] != "lm"]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(rows) + 1), 3.2))
    values = [m["value"] * 100 for _, m in rows]
    errors = [[(m["value"] - m["ci95"][0]) * 100 for _, m in rows], [(m["ci95"][1] - m["value"]) * 100 for _, m in rows]]
    ax.bar(range(len(rows)), values, yerr=errors, capsize=4, color="#4C72B0")
    ax.set_xticks(range(len(rows)), [n for n, _ in rows], rotation=20, ha="right")
    ax.set_ylabel("score (%), 95% CI")
    ax.set_ylim(0, 100)
    ax.set_title(results["model"]["spec"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def niah_sections(directory: Path, results: dict[str, Any]) -> list[str]:
    """A heatmap and a grid (context length x needle depth) per needle-in-a-haystack task."""
    from herd.eval.niah import NIAHReport

    names = [name for name, t in results["tasks"].items() if t["kind"] == "niah"]
    if not names:
        return []
    records: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for line in (directory / "samples.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec["task"] in records:
            records[rec["task"]].append(rec)
    lines: list[str] = []
    for name in names:
        grid = NIAHReport(max((r["needles"] for r in records[name]), default=1))
        for r in records[name]:
            grid.cells.setdefault((r["length"], r["depth"]), []).append(bool(r["correct"]))
        png = grid.plot(directory / f"{name}.png")
        lines += ["", f"## {name}: accuracy by context length and needle depth", "", grid.table(), "",
                  f"![{name}]({png.name})"]
    return lines


def write_report(directory: str | Path) -> Path:
    directory = Path(directory)
    results = _load(directory)
    s = results["settings"]
    lines = [
        f"# Evaluation of `{results['model']['spec']}`",
        "",
        f"Model fingerprint `{results['model']['fingerprint']}`; {s['shots']}-shot, chat={s['chat']}, "
        f"BOS={s['bos']}, few-shot seed {s['seed']}" + (f", limit {s['limit']}" if s.get("limit") else "") + ".",
        "",
        "| task | kind | metric | value | 95% CI | N |",
        "|---|---|---|---:|---|---:|",
    ]
    for name, t in results["tasks"].items():
        for metric, m in t["metrics"].items():
            lines.append(f"| {name} (v{t['version']}) | {t['kind']} | {metric} | {m['value']:.4f} | "
                         f"[{m['ci95'][0]:.4f}, {m['ci95'][1]:.4f}] | {m['n']} |")
    plot = plot_scores(results, directory / "scores.png")
    if plot is not None:
        lines += ["", f"![scores]({plot.name})"]
    lines += niah_sections(directory, results)
    lines += ["", "## Data", ""]
    for name, t in results["tasks"].items():
        lines.append(f"- {name}: {t['source']} ({t['licence']})")
    for extra in ("contamination.md", "robustness.md"):
        if (directory / extra).is_file():
            lines += ["", (directory / extra).read_text(encoding="utf-8").strip()]
    out = directory / "report.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
