"""The first stage of the local recipe: a real corpus of HTML and text from this machine, no downloads.

* `pydoc/`: HTML pages rendered by `pydoc` for standard-library modules (real HTML with navigation
  tables, link lists and boilerplate, as a web page would have);
* `python-doc/`: pages of the `python3.11-doc` package's HTML when it is installed;
* `stdlib_code.jsonl`: standard-library `.py` files (given domain: code);
* `manpages.jsonl`: translated manual pages from /usr/share/man/<lang>/ (the multilingual share);
* `math.jsonl`: synthetic worked word problems (herd.data.synthetic_math; given domain: math);
* `recrawl.jsonl`: a *simulated* second crawl: some pydoc pages again, same URL, a later timestamp,
  with a changed footer line, so URL dedup (keep the most recent) and MinHash have real work.

Returns the `[[inputs]]` for the pipeline; sources that do not exist here are left out and listed.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from herd.data.curation.config import GenerateConfig, InputConfig

PYDOC_MODULES = (
    "json", "re", "math", "statistics", "fractions", "decimal", "collections", "itertools", "functools", "string",
    "textwrap", "heapq", "bisect", "random", "datetime", "calendar", "csv", "pathlib", "shutil", "glob", "fnmatch",
    "difflib", "pprint", "enum", "dataclasses", "typing", "abc", "contextlib", "operator", "copy", "array", "struct",
    "zlib", "gzip", "hashlib", "hmac", "secrets", "base64", "binascii", "html", "html.parser", "urllib.parse",
    "http.client", "email.message", "logging", "argparse", "getopt", "shlex", "configparser", "tomllib", "sqlite3",
    "uuid", "ipaddress", "socket", "selectors", "threading", "queue", "sched", "timeit", "cmath", "numbers",
    "locale", "gettext", "unicodedata", "codecs", "io", "tempfile", "zipfile", "tarfile", "wave", "colorsys",
    "graphlib", "zoneinfo", "weakref", "types", "inspect", "ast", "tokenize", "dis", "traceback", "warnings",
)
PYTHON_DOC_HTML = Path("/usr/share/doc/python3.11/html")
MAN_ROOT = Path("/usr/share/man")


def render_pydoc(module_name: str) -> str:
    """The HTML page `pydoc -w` would write for a module."""
    import importlib
    import pydoc

    with warnings.catch_warnings(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        obj = importlib.import_module(module_name)
        return pydoc.html.page(pydoc.describe(obj), pydoc.html.document(obj, module_name))


def build_local_corpus(cfg: GenerateConfig) -> tuple[list[InputConfig], dict[str, Any]]:
    """Write the corpus under `cfg.dir` (skipped when it is already complete) and return its inputs."""
    root = Path(cfg.dir)
    marker = root / "corpus.json"
    if marker.is_file():
        summary = json.loads(marker.read_text())
    else:
        summary = _build(cfg, root)
        marker.write_text(json.dumps(summary, indent=1))
    inputs = [InputConfig(**spec) for spec in summary["inputs"]]
    return inputs, summary


def _build(cfg: GenerateConfig, root: Path) -> dict[str, Any]:
    rng = random.Random(cfg.seed)
    root.mkdir(parents=True, exist_ok=True)
    inputs: list[dict[str, Any]] = []
    absent: dict[str, str] = {}

    pydoc_dir = root / "pydoc"
    pydoc_dir.mkdir(exist_ok=True)
    pages = {}
    for name in tqdm(PYDOC_MODULES[: cfg.pydoc_modules], desc="pydoc pages", unit="page"):
        try:
            pages[name] = render_pydoc(name)
        except Exception as exc:  # noqa: BLE001 - a module that cannot be rendered is skipped and listed
            absent[f"pydoc:{name}"] = f"{type(exc).__name__}: {exc}"
            continue
        (pydoc_dir / f"{name}.html").write_text(pages[name], encoding="utf-8")
    inputs.append({"name": "pydoc", "path": str(pydoc_dir), "kind": "html"})

    if PYTHON_DOC_HTML.is_dir() and cfg.python_doc_html > 0:
        files = sorted(PYTHON_DOC_HTML.glob("library/*.html"))[: cfg.python_doc_html]
        dst = root / "python-doc"
        dst.mkdir(exist_ok=True)
        for f in files:
            (dst / f.name).write_bytes(f.read_bytes())
        inputs.append({"name": "python-doc", "path": str(dst), "kind": "html"})
    else:
        absent["python-doc"] = f"{PYTHON_DOC_HTML} not installed (apt-get install python3.11-doc)"

    from herd.data.local_corpus import roff_to_text, stdlib_sources

    code = root / "stdlib_code.jsonl"
    with open(code, "w", encoding="utf-8") as fh:
        files = stdlib_sources()
        for path in rng.sample(files, min(cfg.stdlib_code_files, len(files))):
            text = path.read_text(encoding="utf-8", errors="replace")
            fh.write(json.dumps({"id": f"stdlib:{path.name}", "url": path.resolve().as_uri(), "text": text}) + "\n")
    inputs.append({"name": "stdlib_code", "path": str(code), "kind": "jsonl", "domain": "code",
                   "skip": ["filters", "pii", "line_dedup"]})

    man = root / "manpages.jsonl"
    n_man = 0
    with open(man, "w", encoding="utf-8") as fh:
        for lang in cfg.manpage_languages:
            pages_dir = MAN_ROOT / lang
            files = sorted(pages_dir.glob("man*/*.gz")) if pages_dir.is_dir() else []
            for path in files[: cfg.manpages_per_language]:
                try:
                    text = roff_to_text(gzip.decompress(path.read_bytes()).decode("utf-8", "replace"))
                except (OSError, EOFError) as exc:
                    absent[f"man:{path}"] = str(exc)
                    continue
                fh.write(json.dumps({"id": f"man:{lang}:{path.name}", "url": f"man://{lang}/{path.name}",
                                     "text": text}, ensure_ascii=False) + "\n")
                n_man += 1
    if n_man:
        inputs.append({"name": "manpages", "path": str(man), "kind": "jsonl"})
    else:
        absent["manpages"] = f"no translated manual pages under {MAN_ROOT}/<lang>"

    from herd.data.synthetic_math import word_problem

    math_path = root / "math.jsonl"
    with open(math_path, "w", encoding="utf-8") as fh:
        for i in range(cfg.synthetic_math):
            fh.write(json.dumps({"id": f"math:{i}", "url": f"synthetic://math/{i}", "text": word_problem(rng)}) + "\n")
    inputs.append({"name": "math", "path": str(math_path), "kind": "jsonl", "domain": "math",
                   "skip": ["filters", "line_dedup"]})

    recrawl = root / "recrawl.jsonl"
    later = 4102444800.0  # 2100-01-01: newer than any file mtime, so these copies win URL dedup
    with open(recrawl, "w", encoding="utf-8") as fh:
        for name in sorted(pages)[: max(1, len(pages) // 5)]:
            page = (pydoc_dir / f"{name}.html").resolve()
            html = pages[name].replace("</body>", "<p>Page regenerated by the second crawl.</p></body>")
            fh.write(json.dumps({"id": f"recrawl:{name}", "url": page.as_uri(), "timestamp": later,
                                 "html": html}) + "\n")
    inputs.append({"name": "recrawl", "path": str(recrawl), "kind": "jsonl", "text_key": "html",
                   "content": "html"})
    return {"inputs": inputs, "absent": absent}
