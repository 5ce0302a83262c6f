"""The `herd` command: convert through every format with real weights, generate, chat, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from herd.cli import main

HERD = [sys.executable, "-m", "herd.cli"]


def run_herd(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HERD, *args], input=stdin, capture_output=True, text=True, timeout=300, check=False)


def greedy(model: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["generate", "--model", model, "--chat", "--prompt", "Name three colors.", "--max-tokens", "12"]) == 0
    return capsys.readouterr().out


def test_convert_through_every_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hf, meta, gguf = tmp_path / "hf", tmp_path / "meta", tmp_path / "smol.q8_0.gguf"
    assert main(["convert", "smollm2-135m-instruct", str(hf), "--to", "hf"]) == 0
    assert main(["convert", str(hf), str(meta), "--to", "meta", "--shards", "3"]) == 0
    assert main(["convert", str(meta), str(gguf), "--to", "gguf", "--gguf-type", "q8_0"]) == 0
    capsys.readouterr()
    assert (hf / "tokenizer.json").is_file() and (hf / "model.safetensors").is_file()
    assert len(list(meta.glob("consolidated.*.pth"))) == 3
    reference = greedy("smollm2-135m-instruct", capsys)
    assert reference.strip()
    assert greedy(str(hf), capsys) == reference
    assert greedy(str(meta), capsys) == reference
    assert greedy(str(gguf), capsys).strip()  # Q8_0 re-quantization may change a token; it must run


def test_chat_commands_over_a_pipe() -> None:
    result = run_herd(
        "chat", "--max-tokens", "8", "--temperature", "0",
        stdin="/system Answer in one word.\nHello there\n/reset\nWhat is 2+2?\n",
    )
    assert result.returncode == 0, result.stderr
    assert "[system prompt set]" in result.stdout and "[conversation cleared]" in result.stdout
    replies = [line for line in result.stdout.splitlines() if line and not line.startswith("[")]
    assert len(replies) == 2


def test_errors_name_the_problem(tmp_path: Path) -> None:
    result = run_herd("generate", "--model", str(tmp_path / "nope"), "--prompt", "x")
    assert result.returncode == 2
    assert "no model" in result.stderr and "nope" in result.stderr
    (tmp_path / "empty").mkdir()
    result = run_herd("convert", str(tmp_path / "empty"), str(tmp_path / "out"), "--to", "hf")
    assert result.returncode == 2 and "neither a Meta checkpoint" in result.stderr
    result = run_herd("convert", "x", "y", "--to", "onnx")
    assert result.returncode == 2 and "invalid choice" in result.stderr
