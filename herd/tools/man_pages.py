"""Man pages as search documents: the offline `brave_search` corpus's shell half (commands, daemons).

Each page of the chosen sections under `/usr/share/man` (gzipped roff, as Debian installs them)
becomes one document: title `ls(1)`, url `man:ls(1)`, text = the NAME line (`ls - list directory
contents`, indexed twice as a title boost) and DESCRIPTION's first paragraph, with roff requests and font escapes removed. Pages that only
point at another (`.so`) and pages with no NAME are skipped. Minimal images ship no man pages; then
the corpus is the standard library alone.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Sequence
from pathlib import Path

from herd.tools.search import Document

MAN_ROOT = Path("/usr/share/man")
SECTIONS = ("1", "8")  # user commands, administration commands
DESCRIPTION_CHARS = 400  # the first paragraph, at most: long option lists drown the NAME line in BM25

_ESCAPES = re.compile(r"\\f(?:\[[^\]]*\]|\(..|.)|\\s[-+]?\d|\\\*(?:\(..|\[[^\]]*\]|.)|\\[&|^%:]|\\\(..|\\\[[^\]]*\]")
_SECTION = re.compile(r"^\.S[Hh]\s+\"?([^\"\n]+)\"?\s*$", re.MULTILINE)
_PAGE_NAME = re.compile(r"^(?P<name>[^.]+(?:\.[^.]+)*?)\.(?P<section>\d\w*)(?:\.gz)?$")


def roff_text(source: str) -> str:
    """Readable text of roff source: requests (`.B foo`) keep their arguments, comments and pure
    formatting requests go, font and special-character escapes are removed."""
    lines = []
    for line in source.splitlines():
        if line.startswith(('.\\"', "'\\\"", '.\\}')) or line.strip() in (".", "'"):
            continue
        if line.startswith((".", "'")):
            request, _, rest = line[1:].partition(" ")
            if request in ("B", "I", "BR", "RB", "BI", "IB", "IR", "RI", "SM", "SB", "Nm", "Nd", "Ar", "Fl", "Op",
                           "Pa", "Cm", "Xr", "Dq", "Sq", "Ql"):
                line = rest.replace('"', "")
            elif request in ("TP", "PP", "LP", "P", "IP", "sp", "br", "RS", "RE", "nf", "fi", "Pp", "Bl", "El", "It"):
                if request == "IP" and rest:
                    line = rest.split('"')[1] if '"' in rest else rest.split(" ")[0]
                else:
                    lines.append("")
                    continue
            else:
                continue
        lines.append(line)
    text = _ESCAPES.sub("", "\n".join(lines)).replace("\\-", "-").replace("\\e", "\\").replace("\\ ", " ")
    return re.sub(r"[ \t]+", " ", re.sub(r"\n{3,}", "\n\n", text)).strip()


def sections_of(source: str) -> dict[str, str]:
    """`{"NAME": "...", "DESCRIPTION": "...", ...}`: the roff source split at its `.SH` headings."""
    marks = list(_SECTION.finditer(source))
    return {m.group(1).strip().upper(): source[m.end(): marks[i + 1].start() if i + 1 < len(marks) else len(source)]
            for i, m in enumerate(marks)}


def page_document(path: Path) -> Document | None:
    """One man page as a search document, or None (a `.so` pointer, no NAME, unreadable)."""
    match = _PAGE_NAME.match(path.name)
    if match is None:
        return None
    try:
        raw = path.read_bytes()
        source = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("utf-8", errors="replace")
    except (OSError, EOFError, gzip.BadGzipFile):
        return None
    if source.lstrip().startswith(".so "):
        return None
    parts = sections_of(source)
    name = roff_text(parts.get("NAME", "")).replace("\n", " ")
    if not name:
        return None
    description = roff_text(parts.get("DESCRIPTION", "")).split("\n\n")[0][:DESCRIPTION_CHARS]
    title = f"{match.group('name')}({match.group('section')})"
    # the NAME line is what a page is about: it is indexed twice (a title boost), shown once
    return Document(title, f"man:{title}", f"{name}\n{description}\n{name}".strip())


def man_files(root: Path = MAN_ROOT, sections: Sequence[str] = SECTIONS) -> list[Path]:
    """The page files of `sections` (English pages only: `man1/`, not `de/man1/`)."""
    files: list[Path] = []
    for section in sections:
        folder = root / f"man{section}"
        if folder.is_dir():
            files.extend(sorted(p for p in folder.iterdir() if p.is_file()))
    return files


def man_documents(root: Path = MAN_ROOT, sections: Sequence[str] = SECTIONS) -> list[Document]:
    return [doc for doc in (page_document(p) for p in man_files(root, sections)) if doc is not None]
