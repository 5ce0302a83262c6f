"""GGUF key/value metadata as a plain dictionary (values decoded by the `gguf` package)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from herd.checkpoint.errors import CheckpointError

if TYPE_CHECKING:
    from herd.tokenizer.bpe import BPETokenizer


def open_gguf(path: str | Path):  # type: ignore[no-untyped-def]
    """A `gguf.GGUFReader` for `path`, with a clear error for missing or non-GGUF files."""
    from gguf import GGUFReader

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"GGUF file not found: {path}")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise CheckpointError(f"{path} is not a GGUF file (bad magic bytes)")
    try:
        return GGUFReader(str(path))
    except Exception as exc:  # the reader raises bare ValueError/struct errors on truncation
        raise CheckpointError(f"{path} is a damaged GGUF file: {exc}") from exc


def gguf_metadata(reader) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """All key/value fields except the GGUF header counters, as Python values (lists, str, numbers)."""
    return {
        name: field.contents()
        for name, field in reader.fields.items()
        if not name.startswith("GGUF.")
    }


def read_gguf_metadata(path: str | Path) -> dict[str, Any]:
    return gguf_metadata(open_gguf(path))


def read_gguf_tokenizer(path: str | Path) -> BPETokenizer:
    """The tokenizer in a GGUF file's metadata, without reading its tensors.

    It lives here, not in herd.tokenizer, because reading files of a checkpoint format is this
    package's job; the tokenizer only knows how to build itself from the metadata dictionary.
    """
    from herd.tokenizer.bpe import BPETokenizer

    return BPETokenizer.from_gguf_metadata(read_gguf_metadata(path), name=str(path))
