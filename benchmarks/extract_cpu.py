"""HTML main-content extraction: herd's extractor vs trafilatura on a hand-labeled set (CPU).

Measures, in one run on the same pages:
  * precision / recall of content lines against ``benchmarks/data/extract_labeled/*.gold.txt``;
  * throughput in documents per second on one core (the pages are repeated for timing).

Line matching: a line is normalized to its lower-cased alphanumeric words (so "- item", "| a | b |"
and "a b" compare equal and neither extractor is punished for its formatting). A gold line is
*recalled* when its word sequence occurs in the extractor's whole output; an output line is
*precise* when its word sequence occurs in the whole gold text. Micro-averaged over all lines.
Lines without any word character (e.g. a lone "}") are ignored.

trafilatura is a benchmark-only dependency (``pip install trafilatura``), not a runtime one.
Run: ``.venv/bin/python benchmarks/extract_cpu.py [--repeat 20] [--show NAME]``
"""

from __future__ import annotations

import argparse
import platform
import glob
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from herd.data.curation.extract import extract_main_content  # noqa: E402

try:
    from host import describe
except ImportError:  # run from another directory
    from benchmarks.host import describe

DATA = Path(__file__).parent / "data" / "extract_labeled"
_WORD = re.compile(r"\w+", re.UNICODE)


def norm(line: str) -> str:
    """Lower-cased words joined by single spaces, with a space at both ends (for whole-word search)."""
    words = _WORD.findall(line.lower().replace("_", " "))
    return " " + " ".join(words) + " " if words else ""


def score(pred: str, gold: str) -> tuple[int, int, int, int]:
    """(precise lines, predicted lines, recalled lines, gold lines) for one page."""
    pred_lines = [n for n in map(norm, pred.splitlines()) if n]
    gold_lines = [n for n in map(norm, gold.splitlines()) if n]
    pred_all = " " + " ".join(x.strip() for x in pred_lines) + " "
    gold_all = " " + " ".join(x.strip() for x in gold_lines) + " "
    precise = sum(1 for x in pred_lines if x in gold_all)
    recalled = sum(1 for x in gold_lines if x in pred_all)
    return precise, len(pred_lines), recalled, len(gold_lines)


def ours(html: str) -> str:
    return extract_main_content(html).text


def trafilatura_extract(html: str) -> str:
    import trafilatura

    return trafilatura.extract(html, include_comments=False, include_tables=True, favor_precision=False) or ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="passes over the pages for the throughput timing")
    parser.add_argument(
        "--real-glob",
        default="/usr/share/doc/python3.11/html/library/*.html",
        help="real pages for a throughput-only run (apt-get install python3.11-doc)",
    )
    parser.add_argument("--real-count", type=int, default=100, help="how many of the real pages to time")
    parser.add_argument("--show", help="print both extractions of this page (file stem) and exit")
    args = parser.parse_args()
    pages = sorted(DATA.glob("*.html"))
    if not pages:
        raise SystemExit(f"no pages in {DATA}")
    docs = [
        (p.stem, p.read_text(encoding="utf-8"), p.with_suffix(".gold.txt").read_text(encoding="utf-8")) for p in pages
    ]
    extractors = {"herd": ours}
    try:
        import trafilatura  # noqa: F401

        extractors["trafilatura"] = trafilatura_extract
    except ImportError:
        print("trafilatura not installed: pip install trafilatura (benchmark-only)")
    if args.show:
        html = next(h for n, h, _ in docs if n == args.show)
        for name, fn in extractors.items():
            print(f"===== {name}\n{fn(html)}")
        return
    print(f"{len(docs)} labeled pages; machine: {describe()}, Python {platform.python_version()}, 1 process")
    print(f"{'extractor':<12} {'precision':>9} {'recall':>7} {'F1':>6} {'docs/s':>8}   pages with recall<0.8")
    for name, fn in extractors.items():
        tp_p = n_p = tp_r = n_r = 0
        weak = []
        for stem, html, gold in docs:
            a, b, c, d = score(fn(html), gold)
            tp_p, n_p, tp_r, n_r = tp_p + a, n_p + b, tp_r + c, n_r + d
            if d and c / d < 0.8:
                weak.append(f"{stem}({c}/{d})")
        start = time.perf_counter()
        for _ in range(args.repeat):
            for _, html, _ in docs:
                fn(html)
        rate = args.repeat * len(docs) / (time.perf_counter() - start)
        p, r = tp_p / max(n_p, 1), tp_r / max(n_r, 1)
        f1 = 2 * p * r / max(p + r, 1e-9)
        print(f"{name:<12} {p:9.3f} {r:7.3f} {f1:6.3f} {rate:8.1f}   {' '.join(weak) or '-'}")
    real = sorted(glob.glob(args.real_glob))[: args.real_count]
    if not real:
        print(f"no real pages at {args.real_glob}: throughput on real pages skipped")
        return
    blobs = [Path(f).read_bytes() for f in real]
    mib = sum(map(len, blobs)) / 2**20
    print(f"\nthroughput on {len(blobs)} real pages ({args.real_glob}, {1024 * mib / len(blobs):.0f} KiB average):")
    for name, fn in extractors.items():
        start = time.perf_counter()
        chars = sum(len(fn(b.decode("utf-8", errors="replace"))) for b in blobs)
        secs = time.perf_counter() - start
        print(
            f"{name:<12} {len(blobs) / secs:8.1f} docs/s  {mib / secs:6.2f} MiB/s  {chars / len(blobs):8.0f} chars/doc out"
        )


if __name__ == "__main__":
    main()
