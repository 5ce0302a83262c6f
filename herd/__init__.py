"""herd: the Llama 3 system as one PyTorch codebase.

`herd.load_model(spec)` is the front door; stages live in subpackages (see DESIGN.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from herd.loading import LoadedModel, load_model


def __getattr__(name: str) -> Any:
    # Lazy so that `import herd` (e.g. for the CLI's --help) does not pay for torch and tokenizers.
    if name in ("load_model", "LoadedModel"):
        from herd import loading

        return getattr(loading, name)
    raise AttributeError(f"module 'herd' has no attribute {name!r}")
