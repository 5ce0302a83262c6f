"""A real pretraining corpus from what every Python install has, plus corpus statistics.

Sources (one JSONL file each, `{"id": ..., "text": ...}` per line):

- `general`: the pydoc topic pages (`pydoc_data.topics`) and, per standard-library module, its
  module/class/function docstrings. Docstrings are read with `ast` from the source files, so no
  module is imported (no side effects, no GUI, nothing that fails to import).
- `code`: the standard library's `.py` files as they are (test packages and files > 200 KB skipped).
- `math`: synthetic arithmetic word problems with worked solutions, deterministic from `seed`.
- `multilingual`: real non-English text found on this machine: the CJK sample texts of the test
  package (`test/cjkencodings/*-utf8.txt`) and translated manual pages (`/usr/share/man/<lang>/`).
  When neither exists the source is left out (never invented); `corpus.json` says why.
"""

from __future__ import annotations

import ast
import gzip
import json
import math
import random
import re
import sysconfig
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from herd.data.errors import DataError
from herd.data.synthetic_math import word_problem

SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
MAX_SOURCE_BYTES = 200_000
DEFAULT_MATH_PROBLEMS = 20_000
MAN_ROOT = Path("/usr/share/man")


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_sources(root: Path | None = None) -> list[Path]:
    """The standard library's .py files, sorted, without test packages, third-party or huge files."""
    root = root or stdlib_dir()
    return sorted(
        p for p in root.rglob("*.py")
        if not set(p.relative_to(root).parts[:-1]) & SKIP_DIRS and p.stat().st_size <= MAX_SOURCE_BYTES
    )


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) or path.stem


def docstring_document(path: Path, module: str) -> str | None:
    """Module, class and function docstrings of one source file as text, or None if it has none."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, UnicodeDecodeError):
        return None
    sections: list[str] = []
    doc = ast.get_docstring(tree)
    if doc:
        sections.append(f"Module {module}\n\n{doc}")

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if node.name.startswith("_") and node.name != "__init__":
                    continue
                qualname = f"{prefix}{node.name}"
                node_doc = ast.get_docstring(node)
                if isinstance(node, ast.ClassDef):
                    if node_doc:
                        sections.append(f"class {module}.{qualname}\n\n{node_doc}")
                    visit(node.body, f"{qualname}.")
                elif node_doc:
                    sections.append(f"def {module}.{qualname}({ast.unparse(node.args)})\n\n{node_doc}")

    visit(tree.body, "")
    return "\n\n".join(sections) if sections else None


def _general_documents(rng: random.Random) -> Iterator[tuple[str, str]]:
    from pydoc_data.topics import topics

    root = stdlib_dir()
    candidates: list[tuple[str, Any]] = [("topic", name) for name in sorted(topics)]
    candidates += [("docstrings", path) for path in stdlib_sources(root)]
    rng.shuffle(candidates)
    for kind, item in candidates:
        if kind == "topic":
            yield f"pydoc-topic:{item}", topics[item]
        else:
            module = _module_name(root, item)
            text = docstring_document(item, module)
            if text:
                yield f"docstrings:{module}", text


def _code_documents(rng: random.Random) -> Iterator[tuple[str, str]]:
    root = stdlib_dir()
    files = stdlib_sources(root)
    rng.shuffle(files)
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if text.strip():
            yield f"stdlib:{path.relative_to(root).as_posix()}", text


def _math_documents(rng: random.Random, count: int) -> Iterator[tuple[str, str]]:
    for i in range(count):
        yield f"math:{i}", word_problem(rng)


# -- multilingual: real translated text on this machine ----------------------------------------
_GLYPHS = {
    ":a": "ä", ":o": "ö", ":u": "ü", ":A": "Ä", ":O": "Ö", ":U": "Ü", ":e": "ë", ":i": "ï", ":y": "ÿ",
    "ss": "ß", "'e": "é", "'a": "á", "'i": "í", "'o": "ó", "'u": "ú", "'E": "É", "`e": "è", "`a": "à",
    "`u": "ù", "^e": "ê", "^a": "â", "^i": "î", "^o": "ô", "^u": "û", "~n": "ñ", "~a": "ã", "~o": "õ",
    ",c": "ç", ",C": "Ç", "aq": "'", "dq": '"', "em": "—", "en": "–", "hy": "-", "Fo": "«", "Fc": "»",
    "lq": "“", "rq": "”", "oq": "‘", "cq": "’", "bu": "•", "co": "©", "rg": "®", "mu": "×", "de": "°",
    "fo": "‹", "fc": "›", "Bq": "„", "bq": "‚", "ti": "~", "ha": "^", "rs": "\\", "ga": "`", "sl": "/",
}
_TEXT_MACROS = {"SH", "SS", "B", "I", "BR", "IR", "RB", "RI", "BI", "IB", "SM", "SB", "Sh", "Ss", "Nd", "Nm"}
_ESCAPE = re.compile(r"\\(\(..|\[[^\]]*\]|f\(..|f\[[^\]]*\]|f.|\*\(..|\*\[[^\]]*\]|\*.|s[-+]?\d|.)")


def _unescape(line: str) -> str:
    def replace(m: re.Match[str]) -> str:
        esc = m.group(1)
        if esc.startswith("("):
            return _GLYPHS.get(esc[1:], "")
        if esc.startswith("["):
            return _GLYPHS.get(esc[1:-1], "")
        if esc[0] in "f*s" and len(esc) > 1:
            return ""
        return {"-": "-", "e": "\\", "\\": "\\", " ": " ", "~": " ", "&": "", "c": "", "%": "", "|": "",
                "^": "", ".": ".", "'": "'", "`": "`"}.get(esc, "")

    return _ESCAPE.sub(replace, line)


def roff_to_text(source: str) -> str:
    """Plain text of a man page: macros dropped (their words kept for headings/fonts), escapes resolved."""
    out: list[str] = []
    for line in source.splitlines():
        if line.startswith((".\\\"", "'\\\"", "\\\"")):
            continue
        if line.startswith((".", "'")):
            macro, _, args = line[1:].strip().partition(" ")
            if macro in _TEXT_MACROS and args:
                words = [w.strip('"') for w in re.findall(r'"[^"]*"|\S+', args)]
                out.append(("\n" if macro in {"SH", "SS", "Sh", "Ss"} else "") + _unescape(" ".join(words)))
            elif macro in {"PP", "P", "LP", "Pp", "TP", "IP", "sp", "br"}:
                out.append("")
            continue
        out.append(_unescape(line))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def _multilingual_candidates() -> list[tuple[str, Callable[[], str]]]:
    found: list[tuple[str, Callable[[], str]]] = []
    cjk = stdlib_dir() / "test" / "cjkencodings"
    for path in sorted(cjk.glob("*-utf8.txt")) if cjk.is_dir() else []:
        found.append((f"cjkencodings:{path.name}", lambda p=path: p.read_text(encoding="utf-8")))
    if MAN_ROOT.is_dir():
        for lang_dir in sorted(d for d in MAN_ROOT.iterdir() if d.is_dir() and not d.name.startswith("man")):
            for page in sorted(lang_dir.rglob("*.gz")):
                found.append((f"man:{page.relative_to(MAN_ROOT).as_posix()}",
                              lambda p=page: roff_to_text(gzip.decompress(p.read_bytes()).decode("utf-8", "replace"))))
    return found


def _multilingual_documents(rng: random.Random) -> Iterator[tuple[str, str]]:
    candidates = _multilingual_candidates()
    rng.shuffle(candidates)
    seen: set[str] = set()
    for doc_id, read in candidates:
        text = read()
        if len(text) < 200 or text in seen or text.startswith(".so "):  # redirects and stubs
            continue
        seen.add(text)
        yield doc_id, text


# -- building --------------------------------------------------------------------------------
def build_local_corpus(out_dir: str | Path, max_docs_per_source: int | None = None, seed: int = 0) -> dict[str, Path]:
    """Write `<source>.jsonl` for general, code, math (and multilingual if found) plus corpus.json.

    Returns source name -> JSONL path. `max_docs_per_source` takes a seeded sample (fast for tests).
    """
    if max_docs_per_source is not None and max_docs_per_source <= 0:
        raise DataError(f"max_docs_per_source must be positive, got {max_docs_per_source}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    math_count = max_docs_per_source or DEFAULT_MATH_PROBLEMS
    generators: dict[str, Callable[[random.Random], Iterator[tuple[str, str]]]] = {
        "general": _general_documents,
        "code": _code_documents,
        "math": lambda rng: _math_documents(rng, math_count),
        "multilingual": _multilingual_documents,
    }
    written: dict[str, Path] = {}
    summary: dict[str, Any] = {"seed": seed, "max_docs_per_source": max_docs_per_source, "sources": {}, "absent": {}}
    for index, (name, generate) in enumerate(generators.items()):
        rng = random.Random(seed * 1000 + index)
        path = out / f"{name}.jsonl"
        tmp = path.with_name(path.name + ".tmp")
        docs = chars = 0
        with open(tmp, "w", encoding="utf-8") as f:
            for doc_id, text in generate(rng):
                f.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
                docs += 1
                chars += len(text)
                if max_docs_per_source is not None and docs >= max_docs_per_source:
                    break
        if docs == 0:
            tmp.unlink()
            path.unlink(missing_ok=True)
            summary["absent"][name] = ("no real non-English text found (no test/cjkencodings, no translated man "
                                       "pages); the source is left out" if name == "multilingual" else "no documents")
            continue
        tmp.replace(path)
        written[name] = path
        summary["sources"][name] = {"path": path.name, "documents": docs, "characters": chars}
    (out / "corpus.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return written


def unigram_entropy(
    token_shard_dirs: Sequence[str | Path] | Mapping[str, str | Path], weights: Mapping[str, float] | str | None = None
) -> float:
    """Entropy (nats/token) of the unigram distribution of the tokens a loader trains on.

    Those are all stored tokens but `<|begin_of_text|>` (never a target). With a mapping of sources
    and `weights` (token shares or a NAMED_MIXES name), the distribution is the weighted mixture of the per-source unigram
    distributions, which is what a loader with that mix sees. A model that beats this loss has
    learned more than token frequencies.
    """
    from herd.data.shards import TokenShards

    items = list(token_shard_dirs.items()) if isinstance(token_shard_dirs, Mapping) else [
        (str(i), d) for i, d in enumerate(token_shard_dirs)]
    if not items:
        raise DataError("unigram_entropy needs at least one token shard directory")
    if weights is not None and not isinstance(token_shard_dirs, Mapping):
        raise DataError("weights need token_shard_dirs as a mapping of source name -> directory")
    distributions: dict[str, np.ndarray] = {}
    for name, directory in items:
        shards = TokenShards(directory)
        counts = np.zeros(shards.vocab_size, dtype=np.int64)
        for tokens in shards.token_arrays():
            for start in range(0, len(tokens), 1 << 24):
                counts += np.bincount(np.asarray(tokens[start : start + (1 << 24)]), minlength=shards.vocab_size)
        bos = shards.manifest["tokenizer"].get("bos_id")
        if bos is not None:
            counts[bos] = 0
        distributions[name] = counts.astype(np.float64)
    if weights is None:
        total = sum(distributions.values())
        p = total / total.sum()
    else:
        from herd.data.mixture import resolve_weights

        shares = resolve_weights(weights, list(distributions))
        p = sum(shares[n] * distributions[n] / distributions[n].sum() for n in shares)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def entropy_to_perplexity(nats: float) -> float:
    return math.exp(nats)
