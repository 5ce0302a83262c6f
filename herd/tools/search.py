"""The `brave_search` built-in tool's offline stand-in (paper 4.3.5): BM25 over local documents.

Results come back as a web search API's do: `[{"title", "url", "description"}]`. The default corpus is
what every Python install carries: the standard library's documentation, read without importing
anything (each module's, class's and public function's docstring, parsed from the source with `ast`,
linked to its docs.python.org page), the built-in functions and types with their methods, and the
language reference topics of `pydoc_data`. The index is
built once and cached (a pickle keyed by the corpus' files and their modification times); point
`SearchIndex.build` at your own `Document`s to search anything else.

BM25 (Okapi, k1 = 1.5, b = 0.75, the Lucene-style idf that stays positive) over lower-cased, lightly
stemmed word tokens with English stop words removed (a function's parameter names are indexed with its
docstring), scored through an inverted index so a query touches only the
documents that share a term with it.
"""

from __future__ import annotations

import ast
import hashlib
import math
import os
import pickle
import re
import sysconfig
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_WORD = re.compile(r"[a-z0-9]+")
STOP_WORDS = frozenset("""a an and are as at be but by for from has have if in into is it its of on or
that the their then there these this to was were will with you your can not no do does""".split())
DOCS_URL = "https://docs.python.org/3/library/{module}.html"


_SUFFIXES = ("izations", "ization", "ations", "ation", "izing", "ising", "ized", "ised", "izes", "ises", "ize", "ise",
             "ingly", "ings", "ing", "edly", "ly", "ed")


def stem(word: str) -> str:
    """A light suffix stripper: enough that "indentation" meets `indent`, "serialized" meets
    "serialize" and "strings" meets `str` (Python's docs say str where people say string)."""
    if len(word) <= 3 or word.isdigit():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def tokenize(text: str) -> list[str]:
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in STOP_WORDS]


@dataclass(frozen=True)
class Document:
    title: str
    url: str
    text: str  # what is indexed; its first lines are the search result's description


class SearchIndex:
    """An inverted BM25 index over documents."""

    def __init__(self, documents: Sequence[Document], k1: float = 1.5, b: float = 0.75) -> None:
        self.documents = list(documents)
        self.k1, self.b = k1, b
        self.postings: dict[str, list[tuple[int, int]]] = {}
        self.lengths: list[int] = []
        for i, doc in enumerate(self.documents):
            terms = Counter(tokenize(doc.title.replace(".", " ") + " " + doc.text))
            self.lengths.append(sum(terms.values()))
            for term, count in terms.items():
                self.postings.setdefault(term, []).append((i, count))
        self.average = sum(self.lengths) / max(1, len(self.lengths))

    @classmethod
    def build(cls, documents: Iterable[Document]) -> SearchIndex:
        return cls(list(documents))

    def idf(self, term: str) -> float:
        n = len(self.postings.get(term, ()))
        return math.log(1 + (len(self.documents) - n + 0.5) / (n + 0.5))

    def scores(self, query: str) -> dict[int, float]:
        totals: dict[int, float] = {}
        for term in set(tokenize(query)):
            idf = self.idf(term)
            for doc, tf in self.postings.get(term, ()):
                norm = tf * (self.k1 + 1) / (tf + self.k1 * (1 - self.b + self.b * self.lengths[doc] / self.average))
                totals[doc] = totals.get(doc, 0.0) + idf * norm
        return totals

    def search(self, query: str, k: int = 5) -> list[dict[str, str]]:
        """The k best documents as `{"title", "url", "description"}` (best first; ties by title)."""
        ranked = sorted(self.scores(query).items(), key=lambda kv: (-kv[1], self.documents[kv[0]].title))[:k]
        return [{"title": self.documents[i].title, "url": self.documents[i].url,
                 "description": _describe(self.documents[i].text)} for i, _ in ranked]


def _describe(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3].rsplit(" ", 1)[0] + "..."


# -- the default corpus: the standard library's docs -------------------------------------------------------
def stdlib_files(root: Path | None = None) -> list[Path]:
    """The standard library's public .py files (no tests, no private or site-packages modules)."""
    root = root or Path(sysconfig.get_paths()["stdlib"])
    out = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        names = parts[:-1] + (() if parts[-1] == "__init__.py" else (parts[-1],))  # a package's docs are in __init__
        if any(p.startswith(("_", "test", "idlelib", "lib2to3", "site-packages", "dist-packages", "ensurepip",
                             "turtledemo", "tkinter", "config-")) for p in names):
            continue
        out.append(path)
    return out


def module_documents(path: Path, root: Path) -> list[Document]:
    """The docstrings of one stdlib module: the module, its public classes, functions and methods."""
    rel = path.relative_to(root).with_suffix("")
    module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (SyntaxError, ValueError):
        return []
    page = DOCS_URL.format(module=module)
    docs = []
    doc = ast.get_docstring(tree)
    if doc:
        docs.append(Document(module, page, doc))

    def walk(nodes: list[ast.stmt], prefix: str) -> None:
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                name = f"{prefix}.{node.name}"
                text = ast.get_docstring(node)
                if text:
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        a = node.args
                        params = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs) if x.arg not in ("self", "cls")]
                        text = f"{name}({', '.join(params)})\n{text}"
                    docs.append(Document(name, f"{page}#{name}", text))
                if isinstance(node, ast.ClassDef):
                    walk(node.body, name)

    walk(tree.body, module)
    return docs


def builtin_documents() -> list[Document]:
    """The built-in functions and types with their methods (`list.sort`, `str.split`: C code, so
    their docstrings come from the objects, which are safe to inspect)."""
    import builtins
    import inspect

    docs = []
    for name in sorted(dir(builtins)):
        if name.startswith("_"):
            continue
        obj = getattr(builtins, name)
        doc = inspect.getdoc(obj)
        if not doc or (isinstance(obj, type) and issubclass(obj, BaseException)):
            continue
        url = "https://docs.python.org/3/library/" + ("stdtypes.html" if isinstance(obj, type) else "functions.html")
        docs.append(Document(name, f"{url}#{name}", doc))
        if isinstance(obj, type):
            for attr, member in sorted(vars(obj).items()):
                member_doc = None if attr.startswith("_") else inspect.getdoc(member)
                if member_doc:
                    docs.append(Document(f"{name}.{attr}", f"{url}#{name}.{attr}", member_doc))
    return docs


def topic_documents() -> list[Document]:
    """The language reference topics that `help()` shows (`pydoc_data.topics`)."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        return []
    return [Document(f"Python reference: {name}", f"https://docs.python.org/3/reference/#{name}", text)
            for name, text in sorted(topics.items())]


def _cache_key(files: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f}:{f.stat().st_mtime_ns}:{f.stat().st_size}".encode())
    return h.hexdigest()[:16]


def default_index(cache_dir: str | Path | None = None, man: bool | None = None) -> SearchIndex:
    """The local corpus's index: the standard library's docs and the man pages (sections 1 and 8, when
    the system has them; `man=False` or HERD_SEARCH_MAN=0 leaves them out). Built on first use (a few
    seconds) and then read from the cache, which is keyed on every source file's size and time."""
    from herd.tools.man_pages import man_documents, man_files

    root = Path(sysconfig.get_paths()["stdlib"])
    files = stdlib_files(root)
    if man is None:
        man = os.environ.get("HERD_SEARCH_MAN", "1") != "0"
    pages = man_files() if man else []
    cache = Path(cache_dir or os.environ.get("HERD_CACHE", Path.home() / ".cache" / "herd")) / "search"
    path = cache / f"{'local' if pages else 'stdlib'}-{_cache_key(files + pages)}.pkl"
    if path.is_file():
        try:
            with path.open("rb") as f:
                index = pickle.load(f)
            if isinstance(index, SearchIndex):
                return index
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError):
            pass  # a damaged cache is rebuilt
    docs = topic_documents() + builtin_documents()
    for file in files:
        docs += module_documents(file, root)
    if pages:
        docs += man_documents()
    index = SearchIndex.build(docs)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        pickle.dump(index, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)
    return index


class SearchTool:
    """The callable the agent's Toolbox runs for `brave_search` calls: JSON results for a query."""

    def __init__(self, index: SearchIndex | None = None, k: int = 5) -> None:
        self._index, self.k = index, k

    @property
    def index(self) -> SearchIndex:
        if self._index is None:
            self._index = default_index()
        return self._index

    def __call__(self, query: str) -> str:
        import json

        if not query.strip():
            return "Error: empty query"
        return json.dumps(self.index.search(query, self.k), ensure_ascii=False)
